"""Chapter 03, RedCore (Sun et al., AAAI 2024): three modalities (A, V, L), each missing at its own
rate. The plan (which methods run at which triple of rates), Tables 1 and 2 beside the paper's,
the shared-rate and permutation figures, the ``gaussian`` check against the Bayes oracle, the
variants of the authors' code, the claims and the summary, over the records."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import masks, metrics, report, results
from ..experiment import run_grid

CHAPTER = "03_redcore"
ROLE = {"acoustic": "A", "audio": "A", "A": "A", "visual": "V", "vision": "V", "V": "V",
        "lexical": "L", "text": "L", "L": "L"}
T1_SETTINGS = [(0.8, 0.5, 0.5), (0.5, 0.8, 0.5), (0.5, 0.5, 0.8), (0.2, 0.5, 0.8), (0.5, 0.2, 0.8), (0.8, 0.5, 0.2)]
S, M_, L_ = 0.2, 0.5, 0.8
PERMS = {"(s,m,l)": (S, M_, L_), "(m,s,l)": (M_, S, L_), "(l,m,s)": (L_, M_, S),
         "(l,s,m)": (L_, S, M_), "(s,l,m)": (S, L_, M_), "(m,l,s)": (M_, L_, S)}
BASE = ["zp_concat", "late_fusion", "cra", "mmin_lite", "redcore"]
GAUSSIAN_PLAN = list(BASE)                          # on gaussian: the baselines and RedCore
CODE_VARIANTS = [{"kl": "as_printed"}, {"kl": "code"}, {"eta_update": "code"}, {"sample_at_eval": True},
                 {"mask_follows": "batch_position"}, {"xenc_input": "code"}]
LABEL = {"mmin_lite[pdt=False]": "MMIN, IDT", "zp_concat": "Zero padding", "late_fusion": "Late fusion", "mvae": "MVAE",
         "cra": "CRA", "amae_lite": "AMAE", "mmin_lite": "MMIN", "redcore": "RedCore", "redcore_core": "Core",
         "redcore_red": "Red", "upper_bound": "Upper bound (complete data)"}
ZERO, HIGH = (0.0, 0.0, 0.0), (0.9, 0.9, 0.9)


def in_paper_order(data):
    """The data with its modalities in the paper's order (A, V, L) when their names tell it."""
    if sorted(ROLE.get(m, "?") for m in data.modality_names) == ["A", "L", "V"]:
        return data.select(sorted(data.modality_names, key=lambda m: "AVL".index(ROLE[m])))
    return data


def load(dataset: str, data_root=None, data_options: dict | None = None):
    """The chapter's data: three modalities in the paper's order and a classification task
    (``affect``'s emotion task; ``gaussian``'s imbalanced preset: strong L, medium A, weak V)."""
    from ..data import load_dataset
    opts = dict(data_options or {})
    if dataset == "affect":
        opts.setdefault("task", "emotion")
    if dataset == "gaussian":
        opts.setdefault("preset", "imbalanced")
    data = load_dataset(dataset, data_root, **opts)
    if len(data.modality_names) != 3 or data.task != "multiclass":
        raise ValueError(f"this chapter needs three modalities and a classification task; {dataset} has "
                         f"{data.modality_names} and task {data.task!r}")
    return in_paper_order(data)


def check_rates(names, missing_rates, also_rates=None) -> None:
    for rates in [missing_rates] + list(also_rates or []):
        if len(rates) != 3 or not all(0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"missing_rates and also_rates: three rates in [0, 1) for {names}, got {rates}")


def triples(chapter, profile: str, page: bool, missing_rates, dataset: str, on: str | None = None) -> list[tuple]:
    """The triples a run covers: the page, every triple of the grid on ``on`` (None: the chapter's own
    dataset); a grid run, its own triple (on ``gaussian`` only when its dataset is)."""
    if page:
        return [tuple(r) for r in chapter.grid_values(profile, "missing_rates", {"dataset": on})]
    return [tuple(missing_rates)] if on is None or dataset == on else []


def key(rates) -> str:
    """A setting's label, as the paper writes it."""
    return "MR(A,V,L)=(" + ",".join(f"{r:g}" for r in rates) + ")"


def variant_label(v: dict) -> str:
    return ", ".join(f"{k}={x}" for k, x in v.items())


