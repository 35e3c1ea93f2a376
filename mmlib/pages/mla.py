"""Chapter 05, MLA (Zhang et al., CVPR 2024): alternating unimodal adaptation with a shared head,
head gradient modification (HGM) and test-time dynamic fusion (DF). The plan (Table 1's fusion
baselines, the ablations and the released code's choices on complete data; Table 2's CPM masks;
Figure 2's isolation runs on ``avdigits``), Tables 1–3 beside the paper's, laziness against the
Bayes oracle on ``gaussian``, the modality gap, the claims and the summary, over the records."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .. import masks, report, results
from ..experiment import run_grid

CHAPTER = "05_mla"
NAMES = {"sum_linear": "Sum", "concat_linear": "Concat", "late_fusion": "Late Fusion", "film": "FiLM",
         "bigated": "BiGated", "ogm_ge": "OGM-GE", "qmf": "QMF", "mla": "MLA", "cra": "CRA",
         "mmin_lite": "MMIN", "zp_concat": "Zero padding"}
ORDER = ["Sum", "Concat", "Late Fusion", "FiLM", "BiGated", "OGM-GE", "QMF", "MLA"]
MLA_ROW = "MLA"
ORDER3 = ["HGM off, DF off", "HGM off, DF on", "HGM on, DF off", "HGM on, DF on"]
# FiLM's and BiGated's conditioning modality: the dominant one (audio on avdigits, lexical on affect: the dataset's
# last modality, the default; m0 on gaussian)
COND = {"gaussian": {"condition": "m0"}}
# the released code's differences, one at a time (and together: mla_code)
CODE_PARTS = {"df=batch": "DF over the batch", "alternation=within_batch": "alternation inside each batch",
              "hgm=code": "HGM as coded (if it fired)", "project=gradient": "Eq. 4 literally (gradient projected, then Adam)"}
COMPLETE = {"complete": {"kind": "full"}}
ISO_RATES = [0.5, 0.9]
PAPER_OF = {"avdigits": ("CREMA-D", {"audio": "Audio", "image": "Video", "Multi": "Multi"}),
            "affect": ("IEMOCAP", {"acoustic": "Audio", "visual": "Image", "lexical": "Text", "Multi": "Multi"}),
            # the paper's own datasets, read from their layouts (the real-data page)
            "crema_d": ("CREMA-D", {"audio": "Audio", "visual": "Video", "Multi": "Multi"}),
            "kinetics_sounds": ("KS", {"audio": "Audio", "visual": "Video", "Multi": "Multi"}),
            "food101": ("Food-101", {"image": "Image", "text": "Text", "Multi": "Multi"}),
            "mvsa": ("MVSA", {"image": "Image", "text": "Text", "Multi": "Multi"}),
            "iemocap": ("IEMOCAP", {"acoustic": "Audio", "visual": "Image", "lexical": "Text", "Multi": "Multi"})}
PAIRS = {"avdigits": "image|audio", "affect": "acoustic|lexical", "gaussian": "m0|m1"}


def slug(x) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(x).lower()).strip("_")


def check(missing_rate: float, isolation) -> None:
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate}")
    if isolation not in (None, "audio", "image"):
        raise ValueError(f"isolation must be None, 'audio' or 'image' (avdigits' modalities), got {isolation!r}")


def ablation_cell(variant: str) -> str:
    return f"HGM {'off' if 'hgm=off' in variant else 'on'}, DF {'off' if 'df=off' in variant else 'on'}"


class Page:
    """The chapter's plan and runs: ``dataset`` (with ``data_root``, a real one), one backbone for
    every method."""

    def __init__(self, dataset: str, data_root, data_options, profile: str, seeds, cfg, device, store, backbone: str):
        self.dataset, self.data_root, self.data_options = dataset, data_root, data_options
        self.profile, self.seeds, self.cfg, self.device, self.store = profile, list(seeds), cfg, device, store
        self.bb = {"backbone": backbone}
        self.backbone = backbone

    def load(self, name: str):
        from ..data import load_dataset
        if name == "affect":
            return load_dataset("affect", self.data_root if self.dataset == "affect" else None, task="emotion")
        if name == "gaussian":
            return load_dataset("gaussian", preset="dominant")      # one strong modality, two weak: laziness
        if name == self.dataset and self.data_root is not None:
            return load_dataset(name, self.data_root, **(self.data_options or {})).need_modalities(
                2, "this chapter fuses and alternates between modalities")
        return load_dataset(name)

    def datasets(self) -> list[str]:
        """The page's datasets: avdigits, affect and gaussian by default, else the one named."""
        return ["avdigits", "affect", "gaussian"] if self.dataset == "affect" else [self.dataset]

    def table1_methods(self, name: str) -> list:
        bb, c = self.bb, COND.get(name, {})
        return [("sum_linear", bb), ("concat_linear", bb), ("late_fusion", bb), ("film", {**bb, **c}),
                ("bigated", {**bb, **c}), ("ogm_ge", bb), ("qmf", bb), ("mla", bb)]

    def extra_methods(self) -> list:
        """The ablations (HGM, DF off) and the released code's choices (all, and one at a time)."""
        bb = self.bb
        return [("mla", {**bb, "hgm": "off"}), ("mla", {**bb, "df": "off"}), ("mla", {**bb, "hgm": "off", "df": "off"}),
                ("mla_code", bb)] + [("mla", {**bb, k.split("=")[0]: k.split("=")[1]}) for k in CODE_PARTS]

    def table2_methods(self) -> list:
        bb = self.bb
        return [("late_fusion", bb), ("qmf", bb), ("cra", {}), ("mmin_lite", {}), ("zp_concat", bb), ("mla", bb)]

    def _grid(self, d, methods, settings, **kw):
        return run_grid(d, methods, settings, self.seeds, self.cfg, self.device, store=self.store, profile=self.profile, **kw)

    def complete_runs(self, name: str, keep=()):
        """Table 1's methods, the ablations and the code's choices on complete data: ``(frame, kept, data)``."""
        d = self.load(name)
        f1, kept = self._grid(d, self.table1_methods(name), COMPLETE, keep=keep)
        f2, _ = self._grid(d, self.extra_methods(), COMPLETE)
        return pd.concat([f1, f2]).assign(dataset=name), kept, d

    def missing_runs(self, rate: float) -> pd.DataFrame:
        """Table 2: the CPM mask at ``rate`` on the training, validation and test splits."""
        f, _ = self._grid(self.load(self.dataset), self.table2_methods(), {f"{rate:.1f}": {"kind": "cpm", "rate": rate}},
                          validation="masked", test="masked")
        return f.assign(dataset=self.dataset, rate=rate)

    def isolation_runs(self, gone: str) -> pd.DataFrame:
        """Figure 2: MLA and QMF on avdigits with ``gone`` missing in 0, 50 and 90 % of training."""
        d, ms = self.load("avdigits"), [("mla", self.bb), ("qmf", self.bb)]
        f0, _ = self._grid(d, ms, COMPLETE)
        f, _ = self._grid(d, ms, {f"{r}": {"kind": "independent", "rates": {gone: r}} for r in ISO_RATES},
                          validation="masked")
        return pd.concat([f0.assign(rate=0.0), f.assign(rate=f["setting"].astype(float))]).assign(gone=gone)

    def grid_run(self, missing_rate: float, isolation) -> pd.DataFrame:
        """A grid run's one setting: the isolation runs, Table 2 at ``missing_rate``, or complete data."""
        if isolation is not None:
            return self.isolation_runs(isolation)
        if missing_rate > 0:
            return self.missing_runs(missing_rate)
        return self.complete_runs(self.dataset)[0]

    def gather(self):
        """Every dataset's complete-data runs, with ``row`` (the display name; MLA's variants named)
        and ``col`` (a test pattern, or "Multi" for every modality): ``(t1, kept, data)``."""
        frames, kept, data = [], {}, {}
        for name in self.datasets():
            keep = [("concat_linear", "complete"), ("mla", "complete")] if name != "gaussian" else []
            f, kept[name], data[name] = self.complete_runs(name, keep)
            frames.append(f)
        t1 = pd.concat(frames, ignore_index=True)
        t1["row"] = [NAMES.get(m, m) if not v or m != "mla" or v == f"backbone={self.backbone}" else f"MLA ({v})"
                     for m, v in zip(t1["method"], t1["variant"])]
        t1["col"] = [("Multi" if t.count("+") == len(data[n].modality_names) - 1 else t)
                     for t, n in zip(t1["test"], t1["dataset"])]
        return t1, kept, data


