"""Figures every chapter uses, in one style: t-SNE of embeddings, confusion matrices,
metric-vs-missing-rate curves with error bars, and pictures of presence matrices."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix as _cm


def set_style() -> None:
    """The book's figures and tables: seaborn's colour-blind palette, and pandas showing every
    column and the whole text of a cell (a claim cut at 50 characters, or a table cut to "…"
    columns, cannot be read)."""
    import pandas as pd
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold"})
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)


def _np(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def tsne(embeddings, labels, ax=None, title: str = "", seed: int = 0, max_points: int = 1500,
         class_names=None):
    """2-D t-SNE of ``embeddings`` coloured by ``labels`` (a seeded subsample of at most
    ``max_points`` points, so the figure costs seconds)."""
    X, y = _np(embeddings), _np(labels)
    rng = np.random.default_rng(seed)
    if len(X) > max_points:
        keep = rng.choice(len(X), max_points, replace=False)
        X, y = X[keep], y[keep]
    perplexity = min(30.0, max(1.0, (len(X) - 1) / 3))             # small test splits need a smaller one
    from sklearn.manifold import TSNE                                # (imported here: 0.4 s a run that draws none)
    Z = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(X)
    ax = ax or plt.gca()
    names = np.asarray(class_names)[y] if class_names is not None else y
    sns.scatterplot(x=Z[:, 0], y=Z[:, 1], hue=names, hue_order=list(class_names) if class_names is not None else None,
                    palette="tab10", s=8, linewidth=0, ax=ax, legend=False)
    ax.set(xticks=[], yticks=[], title=title)
    return ax


def confusion(y_true, y_pred, class_names, ax=None, title: str = "", normalize: bool = True):
    """Confusion matrix heatmap; rows are true classes, normalized to recall when asked."""
    cm = _cm(_np(y_true), _np(y_pred), labels=range(len(class_names))).astype(float)
    if normalize:
        cm = cm / cm.sum(1, keepdims=True).clip(min=1)
    ax = ax or plt.gca()
    sns.heatmap(cm, annot=len(class_names) <= 10, fmt=".2f" if normalize else ".0f", cmap="Blues",
                vmin=0, vmax=1 if normalize else None, cbar=False, square=True, ax=ax,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"size": 7})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return ax


def curves(df: pd.DataFrame, x: str, metric: str, hue: str, ax=None, title: str = "",
           scale: float = 100.0, ylabel: str | None = None, err: str = "ci", colors: dict | None = None,
           order: list | None = None):
    """Mean +- error of ``metric`` against ``x``, one line per ``hue`` value, from a frame
    with ``<metric>_mean`` and ``<metric>_<err>`` columns (default: the 95 % interval's
    half-width of :func:`mmlib.report.summary`). ``colors``: a colour per hue value, so that
    several panels agree; ``order``: the hue values' order (legend and points).

    With one value of ``x`` there is no line to draw: each hue value is a point with its error
    bar at a position of its own, labelled on the x axis (``x = value`` below them)."""
    ax = ax or plt.gca()
    names = [n for n in (order or []) if n in set(df[hue])] + \
        [n for n in dict.fromkeys(df.sort_values(x)[hue]) if n not in (order or [])]
    xs = df[x].unique()
    for i, name in enumerate(names):
        g = df[df[hue] == name].sort_values(x)
        where = [i] * len(g) if len(xs) == 1 else g[x]
        kw = {"color": colors[name]} if colors and name in colors else {}
        ax.errorbar(where, g[f"{metric}_mean"] * scale, yerr=g[f"{metric}_{err}"].fillna(0) * scale,
                    marker="o", ms=4 if len(xs) > 1 else 6, capsize=3, label=str(name), **kw)
    ax.set(xlabel=x, ylabel=ylabel or metric, title=title)
    if len(xs) == 1:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([str(n) for n in names], rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xlabel(f"{x} = {xs[0]:g}" if isinstance(xs[0], (int, float, np.number)) else f"{x} = {xs[0]}")
    ax.legend(fontsize=8)
    return ax


def presence(presence, modalities, ax=None, title: str = "", max_rows: int = 60):
    """The first ``max_rows`` rows of a presence matrix: dark = present, light = missing."""
    P = _np(presence)[:max_rows].astype(float)
    ax = ax or plt.gca()
    ax.imshow(P.T, aspect="auto", cmap="Greys", vmin=-0.2, vmax=1.0, interpolation="nearest")
    ax.set(yticks=range(len(modalities)), yticklabels=modalities, xlabel="sample", title=title)
    ax.grid(False)
    return ax


def show_code(obj) -> None:
    """Display the source of an mmlib function or class in a notebook (the book shows the
    library's code, never a copy of it)."""
    import inspect
    from IPython.display import Code, display
    display(Code(inspect.getsource(obj), language="python"))