class Page:
    """The chapter on one dataset: its modality names, test patterns (``"AV"`` for
    ``acoustic+visual``), plan and runs. ``profile``: the budget; ``page_rates``: the triple at which
    the code variants run."""

    def __init__(self, data, profile: str, page_rates, seeds, cfg, device, store):
        self.data, self.profile, self.page_rates = data, profile, tuple(page_rates)
        self.seeds, self.cfg, self.device, self.store = list(seeds), cfg, device, store
        self.names = data.modality_names
        self.short = dict(zip(self.names, "AVL"))
        self.patterns = ["+".join(p) for p in masks.test_patterns(self.names)]
        self.pat = {p: "".join(self.short[m] for m in p.split("+")) for p in self.patterns}

    def spec(self, rates, d=None) -> dict:
        return {"kind": "independent", "rates": dict(zip((d or self.data).modality_names, map(float, rates)))}

    def plan(self, rates, d=None) -> list:
        """The methods run at a triple: the baselines and RedCore; AMAE at Figure 3's shared rates
        (every setting in ``full``); Core and Red at Table 2's permutations; the code variants (and
        MVAE in ``full``) at the page's triple; MMIN trained IDT at Table 1's triples."""
        rates = tuple(rates)
        if (d or self.data).name == "gaussian":
            return list(GAUSSIAN_PLAN)
        out = list(BASE)
        if len(set(rates)) == 1 or self.profile == "full":
            out.insert(3, "amae_lite")
        if rates in PERMS.values():
            out += ["redcore_core", "redcore_red"]
        if rates == self.page_rates:
            out += (["mvae"] if self.profile == "full" else []) + [("redcore", v) for v in CODE_VARIANTS]
        if rates in T1_SETTINGS:
            out.append(("mmin_lite", {"pdt": False}))
        return out

    def _grid(self, d, methods, specs, **kw):
        return run_grid(d, methods, specs, self.seeds, self.cfg, self.device, store=self.store, profile=self.profile,
                        pooled=True, **kw)

    def runs(self, rates, d=None) -> pd.DataFrame:
        """Every method of :meth:`plan` at a triple (selecting on a validation split masked like
        training, every test pattern and the pooled one), with ``rates``, ``run`` (the display name)
        and ``pattern`` ("AV", ..., "pooled") columns."""
        d = d or self.data
        f, _ = self._grid(d, self.plan(rates, d), {key(rates): self.spec(rates, d)}, validation="masked")
        f = f.assign(rates=[tuple(rates)] * len(f))
        pat = self.pat if d is self.data else {"+".join(p): "".join(dict(zip(d.modality_names, "AVL"))[m] for m in p)
                                               for p in masks.test_patterns(d.modality_names)}
        return f.assign(run=names(f), pattern=f["test"].map(lambda t: pat.get(t, "pooled")))

    def fit_together(self, settings, d=None) -> None:
        """Fit every method of the given triples, each method's (triple, seed) fits as one ensemble;
        the records are those a run per triple writes (the tables read them)."""
        d = d or self.data
        methods = []
        for r in settings:
            methods += [m for m in self.plan(r, d) if m not in methods]
        for m in methods:
            self._grid(d, [m], {key(r): self.spec(r, d) for r in settings if m in self.plan(r, d)}, validation="masked")

    def upper(self) -> pd.DataFrame:
        """Complete data: one fit per seed, selected on the complete validation split."""
        return self._grid(self.data, ["upper_bound"], {"complete": {"kind": "full"}})[0]

    def floors(self) -> dict:
        """Always the most frequent class: its test accuracy and weighted F1."""
        acc = metrics.majority_share(self.data.y[self.data.splits["test"]])
        return {"accuracy": acc, "f1_weighted": acc * 2 * acc / (1 + acc)}

    def here_table(self, here: pd.DataFrame) -> pd.DataFrame:
        tab = report.table(here[here["variant"] == ""], "run", "pattern", "f1_weighted")
        return tab[[c for c in list(self.pat.values()) + ["pooled"] if c in tab.columns]]

    def trace(self, df: pd.DataFrame, method: str, rates=None, seed=None) -> pd.DataFrame:
        """A fit's per-update trace (RA and eta) from its record: the page's triple, first seed."""
        sel = df[(df["method"] == method) & (df["variant"] == "") & (df["setting"] == key(rates or self.page_rates))]
        sel = sel[sel["seed"] == (seed if seed is not None else self.seeds[0])]
        return pd.DataFrame(results.read_record(sel["path"].iloc[0]).get("trace", [])) if len(sel) else pd.DataFrame()

    def ra_spread(self, df: pd.DataFrame, method: str, seed: int) -> float:
        """The spread of the relative advantage (max − min over the modalities), averaged over the
        second half of training."""
        t = self.trace(df, method, seed=seed)
        t = t[t["step"] >= t["step"].max() / 2]
        ra = t[[f"ra_{m}" for m in self.names]]
        return float((ra.max(axis=1) - ra.min(axis=1)).mean())