def oracle_of(d, cols) -> dict[str, float]:
    """The Bayes oracle's test accuracy (%) per column (a modality, or "Multi": every one)."""
    from ..data.gaussian import oracle_accuracy
    n = len(d.splits["test"])
    return {c: 100 * oracle_accuracy(d, "test", masks.pattern(n, d.modality_names,
                                                              tuple(d.modality_names) if c == "Multi" else (c,)))
            for c in cols}


def table1(t1: pd.DataFrame, name: str, d) -> pd.DataFrame:
    """Table 1: each fusion's accuracy per modality and fused (Multi), with n and the paper's."""
    sub = t1[(t1["dataset"] == name) & t1["row"].isin(ORDER)]
    cols = d.modality_names + ["Multi"]
    tab = pd.DataFrame({c: {r: report.fmt_mean_ci(g["accuracy"], show_n=False)
                            for r, g in sub[sub["col"] == c].drop_duplicates(["row", "seed"]).groupby("row")}
                        for c in cols}).reindex(ORDER)[cols]
    n = sub.drop_duplicates(["row", "seed"]).groupby("row").size()
    tab["n"] = [str(x) for x in n.reindex(ORDER).fillna(0).astype(int).values]
    if name in PAPER_OF:
        pname, cmap = PAPER_OF[name]
        p = results.paper_table("mla_table1")
        p = p[p["dataset"] == pname]
        for c in cols:
            vals = p[p["test_modalities"] == cmap[c]].set_index("method")["value"]
            tab[f"{c} (paper, {pname} {cmap[c]})"] = vals.reindex(ORDER).map(lambda v: f"{v:.2f}" if v == v else "–").values
    if name == "gaussian":
        oracle = oracle_of(d, cols)
        tab.loc["Bayes oracle"] = [f"{oracle[c]:.1f}" for c in cols] + [""]
    return tab


