"""Chapter 01, SMIL (Ma et al., AAAI 2021): 100 % of one modality (``x1``, the image) and a fraction
η of the other (``x2``, the audio; η = 1 − rate, SMIL's "audio ratio"). The plan (which methods run
at which η), Tables 1–3 beside the paper's, the variants' table, the claims and the summary, over
the records that :func:`mmlib.experiment.run_grid` returns (one frame, a ``label`` and an ``eta``
column added here)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .. import report, results
from ..experiment import run_grid

CHAPTER = "01_smil"
METHODS = ["ae_impute", "gan_impute", "smil"]
VARIANTS = ["smil_code", "smil_alg1", "smil_first_order", "smil_kl_eq7", "smil_reg_default_init"]
CONTROLS = ["smil_warm_only", "smil_no_inner"]            # what the warm starts alone give; no inner step (alpha = 0)
ABLATIONS = ["smil_no_kmeans", "smil_no_reg", "smil_fixed_gaussian", "smil_deterministic"]
BOUNDS = ["unimodal", "upper_bound"]                      # independent of eta: one fit per seed
FIG = ["smil", "unimodal", "upper_bound"]                 # the models the figures need (first seed)
LABEL = {"unimodal": "Lower-Bound", "upper_bound": "Upper-Bound", "mvae": "MVAE", "ae_impute": "AE",
         "gan_impute": "GAN", "smil": "SMIL", "smil_code": "SMIL (authors' code)",
         "smil_alg1": "SMIL, Algorithm 1 as printed", "smil_first_order": "SMIL, first order",
         "smil_kl_eq7": "SMIL, KL as Eq. 7 prints it", "smil_reg_default_init": "SMIL, Eq. 3 at the default init",
         "smil_warm_only": "control: the warm starts alone", "smil_no_inner": "control: no inner step (alpha = 0)",
         "smil_no_kmeans": "SMIL w/o K-means", "smil_no_reg": "SMIL w/o Regularization",
         "smil_fixed_gaussian": "SMIL w/ Fixed Gaussian", "smil_deterministic": "SMIL w/ Deterministic"}
ROWS = ["Lower-Bound", "Upper-Bound", "MVAE", "AE", "GAN", "SMIL"]                       # Tables 1 and 2
ABL = ["SMIL w/o K-means", "SMIL w/o Regularization", "SMIL w/ Fixed Gaussian", "SMIL w/ Deterministic", "SMIL"]
VAR = ["SMIL", "SMIL (authors' code)", "SMIL, Algorithm 1 as printed", "SMIL, first order", "SMIL, KL as Eq. 7 prints it",
       "SMIL, Eq. 3 at the default init", "control: the warm starts alone", "control: no inner step (alpha = 0)"]
CURVES = ["AE", "GAN", "SMIL", "SMIL (authors' code)"]
NAMES = {"accuracy": "accuracy", "f1_macro": "macro F1", "f1_samples": "F1 samples", "f1_micro": "F1 micro"}


def metrics_of(task: str) -> tuple[str, str]:
    """The paper's two metrics: accuracy and F1 (avMNIST, CMU-MOSI), F1 samples and micro (MM-IMDb)."""
    return ("accuracy", "f1_macro") if task == "multiclass" else ("f1_samples", "f1_micro")


def spec(eta: float, x2: str) -> dict:
    """SMIL's pattern: ``x2`` kept in a fraction ``eta`` of the training samples (missing in 1 − eta)."""
    return {"kind": "independent", "rates": {x2: round(1 - eta, 6)}}


def setting(eta: float) -> str:
    return f"eta={eta:.0%}"


def plan(eta: float) -> list[str]:
    """The methods run at η: the variants, controls and ablations at 10 % and 20 % only, MVAE at 100 %."""
    return METHODS + (VARIANTS + CONTROLS + ABLATIONS if eta in (0.1, 0.2) else []) + (["mvae"] if eta == 1.0 else [])


def kwargs(name: str, x1: str, x2: str, backbone: str) -> dict:
    return {"ae_impute": {"cond": [x1], "backbone": backbone}, "gan_impute": {"cond": [x1], "backbone": backbone},
            "unimodal": {"use": [x1], "backbone": backbone}, "upper_bound": {"backbone": backbone},
            "mvae": {}}.get(name, {"backbone": backbone, "x1": x1, "x2": x2})