def names(frame: pd.DataFrame) -> list[str]:
    return [LABEL.get(f"{m}[{v}]", LABEL.get(m, report.label(m)) + (f" ({v})" if v else ""))
            for m, v in zip(frame["method"], frame["variant"])]


def with_ave(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The default runs (no variant) with "Ave." rows added (per run, the mean of the test patterns:
    one value per seed and setting), and the "Ave." rows alone."""
    base = df[df["variant"] == ""]
    ave = (base[base["pattern"] != "pooled"].groupby(["method", "variant", "run", "setting", "rates", "seed"], as_index=False)
           [["f1_weighted", "accuracy", "uar"]].mean().assign(pattern="Ave."))
    return pd.concat([base, ave], ignore_index=True), ave


def table1(dfa: pd.DataFrame, pat_order: list[str]) -> pd.DataFrame | None:
    """Table 1: MMIN and RedCore per test pattern, Ave. and pooled, ours beside the paper's, per
    triple; None without Table 1's triples."""
    settings = [key(r) for r in T1_SETTINGS if key(r) in set(dfa["setting"])]
    if not settings:
        return None
    p1 = results.paper_table("redcore_table1")
    p1 = p1.assign(pattern=p1["test_modalities"], paper=(100 * p1["value"]).round(1))
    cols = {}
    for s_ in settings:
        for m, short in [("mmin_lite", "MMIN"), ("redcore", "RedCore")]:
            sub = dfa[(dfa["setting"] == s_) & (dfa["method"] == m)]
            cols[(s_.replace("MR(A,V,L)=", ""), f"{short}, ours")] = sub.groupby("pattern")["f1_weighted"].mean() * 100
            pp = p1[(p1["setting"] == s_) & (p1["method"] == short)]
            cols[(s_.replace("MR(A,V,L)=", ""), f"{short}, paper")] = pp.set_index("pattern")["paper"]
    t1 = pd.DataFrame(cols).reindex(pat_order + ["Ave.", "pooled"]).round(1)
    t1.columns = pd.MultiIndex.from_tuples(t1.columns, names=["MR (A, V, L)", ""])
    return t1.astype(object).where(t1.notna(), "–")


def pooled_gap(dfa: pd.DataFrame) -> pd.Series:
    """The pooled F1 minus the Ave. F1 per method, triple and seed (points)."""
    return (dfa[dfa["pattern"] == "pooled"].groupby(["method", "setting", "seed"])["f1_weighted"].mean()
            - dfa[dfa["pattern"] == "Ave."].groupby(["method", "setting", "seed"])["f1_weighted"].mean()) * 100


def table2(ave: pd.DataFrame) -> pd.DataFrame | None:
    """Table 2: Core, Red and RedCore's Ave. F1 per permutation, ours beside the paper's."""
    p2 = results.paper_table("redcore_table2")
    p2 = p2.assign(paper=(100 * p2["value"]).round(1))
    rows = {}
    for lbl, rates in PERMS.items():
        s_ = key(rates)
        if s_ not in set(ave["setting"]):
            continue
        for m, short in [("redcore_core", "Core"), ("redcore_red", "Red"), ("redcore", "RedCore")]:
            v = report.per_seed(ave, "f1_weighted", {"method": m, "setting": s_})
            pv = p2[(p2["setting"] == s_) & (p2["method"] == short)]["paper"]
            row = f"{lbl} = {s_.replace('MR(A,V,L)=', '')}"
            rows.setdefault(row, {})[(short, "ours")] = report.fmt_mean_ci(list(v), show_n=False)
            rows[row][(short, "paper")] = f"{pv.iloc[0]:.1f}" if len(pv) else "–"
    if not rows:
        return None
    t2 = pd.DataFrame(rows).T
    t2.columns = pd.MultiIndex.from_tuples(t2.columns)
    return t2.rename_axis("MR (A, V, L)")


def variants_table(df: pd.DataFrame, ave: pd.DataFrame, page_rates, patterns) -> tuple[pd.DataFrame | None, pd.Series]:
    """The authors' code's choices one at a time at the page's triple: Ave. F1 and the paired
    difference to the default; ``(table or None, the default's per-seed Ave. F1)``."""
    ref = report.per_seed(ave, "f1_weighted", {"method": "redcore", "setting": key(page_rates)})
    rows = []
    for v in CODE_VARIANTS:
        lbl = variant_label(v)
        sub = df[(df["method"] == "redcore") & (df["variant"] == lbl) & (df["setting"] == key(page_rates))
                 & df["test"].isin(patterns)]
        if sub.empty:
            continue
        vs = sub.groupby("seed")["f1_weighted"].mean()
        pr = report.paired(vs, ref)
        rows.append({"variant": lbl, "Ave. weighted F1 %": report.fmt_mean_ci(list(vs), show_n=False),
                     "minus the default (points)": f"{100 * pr.effect:+.1f} [{100 * pr.ci[0]:+.1f}, {100 * pr.ci[1]:+.1f}]",
                     "n": pr.n})
    return (pd.DataFrame(rows).set_index("variant") if rows else None), ref


# -- gaussian: the Bayes oracle ---------------------------------------------------------------------
def gaussian_frame(pg: Page, g_data, settings) -> pd.DataFrame:
    """The runs on ``gaussian`` per test pattern, with "Ave." rows (the mean of the patterns)."""
    g = pd.concat([pg.runs(r, g_data) for r in settings])
    g = g[g["pattern"] != "pooled"]
    return pd.concat([g, g.groupby(["method", "variant", "run", "setting", "seed"], as_index=False)
                      [["accuracy", "f1_weighted"]].mean().assign(pattern="Ave.")], ignore_index=True)


def oracle_by_pattern(g_data) -> dict[str, float]:
    """The Bayes oracle's test accuracy (%) per pattern ("AV", ...) and their mean ("Ave.")."""
    from ..data.gaussian import oracle_accuracy
    n = len(g_data.splits["test"])
    short = dict(zip(g_data.modality_names, "AVL"))
    out = {"".join(short[m] for m in p): 100 * oracle_accuracy(g_data, "test", masks.pattern(n, g_data.modality_names, p))
           for p in masks.test_patterns(g_data.modality_names)}
    out["Ave."] = float(np.mean(list(out.values())))
    return out


def setting_order(gdf: pd.DataFrame, page_rates) -> list[str]:
    """The gaussian triples, the page's first (Figure 5's)."""
    return sorted(dict.fromkeys(gdf["setting"]), key=lambda s_: s_ != key(page_rates))


def gaussian_table(gdf: pd.DataFrame, oracle: dict, order: list[str]) -> pd.DataFrame:
    cols = [c for c in oracle if c != "Ave."] + ["Ave."]
    blocks = []
    for s_ in order:
        tg = report.table(gdf[gdf["setting"] == s_], "run", "pattern", "accuracy", show_n=False)[cols]
        tg.loc["Bayes oracle (exact)"] = [f"{oracle[c]:.1f}" for c in cols]
        blocks.append(tg.set_axis(pd.MultiIndex.from_product([[s_.replace("MR(A,V,L)=", "")], tg.index]), axis=0))
    return pd.concat(blocks).rename_axis(["MR (A, V, L)", "method"])


def oracle_gap(gdf: pd.DataFrame, oracle: dict) -> pd.Series:
    """The oracle's Ave. accuracy minus each run's, over the triples (points), smallest first."""
    return (oracle["Ave."] - gdf[gdf["pattern"] == "Ave."].groupby("run")["accuracy"].mean() * 100).sort_values()


# -- claims and summary -------------------------------------------------------------------------------
def claims(pg: Page, df: pd.DataFrame, dfa: pd.DataFrame, ave: pd.DataFrame, have: set, floor: dict,
           gdf: pd.DataFrame | None = None, g_floor: float | None = None) -> list[report.Verdict]:
    """The paper's claims (1)–(10) and the book's questions, each with its id."""
    V, f1 = [], floor["f1_weighted"]
    t1s = [{"setting": key(r)} for r in T1_SETTINGS if r in have]

    def A(m):
        return {"method": m, "pattern": "Ave."}
    V.append(report.compare_over(dfa, A("redcore"), A("mmin_lite") | {"variant": ""}, "f1_weighted", t1s,
                                 setting=f"{len(t1s)} of Table 1's triples", floor=f1,
                                 kind="paper", claim="(1) RedCore beats MMIN on Ave. F1", id="redcore.1.beats_mmin"))
    V.append(report.compare_over(dfa, {"method": "redcore", "pattern": "pooled"},
                                 {"method": "mmin_lite", "variant": "", "pattern": "pooled"}, "f1_weighted", t1s,
                                 setting=f"{len(t1s)} of Table 1's triples", floor=f1,
                                 kind="paper", claim="(1') RedCore beats MMIN on the pooled F1", id="redcore.1.beats_mmin_pooled"))
    idt = {"method": "mmin_lite", "variant": "pdt=False", "pattern": "Ave."}
    idt_ave = (df[(df["variant"] == "pdt=False") & df["test"].isin(pg.patterns)]
               .groupby(["method", "variant", "setting", "seed"], as_index=False)["f1_weighted"].mean().assign(pattern="Ave."))
    dfv = pd.concat([dfa, idt_ave], ignore_index=True)         # the defaults (variant "") and MMIN trained IDT
    V.append(report.compare_over(dfv, A("redcore") | {"variant": ""}, idt, "f1_weighted", t1s,
                                 setting=f"{len(t1s)} of Table 1's triples", floor=f1,
                                 kind="paper", claim="(1'') RedCore beats MMIN trained as an IDT method", id="redcore.1.beats_mmin_idt"))
    V.append(report.compare_over(dfv, A("mmin_lite") | {"variant": ""}, idt, "f1_weighted", t1s,
                                 setting=f"{len(t1s)} of Table 1's triples", floor=f1,
                                 kind="book", claim="(this book) MMIN with the missing features (PDT) beats MMIN without them (IDT)",
                                 id="redcore.book.mmin_pdt_beats_idt"))
    l08 = [{"setting": key(r)} for r in T1_SETTINGS if r[2] == 0.8 and r in have]
    V.append(report.compare_over(dfa, {"method": "redcore", "pattern": "L"}, {"method": "mmin_lite", "pattern": "L"},
                                 "f1_weighted", l08, setting="L missing at 0.8 (three triples)", floor=f1,
                                 kind="paper", claim="(2) with L missing at 0.8, RedCore's L-only F1 beats MMIN's", id="redcore.2.l_only"))
    for m in ["redcore", "mmin_lite"]:
        for bal, imb in [((0.8, 0.5, 0.5), (0.8, 0.5, 0.2)), ((0.5, 0.5, 0.8), (0.2, 0.5, 0.8))]:
            if not {bal, imb} <= have:
                continue
            a_ = report.per_seed(ave, "f1_weighted", {"method": m, "setting": key(bal)}) * 100
            b_ = report.per_seed(ave, "f1_weighted", {"method": m, "setting": key(imb)}) * 100
            V.append(report.compare_series(a_, b_, setting=f"{LABEL[m]}: {bal} vs {imb}", metric="f1_weighted",
                                           a_label=key(bal), b_label=key(imb),
                                           kind="paper", claim="(3) fewer but balanced missing rates beat imbalanced ones",
                                           id=f"redcore.3.balanced.{m}.{key(bal)}"))
    perms = [{"setting": key(r)} for r in PERMS.values() if r in have]
    for a_, b_, c_ in [("redcore", "redcore_red", "(4) RedCore beats Red"), ("redcore", "redcore_core", "(4) RedCore beats Core"),
                       ("redcore_red", "redcore_core", "(4) Red beats Core")]:
        V.append(report.compare_over(dfa, A(a_), A(b_), "f1_weighted", perms, setting=f"{len(perms)} permutations (Table 2)",
                                     floor=f1, kind="paper", claim=c_, id=f"redcore.4.{a_}_beats_{b_}"))
    others = ["zp_concat", "cra", "amae_lite", "mmin_lite"]
    for b_ in others if ZERO in have else []:
        V.append(report.compare(dfa, {**A("redcore"), "setting": key(ZERO)}, {**A(b_), "setting": key(ZERO)},
                                "f1_weighted", floor=f1, setting="no modality missing",
                                kind="paper", claim=f"(5) at missing rate 0, RedCore beats {LABEL[b_]}", id=f"redcore.5.rate0.beats_{b_}"))

    def drop(m):
        return (report.per_seed(ave, "f1_weighted", {"method": m, "setting": key(ZERO)})
                - report.per_seed(ave, "f1_weighted", {"method": m, "setting": key(HIGH)})) * 100
    for b_ in others if {ZERO, HIGH} <= have else []:
        V.append(report.compare_series(drop("redcore"), drop(b_), direction="<", metric="F1 drop",
                                       a_label="RedCore", b_label=LABEL[b_], setting="shared missing rate 0 -> 0.9",
                                       kind="paper", claim=f"(7) RedCore's drop is smaller than {LABEL[b_]}'s", id=f"redcore.7.smaller_drop.{b_}"))
    if pg.page_rates in have:
        sp = {m: pd.Series({s: pg.ra_spread(df, m, s) for s in pg.seeds}) for m in ["redcore", "redcore_core"]}
        V.append(report.compare_series(sp["redcore"], sp["redcore_core"], direction="<", metric="RA spread",
                                       a_label="RedCore", b_label="Core", setting=key(pg.page_rates),
                                       kind="paper", claim="(8) regulation narrows the spread of RA (Figure 5)", id="redcore.8.ra_spread"))
    for b_ in ["zp_concat", "cra", "mmin_lite"]:
        V.append(report.compare_over(dfa, A("redcore"), A(b_), "f1_weighted", perms, setting=f"{len(perms)} permutations",
                                     floor=f1, kind="paper", claim=f"(9) RedCore beats {LABEL[b_]} under imbalanced rates",
                                     id=f"redcore.9.imbalanced.beats_{b_}"))
    if pg.page_rates in have:
        ref = report.per_seed(ave, "f1_weighted", {"method": "redcore", "setting": key(pg.page_rates)}) * 100
        for v in CODE_VARIANTS:
            lbl = variant_label(v)
            sub = df[(df["method"] == "redcore") & (df["variant"] == lbl) & (df["setting"] == key(pg.page_rates))
                     & df["test"].isin(pg.patterns)]
            V.append(report.compare_series(sub.groupby("seed")["f1_weighted"].mean() * 100, ref, metric="f1_weighted",
                                           a_label=f"RedCore ({lbl})", b_label="RedCore", setting=key(pg.page_rates),
                                           kind="code", claim=f"(10) {lbl} beats the book's reading", id=f"redcore.10.code.{lbl}"))
    if gdf is not None and len(gdf):
        gs_ = [{"setting": s_} for s_ in dict.fromkeys(gdf["setting"])]
        for b_ in ["mmin_lite", "zp_concat"]:
            V.append(report.compare_over(gdf, {"method": "redcore", "pattern": "Ave."},
                                         {"method": b_, "variant": "", "pattern": "Ave."}, "accuracy", gs_,
                                         setting=f"gaussian (imbalanced), {len(gs_)} triples", floor=g_floor / 100,
                                         kind="book", claim=f"(this book) on gaussian, RedCore is closer to the Bayes oracle than {LABEL[b_]}",
                                         id=f"redcore.book.gaussian.beats_{b_}"))
    return V


def summary(V: list[report.Verdict], ave: pd.DataFrame, page_rates, gdf: pd.DataFrame | None = None,
            oracle: dict | None = None, n_triples: int = 0) -> str:
    counts = pd.Series([v.verdict for v in V]).value_counts().to_dict()
    by = report.by_id(V)

    def eff(claim_id, unit=" points"):
        v = by.get(claim_id)
        return "not run" if v is None else f"{report.fmt_effect(v)}{unit}, n = {v.n}: {report.verdict_text(v)}"
    code = [v for v in V if v.id.startswith("redcore.10.")]
    big = max(code, key=lambda v: abs(v.effect)) if code else None
    zp = ave[ave["method"].isin(["zp_concat", "redcore"])].groupby("method")["f1_weighted"].mean() * 100
    text = (
        f"- Of {len(V)} tests, {', '.join(f'{n} {k}' for k, n in counts.items())}.\n"
        f"- RedCore against MMIN on Table 1's Ave. F1: {eff('redcore.1.beats_mmin')}. How much of MMIN's lead is "
        f"its access to the missing features (PDT): MMIN with them against MMIN trained as an IDT method "
        f"{eff('redcore.book.mmin_pdt_beats_idt')}; RedCore against the IDT MMIN {eff('redcore.1.beats_mmin_idt')}.\n"
        f"- Regulation (RedCore against Core, Table 2): {eff('redcore.4.redcore_beats_redcore_core')}; its effect on the spread of "
        f"the relative advantage (max - min RA over the second half of training; Core's minus RedCore's): {eff('redcore.8.ra_spread', '')}.\n"
        f"- The plainest baseline is a strong one here: over every setting the page ran, zero padding averages "
        f"{zp.get('zp_concat', float('nan')):.1f} % and RedCore {zp.get('redcore', float('nan')):.1f} % Ave. weighted F1.\n")
    if gdf is not None and len(gdf):
        gap = oracle_gap(gdf, oracle)
        text += (f"- Where the ceiling is exact (`gaussian`, imbalanced preset, {n_triples} triples), the Bayes oracle averages "
                 f"{oracle['Ave.']:.1f} % over the 7 patterns; the gaps to it, in points of Ave. accuracy: "
                 + ", ".join(f"{r_} {g_:.1f}" for r_, g_ in gap.items())
                 + f". RedCore against MMIN there: {eff('redcore.book.gaussian.beats_mmin_lite')}.\n")
    if big is not None:
        text += (f"- Of the variants measured at {key(page_rates)} (the paper printed literally, the released code's "
                 f"choices), the largest effect on Ave. F1 is {big.a.split('(')[1].rstrip(')')}: {big.text()} points against "
                 f"the book's reading ({report.verdict_text(big)}); 'Paper and code' lists the others.")
    return text


# -- figures -----------------------------------------------------------------------------------------
def presence_figure(pg: Page, P, rates):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 2.2))
    ax.imshow(P[:60].numpy().T.astype(float), aspect="auto", cmap="Greys", vmin=0, vmax=1.3, interpolation="nearest")
    ax.set_yticks(range(3))
    ax.set_yticklabels([f"{m} ({pg.short[m]})" for m in pg.names])
    ax.set_xlabel("training sample")
    ax.set_title(f"{key(rates)}: presence of the first 60 training samples")
    ax.grid(False)
    fig.tight_layout()
    return fig