def laziness(t1: pd.DataFrame, d) -> tuple[pd.DataFrame, dict]:
    """On ``gaussian``: each method's points below the oracle per modality and seed (``lazy``), and
    the oracle's accuracy per modality (a fraction)."""
    from ..data.gaussian import oracle_accuracy
    uni = {m: oracle_accuracy(d, "test", masks.pattern(len(d.splits["test"]), d.modality_names, (m,)))
           for m in d.modality_names}
    g = t1[(t1["dataset"] == "gaussian") & t1["row"].isin(ORDER) & t1["test"].isin(d.modality_names)]
    return g.drop_duplicates(["row", "test", "seed"]).assign(lazy=lambda x: 100 * (x["test"].map(uni) - x["accuracy"])), uni


def laziness_table(lazy: pd.DataFrame, uni: dict) -> pd.DataFrame:
    tab = pd.DataFrame({m: {r: report.fmt_mean_ci(gg["lazy"], scale=1.0, show_n=False)
                            for r, gg in lazy[lazy["test"] == m].groupby("row")} for m in uni}).reindex(ORDER)
    tab.columns = [f"{m} (oracle {100 * uni[m]:.1f})" for m in uni]
    return tab


def ablations(t1: pd.DataFrame) -> pd.DataFrame:
    ab = t1[(t1["method"] == "mla") & t1["variant"].isin(["", "hgm=off", "df=off", "hgm=off, df=off"])]
    return ab.assign(cell=ab["variant"].map(ablation_cell))