def runs(data, eta, seeds, cfg, device, store, profile, x1, x2, backbone, keep=()):
    """Every method of :func:`plan` at η (selecting on a validation split masked like training) and the
    bounds (on the complete one): ``(frame, fitted)``, the frame with an ``eta`` column."""
    st = {setting(eta): spec(eta, x2)}
    f, fit_ = run_grid(data, [(n, kwargs(n, x1, x2, backbone)) for n in plan(eta)], st, seeds, cfg, device,
                       store=store, profile=profile, keep=keep, validation="masked")
    fb, fit_b = run_grid(data, [(n, kwargs(n, x1, x2, backbone)) for n in BOUNDS], st, seeds, cfg, device,
                         store=store, profile=profile, keep=keep)
    return pd.concat([f, fb], ignore_index=True).assign(eta=eta), {**fit_, **fit_b}


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs the page shows, each with its display ``label``."""
    out = frame.assign(label=frame["method"].map(LABEL))
    return out[out["label"].notna()]


def here_table(here: pd.DataFrame, metric: str) -> pd.DataFrame:
    """This setting's runs: ``metric`` (%) per method and test pattern, and the mean fit seconds."""
    tab = report.table(here, "method", "test", metric)
    tab["fit seconds"] = here.groupby("method")["fit_seconds"].mean().round(1)
    return tab.rename(index=LABEL).rename_axis("method")


def cell(df: pd.DataFrame, label: str, eta: float, test: str, metric: str) -> str:
    return report.fmt_mean_ci(report.per_seed(df, metric, {"label": label, "eta": eta, "test": test}), show_n=False)


def table12(df: pd.DataFrame, etas, both: str, one: str, main: str, second: str) -> pd.DataFrame:
    """Tables 1 and 2, ours: the bounds and MVAE at η = 100 %, the others at 10 % and 20 %. MVAE's
    row says so where it falls below the lower bound (not a working baseline)."""
    cols = [e for e in (0.1, 0.2, 1.0) if e in etas]
    ours = pd.DataFrame({(NAMES[m], f"η = {e:.0%}"): {r: (cell(df, r, e, both, m) if (r in ("Lower-Bound", "Upper-Bound", "MVAE"))
                                                         == (e == 1.0) else "–") for r in ROWS}
                         for m in (main, second) for e in cols})
    mvae = "MVAE"
    if 1.0 in etas:
        lb_one = report.per_seed(df, main, {"label": "Lower-Bound", "eta": 1.0, "test": one}).mean()
        mv_both = report.per_seed(df, main, {"label": "MVAE", "eta": 1.0, "test": both}).mean()
        if mv_both < lb_one:
            mvae = "MVAE (below the lower bound: not a working baseline)"
    return ours.reindex(ROWS).rename(index={"MVAE": mvae}).rename_axis("method")


def paper_table12() -> pd.DataFrame:
    """The paper's Tables 1 (CMU-MOSI) and 2 (MM-IMDb) as printed, rows as in :data:`ROWS`."""
    papers = []
    for name, ds, mets in [("smil_table1", "CMU-MOSI", {"accuracy": "accuracy", "f1": "F1"}),
                           ("smil_table2", "MM-IMDb", {"f1_samples": "F1 samples", "f1_micro": "F1 micro"})]:
        p = results.paper_table(name)
        p = p[p["metric"].isin(mets)]
        w = p.pivot_table(index="method", columns=["metric", "setting"], values="value", aggfunc="first")
        w = w[[(m, s) for m in mets for s in ["eta=10%", "eta=20%", "eta=100%"] if (m, s) in w.columns]]
        w.columns = pd.MultiIndex.from_tuples([(f"paper, {ds}", mets[m], s.replace("eta=", "η = ")) for m, s in w.columns])
        papers.append(w)
    return pd.concat(papers, axis=1).reindex(ROWS).astype(object).fillna("–").rename_axis("method")


def table3(df: pd.DataFrame, etas, both: str, one: str, main: str, dataset: str) -> pd.DataFrame | None:
    """Table 3, the ablations: ours at η = 10 % and 20 % beside the paper's (MM-IMDb); None without
    those runs."""
    t3 = [e for e in (0.1, 0.2) if e in etas]
    if not t3:
        return None
    ours = pd.DataFrame({(f"ours ({dataset}), {main} %", f"test {t.replace('+', ' + ')}", f"η = {e:.0%}"):
                         {a: cell(df, a, e, t, main) for a in ABL} for t in (both, one) for e in t3})
    p3 = results.paper_table("smil_table3")
    p3 = p3[p3["metric"] == "f1_samples"].assign(method=lambda d: d["method"].replace({"SMIL (Full)": "SMIL"}))
    w3 = p3.pivot_table(index="method", columns="setting", values="value", aggfunc="first")
    w3.columns = pd.MultiIndex.from_tuples([("paper (MM-IMDb)", "F1 samples", s.replace("eta=", "η = ")) for s in w3.columns])
    return pd.concat([ours, w3], axis=1).reindex(ABL).astype(object).fillna("–").rename_axis("method")