def shared_figure(ave: pd.DataFrame, upper: pd.DataFrame, patterns, floor: dict, dataset: str):
    """Figure 3: Ave. weighted F1 with every modality missing at one rate; the model trained on
    complete data and the majority floor as lines. None without those runs."""
    import matplotlib.pyplot as plt
    from .. import plots
    shared = ave[ave["rates"].map(lambda r: len(set(r)) == 1)]
    if shared.empty:
        return None
    s3 = report.summary(shared.assign(rate=shared["rates"].map(lambda r: r[0])), ["run", "rate"], "f1_weighted")
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    plots.curves(s3, "rate", "f1_weighted", "run", ax=ax, ylabel="Ave. weighted F1 (%)", err="ci",
                 title=f"{dataset}: every modality missing at the same rate")
    ub = upper[upper["test"].isin(patterns)].groupby("seed")["f1_weighted"].mean().mean() * 100
    ax.axhline(ub, color="black", ls=":", lw=1, label="trained on complete data")
    ax.axhline(100 * floor["f1_weighted"], color="grey", ls="--", lw=1, label="majority floor")
    ax.set_xlabel("missing rate of every modality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def permutations_figure(ave: pd.DataFrame):
    """Figure 4: Ave. weighted F1 of the baselines and RedCore under each permutation of (s, m, l)."""
    import matplotlib.pyplot as plt
    perm_keys = {key(r): lbl for lbl, r in PERMS.items()}
    f4 = ave[ave["setting"].isin(perm_keys) & ave["method"].isin(BASE)]
    if f4.empty:
        return None
    s4 = report.summary(f4.assign(perm=f4["setting"].map(perm_keys)), ["run", "perm"], "f1_weighted")
    piv = s4.pivot(index="perm", columns="run", values="f1_weighted_mean").reindex(list(PERMS)) * 100
    err = s4.pivot(index="perm", columns="run", values="f1_weighted_ci").reindex(list(PERMS)) * 100
    ax = piv.plot.bar(yerr=err, figsize=(8, 3.6), rot=0, capsize=2, width=0.8)
    ax.set(ylabel="Ave. weighted F1 (%)", xlabel="MR of (A, V, L), with l = 0.8, m = 0.5, s = 0.2",
           ylim=(max(0, np.nanmin(piv.values) - 10), None))
    ax.legend(fontsize=8, ncol=4)
    ax.figure.tight_layout()
    return ax.figure


def gaussian_figure(gdf: pd.DataFrame, oracle: dict, order: list[str]):
    """Each run's accuracy per test pattern against the oracle's, one panel per triple."""
    import matplotlib.pyplot as plt
    cols = [c for c in oracle if c != "Ave."] + ["Ave."]
    gs = report.summary(gdf, ["run", "setting", "pattern"], "accuracy")
    fig, axes = plt.subplots(len(order), 1, figsize=(7.5, 3.2 * len(order)), sharey=True, squeeze=False)
    runs = list(dict.fromkeys(gs["run"]))
    for ax, s_ in zip(axes[:, 0], order):
        for k, r_ in enumerate(runs):
            sub = gs[(gs["setting"] == s_) & (gs["run"] == r_)].set_index("pattern").reindex(cols)
            x = np.arange(len(cols)) + (k - (len(runs) - 1) / 2) * 0.13
            ax.errorbar(x, 100 * sub["accuracy_mean"], yerr=100 * sub["accuracy_ci"], fmt="o", ms=4, capsize=2, label=r_)
        ax.hlines([oracle[c] for c in cols], np.arange(len(cols)) - 0.45, np.arange(len(cols)) + 0.45,
                  color="black", lw=2, label="Bayes oracle")
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols)
        ax.set(title=f"gaussian (imbalanced), {s_}", ylabel="test accuracy (%)")
    axes[-1, 0].set_xlabel("test pattern")
    axes[0, 0].legend(fontsize=8, ncol=3, loc="upper left")
    fig.tight_layout()
    return fig