def table3(ab: pd.DataFrame, name: str, d) -> pd.DataFrame:
    """Table 3: HGM and DF on and off, per modality and fused, beside the paper's."""
    sub = ab[ab["dataset"] == name]
    cols = d.modality_names + ["Multi"]
    tab = pd.DataFrame({c: {r: report.fmt_mean_ci(g["accuracy"], show_n=False)
                            for r, g in sub[sub["col"] == c].drop_duplicates(["cell", "seed"]).groupby("cell")}
                        for c in cols}).reindex(ORDER3)
    if name in PAPER_OF:
        pname, cmap = PAPER_OF[name]
        p = results.paper_table("mla_table3")
        p = p[p["dataset"] == pname].assign(cell=lambda x: x["note"].str.extract(r"HGM=(\w+),DF=(\w+)").apply(
            lambda r: f"HGM {r[0]}, DF {r[1]}", axis=1))
        for c in cols:
            vals = p[p["test_modalities"] == cmap[c]].drop_duplicates("cell").set_index("cell")["value"]
            tab[f"{c} (paper, {pname} {cmap[c]})"] = vals.reindex(ORDER3).values
    return tab


def code_table(t1: pd.DataFrame, datasets) -> pd.DataFrame:
    """The released code's choices one at a time and together: Multi accuracy and the paired
    difference to the paper's reading."""
    rows = {"MLA (paper's reading)": ("mla", ""), **{f"only: {txt}": ("mla", k) for k, txt in CODE_PARTS.items()},
            "all at once (mla_code)": ("mla_code", "")}
    out = {}
    for name in datasets:
        sub = t1[(t1["dataset"] == name) & (t1["col"] == "Multi")].drop_duplicates(["method", "variant", "seed"])
        ref = sub[(sub["method"] == "mla") & (sub["variant"] == "")].set_index("seed")["accuracy"] * 100
        for r, (meth, var) in rows.items():
            g = sub[(sub["method"] == meth) & (sub["variant"] == var)].set_index("seed")["accuracy"] * 100
            cell = report.fmt_mean_ci(g, scale=1.0, show_n=False)
            if var or meth != "mla":
                pr = report.paired(g, ref)
                cell += f"  (Δ {pr.effect:+.1f} [{pr.ci[0]:+.1f}, {pr.ci[1]:+.1f}])"
            out.setdefault(name, {})[r] = cell
    return pd.DataFrame(out).rename_axis("Multi accuracy (%)")


def cpm_table(d, rates, seed: int) -> pd.DataFrame:
    """What the CPM masks leave at each rate, on the training and test splits."""
    from ..experiment import TEST_SEED_OFFSET

    def rows(split, offset):
        out = {}
        for e in rates:
            v = masks.describe(masks.from_spec({"kind": "cpm", "rate": e}, len(d.splits[split]), d.modality_names,
                                               seed + offset), d.modality_names)
            one = sum(c for k, c in v["combinations"].items() if "+" not in k and k != "(none)")
            out[f"{100 * e:.0f}%"] = {f"{split}: overall missing": f"{100 * v['overall_missing_rate']:.1f} %",
                                      f"{split}: rows with one modality": f"{100 * one / v['n']:.0f} %",
                                      f"{split}: rows with none": v["empty"]}
        return pd.DataFrame(out)
    return pd.concat([rows("train", 0), rows("test", TEST_SEED_OFFSET)]).rename_axis(f"CPM masks, seed {seed}")


def masked_rows(t2: pd.DataFrame) -> pd.DataFrame:
    """Table 2's runs scored on the masked test split, with their display ``row``."""
    return t2[t2["test"] == "masked"].assign(row=lambda x: x["method"].map(NAMES))


def table2(m2: pd.DataFrame, rates) -> pd.DataFrame:
    """Table 2: each method's accuracy per rate, ours and the paper's rows interleaved."""
    ours = pd.DataFrame({f"{100 * e:.0f}%": {r: report.fmt_mean_ci(g["accuracy"], show_n=False)
                                             for r, g in m2[m2["rate"] == e].groupby("row")} for e in rates})
    p2 = results.paper_table("mla_table2")
    p2 = p2.assign(rate=p2["setting"].str.extract(r"=(\d+)%")[0] + "%")
    paper = p2.pivot_table(index="method", columns="rate", values="value", aggfunc="first")
    keep = [c for c in ours.columns if c in paper.columns]
    rows = []
    for r in ours.index:
        rows.append(pd.Series({c: ours.loc[r, c] for c in ours.columns}, name=f"{r}, ours"))
        if r in paper.index:
            rows.append(pd.Series({c: f"{paper.loc[r, c]:.2f}" for c in keep}, name=f"{r}, paper"))
    for r in paper.index:
        if r not in ours.index:
            rows.append(pd.Series({c: f"{paper.loc[r, c]:.2f}" for c in keep}, name=f"{r}, paper only"))
    return pd.DataFrame(rows)


