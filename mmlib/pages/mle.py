"""Chapter 02, MLE (Ma et al., 2021, "Maximum likelihood estimation for multimodal learning with
missing modality"): two modalities, ``x1`` always present (the paper's x) and ``x2`` (its y)
missing in a fraction ``rate`` of the training samples. The plan (Table 1's rows and φ per
setting, Table 2's imputation baselines, the support of Eq. 5), the tables beside the paper's,
the affect and gaussian checks, the claims and the summary, over the records."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import masks, metrics, report, results
from ..experiment import run_grid

CHAPTER = "02_mle"
PHI_NAME = {"add": "addition", "concat": "concatenation", "outer": "outer product"}
LABEL = {"mle_lb": "Lower Bound", "hgr": "HGR Maximal Correlation", "mle_zp": "ZP", "mle": "MLE",
         "mle+all_detached": "MLE, g(y') constant in Eq. 5 (this book)"}
ROWS = ["Lower Bound", "HGR Maximal Correlation", "ZP", "MLE", LABEL["mle+all_detached"]]
FIG5 = ["mle_lb", "hgr", "mle_zp", "mle"]                # Figure 5: each with phi = addition, as printed (Eq. 5)
SUPPORTS = ["all", "batch", "all_detached"]
T2_EPOCHS = {"quick": 2, "default": 20, "full": 60}
T2_RATES = (0.5, 0.8, 0.9)
G_RATES = {"quick": [0.95], "default": [0.8, 0.95], "full": [0.8, 0.95]}


def load(name: str, data_root=None, train_size: int = 1000):
    """A two-modality dataset: ``affect``'s acoustic and visual modalities (the paper's two; the
    lexical one left out), or a registered dataset with two modalities; ``train_size`` training rows."""
    from ..data import load_dataset
    if name == "affect":
        d = load_dataset("affect", data_root, task="emotion").select(["acoustic", "visual"])
    else:
        d = load_dataset(name, data_root)
    if len(d.modalities) != 2:
        raise ValueError(f"MLE is a two-modality method; {name} has {d.modality_names}")
    return d.with_train_subset(min(train_size, len(d.splits["train"])))


def role(modality: str) -> str:
    """The paper's name for the missing modality."""
    return "visual" if modality in ("image", "visual") else "audio"


def setting(modality: str, rate: float) -> str:
    return f"{role(modality)}_missing={rate:.0%}"


def spec(modality: str, rate: float) -> dict:
    return {"kind": "independent", "rates": {modality: rate}}


def other(d, x2: str) -> str:
    return [m for m in d.modality_names if m != x2][0]


def table1_methods(d, x2: str, rate: float, backbone: str) -> list[tuple[str, dict]]:
    """Table 1's rows at one setting: the lower bound, HGR and MLE with every φ, ZP with addition and
    concatenation (at 50 % only ZP and MLE, Figure 4's), the book's variant with g(y') constant from
    80 %; on ``affect`` addition only."""
    kw = {"backbone": backbone, "x1": other(d, x2), "x2": x2}
    t1 = [("mle_lb", phi) for phi in PHI_NAME] + [("hgr", phi) for phi in PHI_NAME] + \
         [("mle_zp", "add"), ("mle_zp", "concat")] + [("mle", phi) for phi in PHI_NAME]
    if rate < 0.8:
        t1 = [(m, p) for m, p in t1 if m in ("mle_zp", "mle")]
    out = [(m, {**kw, "phi": p}) for m, p in t1]
    if rate >= 0.8:
        out.append(("mle", {**kw, "phi": "add", "support": "all_detached"}))
    if d.name == "affect":
        out = [(m, k) for m, k in out if k["phi"] == "add"]
    return out


def table1_runs(d, x2: str, rate: float, seeds, cfg, device, store, profile, backbone, keep=()) -> tuple:
    """Table 1's runs at one setting (selecting on a validation split masked like training):
    ``(frame, fitted)``, the frame with ``modality`` (the paper's name) and ``rate``."""
    f, fitted = run_grid(d, table1_methods(d, x2, rate, backbone), {setting(x2, rate): spec(x2, rate)}, seeds, cfg,
                         device, store=store, profile=profile, validation="masked", keep=keep)
    return f.assign(modality=role(x2), rate=rate), fitted


def grid_settings(chapter, profile: str, dataset: str) -> list[tuple[str, float]]:
    """The chapter grid's (missing modality, rate) pairs on ``dataset``."""
    groups = chapter.grid[profile] if isinstance(chapter.grid[profile], list) else [chapter.grid[profile]]
    return [(m, r) for g in groups if dataset in g.get("dataset", ["avdigits"])
            for m in g["missing_modality"] for r in g["missing_rate"]]