def variants_table(df: pd.DataFrame, etas, both: str, one: str, main: str) -> pd.DataFrame | None:
    """The variants and controls at η = 10 % and 20 %, with their mean fit seconds; None without them."""
    t3 = [e for e in (0.1, 0.2) if e in etas]
    if not t3:
        return None
    tv = pd.DataFrame({(f"test {t.replace('+', ' + ')}", f"η = {e:.0%}"): {v: cell(df, v, e, t, main) for v in VAR}
                       for t in (both, one) for e in t3})
    tv[("fit seconds", "(mean)")] = df[df["label"].isin(VAR)].groupby("label")["fit_seconds"].mean().round(1)
    return tv.reindex(VAR).rename_axis("method")


def plateau_label(method: str, variant: str = "") -> str:
    return LABEL.get(method, report.label(method))


def claims(df: pd.DataFrame, etas, both: str, one: str, main: str) -> list[report.Verdict]:
    """The paper's claims (Tables 1 and 3, Figure 4) and the book's questions, each with its id."""
    def m_(lbl, e, t=both):
        return {"label": lbl, "eta": e, "test": t}
    V = []
    for e in [x for x in (0.1, 0.2) if x in etas]:
        V += [report.compare(df, m_("SMIL", e), m_(b, e), main, setting=f"η = {e:.0%}, image + audio",
                             kind="paper", claim=f"Table 1: SMIL beats {b}", id=f"smil.table1.beats_{b.lower()}.eta{100 * e:.0f}")
              for b in ("AE", "GAN")]
    if {0.1, 0.2} <= set(etas):
        gain = {e: report.per_seed(df, main, m_("SMIL", e)) - report.per_seed(df, main, m_("AE", e)) for e in (0.1, 0.2)}
        V.append(report.compare_series(100 * gain[0.1], 100 * gain[0.2], setting="η = 10% vs 20%, image + audio",
                                       metric=main, kind="paper", claim="Table 1: the gain over AE grows as η falls",
                                       id="smil.table1.gain_grows"))
    low = [{"eta": e} for e in etas if e < 1.0]
    for t, lbl, k in [(one, "Figure 4 left: with the image only", "image"), (both, "Figure 4 right: with image + audio", "both")]:
        V.append(report.compare_over(df, {"label": "SMIL", "test": t}, {"label": "Lower-Bound", "test": one}, main, low,
                                     setting="every η < 100%", kind="paper", claim=f"{lbl}, SMIL beats the lower bound",
                                     id=f"smil.fig4.{k}.beats_lower_bound"))
    if 0.2 in etas:
        V += [report.compare(df, m_("SMIL", 0.2, one), m_(b, 0.2, one), main, setting="η = 20%, image only",
                             kind="paper", claim=f"Figure 4 left: with the image only, SMIL beats {b}", id=f"smil.fig4.image.beats_{b.lower()}")
              for b in ("AE", "GAN")]
        drop = {b: 100 * (report.per_seed(df, main, m_(b, 0.2)) - report.per_seed(df, main, m_(b, 0.2, one)))
                for b in ("SMIL", "AE", "GAN")}
        V += [report.compare_series(drop["SMIL"], drop[b], direction="<", metric=main, setting="η = 20%",
                                    a_label="SMIL's drop", b_label=f"{b}'s drop",
                                    kind="paper", claim=f"Losing the audio at test costs {b} more than SMIL",
                                    id=f"smil.fig4.audio_loss.less_than_{b.lower()}") for b in ("AE", "GAN")]
    if {0.1, 1.0} <= set(etas):
        # decided like every claim (MVAE below the lower bound is reported in Table 1 and below, not hidden here)
        V.append(report.compare(df, m_("SMIL", 0.1), m_("MVAE", 1.0), main, setting="SMIL η = 10%, MVAE η = 100%",
                                kind="paper", claim="SMIL with 10% audio beats MVAE trained with 100%", id="smil.table1.beats_mvae_full"))
    t3 = [{"eta": e} for e in (0.1, 0.2) if e in etas]
    V += [report.compare_over(df, {"label": "SMIL", "test": both}, {"label": a, "test": both}, main, t3,
                              setting="η = 10% and 20%, image + audio",
                              kind="paper", claim=f"Table 3: the full SMIL beats {a.replace('SMIL ', '')}",
                              id="smil.table3.beats." + re.sub(r"[^a-z0-9]+", "_", a.lower()).strip("_")) for a in ABL[:-1]]
    if t3:
        warm, no_inner = "control: the warm starts alone", "control: no inner step (alpha = 0)"
        V.append(report.compare_over(df, {"label": "SMIL", "test": both}, {"label": warm, "test": both},
                                     main, t3, setting="η = 10% and 20%, image + audio",
                                     kind="book", claim="(this book) meta-learning adds to the warm starts", id="smil.book.meta_adds.both"))
        V.append(report.compare_over(df, {"label": "SMIL", "test": one}, {"label": warm, "test": one},
                                     main, t3, setting="η = 10% and 20%, image only",
                                     kind="book", claim="(this book) meta-learning adds to the warm starts, image only",
                                     id="smil.book.meta_adds.image"))
        for t, where, k in [(both, "image + audio", "both"), (one, "image only", "image")]:
            V.append(report.compare_over(df, {"label": "SMIL", "test": t}, {"label": no_inner, "test": t},
                                         main, t3, setting=f"η = 10% and 20%, {where}",
                                         kind="book", claim=f"(this book) the inner step of Eq. 4 helps, {where}",
                                         id=f"smil.book.inner_step.{k}"))
        V.append(report.compare_over(df, {"label": "SMIL", "test": both}, {"label": "SMIL, Eq. 3 at the default init",
                                                                            "test": both},
                                     main, t3, setting="η = 10% and 20%, image + audio",
                                     kind="book", claim="(this book) Eq. 3 started at the identity beats the default init",
                                     id="smil.book.eq3_identity_init"))
    return V