def isolation_frame(iso: pd.DataFrame) -> pd.DataFrame:
    """Figure 2's runs tested on the modality that stayed."""
    iso = iso.assign(other=iso["gone"].map({"audio": "image", "image": "audio"}))
    return iso[iso["test"] == iso["other"]].assign(row=lambda x: x["method"].map(NAMES))


def pairs_for(datasets, data) -> dict[str, str]:
    """The modality pair whose gap each dataset reports (a real dataset: its first two)."""
    return {**PAIRS, **{n: PAIRS.get(n, "|".join(data[n].modality_names[:2])) for n in datasets}}


def gap_table(t1: pd.DataFrame, datasets, pairs: dict) -> pd.DataFrame:
    """The modality gap Δ per method and dataset (from the records)."""
    rows = {}
    for name in datasets:
        col = f"gap.{pairs[name]}"
        sub = t1[(t1["dataset"] == name) & t1["row"].isin(ORDER)].drop_duplicates(["row", "seed"])
        if col in sub:
            rows[f"{name} ({pairs[name].replace('|', ' vs ')})"] = {
                r: report.fmt_mean_ci(g[col].dropna(), scale=1.0, digits=3, show_n=False) for r, g in sub.groupby("row")}
    return pd.DataFrame(rows).reindex(ORDER).rename_axis("modality gap Δ")


def weak_modality(t1: pd.DataFrame, name: str, d) -> str:
    """The modality late fusion reads worst on a dataset."""
    lf = t1[(t1["dataset"] == name) & (t1["row"] == "Late Fusion") & t1["col"].isin(d.modality_names)]
    return lf.groupby("col")["accuracy"].mean().idxmin()