def settings_for(chapter, profile: str, which: str, dataset: str, page: bool, here: tuple,
                 on_every_page: bool = False) -> list[tuple[str, float]]:
    """The (missing modality, rate) pairs a run covers on dataset ``which``: the page, every pair of the
    grid (when the run's dataset is ``which``, or always with ``on_every_page``); a grid run, its own
    pair ``here`` if its dataset is ``which``."""
    if page and (on_every_page or dataset == which):
        return grid_settings(chapter, profile, which)
    return [here] if dataset == which and not page else []


def affect_runs(settings, data_root, train_size, seeds, cfg, device, store, profile, backbone):
    """Table 1's runs on ``affect`` (both modalities at test) and its majority-class accuracy on
    the test split: ``(frame, majority)``, an empty frame and None without settings."""
    if not settings:
        return pd.DataFrame(), None
    d = load("affect", data_root, train_size)
    aff = paper_rows(pd.concat([table1_runs(d, x2, r, seeds, cfg, device, store, profile, backbone)[0]
                                for x2, r in settings]))
    return aff[aff["test"] == "+".join(d.modality_names)], metrics.majority_share(d.y[d.splits["test"]])


def here_table(here: pd.DataFrame, where: str) -> pd.DataFrame:
    runs = here.assign(run=[report.label(m, v) for m, v in zip(here["method"], here["variant"])])
    return report.table(runs, "run", "test", "accuracy").rename_axis(f"accuracy % at {where}")


def paper_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's row (method) and φ of each run, from its method and config."""
    detached = frame["config.support"].eq("all_detached") if "config.support" in frame else False
    return frame.assign(row=np.where(detached, frame["method"] + "+all_detached", frame["method"]),
                        phi=frame["config.phi"]).assign(row=lambda d: d["row"].map(LABEL))


def table1(t1: pd.DataFrame, which: str) -> pd.DataFrame:
    """Table 1 for ``which`` ("visual" or "audio") missing: ours (mean ± 95 % CI, n) beside the
    paper's (eNTERFACE'05), per method and φ, at 80, 90 and 95 %."""
    ours = t1.assign(phi=t1["phi"].map(PHI_NAME)).groupby(["row", "phi", "setting"])["accuracy"].agg(
        lambda v: report.fmt_mean_ci(list(v))).rename("ours")
    p = results.paper_table("mle_table1")
    p = p.assign(row=p["method"], phi=p["note"].str.replace("phi=", ""),
                 paper=p["value"].map("{:.2f}".format)).set_index(["row", "phi", "setting"])["paper"]
    both = pd.concat([ours, p], axis=1).reset_index()
    cols = [f"{which}_missing={r}%" for r in (80, 90, 95)]
    w = both[both.setting.isin(cols)].pivot_table(index=["row", "phi"], columns="setting", values=["ours", "paper"],
                                                  aggfunc="first")
    w = w.reindex(columns=pd.MultiIndex.from_product([["ours", "paper"], cols])).swaplevel(axis=1)
    w = w.reindex(columns=cols, level=0)
    w.columns = pd.MultiIndex.from_tuples([(s.split("=")[1], "this book: avdigits" if k == "ours" else "paper: eNTERFACE'05")
                                           for s, k in w.columns], names=[f"{which} missing", ""])
    w = w.reindex(ROWS, level=0).rename_axis(["method", "φ"])
    return w.astype(object).where(w.notna(), "–")


def support_methods(backbone: str, x1: str, x2: str, phis=("add",)) -> list[tuple[str, dict]]:
    """MLE with each support of Eq. 5's y' (every complete sample, the batch's, constants)."""
    return [("mle", {"backbone": backbone, "x1": x1, "x2": x2, "phi": phi, "support": sup})
            for sup in SUPPORTS for phi in phis]


def support_table(sup: pd.DataFrame) -> pd.DataFrame:
    sup = sup.rename(columns={"config.phi": "phi", "config.support": "support"})
    tab = report.table(sup, ["phi", "support"], [], "accuracy").rename(columns={"accuracy": "test accuracy %"})
    tab["fit seconds"] = sup.groupby(["phi", "support"])["fit_seconds"].mean().round(1)
    return tab


