"""Chapter 04, M3S (Chi et al., AACL-IJCNLP 2022): a contiguous span inside every modality zeroed in
every sample (a band of its length), and three ways to train a base model on it: ORIG (the fixed
corruption), SPL-TRN (spans redrawn per batch) and M3S (the meta step of Algorithm 1). The plan
(settings, bases, the controls), Tables 1–5 beside the paper's, the validation curves, the claims
and the summary, over the records."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import report, results
from ..experiment import run_grid

CHAPTER = "04_m3s"
METRICS = {"emotion": ["accuracy", "uar", "f1_weighted"], "regression": ["mae", "corr", "acc2", "f1_2", "acc7"]}
LOWER_IS_BETTER = {"mae"}
RAW = {"mae", "corr"}                             # shown as they are (3 decimals), the others in %
NAMES = {"accuracy": "Acc", "uar": "UAR", "f1_weighted": "F1", "mae": "MAE", "corr": "Corr", "acc2": "Acc-2",
         "f1_2": "F1", "acc7": "Acc-7"}
SETTING = {"m3s_orig": "ORIG", "m3s_spl_trn": "ORIG + SPL-TRN", "m3s": "ORIG + M3S"}
BASE_NAME = {"mmin_lite": "MMIN (lite)", "zp_concat": "zero padding", "misa_lite": "MISA (lite)"}
MATCHED = {"m3s_orig": "ORIG, compute-matched", "m3s_spl_trn": "ORIG + SPL-TRN, compute-matched"}
HEAD_BANDS = {"0%": [0.0, 0.0], "20-40%": [0.2, 0.4], "40-60%": [0.4, 0.6], "60-80%": [0.6, 0.8]}
PARTS = ("all", "settings", "controls")
# Tables 2-4: our base beside the paper's, per task
PAPER_BASE = [("emotion", "MMIN (lite)", "MMIN"), ("regression", "zero padding", "MMIM")]
CURVES = [("emotion", "MMIN (lite)", "accuracy"), ("emotion", "MMIN (lite)", "uar"),
          ("emotion", "MMIN (lite)", "f1_weighted"), ("regression", "zero padding", "mae")]


def lbl(b) -> str:
    """A band's label, as the paper writes it."""
    return f"{100 * b[0]:.0f}-{100 * b[1]:.0f}%"


def corruption(b) -> dict:
    """Spans of band ``b`` along the time axis, in training and at test (Table 4's models also at
    60-80 %)."""
    tests = {lbl(b): list(b)}
    if list(b) == [0.4, 0.6]:
        tests["60-80%"] = [0.6, 0.8]
    return {"band": list(b), "axis": "time", "test": tests}


def check(band, part) -> None:
    if len(band) != 2 or not 0.0 <= band[0] <= band[1] <= 1.0:
        raise ValueError(f"band must be [low, high] with 0 <= low <= high <= 1, got {band}")
    if part not in PARTS:
        raise ValueError(f"part must be 'all', 'settings' or 'controls', got {part!r}")


def load(dataset: str, data_root=None, data_options=None) -> dict:
    """The chapter's tasks: ``affect``'s emotion and regression tasks, or a real dataset's one."""
    from ..data import load_dataset
    if dataset == "affect":
        return {"emotion": load_dataset("affect", data_root, task="emotion"),
                "regression": load_dataset("affect", data_root, task="regression")}
    d = load_dataset(dataset, data_root, **(data_options or {}))
    return {"emotion" if d.task == "multiclass" else "regression": d}


