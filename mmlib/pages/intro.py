"""Chapter 00, the introduction: the missing-modality problem on ``avdigits`` (the image always
there, the audio missing in a fraction ``rate`` of the training samples), and the baselines
every later chapter meets (zero padding with concat or sum fusion, late fusion) between the
lower bound (the image alone) and the upper bound (every training sample complete)."""
from __future__ import annotations

import pandas as pd

from .. import report, results
from ..experiment import run_grid

CHAPTER = "00_missing_modalities"
METHODS = ("zp_concat", "zp_sum", "late_fusion")
BOUNDS = ("lower_bound", "upper_bound")
ORDER = [report.label(m) for m in ("lower_bound", "zp_concat", "zp_sum", "late_fusion", "upper_bound")]
BOTH, IMAGE = "image+audio", "image"


def spec(rate: float) -> dict:
    """The chapter's missing pattern: the audio missing in a fraction ``rate`` of the samples."""
    return {"kind": "independent", "rates": {"audio": rate}}


def setting(rate: float) -> str:
    """A rate's setting label, e.g. ``"80%"``."""
    return f"{rate:.0%}"


def pattern_examples(eta: float) -> dict[str, dict]:
    """The four missing patterns the page draws (a spec per title); ``eta``: SMIL's kept fraction."""
    return {
        f"(a) independent, SMIL's: audio missing in {1 - eta:.0%} (kept in eta = {eta:.0%})":
            {"kind": "independent", "rates": {"audio": round(1 - eta, 6)}},
        "(b) independent, RedCore's: image 30%, audio 60% missing": {"kind": "independent", "rates": {"image": 0.3, "audio": 0.6}},
        "(c) random_drop: rate 0.5 per entry, one kept": {"kind": "random_drop", "rate": 0.5},
        "(d) cpm: 50% of all entries missing, one kept": {"kind": "cpm", "rate": 0.5},
    }


def pattern_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """What each pattern leaves (``masks.describe`` per title): complete and empty rows, the
    overall missing rate and each modality's present fraction."""
    return pd.DataFrame({t: {"complete": s["complete"], "no modality": s["empty"],
                             "missing (all entries)": f"{s['overall_missing_rate']:.1%}",
                             **{f"{m} present": f"{v:.1%}" for m, v in s["present_fraction"].items()}}
                         for t, s in summaries.items()}).T


def grid(data, rates, seeds, cfg, device, store, profile, backbone, keep=(), validation="masked", bounds=True):
    """Every method and bound at every rate: ``(frame, fitted)``, the frame's rows ordered lower
    bound, methods, upper bound. The methods select on a validation split masked like training
    (``validation="full"``: on the complete one, the page's comparison); the bounds always on the
    complete one (``bounds=False``: the methods alone)."""
    settings = {setting(r): spec(r) for r in rates}
    f, fit_ = run_grid(data, [(m, {"backbone": backbone}) for m in METHODS], settings, seeds, cfg, device,
                       store=store, profile=profile, keep=keep, validation=validation)
    if not bounds:
        return f, fit_
    fb, fit_b = run_grid(data, [(m, {"backbone": backbone}) for m in BOUNDS], settings, seeds, cfg, device,
                         store=store, profile=profile, keep=keep)
    return pd.concat([fb[fb["method"] == "lower_bound"], f, fb[fb["method"] == "upper_bound"]],
                     ignore_index=True), {**fit_, **fit_b}