def summary(V: list[report.Verdict], df: pd.DataFrame, n_train: int, cfg) -> str:
    """"What we learned", every number read from the verdicts and the records."""
    counts = pd.Series([v.verdict for v in V]).value_counts().to_dict()
    by = report.by_id(V)

    def eff(claim_id):
        v = by.get(claim_id)
        return "not run" if v is None else f"{report.fmt_effect(v)} points, n = {v.n}: **{report.verdict_text(v)}**"
    smil = df[(df["method"] == "smil") & (df["eta"] < 1.0)].drop_duplicates(["eta", "seed"])
    steps = smil["epochs_run"] * np.ceil(n_train * (1 - smil["eta"]) / cfg.batch_size)
    return (
        f"- Of {len(V)} tests, {', '.join(f'{n} {k}' for k, n in counts.items())}.\n"
        f"- Against the imputation baselines at η = 10%: AE {eff('smil.table1.beats_ae.eta10')}; GAN "
        f"{eff('smil.table1.beats_gan.eta10')}.\n"
        f"- Where the gain comes from (η = 10% and 20%, image + audio): SMIL against the warm starts alone "
        f"{eff('smil.book.meta_adds.both')}; against the same losses without the inner step "
        f"{eff('smil.book.inner_step.both')} (image only: "
        f"{eff('smil.book.inner_step.image')}). An inner step that does not help means the "
        f"gain is that of joint training with the reconstruction and the learned noise, not of meta-learning.\n"
        f"- Eq. 3 started at the identity against PyTorch's default initialisation: "
        f"{eff('smil.book.eq3_identity_init')}; the ablation 'w/o regularization' "
        f"against the full SMIL: {eff('smil.table3.beats.smil_w_o_regularization')}.\n"
        f"- Training length: SMIL's meta-learning ran a median of {int(np.median(steps))} iterations (range "
        f"{int(steps.min())}-{int(steps.max())}) before its validation score stopped improving for {cfg.patience} epochs "
        f"(at most {cfg.epochs} epochs); the paper runs 15,000 and the authors' code 8,000, on a larger dataset and network.")