class Page:
    """The chapter's plan on its tasks: the bases per task, the controls (at 40-60 %, on the first
    base) and the compute-matched settings; ``share``: a grid run's part of a band."""

    def __init__(self, tasks: dict, profile: str, seeds, cfg, device, store, share: str = "all"):
        self.tasks, self.profile, self.seeds, self.cfg, self.device, self.store = tasks, profile, list(seeds), cfg, device, store
        self.share = share
        self.bases = {"emotion": [("mmin_lite", {}), ("zp_concat", {"backbone": "mlp"})],
                      "regression": [("zp_concat", {"backbone": "mlp"})]}
        self.controls = [("alpha = 0", {"inner_lr": 0.0}), ("alpha x 10", {"inner_lr": 2e-3}),
                         ("spans on clean features", {"augment_on": "complete"})]
        if profile == "full":                     # MISA (lite), about 3 s a fit; the second order, 3x a first-order fit
            self.bases["regression"].append(("misa_lite", {}))
            self.controls.append(("second order", {"second_order": True}))

    def plan(self, task: str, b) -> list:
        out = []
        for base, bk in self.bases[task]:
            if self.share != "controls":
                out += [(m, {"base": base, "base_kwargs": bk}) for m in SETTING]
            if list(b) == [0.4, 0.6] and base == self.bases[task][0][0] and self.share != "settings":
                out += [("m3s", {"base": base, "base_kwargs": bk, **kw}) for _, kw in self.controls]
                out += [(m, {"base": base, "base_kwargs": bk, "compute_matched": True}) for m in MATCHED]
        return out

    def row_name(self, r) -> str:
        """A run's setting, or its control's name."""
        if r["method"] == "m3s" and (r["config.inner_lr"] != 2e-4 or r["config.augment_on"] != "masked"
                                     or r["config.second_order"]):
            return "M3S, " + next(n for n, k in self.controls if all(r[f"config.{a}"] == v for a, v in k.items()))
        if r["config.compute_matched"]:
            return MATCHED[r["method"]]
        return SETTING[r["method"]]

    def runs(self, b) -> pd.DataFrame:
        """Every task's plan at band ``b``: one row per run and tested band, with ``task``, ``band``,
        ``tested``, ``setting`` (the row's name) and ``base``."""
        frames = []
        for task, d in self.tasks.items():
            f, _ = run_grid(d, self.plan(task, b), {lbl(b): {"kind": "full"}}, self.seeds, self.cfg, self.device,
                            store=self.store, profile=self.profile, patterns=[tuple(d.modality_names)],
                            corruption=corruption(b))
            frames.append(f.assign(task=task, band=lbl(b), tested=f["test"].str.split("@").str[1]))
        df = pd.concat(frames, ignore_index=True)
        return df.assign(setting=df.apply(self.row_name, axis=1), base=df["config.base"].map(BASE_NAME))

    def head_frame(self) -> pd.DataFrame:
        """Zero padding trained on clean data, tested at every band of :data:`HEAD_BANDS`."""
        out = []
        for task, d in self.tasks.items():
            f, _ = run_grid(d, [("zp_concat", {"backbone": "mlp"})], {"clean": {"kind": "full"}}, self.seeds, self.cfg,
                            self.device, store=self.store, profile=self.profile, patterns=[tuple(d.modality_names)],
                            corruption={"band": [0.0, 0.0], "axis": "time", "test": HEAD_BANDS})
            out.append(f.assign(task=task, band=f["test"].str.split("@").str[1]))
        return pd.concat(out)

    def band_tables(self, here: pd.DataFrame, band) -> list[tuple[str, pd.DataFrame]]:
        """Every metric per base and setting (controls included), trained and tested at ``band``."""
        out = []
        for task in self.tasks:
            sub = here[(here["task"] == task) & (here["tested"] == lbl(band))]
            t = pd.concat([report.table(sub, ["base", "setting"], [], m, scale=1 if m in RAW else 100,
                                        digits=3 if m in RAW else 1, show_n=False).rename(columns={m: NAMES[m]})
                           for m in METRICS[task]], axis=1)
            order = [(BASE_NAME[b_], s_) for b_, _ in self.bases[task]
                     for s_ in list(SETTING.values()) + list(MATCHED.values()) + [f"M3S, {n}" for n, _ in self.controls]]
            out.append((f"**{task}, trained and tested at {lbl(band)}** (n = {len(self.seeds)} seeds)",
                        t.reindex([o for o in order if o in t.index])))
        return out

    def sizes_table(self, dataset: str) -> pd.DataFrame:
        """Table 1: the splits' sizes, ours beside the paper's."""
        p1 = results.paper_table("m3s_table1")
        p1 = p1.assign(split=p1["setting"].str.replace("split=", "")).pivot_table(
            index="dataset", columns="split", values="value", aggfunc="first")[["Train", "Valid", "Test", "All"]]
        ours = pd.DataFrame({f"affect ({t})" if dataset == "affect" else dataset:
                             {"Train": len(d.splits["train"]), "Valid": len(d.splits["val"]), "Test": len(d.splits["test"]),
                              "All": len(d)} for t, d in self.tasks.items()}).T
        return pd.concat([ours.assign(source="ours"), p1.astype(int).assign(source="paper")]).set_index("source", append=True)