def table_at(frame: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Accuracy (%) per method and test pattern at one rate."""
    tab = report.table(frame, "method", "test", "accuracy", labels=report.LABELS)
    return tab.reindex(ORDER)[[BOTH, IMAGE, "audio"]].rename_axis(f"accuracy % at {rate:.0%} audio missing")


def rates_table(frame: pd.DataFrame, rates) -> pd.DataFrame:
    """Accuracy (%) per test pattern and method (rows) and rate (columns)."""
    wide = report.table(frame, ["test", "method"], "setting", "accuracy", labels=report.LABELS)
    wide = wide[[setting(r) for r in rates]].reindex([(t, m) for t in (BOTH, IMAGE) for m in ORDER]).dropna(how="all")
    wide.columns = [f"audio missing {c}" for c in wide.columns]
    return wide.rename_axis(["test", "accuracy %"])


def curves_frame(frame: pd.DataFrame, rates) -> pd.DataFrame:
    """Mean and 95 % half-width per method, test pattern and rate (``missing_rate``), for the curves."""
    f = frame.assign(missing_rate=frame["setting"].map({setting(r): r for r in rates}))
    agg = report.summary(f, ["method", "test", "missing_rate"], "accuracy")
    return agg.assign(method=agg["method"].map(report.label))


def bounds_beside_paper(frame: pd.DataFrame) -> pd.DataFrame:
    """The lower bound (image only) and upper bound (image + audio), ours beside SMIL's Table 1."""
    paper = results.paper_table("smil_table1")
    paper = paper[(paper["metric"] == "accuracy") & paper["method"].isin(["Lower-Bound", "Upper-Bound"])]
    bounds = pd.concat([frame[(frame.method == "lower_bound") & (frame.test == IMAGE)],
                        frame[(frame.method == "upper_bound") & (frame.test == BOTH)]])
    ours = pd.DataFrame({"method": [report.label(m) for m in BOUNDS],
                         "ours": [report.fmt_mean_ci(report.per_seed(bounds, "accuracy", {"method": m})) for m in BOUNDS]})
    return results.beside_paper(ours, paper, ["method"], "ours: accuracy % (avdigits, 10 classes)",
                                "paper: accuracy % (CMU-MOSI, 2 classes)").set_index("method")


def claims(frame: pd.DataFrame, rates) -> list[report.Verdict]:
    """The chapter's statements, each over every rate (a seed's mean over the rates, tested over
    seeds) except the gap, at the highest rate."""
    both, img = {"test": BOTH}, {"test": IMAGE}
    per_rate = [{"setting": setting(r)} for r in rates]
    hi = setting(max(rates))
    over = ", ".join(setting(r) for r in rates)
    out = [
        report.compare_over(frame, {"method": "zp_concat", **both}, {"method": "lower_bound", **img}, "accuracy",
                            per_rate, kind="paper", claim="Using the incomplete audio helps: zero padding (image + audio) > Lower-Bound",
                            id="intro.zp_beats_lower_bound"),
        report.compare_over(frame, {"method": "late_fusion", **both}, {"method": "zp_concat", **both}, "accuracy",
                            per_rate, kind="paper", claim="Late fusion > zero padding (concat), image + audio", id="intro.late_beats_zp"),
        report.compare_over(frame, {"method": "zp_concat", **both}, {"method": "zp_sum", **both}, "accuracy", per_rate,
                            kind="paper", claim="Concat fusion > sum fusion for zero padding, image + audio",
                            id="intro.concat_beats_sum"),
        report.compare(frame, {"method": "upper_bound", **both, "setting": hi},
                       {"method": "zp_concat", **both, "setting": hi}, "accuracy", setting=f"audio missing {hi}",
                       kind="paper", claim="The gap remains: Upper-Bound > zero padding (concat) at the highest missing rate",
                       id="intro.gap_remains"),
        report.compare_over(frame, {"method": "zp_concat", **img}, {"method": "lower_bound", **img}, "accuracy",
                            per_rate, direction="<", kind="paper", claim="Tested with the image only, zero padding < Lower-Bound",
                            id="intro.image_only.zp_below_lb"),
        report.compare_over(frame, {"method": "late_fusion", **img}, {"method": "lower_bound", **img}, "accuracy",
                            per_rate, direction="<", kind="paper", claim="Tested with the image only, late fusion < Lower-Bound",
                            id="intro.image_only.late_below_lb"),
    ]
    for v in out:
        if not v.setting.startswith("audio"):
            v.setting = "audio missing " + over
    return out


def selection_frame(masked: pd.DataFrame, complete: pd.DataFrame) -> pd.DataFrame:
    """The methods' runs at one rate selected both ways, with a ``selection`` column."""
    keep = masked[masked["method"].isin(METHODS)]
    return pd.concat([complete[complete["method"].isin(METHODS)].assign(selection="complete validation"),
                      keep.assign(selection="masked validation")], ignore_index=True)


def selection_table(sel: pd.DataFrame) -> pd.DataFrame:
    return report.table(sel, ["method", "selection"], "test", "accuracy", labels=report.LABELS)[[BOTH, IMAGE]] \
        .rename_axis(["accuracy %", "selected on"])


def selection_claims(sel: pd.DataFrame, rate: float) -> list[report.Verdict]:
    """(this book) a masked validation split against a complete one, per method and test pattern."""
    return [report.compare(sel, {"method": m, "test": t, "selection": "masked validation"},
                           {"method": m, "test": t, "selection": "complete validation"}, "accuracy",
                           setting=f"audio missing {setting(rate)}, test {t}",
                           kind="book", claim=f"(this book) {report.label(m)}: a masked validation split beats a complete one, test {t}",
                           id=f"intro.book.masked_validation.{m}.{t}")
            for m in ("zp_concat", "late_fusion") for t in (BOTH, IMAGE)]


def summary(verdicts: list[report.Verdict], mv: list[report.Verdict], rates) -> str:
    """The "what we learned" bullets, every number read from the verdicts."""
    counts = pd.Series([v.verdict for v in verdicts]).value_counts().to_dict()
    by, by_mv = report.by_id(verdicts), report.by_id(mv)

    def eff(v):
        return f"{report.fmt_effect(v)} points, n = {v.n}: **{report.verdict_text(v)}**"
    return (
        f"- Of {len(verdicts)} statements, {', '.join(f'{n} {k}' for k, n in counts.items())}.\n"
        f"- Using the incomplete audio (zero padding against the lower bound, image + audio): "
        f"{eff(by['intro.zp_beats_lower_bound'])}; the gap to the upper bound at {setting(max(rates))} missing: "
        f"{eff(by['intro.gap_remains'])}.\n"
        f"- The price of a naive model when the audio is missing at test (image only, the lower bound minus zero "
        f"padding): {eff(by['intro.image_only.zp_below_lb'])}; late fusion: {eff(by['intro.image_only.late_below_lb'])}.\n"
        "- Selecting on a masked validation split instead of a complete one (this page's rate): "
        + "; ".join(f"{report.label(m)}, test {t}: {eff(by_mv[f'intro.book.masked_validation.{m}.{t}'])}"
                    for m in ("zp_concat", "late_fusion") for t in (BOTH, IMAGE)) + ".")


# -- figures -----------------------------------------------------------------------------------------
def examples_figure(data, seed: int = 0):
    """One training sample per class: the image (top) and the audio's MFCCs (bottom)."""
    import matplotlib.pyplot as plt
    import numpy as np
    rng = np.random.default_rng(seed)
    y = data.y[data.splits["train"]].numpy()
    idx = data.splits["train"][[int(rng.choice(np.flatnonzero(y == c))) for c in range(data.n_classes)]]
    fig, axes = plt.subplots(2, len(idx), figsize=(12, 2.8))
    for j, i in enumerate(idx):
        axes[0, j].imshow(data.modalities["image"][i], cmap="gray_r")
        axes[0, j].set_title(data.class_names[data.y[i]])
        axes[1, j].imshow(data.modalities["audio"][i], cmap="magma", origin="lower")
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
        ax.grid(False)
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("audio\n(MFCC)")
    return fig


def confusion_figure(data, fitted: dict, figs: list):
    """Confusion matrices on the test split: the lower bound with the image, zero padding (concat)
    with image + audio (``fitted`` keyed by ``figs``' (method, setting) pairs)."""
    import matplotlib.pyplot as plt
    from .. import masks, plots
    from ..methods import decide
    y, n, names = data.y[data.splits["test"]], len(data.splits["test"]), data.modality_names
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    pred_lb = decide(data.task, fitted[figs[0]].predict(data, "test", masks.pattern(n, names, [IMAGE])))
    pred_zp = decide(data.task, fitted[figs[1]].predict(data, "test", masks.full(n, names)))
    plots.confusion(y, pred_lb, data.class_names, ax=axes[0], title="Lower-Bound, image only")
    plots.confusion(y, pred_zp, data.class_names, ax=axes[1], title="Zero padding (concat), image + audio")
    fig.tight_layout()
    return fig


def tsne_figure(data, fitted: dict, figs: list, seed: int, max_points: int):
    """t-SNE of the test embeddings (every modality present) of the models in ``figs``."""
    import matplotlib.pyplot as plt
    from .. import masks, plots
    y, n = data.y[data.splits["test"]], len(data.splits["test"])
    fig, axes = plt.subplots(1, len(figs), figsize=(10, 3.8))
    for ax, key in zip(axes, figs):
        emb = fitted[key].embed(data, "test", masks.full(n, data.modality_names))
        plots.tsne(emb, y, ax=ax, title=report.label(key[0]), seed=seed, max_points=max_points,
                   class_names=data.class_names)
    handles = [plt.Line2D([], [], marker="o", ls="", color=plt.cm.tab10(i)) for i in range(data.n_classes)]
    fig.legend(handles, data.class_names, title="digit", loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    return fig