# -- claims and summary -------------------------------------------------------------------------------
def claims(t1: pd.DataFrame, data: dict, dataset: str, pairs: dict, lazy=None, uni=None, m2=None, rates=(),
           iso=None) -> list[report.Verdict]:
    """Claims (1)–(10), each with its id."""
    datasets = list(data)
    V = []

    def S(name, row, col):
        return {"dataset": name, "row": row, "col": col}
    weak = {name: weak_modality(t1, name, data[name]) for name in datasets}
    for name in datasets:
        for other in [r for r in ORDER if r != MLA_ROW]:
            also = "; also (4): late fusion is below MLA" if other == "Late Fusion" else ""    # (4) is this comparison
            V.append(report.compare(t1, S(name, MLA_ROW, "Multi"), S(name, other, "Multi"), "accuracy",
                                    kind="paper", claim=f"(1) MLA has the best Multi accuracy ({name}, vs {other}){also}", setting=name,
                                    id=f"mla.1{'+4' if also else ''}.{name}.{slug(other)}"))
    for name in datasets:
        for other in ["Sum", "Concat", "FiLM", "BiGated", "OGM-GE", "QMF"]:
            V.append(report.compare(t1, S(name, MLA_ROW, weak[name]), S(name, other, weak[name]), "accuracy",
                                    kind="paper", claim=f"(2) MLA raises the weak modality ({name}, {weak[name]}, vs {other})",
                                    setting=name, id=f"mla.2.{name}.{slug(other)}"))
    if lazy is not None:
        w = min(uni, key=uni.get)
        per = {r: g.set_index("seed")["lazy"] for r, g in lazy[lazy["test"] == w].groupby("row")}
        for joint in ["Sum", "Concat", "FiLM", "BiGated", "OGM-GE"]:
            # (against MLA the oracle cancels: that difference is claim (2)'s)
            V.append(report.compare_series(per[joint], per["Late Fusion"], metric="laziness (points)",
                                           kind="paper", claim=f"(3) {joint} is lazier than Late Fusion on the weak modality (gaussian, {w})",
                                           setting="gaussian", a_label=joint, b_label="Late Fusion", id=f"mla.3.{slug(joint)}"))
    if m2 is not None:
        for e in rates:
            sub = m2[m2["rate"] == e]
            # the runner-up is chosen on validation (each fit's selected validation score), then tested on test
            best = sub.drop_duplicates(["row", "seed"]).groupby("row")["val_score"].mean().drop(MLA_ROW).idxmax()
            V.append(report.compare(sub, {"row": MLA_ROW}, {"row": best}, "accuracy",
                                    kind="paper", claim=f"(5) MLA is best at η = {100 * e:.0f}% (vs the runner-up on validation, {best})",
                                    setting=f"η={e}", id=f"mla.5.rate{100 * e:.0f}"))
        for r, g in m2.groupby("row"):
            g = g.drop_duplicates(["rate", "seed"])
            slope = g.groupby("seed").apply(lambda x: 100 * np.polyfit(x["rate"], x["accuracy"], 1)[0] / 10
                                            if x["rate"].nunique() > 1 else np.nan).dropna()
            V.append(report.compare_series(slope, pd.Series(0.0, index=slope.index), direction="<",
                                           metric="points per 10 % of η", kind="paper", claim=f"(6) {r} degrades as η grows",
                                           setting=dataset, a_label=r, b_label="no slope", id=f"mla.6.{slug(r)}"))
    ab = ablations(t1)
    for name in datasets:
        def A(cell, col):
            return {"dataset": name, "cell": cell, "col": col}
        V.append(report.compare(ab, A("HGM on, DF on", weak[name]), A("HGM off, DF on", weak[name]), "accuracy",
                                kind="paper", claim=f"(7) HGM helps the weak modality ({name}, {weak[name]})", setting=name,
                                id=f"mla.7.hgm_weak.{name}"))
        V.append(report.compare(ab, A("HGM on, DF on", "Multi"), A("HGM off, DF on", "Multi"), "accuracy",
                                kind="paper", claim=f"(7) HGM helps Multi ({name})", setting=name, id=f"mla.7.hgm_multi.{name}"))
        V.append(report.compare(ab, A("HGM on, DF on", "Multi"), A("HGM on, DF off", "Multi"), "accuracy",
                                kind="paper", claim=f"(7) DF helps Multi ({name})", setting=name, id=f"mla.7.df_multi.{name}"))
    if iso is not None:
        for gone in ["audio", "image"]:
            sub = iso[iso["gone"] == gone].drop_duplicates(["row", "rate", "seed"])
            acc = {(r, q): g.set_index("seed")["accuracy"] * 100 for (r, q), g in sub.groupby(["row", "rate"])}
            drop = {r: acc[(r, 0.0)] - acc[(r, 0.9)] for r in ["QMF", MLA_ROW]}
            V.append(report.compare_series(drop["QMF"], pd.Series(0.0, index=drop["QMF"].index), metric="drop (points)",
                                           kind="paper", claim=f"(8) QMF's other modality falls when {gone} is 90 % missing",
                                           setting=f"avdigits, {gone} 90 % missing", a_label="QMF drop", b_label="no drop",
                                           id=f"mla.8.qmf_falls.{gone}"))
            V.append(report.compare_series(drop["QMF"], drop[MLA_ROW], metric="drop (points)",
                                           kind="paper", claim=f"(8) MLA's other modality falls less than QMF's ({gone} 90 % missing)",
                                           setting=f"avdigits, {gone} 90 % missing", a_label="QMF drop", b_label="MLA drop",
                                           id=f"mla.8.mla_falls_less.{gone}"))
    for name in datasets:
        V.append(report.compare(t1, {"dataset": name, "row": MLA_ROW, "col": "Multi"},
                                {"dataset": name, "row": "Concat", "col": "Multi"}, f"gap.{pairs[name]}", scale=1.0,
                                kind="paper", claim=f"(9) MLA's modality gap is larger than Concat's ({name}, {pairs[name]})",
                                setting=name, id=f"mla.9.gap.{name}"))
    both = pd.concat([ab.assign(row=ab["cell"]), t1[t1["row"] == "Late Fusion"]])
    for name in datasets:
        V.append(report.equivalent(both, {"dataset": name, "row": "HGM off, DF off", "col": "Multi"},
                                   {"dataset": name, "row": "Late Fusion", "col": "Multi"}, "accuracy", margin=1.0,
                                   kind="paper", claim=f"(10) HGM off, DF off equals late fusion within ±1 point ({name})", setting=name,
                                   id=f"mla.10.ablation_equals_late.{name}"))
        V.append(report.compare(t1, {"dataset": name, "row": MLA_ROW, "col": "Multi"},
                                {"dataset": name, "method": "mla_code", "col": "Multi"}, "accuracy",
                                kind="code", claim=f"(10) the paper's MLA beats the released code's ({name})", setting=name,
                                id=f"mla.10.beats_code.{name}"))
        for k, txt in CODE_PARTS.items():
            V.append(report.compare(t1, {"dataset": name, "row": MLA_ROW, "col": "Multi"},
                                    {"dataset": name, "method": "mla", "variant": k, "col": "Multi"}, "accuracy",
                                    kind="code", claim=f"(10) the paper's MLA beats {txt} alone ({name})", setting=name,
                                    id=f"mla.10.beats_part.{slug(k)}.{name}"))
    return V