def table2_plan(profile: str, data, dataset: str) -> tuple[list[str], int, list[tuple[str, float]]]:
    """Table 2's feature networks (the CNNs only in ``full``: they train slowly on a CPU), epochs and
    (missing modality, rate) pairs (``avdigits`` only)."""
    backbones = ["mlp"] if profile != "full" else ["mlp", "cnn"]
    pairs = [(m, r) for m in data.modality_names for r in T2_RATES] if dataset == "avdigits" else []
    return backbones, T2_EPOCHS[profile], pairs


def table2_runs(d, settings, seeds, cfg, device, store, profile, backbones, epochs: int) -> pd.DataFrame:
    """Table 2 (AE1, AE2 and MLE, addition) at each (missing modality, rate), first seed, ``epochs``
    epochs each without early stopping."""
    from ..train import TrainConfig
    t2_cfg = TrainConfig(**{**cfg.to_dict(), "epochs": epochs, "patience": None})
    frames = []
    for x2, r in settings:
        ms = [(name, {"phi": "add", "backbone": bb, "x1": other(d, x2), "x2": x2})
              for bb in backbones for name in ["ae1", "ae2", "mle"]]
        f, _ = run_grid(d, ms, {setting(x2, r): spec(x2, r)}, seeds[:1], t2_cfg, device, store=store,
                        profile=profile, validation="masked")
        frames.append(f)
    return pd.concat(frames) if frames else pd.DataFrame()


def table2(t2: pd.DataFrame) -> pd.DataFrame:
    tab = report.table(t2, "method", "setting", "accuracy", show_n=False, labels=report.LABELS)
    return tab[[c for c in [f"{m}_missing={r}%" for m in ("visual", "audio") for r in (50, 80, 90)] if c in tab.columns]]


def paper_table2() -> pd.DataFrame:
    p2 = results.paper_table("mle_table2")
    p2["backbone"] = p2["note"].str.replace("backbone=", "")
    return p2.pivot_table(index=["backbone", "method"], columns="setting", values="value", aggfunc="first")


def affect_table(aff: pd.DataFrame) -> pd.DataFrame:
    return report.table(aff.assign(phi=aff["phi"].map(PHI_NAME)), ["row", "phi"], "setting", "accuracy") \
        .reindex(ROWS, level=0).rename_axis(["method", "φ"])


def affect_text(aff: pd.DataFrame, majority: float) -> str:
    """The majority-class floor against the table's best cell (the same grouping as the table)."""
    best = aff.drop_duplicates(["row", "phi", "setting", "seed"]).groupby(["row", "phi", "setting"])["accuracy"].mean().max()
    return (f"Always predicting the most frequent emotion scores **{100 * majority:.1f}%** on this test split; "
            f"the best cell above is **{100 * best:.1f}%**. "
            + ("On `affect`'s acoustic and visual modalities no method gets clearly above that rate, so this "
               "table cannot separate the methods (see the affect datasheet's floors); its verdicts below "
               "say \"not testable\"." if best < majority + 0.03 else ""))


def gaussian_data():
    """Two equally informative modalities x and y with a known posterior."""
    from ..data import load_dataset
    return load_dataset("gaussian", preset="balanced", dims=(8, 8), names=("x", "y"), informativeness=(0.45, 0.45))


def gaussian_frame(g_data, rates, seeds, cfg, device, store, profile) -> pd.DataFrame:
    """The lower bound, ZP and MLE on ``gaussian`` with y missing at each rate: per run and test
    pattern (x, x+y), the accuracy, the oracle's and KL(P || Q) (read from the records)."""
    from ..data.gaussian import oracle_accuracy
    n = len(g_data.splits["test"])
    methods = [(m, {"backbone": "mlp", "x1": "x", "x2": "y", "phi": "add"}) for m in ["mle_lb", "mle_zp", "mle"]]
    f, _ = run_grid(g_data, methods, {f"{r}": {"kind": "independent", "rates": {"y": r}} for r in rates}, seeds, cfg,
                    device, store=store, profile=profile, validation="masked")
    oracle = {t: oracle_accuracy(g_data, "test", masks.pattern(n, g_data.modality_names, t.split("+"))) for t in ("x", "x+y")}
    rows = [{"method": r["method"], "rate": float(r["setting"]), "seed": r["seed"], "test": r["test"], "kl": r["kl_oracle"],
             "accuracy": r["accuracy"], "oracle": oracle[r["test"]]} for r in f[f["test"].isin(list(oracle))].to_dict("records")]
    return pd.DataFrame(rows).assign(row=lambda d: d["method"].map(LABEL))