def paper_rows(name: str, base_model: str, setting_text: str) -> pd.DataFrame:
    p = results.paper_table(name)
    p = p[p["note"].str.contains(f"base_model={base_model}", regex=False) & (p["setting"] == setting_text)]
    return p.assign(metric=p["metric"].replace({"weighted_f1": "f1_weighted"}))


def side_by_side(df: pd.DataFrame, task: str, base: str, train_band: str, test_band: str, paper_name: str,
                 paper_base: str, metrics=None) -> pd.DataFrame | None:
    """ORIG, SPL-TRN and M3S trained at one band and tested at another, ours beside the paper's."""
    sub = df[(df["task"] == task) & (df["base"] == base) & (df["band"] == train_band) & (df["tested"] == test_band)
             & df["setting"].isin(SETTING.values())]
    if sub.empty:
        return None
    pp = paper_rows(paper_name, paper_base, f"input={train_band},test={test_band}")
    cols = {}
    for m in metrics or METRICS[task]:
        sc, dg = (1, 3) if m in RAW else (100, 1)
        cols[(NAMES[m], "ours")] = report.table(sub, "setting", [], m, scale=sc, digits=dg, show_n=False)[m]
        pm = pp[pp["metric"] == m].set_index("method")["value"]
        if len(pm):
            cols[(NAMES[m], f"paper ({paper_base})")] = (pm * (1 if m in RAW else 100)).round(dg)
    out = pd.DataFrame(cols).reindex(list(SETTING.values()))
    return out.astype(object).where(out.notna(), "–")


def table_metrics(task: str) -> list[str]:
    """The metrics Tables 2–4 print per task."""
    return METRICS[task] if task == "emotion" else ["mae", "corr", "acc7"]


def tables(df: pd.DataFrame, tasks) -> list[tuple[str, pd.DataFrame]]:
    """Tables 2, 3 and 4 (each as a title and a table) for the tasks that ran."""
    out = []
    for task, base, pb in PAPER_BASE:
        if task not in tasks:
            continue
        t = side_by_side(df, task, base, "40-60%", "40-60%", "m3s_table2", pb, table_metrics(task))
        if t is not None:
            out.append((f"**Table 2**, {task}, {base}: trained and tested at 40-60 %, beside the paper's {pb}", t))
    for task, base, pb in PAPER_BASE:
        if task not in tasks:
            continue
        blocks = [t.set_axis(pd.MultiIndex.from_product([[b], t.index]), axis=0)
                  for b in ["20-40%", "40-60%", "60-80%"]
                  if (t := side_by_side(df, task, base, b, b, "m3s_table3", pb, table_metrics(task))) is not None]
        if blocks:
            out.append((f"**Table 3**, {task}, {base} (ours) and the paper's {pb}",
                        pd.concat(blocks).rename_axis(["band", "setting"])))
        t4 = side_by_side(df, task, base, "40-60%", "60-80%", "m3s_table4", pb, table_metrics(task))
        if t4 is not None:
            out.append((f"**Table 4**, {task}, {base}: trained at 40-60 %, tested at 60-80 %", t4))
    return out