def group(V, k: str) -> list[report.Verdict]:
    """Claims (k) by their ids, ``mla.<k>[+<k'>].…``."""
    return [v for v in V if k in v.id.split(".")[1].split("+")]


def tallies(V) -> str:
    """The verdicts per claim number."""
    counts = pd.Series([v.verdict for v in V]).value_counts().to_dict()
    lines = [f"- Of {len(V)} tests: {', '.join(f'{n} {k}' for k, n in counts.items())}."]
    for k, what in [("1", "MLA best on Multi"), ("2", "MLA raises the weak modality"),
                    ("3", "joint fusions lazier than late fusion (against MLA: (2))"),
                    ("4", "late fusion below MLA (tested with (1))"), ("5", "MLA best at every η"),
                    ("6", "every method degrades with η"), ("7", "HGM and DF help"),
                    ("8", "MLA isolates modalities, QMF does not"), ("9", "MLA's gap larger"),
                    ("10", "ablation = late fusion; paper vs released code")]:
        vs = group(V, k)
        c = pd.Series([v.verdict for v in vs]).value_counts().to_dict()
        lines.append(f"- ({k}) {what}: {', '.join(f'{n} {x}' for x, n in c.items()) if vs else 'not run'}.")
    return "\n".join(lines)


def summary(V, first_dataset: str, lazy=None) -> str:
    """"What we learned", every number read from the verdicts (and the laziness frame)."""
    by = report.by_id(V)

    def eff(claim_id):
        v = by.get(claim_id)
        return "not run" if v is None else f"{report.fmt_effect(v)} points, n = {v.n} ({report.verdict_text(v)})"

    def tally(k):
        vs = group(V, k)
        return sum(v.verdict == "reproduced" for v in vs), sum(v.verdict == "contradicted" for v in vs), len(vs)
    r1, c1, n1 = tally("1")
    r2, c2, n2 = tally("2")
    lines = [f"- **The weak modality.** MLA's weak-modality accuracy is above a jointly trained fusion's in {r2} of "
             f"{n2} paired tests ({c2} the other way); its Multi accuracy is above a baseline's in {r1} of {n1} "
             f"({c1} the other way)."]
    if lazy is not None:
        worst = lazy.groupby("row")["lazy"].mean()
        fair = ", ".join(f"{r} {worst[r]:.1f}" for r in ["Late Fusion", MLA_ROW] if r in worst)
        lz = worst.drop([r for r in ["Late Fusion", MLA_ROW] if r in worst]).sort_values(ascending=False)
        lines.append(f"- **Laziness against the oracle** (`gaussian`, points below the Bayes ceiling, mean over "
                     f"modalities and seeds): {fair}; the laziest joint fusions: "
                     + ", ".join(f"{r} {x:.1f}" for r, x in lz.head(3).items()) + ".")
    r7, c7, n7 = tally("7")
    lines.append(f"- **HGM and DF**: {r7} of {n7} ablation tests reproduce a gain, {c7} show a loss, the rest are "
                 f"inconclusive (DF on Multi, avdigits: {eff('mla.7.df_multi.avdigits')}).")
    parts = {k: eff(f"mla.10.beats_part.{slug(k)}.{first_dataset}") for k in CODE_PARTS}
    lines.append(f"- **The released code against the paper's reading** ({first_dataset}, the paper's MLA minus the "
                 f"variant, Multi): the released code as a whole {eff(f'mla.10.beats_code.{first_dataset}')}; "
                 + "; ".join(f"{CODE_PARTS[k]} alone {v}" for k, v in parts.items()) + ".")
    slopes = group(V, "6")
    r5, c5, n5 = tally("5")
    if slopes:
        lines.append(f"- **Missing modalities (Table 2)**: every method loses between "     # (the effect: minus the slope)
                     f"{min(v.effect for v in slopes):+.1f} and {max(v.effect for v in slopes):+.1f} points per 10 % of η; "
                     f"MLA is separated from the runner-up at {r5} of {n5} rates ({c5} below it).")
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------------------
def rates_figure(m2: pd.DataFrame, dataset: str):
    """Table 2 as curves: accuracy as η grows, MLA's line stands out."""
    import matplotlib.pyplot as plt
    from .. import plots
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    plots.curves(report.summary(m2.assign(rate=100 * m2["rate"]), ["row", "rate"], "accuracy"), "rate", "accuracy",
                 "row", ax=ax)
    for line in ax.containers:
        line.lines[0].set_linewidth(2.4 if line.get_label() == MLA_ROW else 1.2)
    ax.set(xlabel="missing rate η (%)", ylabel="test accuracy (%)", title=f"{dataset}: accuracy as η grows")
    ax.legend(fontsize=8, ncol=2)
    return fig