def gaussian_table(gq: pd.DataFrame) -> pd.DataFrame:
    acc = report.table(gq, ["rate", "test", "row"], [], "accuracy").rename(columns={"accuracy": "accuracy %"})
    acc["oracle %"] = (gq.groupby(["rate", "test", "row"])["oracle"].mean() * 100).round(1)
    acc["KL(P || Q), nats"] = report.table(gq, ["rate", "test", "row"], [], "kl", scale=1.0, digits=3)["kl"]
    return acc.rename_axis(["y missing", "test", "method"])


def claims(t1: pd.DataFrame, settings, both: str, aff: pd.DataFrame | None = None, majority: float | None = None,
           gq: pd.DataFrame | None = None, g_rates=()) -> list[report.Verdict]:
    """The paper's claims (1)–(5) on Table 1's runs, the book's questions, the affect check and the
    posterior distances on ``gaussian``, each with its id."""
    V = []
    if len(t1):
        hi = [{"setting": setting(y, r)} for y, r in settings if r >= 0.8]

        def a_(method, phi="add"):                       # one row of Table 1: the paper's method and phi
            return {"row": LABEL[method], "phi": phi, "test": both}
        V += [report.compare_over(t1, a_(m), a_("mle_lb"), "accuracy", hi, setting="visual and audio missing 80-95%",
                                  kind="paper", claim=f"(1) {lbl} beats the lower bound", id=f"mle.1.{m}_beats_lower_bound")
              for m, lbl in [("hgr", "HGR"), ("mle_zp", "ZP"), ("mle", "MLE")]]
        # (5)'s "HGR is worse than MLE" is the same paired comparison as (1') MLE beats HGR: declared once, here
        V += [report.compare_over(t1, a_("mle"), a_(m), "accuracy", hi, setting="visual and audio missing 80-95%",
                                  kind="paper", claim=f"(1') MLE beats {lbl}", id=f"mle.1p.beats_{m}")
              for m, lbl in [("mle_zp", "ZP"), ("hgr", "HGR; also (5): HGR is worse than MLE")]]
        V.append(report.compare_over(t1.assign(rate_=t1["rate"]), {"row": "MLE", "phi": "add", "modality": "visual"},
                                     {"row": "MLE", "phi": "add", "modality": "audio"}, "accuracy",
                                     [{"rate_": r} for r in (0.8, 0.9, 0.95)], direction="<", setting="MLE, 80-95% missing",
                                     kind="paper", claim="(2) visual missing hurts more than audio missing", id="mle.2.visual_hurts_more"))

        def seeds_of(m, r):
            return report.per_seed(t1, "accuracy", {"row": LABEL[m], "phi": "add", "modality": "audio", "rate": r}) * 100
        drop = {m: seeds_of(m, 0.8) - seeds_of(m, 0.95) for m in ["mle", "mle_zp"]}
        V.append(report.compare_series(drop["mle"], drop["mle_zp"], direction="<", metric="accuracy drop",
                                       setting="audio missing 80% -> 95%",
                                       kind="paper", claim="(3) MLE degrades more slowly than ZP (its drop is smaller)",
                                       id="mle.3.slower_drop"))
        V += [report.compare_over(t1, a_("mle", p), a_("mle", "concat"), "accuracy", hi, setting="80-95% missing",
                                  kind="paper", claim=f"(4) for MLE, {PHI_NAME[p]} beats concatenation", id=f"mle.4.{p}_beats_concat")
              for p in ["outer", "add"]]
        V += [report.compare_over(t1, a_("hgr"), a_("mle_zp"), "accuracy", hi, direction="<", setting="80-95% missing",
                                  kind="paper", claim="(5) HGR is worse than ZP", id="mle.5.hgr_below_mle_zp")]
        vis = [{"setting": setting(y, r)} for y, r in settings if r >= 0.8 and role(y) == "visual"]
        aud = [{"setting": setting(y, r)} for y, r in settings if r >= 0.8 and role(y) == "audio"]
        V += [report.compare_over(t1, a_("mle+all_detached"), a_("mle"), "accuracy", s_, setting=lbl,
                                  kind="book", claim="(this book) g(y') constant in Eq. 5 beats Eq. 5 as printed",
                                  id=f"mle.book.g_constant.{k}")
              for s_, lbl, k in [(vis, "visual missing 80-95%", "visual"), (aud, "audio missing 80-95%", "audio")]]
    if aff is not None and len(aff):
        V += [report.compare(aff, {"row": "MLE", "phi": "add", "setting": s_}, {"row": "ZP", "phi": "add", "setting": s_},
                             "accuracy", floor=majority, tol=0.01, setting=f"affect, {s_}", kind="paper", claim="(affect) MLE beats ZP",
                             id=f"mle.affect.beats_zp.{s_}")
              for s_ in sorted(aff["setting"].unique())]
    if gq is not None and len(gq):
        for t, where in [("x", "x only"), ("x+y", "x and y")]:
            V += [report.compare_over(gq, {"method": "mle", "test": t}, {"method": b, "test": t}, "kl",
                                      [{"rate": r} for r in g_rates], direction="<", scale=1.0,
                                      setting=f"gaussian, y missing {', '.join(f'{r:.0%}' for r in g_rates)}, {where}",
                                      kind="book", claim=f"(this book) MLE's posterior is closer to the exact one than {LABEL[b]}'s, {where}",
                                      id=f"mle.book.posterior_closer.{b}.{t}")
                  for b in ["mle_zp", "mle_lb"]]
    return V