def table5(df: pd.DataFrame, tasks, wilcoxon: bool = False) -> pd.DataFrame | None:
    """Table 5: M3S minus ORIG per task, base and metric at 40-60 % (paired over seeds), with the
    t-test's p and, with ``wilcoxon``, the signed-rank test's."""
    rows = []
    for task in tasks:
        for base in df[df["task"] == task]["base"].unique():
            sub = df[(df["task"] == task) & (df["base"] == base) & (df["band"] == "40-60%") & (df["tested"] == "40-60%")]
            for m in METRICS[task]:
                a = report.per_seed(sub, m, {"setting": "ORIG + M3S"})
                b = report.per_seed(sub, m, {"setting": "ORIG"})
                if not (len(a) and len(b)):
                    continue
                pr = report.paired(a, b)
                sc = 1 if m in RAW else 100
                row = {"task": task, "base": base, "metric": NAMES[m],
                       "M3S - ORIG": f"{sc * pr.effect:+.3g} [{sc * pr.ci[0]:+.3g}, {sc * pr.ci[1]:+.3g}]",
                       "p (ours)": f"{pr.p:.3g}", "n": pr.n}
                if wilcoxon:
                    from scipy.stats import wilcoxon as signed_rank
                    d = np.array(list(pr.diffs.values()))
                    row["Wilcoxon p"] = f"{signed_rank(d).pvalue:.3g}" if np.any(d != 0) else "–"
                rows.append(row)
    return pd.DataFrame(rows).set_index(["task", "base", "metric"]) if rows else None


def paper_p_values() -> str:
    p5 = results.paper_table("m3s_table5")
    p5 = p5.assign(base=p5["note"].str.extract(r"base_model=([^;]+)")[0],
                   tested=p5["note"].str.extract(r"tested_metric=([^;]+)")[0])
    return "The paper's p-values: " + "; ".join(f"{r.base} ({r.dataset}) {r.tested}: {r.value:.3g}"
                                                 for r in p5.itertuples()) + "."


def claim_tag(task: str, base: str) -> str:
    """The (task, base) part of a claim id."""
    return f"{task}.{base}".lower().replace(" ", "_").replace("(", "").replace(")", "")