# -- figures -----------------------------------------------------------------------------------------
def curves_figure(df: pd.DataFrame, x1: str, x2: str, main: str):
    """Figure 4: test ``main`` against η, with the image only and with both; the bounds as lines."""
    import matplotlib.pyplot as plt
    from .. import plots
    both, one = f"{x1}+{x2}", x1
    agg = report.summary(df, ["label", "eta", "test"], main)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True)
    for ax, test, title in zip(axes, [one, both], [f"test: {x1} only", f"test: {x1} + {x2}"]):
        c = agg[(agg["test"] == test) & agg["label"].isin(CURVES)].copy()
        c["eta %"] = c["eta"] * 100
        plots.curves(c, "eta %", main, "label", ax=ax, title=title, ylabel=f"test {main} (%)", err="ci")
        lb = agg[(agg["label"] == "Lower-Bound") & (agg["test"] == one)][f"{main}_mean"].mean() * 100
        ub = agg[(agg["label"] == "Upper-Bound") & (agg["test"] == both)][f"{main}_mean"].mean() * 100
        ax.axhline(lb, color="grey", ls="--", lw=1, label="Lower-Bound")
        if test == both:
            ax.axhline(ub, color="black", ls=":", lw=1, label="Upper-Bound (100% audio)")
        ax.set_xscale("log")
        ax.set_xticks([5, 10, 20, 50, 100])
        ax.set_xticklabels(["5", "10", "20", "50", "100"])
        ax.set_xlabel("audio ratio $\\eta$ (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_class(data, fitted: dict, presence, x1: str, x2: str) -> tuple[pd.DataFrame, pd.Series]:
    """Per-class test F1 (%) of the lower bound and of SMIL with both and with ``x1`` only (first
    seed's models), and the complete training pairs per class."""
    from sklearn.metrics import f1_score
    from .. import masks
    from ..methods import decide
    y = data.y[data.splits["test"]]
    pred = {"Lower-Bound": decide(data.task, fitted["unimodal"].predict(data, "test")),
            f"SMIL, {x1} + {x2}": decide(data.task, fitted["smil"].predict(data, "test")),
            f"SMIL, {x1} only": decide(data.task, fitted["smil"].predict(
                data, "test", masks.pattern(len(y), data.modality_names, [x1])))}
    kw = {"labels": list(range(data.n_classes))} if data.task == "multiclass" else {}
    per = pd.DataFrame({k: f1_score(y.numpy(), p.numpy(), average=None, zero_division=0, **kw) * 100
                        for k, p in pred.items()}, index=data.class_names)
    y_pairs = data.y[data.splits["train"]][presence[:, 1]]
    pairs = pd.Series(np.bincount(y_pairs.numpy(), minlength=data.n_classes) if data.task == "multiclass"
                      else y_pairs.sum(0).numpy(), index=data.class_names)
    return per, pairs


def per_class_figure(per: pd.DataFrame, pairs: pd.Series, eta: float):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 4))
    per.plot.bar(ax=ax, width=0.8, rot=0 if len(per) <= 10 else 60)
    ax.set(ylabel="test F1 (%)", xlabel="class", title=f"Per-class F1, eta = {eta:.0%} (first seed)")
    ax.set_ylim(0, 125)
    ax2 = ax.twinx()
    ax2.plot(range(len(per)), pairs.values, color="green", marker="o", label="complete training pairs")
    ax2.set_ylabel("complete training pairs", color="green")
    ax2.grid(False)
    ax2.set_ylim(0, max(pairs.max() * 2.2, 1))
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def per_class_text(per: pd.DataFrame, pairs: pd.Series, x1: str, x2: str) -> str:
    """SMIL's per-class gain over the lower bound and its correlation with the pairs per class."""
    gain = (per[f"SMIL, {x1} + {x2}"] - per["Lower-Bound"]).round(1) + 0.0     # no "-0.0"
    r = np.corrcoef(pairs.values, gain.values)[0, 1]
    return (f"SMIL ({x1} + {x2}) minus the lower bound, per class: from **{gain.min():+.1f}** to "
            f"**{gain.max():+.1f}** F1 points; correlation with the number of pairs: **{r:+.2f}**.")


def tsne_figure(data, fitted: dict, x1: str, x2: str, eta: float):
    """Figure 5: t-SNE of the test embeddings, the lower bound, SMIL with both and with ``x1`` only,
    and the upper bound, two panels a row."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from .. import masks, plots
    y = data.y[data.splits["test"]]
    colour = y if data.task == "multiclass" else y.argmax(1)          # multi-label: the first genre
    only = masks.pattern(len(y), data.modality_names, [x1])
    panels = [("Lower-Bound", fitted["unimodal"].embed(data, "test")),
              (f"SMIL, eta = {eta:.0%}: {x1} + {x2}", fitted["smil"].embed(data, "test")),
              (f"SMIL, eta = {eta:.0%}: {x1} only", fitted["smil"].embed(data, "test", only)),
              ("Upper-Bound", fitted["upper_bound"].embed(data, "test"))]
    fig, axes = plt.subplots(2, 2, figsize=(10, 9.5))
    for ax, (title, emb) in zip(axes.flat, panels):
        plots.tsne(emb, colour, ax=ax, title=title, class_names=data.class_names, max_points=1000)
    handles = [plt.Line2D([], [], marker="o", ls="", ms=7, color=c) for c in sns.color_palette("tab10", data.n_classes)]
    fig.legend(handles, data.class_names, loc="lower center", ncol=min(data.n_classes, 10), fontsize=10,
               title="digit", bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout()
    return fig