def summary(V: list[report.Verdict], gq: pd.DataFrame | None = None) -> str:
    counts = pd.Series([v.verdict for v in V]).value_counts().to_dict()
    by = report.by_id(V)

    def eff(claim_id, unit=" points"):
        v = by.get(claim_id)
        return "not run" if v is None else f"{report.fmt_effect(v)}{unit}, n = {v.n}: **{report.verdict_text(v)}**"
    lines = [f"- Of {len(V)} tests, {', '.join(f'{n} {k}' for k, n in counts.items())}.",
             f"- MLE against the lower bound at 80-95 % missing: {eff('mle.1.mle_beats_lower_bound')}; against ZP: "
             f"{eff('mle.1p.beats_mle_zp')}.",
             f"- Eq. 5 with g(y') held constant against Eq. 5 as printed: {eff('mle.book.g_constant.visual')} (visual missing)."]
    if gq is not None and len(gq):
        kl = gq.groupby(["test", "method"])["kl"].mean()
        lines.append(f"- Against the exact posterior (`gaussian`): with x only, KL(P || Q) is {kl[('x', 'mle')]:.3f} nats for MLE, "
                     f"{kl[('x', 'mle_zp')]:.3f} for ZP and {kl[('x', 'mle_lb')]:.3f} for the lower bound (MLE against ZP: "
                     f"{eff('mle.book.posterior_closer.mle_zp.x', ' nats')}).")
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------------------
def confusion_figure(data, fitted: dict, where: str):
    """Figure 5: confusion matrices of the lower bound, HGR, ZP and MLE, each with φ = addition (the
    models the table's rows are, by identity), with their test accuracy."""
    import matplotlib.pyplot as plt
    from .. import plots
    from ..methods import decide
    y = data.y[data.splits["test"]]
    fig, axes = plt.subplots(2, 2, figsize=(9, 8.4))
    for ax, name, title in zip(axes.flat, FIG5, ["Lower bound", "HGR", "ZP", "MLE"]):
        pred = decide(data.task, fitted[(name, "phi=add", where)].predict(data, "test"))
        plots.confusion(y, pred, data.class_names, ax=ax, title=f"{title}: {float((pred == y).float().mean()):.1%}")
    fig.tight_layout()
    return fig


def fig4_figure(t1: pd.DataFrame):
    """Figure 4: ZP and MLE as the audio goes missing; None without those runs."""
    import matplotlib.pyplot as plt
    from .. import plots
    f4 = t1[(t1["modality"] == "audio") & t1["method"].isin(["mle", "mle_zp"])]
    if f4.empty:
        return None
    f4 = f4.assign(curve=f4["row"] + ", " + f4["phi"].map(PHI_NAME))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    plots.curves(report.summary(f4, ["curve", "rate"], "accuracy"), "rate", "accuracy", "curve", ax=ax,
                 ylabel="test accuracy (%)", err="ci", title="audio missing: ZP vs MLE")
    ax.set_xlabel("fraction of training samples missing audio")
    return fig


def fig6_figure(t2: pd.DataFrame):
    """Figure 6: validation accuracy per epoch at 50 % audio missing (first seed, from the records);
    None without those runs."""
    import matplotlib.pyplot as plt
    f6 = t2[t2["setting"] == "audio_missing=50%"].drop_duplicates("method")
    if not len(f6):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, path in zip(f6["method"], f6["path"]):
        hist = results.read_record(path)["history"]
        ax.plot([h["epoch"] + 1 for h in hist], [100 * h["val_score"] for h in hist], marker="o", ms=3, label=name)
    ax.set(title="Figure 6 (ours): audio 50% missing", xlabel="epoch", ylabel="validation accuracy %")
    ax.legend()
    fig.tight_layout()
    return fig