def claims(df: pd.DataFrame, tasks) -> list[report.Verdict]:
    """Claims (1)–(6) and the book's controls per task and base, on the first metric of the task
    (MAE: lower is better), each with its id."""
    V = []
    for task in tasks:
        met = METRICS[task][0]
        low = met in LOWER_IS_BETTER
        sc, d_dir = (1.0, "<") if low else (100.0, ">")
        for base in df[df["task"] == task]["base"].unique():
            sub = df[(df["task"] == task) & (df["base"] == base)]

            def S(s_, b="40-60%", t="40-60%"):
                return {"setting": s_, "band": b, "tested": t}
            tag, tid = f"{task}, {base}", claim_tag(task, base)
            V.append(report.compare(sub, S("ORIG + M3S"), S("ORIG"), met, direction=d_dir, scale=sc,
                                    setting=f"{tag}, 40-60%", kind="paper", claim=f"(1) M3S beats ORIG ({tag})", id=f"m3s.1.{tid}"))
            V.append(report.compare(sub, S("ORIG + SPL-TRN"), S("ORIG"), met, direction=d_dir, scale=sc,
                                    setting=f"{tag}, 40-60%", kind="paper", claim=f"(2) SPL-TRN beats ORIG ({tag})", id=f"m3s.2.{tid}"))
            V.append(report.compare(sub, S("ORIG + M3S"), S("ORIG + SPL-TRN"), met, direction=d_dir, scale=sc,
                                    setting=f"{tag}, 40-60%", kind="paper", claim=f"(3) M3S beats SPL-TRN ({tag})", id=f"m3s.3.{tid}"))

            def gain(b):
                return (report.per_seed(sub, met, S("ORIG + M3S", b, b))
                        - report.per_seed(sub, met, S("ORIG", b, b))) * sc * (-1 if low else 1)
            if {"20-40%", "40-60%", "60-80%"} <= set(sub["band"]):
                for other in ["20-40%", "60-80%"]:
                    V.append(report.compare_series(gain("40-60%"), gain(other), metric=f"gain in {NAMES[met]}",
                                                   setting=tag, a_label="40-60%", b_label=other,
                                                   kind="paper", claim=f"(4) the gain over ORIG is largest at 40-60% (vs {other}, {tag})",
                                                   id=f"m3s.4.vs_{other[:2]}.{tid}"))
                V.append(report.compare(sub, S("ORIG + M3S", "60-80%", "60-80%"), S("ORIG", "60-80%", "60-80%"), met,
                                        direction=d_dir, scale=sc, setting=f"{tag}, 60-80%",
                                        kind="paper", claim=f"(5) at 60-80% M3S still beats ORIG ({tag})", id=f"m3s.5.{tid}"))
            for b_ in ["ORIG", "ORIG + SPL-TRN"]:
                V.append(report.compare(sub, S("ORIG + M3S", "40-60%", "60-80%"), S(b_, "40-60%", "60-80%"), met,
                                        direction=d_dir, scale=sc, setting=f"{tag}, trained 40-60%, tested 60-80%",
                                        kind="paper", claim=f"(6) tested at 60-80%, M3S beats {b_.replace('ORIG + ', '')} ({tag})",
                                        id=f"m3s.6.{b_.replace('ORIG + ', '').lower()}.{tid}"))
            if (sub["setting"] == "M3S, alpha = 0").any():
                V.append(report.compare(sub, S("ORIG + M3S"), S("M3S, alpha = 0"), met, direction=d_dir, scale=sc,
                                        setting=f"{tag}, 40-60%", kind="book", claim=f"(9, this book) the meta step adds to its own "
                                                                        f"alpha = 0 control ({tag})",
                                        id=f"m3s.book.meta_step.{tid}"))
                V.append(report.compare(sub, S("M3S, spans on clean features"), S("ORIG + M3S"), met, direction=d_dir,
                                        scale=sc, setting=f"{tag}, 40-60%",
                                        kind="book", claim=f"(this book) spans on clean features beat spans on top of ORIG's ({tag})",
                                        id=f"m3s.book.clean_spans.{tid}"))
                if (sub["setting"] == "M3S, second order").any():              # the full profile's control
                    V.append(report.compare(sub, S("M3S, second order"), S("ORIG + M3S"), met, direction=d_dir,
                                            scale=sc, setting=f"{tag}, 40-60%",
                                            kind="book", claim=f"(this book) a second-order Eq. 2 beats the first order ({tag})",
                                            id=f"m3s.book.second_order.{tid}"))
                for m_, name_ in MATCHED.items():
                    V.append(report.compare(sub, S("ORIG + M3S"), S(name_), met, direction=d_dir, scale=sc,
                                            setting=f"{tag}, 40-60%, equal gradient evaluations",
                                            kind="book", claim=f"(this book) at equal compute, M3S beats {name_.split(',')[0]} ({tag})",
                                            id=f"m3s.book.equal_compute.{m_}.{tid}"))
    return V