def isolation_figure(iso: pd.DataFrame):
    """Figure 2: the other modality's test accuracy as one goes missing in training, MLA and QMF."""
    import matplotlib.pyplot as plt
    from .. import plots
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, gone in zip(axes, ["audio", "image"]):
        g = iso[iso["gone"] == gone]
        plots.curves(report.summary(g.assign(rate=100 * g["rate"]), ["row", "rate"], "accuracy"), "rate",
                     "accuracy", "row", ax=ax)                                     # mean ± 95 % t half-width
        other = "image" if gone == "audio" else "audio"
        ax.set(xlabel=f"{gone} missing in training (%)", ylabel=f"{other}-only test accuracy (%)",
               title=f"({'a' if gone == 'audio' else 'b'}) {gone} missing")
        ax.legend()
    return fig


def gap_figure(kept: dict, data: dict, pairs: dict):
    """Figure 3: two modalities' normalised embeddings on their first two principal components, Concat
    and MLA, per dataset with kept models; None without them."""
    import matplotlib.pyplot as plt
    shown = [n for n in data if kept.get(n)]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 2, figsize=(9, 3.6 * len(shown)), squeeze=False)
    for row, name in zip(axes, shown):
        a, b = pairs[name].split("|")
        for ax, key in zip(row, ["concat_linear", "mla"]):
            m = kept[name][(key, "complete")]
            ha, hb = m.embed_modality(data[name], "test", a), m.embed_modality(data[name], "test", b)
            ha, hb = (h / h.norm(dim=1, keepdim=True).clamp(min=1e-12) for h in (ha, hb))
            both = np.concatenate([ha.numpy(), hb.numpy()])
            c = both - both.mean(0)
            _, _, vt = np.linalg.svd(c, full_matrices=False)
            z = c @ vt[:2].T
            ax.scatter(*z[:len(ha)].T, s=4, alpha=0.5, label=a)
            ax.scatter(*z[len(ha):].T, s=4, alpha=0.5, label=b)
            gap = float(np.linalg.norm(ha.numpy().mean(0) - hb.numpy().mean(0)))
            ax.set(title=f"{name}, {NAMES[key]}: Δ = {gap:.2f}", xlabel="PC 1", ylabel="PC 2")
            ax.legend(markerscale=3)
    fig.tight_layout()
    return fig