def regulation_figure(pg: Page, df: pd.DataFrame):
    """Figure 5: RA of Core and RedCore, RedCore's eta, and the validation accuracy per epoch of
    Core, Red and RedCore (page's triple, first seed); None without those records."""
    import matplotlib.pyplot as plt
    tc, tr = pg.trace(df, "redcore_core"), pg.trace(df, "redcore")
    if tc.empty or tr.empty:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    axes = axes.flat
    for ax, t, title in [(axes[0], tc, "(a) Core: RA, eta fixed"), (axes[1], tr, "(b) RedCore: RA")]:
        for m in pg.names:
            ax.plot(t["step"], t[f"ra_{m}"], label=pg.short[m], lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=title, xlabel="training step", ylabel="relative advantage")
        ax.legend(fontsize=8)
    for m in pg.names:
        axes[2].plot(tr["step"], tr[f"eta_{m}"], label=pg.short[m], lw=1)
    axes[2].set(title="(c) RedCore: the weights eta", xlabel="training step", ylabel="eta")
    axes[2].legend(fontsize=8)
    for m in ["redcore_core", "redcore_red", "redcore"]:
        sel = df[(df["method"] == m) & (df["variant"] == "") & (df["setting"] == key(pg.page_rates))
                 & (df["seed"] == pg.seeds[0])]
        hist = results.read_record(sel["path"].iloc[0])["history"]
        axes[3].plot([h["epoch"] + 1 for h in hist], [100 * h["val_score"] for h in hist], marker="o", ms=3, label=LABEL[m])
    axes[3].set(title="(d) validation accuracy (masked)", xlabel="epoch", ylabel="%")
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    return fig


def majority_share(data) -> float:
    """The most frequent class's share of the test split (%)."""
    return 100 * metrics.majority_share(data.y[data.splits["test"]])