def summary(V: list[report.Verdict], df: pd.DataFrame, tasks) -> str:
    counts = pd.Series([v.verdict for v in V]).value_counts().to_dict()
    by = report.by_id(V)

    def eff(claim_id):
        v = by.get(claim_id)
        return ("not run in this profile (the full profile runs it)" if v is None
                else f"{report.fmt_effect(v)}, n = {v.n}: **{report.verdict_text(v)}**")
    lines = [f"- Of {len(V)} tests, {', '.join(f'{n} {k}' for k, n in counts.items())}."]
    for task in tasks:
        for base in df[df["task"] == task]["base"].unique():
            tag, tid = f"{task}, {base}", claim_tag(task, base)
            lines.append(f"- {tag}, 40-60 %: M3S against ORIG {eff(f'm3s.1.{tid}')}; SPL-TRN against ORIG "
                         f"{eff(f'm3s.2.{tid}')}; M3S against SPL-TRN {eff(f'm3s.3.{tid}')}.")
            if f"m3s.book.equal_compute.m3s_orig.{tid}" in by:
                lines.append(f"  At equal compute (two gradient evaluations per update for every setting): M3S against ORIG "
                             f"{eff(f'm3s.book.equal_compute.m3s_orig.{tid}')}; against SPL-TRN "
                             f"{eff(f'm3s.book.equal_compute.m3s_spl_trn.{tid}')}; a second-order "
                             f"Eq. 2 against the first order {eff(f'm3s.book.second_order.{tid}')}.")
            if f"m3s.book.meta_step.{tid}" in by:
                lines.append(f"  The meta step against its own alpha = 0 control: "
                             f"{eff(f'm3s.book.meta_step.{tid}')}; "
                             f"spans drawn on clean features against on top of ORIG's: "
                             f"{eff(f'm3s.book.clean_spans.{tid}')}.")
    lines.append("- Effects are in points of the first metric of each task (accuracy %; MAE for the regression).")
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------------------
def head_figure(head: pd.DataFrame, tasks):
    """Zero padding trained on clean data, tested as more of every modality is zeroed."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        met = METRICS[task][0]
        s = report.summary(head[head["task"] == task], ["band"], met).set_index("band").reindex(list(HEAD_BANDS))
        sc = 1 if met in LOWER_IS_BETTER else 100
        ax.errorbar(range(len(s)), sc * s[f"{met}_mean"], yerr=sc * s[f"{met}_ci"], marker="o", capsize=3)
        ax.set_xticks(range(len(s)))
        ax.set_xticklabels(s.index)
        ax.set(title=f"{task}: trained on clean data", xlabel="zeroed in every modality at test",
               ylabel=NAMES[met] + ("" if met in LOWER_IS_BETTER else " (%)"))
    fig.tight_layout()
    return fig


def spans_figure(task_data, band, seed: int):
    """The first training sample's zeroed span in each modality."""
    import matplotlib.pyplot as plt
    from ..experiment import corrupted
    fit0, _ = corrupted(task_data, corruption(band), seed)
    i0 = int(task_data.splits["train"][0])
    fig, axes = plt.subplots(1, len(task_data.modality_names), figsize=(11, 2.6))
    for ax, m in zip(axes, task_data.modality_names):
        x = fit0.modalities[m][i0]
        img = (x == 0).float().reshape(-1, 1).T if x.dim() == 1 else (x == 0).all(-1).float()[None]
        ax.imshow(img.numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1.3, interpolation="nearest")
        ax.set(title=f"{m}: {100 * float(img.mean()):.0f} % zeroed", yticks=[],
               xlabel="feature" if x.dim() == 1 else "frame")
        ax.grid(False)
    fig.tight_layout()
    return fig


def validation_curves(df: pd.DataFrame, task: str, base: str, metric: str, b: str = "40-60%") -> dict[str, pd.DataFrame]:
    """Per setting, the validation ``metric`` per epoch (rows) and seed (columns), from the records."""
    sub = df[(df["task"] == task) & (df["base"] == base) & (df["band"] == b) & df["setting"].isin(SETTING.values())]
    sub = sub.drop_duplicates(["setting", "seed"])
    return {s_: pd.concat([pd.Series([h["val_metrics"][metric] for h in results.read_record(p)["history"]])
                           for p in g["path"]], axis=1) for s_, g in sub.groupby("setting")}


def curves_figure(df: pd.DataFrame, tasks):
    """Figure 2: validation curves (mean ± SD over seeds) of ORIG, SPL-TRN and M3S, two panels a row;
    None without those tasks."""
    import matplotlib.pyplot as plt
    panels = [p for p in CURVES if p[0] in tasks]
    if not panels:
        return None
    rows = -(-len(panels) // 2)
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (task, base, met) in zip(axes.flat, panels):
        sc = 1 if met in RAW else 100
        for s_, c in validation_curves(df, task, base, met).items():
            mean, sd = c.mean(axis=1) * sc, c.std(axis=1) * sc
            ax.plot(np.arange(1, len(mean) + 1), mean, label=s_, lw=1.5)
            ax.fill_between(np.arange(1, len(mean) + 1), mean - sd, mean + sd, alpha=0.15)
        ax.set(title=f"{base}: validation {NAMES[met]}", xlabel="epoch", ylabel=NAMES[met] + ("" if met in RAW else " (%)"))
    axes.flat[0].legend(fontsize=9)
    fig.tight_layout()
    return fig
