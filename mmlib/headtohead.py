"""The five methods head to head: one harness, the missing protocols of all five papers, the Bayes oracle.

No paper runs SMIL, MLE, M3S, RedCore and MLA on the same data, masks and seeds. Here every
method of :data:`ROSTER` (the papers' methods as the papers describe them, and the shared
baselines) goes through :func:`mmlib.experiment.run_grid` under each paper's missing protocol
(:data:`PROTOCOLS`, at a level ``r``):

* ``smil``: the *last* modality missing in a fraction ``r`` of the training samples, i.e. kept in
  eta = 1 - r of them (SMIL keeps the audio in eta); tested with every modality present;
* ``mle``: the *first* modality missing in a fraction ``r`` of the training samples (MLE hides
  the image); tested with every modality present;
* ``m3s``: a span of ``[r - 0.1, r + 0.1]`` of every modality zeroed in every training,
  validation and test sample (M3S's corruption inside the modalities);
* ``redcore``: independent per-modality rates ``r * w`` with the imbalanced weights ``w`` of
  :data:`REDCORE_WEIGHTS` (at ``r = 0.8`` on three modalities: RedCore's (0.8, 0.2, 0.5));
  tested on every test pattern pooled, as RedCore scores;
* ``mla``: the CPM-Nets random drop at overall rate ``r`` on the training, validation and
  test splits (MLA's Table 2).

Every run selects its model on a validation split masked like its training split; at one seed
every method sees the same masks, so methods are compared by paired differences over seeds
(:mod:`mmlib.report`). A method that cannot take a protocol gets "n/a" and the reason
(:func:`not_applicable`), never a number. On ``gaussian`` the exact Bayes oracle
(:func:`mmlib.data.gaussian.oracle_accuracy`) is the ceiling: :func:`oracle_rows` adds it per
seed and test pattern, and :func:`gaps` measures every method against it.
"""
from __future__ import annotations

import dataclasses
import re
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import masks, report
from .experiment import masked_test_presence, run_grid

# ----------------------------------------------------------------------------- protocols
REDCORE_WEIGHTS = {2: (1.0, 0.25), 3: (1.0, 0.25, 0.625)}
SPAN_HALF_WIDTH = 0.1


@dataclass(frozen=True)
class Protocol:
    name: str
    paper: str
    what: str


PROTOCOLS = {p.name: p for p in [
    Protocol("smil", "SMIL", "the last modality missing in a fraction r of training samples (kept in η = 1 − r)"),
    Protocol("mle", "MLE", "the first modality missing in a fraction r of training samples"),
    Protocol("m3s", "M3S", "a span of r ± 0.1 of every modality zeroed (train, validation, test)"),
    Protocol("redcore", "RedCore", "independent imbalanced per-modality rates r·w"),
    Protocol("mla", "MLA", "CPM random drop at rate r on train, validation and test"),
]}


@dataclass
class Setting:
    """One protocol at one level on one dataset: the training spec, the corruption (spans),
    how the test split is scored and which test column is the headline."""
    protocol: str
    level: float
    missing: dict
    corruption: dict | None
    test: str                 # run_grid's test: "patterns" or "masked"
    headline: str             # the test column of the main table
    label: str                # e.g. "mla 0.5"


def setting(protocol: str, level: float, names: list[str]) -> Setting:
    """The protocol's spec for a dataset with modalities ``names`` at level ``r``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {sorted(PROTOCOLS)}")
    if not 0.0 <= level < 1.0:
        raise ValueError(f"the level of protocol {protocol!r} must be in [0, 1), got {level}")
    r = round(float(level), 6)
    full = "+".join(names)
    label = f"{protocol} {r:g}"
    if protocol == "smil":                     # kept in eta = 1 - r: missing in exactly int(n * r) (ch. 01's spec)
        return Setting(protocol, r, {"kind": "independent", "rates": {names[-1]: r}}, None, "patterns", full, label)
    if protocol == "mle":
        return Setting(protocol, r, {"kind": "independent", "rates": {names[0]: r}}, None, "patterns", full, label)
    if protocol == "m3s":
        lo, hi = max(0.0, round(r - SPAN_HALF_WIDTH, 6)), min(1.0, round(r + SPAN_HALF_WIDTH, 6))
        tag = f"{round(100 * lo)}-{round(100 * hi)}%"
        return Setting(protocol, r, {"kind": "full"}, {"band": [lo, hi], "axis": "time", "test": {tag: [lo, hi]}},
                       "patterns", f"{full}@{tag}", label)
    if protocol == "redcore":
        if len(names) not in REDCORE_WEIGHTS:
            raise ValueError(f"the redcore protocol has weights for 2 or 3 modalities, not {len(names)}")
        rates = {m: round(r * w, 6) for m, w in zip(names, REDCORE_WEIGHTS[len(names)])}
        return Setting(protocol, r, {"kind": "independent", "rates": rates}, None, "patterns", "pooled", label)
    return Setting(protocol, r, {"kind": "cpm", "rate": r}, None, "masked", "masked", label)


# ----------------------------------------------------------------------------- the roster
@dataclass(frozen=True)
class Entry:
    """A row of the head-to-head tables: its display label, registry key, options and kind
    ("paper": one of the five papers' methods; "baseline"; "bound"; "variant": a paper method
    under a budget that differs from the one every other row gets, a measured row beside it that
    does not compete in the ranks and findings). ``min_epochs``: that budget's difference;
    ``protocols``: where a variant runs (empty: everywhere)."""
    label: str
    key: str
    kind: str
    kwargs: dict = field(default_factory=dict)
    min_epochs: int | None = None
    protocols: tuple = ()


ROSTER = [
    Entry("Lower-Bound", "lower_bound", "bound"),
    Entry("Upper-Bound", "upper_bound", "bound"),
    Entry("Zero padding", "zp_concat", "baseline"),
    Entry("Late fusion", "late_fusion", "baseline"),
    Entry("AE imputation", "ae_impute", "baseline"),
    Entry("GAN imputation", "gan_impute", "baseline"),
    Entry("MVAE", "mvae", "baseline"),
    Entry("MMIN", "mmin_lite", "baseline"),
    Entry("SMIL", "smil", "paper"),
    Entry("MLE", "mle", "paper"),
    Entry("M3S", "m3s", "paper"),
    Entry("RedCore", "redcore", "paper"),
    Entry("MLA", "mla", "paper"),
    # the RedCore chapter trains RedCore at least 10 epochs (its modality weights need a warm-up); here every row
    # gets one budget, so that difference is a measured row under RedCore's protocol
    Entry("RedCore, 10-epoch warm-up", "redcore", "variant", min_epochs=10, protocols=("redcore",)),
]
VARIANTS = tuple(e.label for e in ROSTER if e.kind == "variant")
ORACLE = "Bayes oracle"
SIMPLE = ("Lower-Bound", "Zero padding", "Late fusion")       # the simple baselines the findings test against
# the span band M3S draws on protocols without a fixed corruption (on m3s it draws the corruption's band)
M3S_AUG_BAND = [0.2, 0.4]
# fits of many seconds each on a CPU (GAN: ~8 s, MVAE: ~24 s on avdigits): in the full profile only
FULL_ONLY = ("gan_impute", "mvae")
TWO_MODALITY = ("smil", "mle")
NEEDS_ALWAYS_PRESENT = ("lower_bound", "ae_impute", "gan_impute", "smil", "mle")
BACKBONE = ("lower_bound", "upper_bound", "zp_concat", "late_fusion", "ae_impute", "gan_impute", "mvae", "smil",
            "mle", "mla", "mmin_lite", "redcore")


def roster(profile: str, protocol: str | None = None) -> list[Entry]:
    """The entries a profile runs (under ``protocol``: without the variants of other protocols)."""
    return [e for e in ROSTER if (profile == "full" or e.key not in FULL_ONLY)
            and (protocol is None or not e.protocols or protocol in e.protocols)]


def label_of(key: str) -> str:
    return {e.key: e.label for e in ROSTER}.get(key, key)


def not_applicable(entry: Entry, names: list[str], st: Setting, presence: torch.Tensor) -> str:
    """Why ``entry`` cannot take the setting (its training presence matrix ``presence``), or ""."""
    always = [m for j, m in enumerate(names) if bool(presence[:, j].all())]
    if st.protocol == "m3s":
        if entry.kind == "bound":
            return "no modality is missing: both bounds are zero padding on the corrupted data"
        if entry.key in ("ae_impute", "gan_impute", "smil", "mle", "mvae"):
            return "every modality is present (spans are hidden inside them): nothing to impute or marginalise"
    if entry.key in TWO_MODALITY and len(names) != 2:
        return f"a two-modality method (one always present, one missing); the data has {len(names)}"
    if entry.key in NEEDS_ALWAYS_PRESENT and not always:
        return "needs a modality present in every training sample; this protocol leaves none"
    if entry.key in ("ae_impute", "gan_impute", "smil", "mle") and len(always) == len(names):
        return "no modality is missing in training"
    return ""


def entry_kwargs(entry: Entry, names: list[str], st: Setting, presence: torch.Tensor, backbone: str) -> dict:
    """The options a roster entry runs with in a setting: the profile's encoders, the two roles of
    SMIL and MLE (x1 the always-present modality), M3S's span band where there is no corruption."""
    kw = dict(entry.kwargs)
    if entry.key in BACKBONE:
        kw["backbone"] = backbone
    if entry.key in TWO_MODALITY:
        always = [m for j, m in enumerate(names) if bool(presence[:, j].all())]
        kw.update(x1=always[0], x2=[m for m in names if m != always[0]][0])
    if entry.key in ("ae_impute", "gan_impute"):
        kw["cond"] = [m for j, m in enumerate(names) if bool(presence[:, j].all())]
    if entry.key == "m3s":                             # M3S on zero padding with the same encoders
        kw["base_kwargs"] = {"backbone": backbone}
        if st.corruption is None:
            kw["aug_band"] = list(M3S_AUG_BAND)
    return kw


# ----------------------------------------------------------------------------- running
def run_setting(data, dataset: str, st: Setting, seeds: list[int], cfg, device, store, profile: str,
                log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every applicable roster entry under one setting at every seed. Returns ``(frame, na)``:
    the run_grid rows (plus ``dataset``, ``protocol``, ``level``, ``row``: the entry's label,
    ``kind``) and the entries that do not apply, with the reason."""
    names = data.modality_names
    presence = masks.from_spec(st.missing, len(data.splits["train"]), names, seeds[0])
    backbone = "cnn" if profile == "full" else "mlp"
    frames, na = [], []
    for entry in roster(profile, st.protocol):
        why = not_applicable(entry, names, st, presence)
        if why:
            na.append({"dataset": dataset, "protocol": st.protocol, "level": st.level, "row": entry.label,
                       "reason": why})
            continue
        kw = entry_kwargs(entry, names, st, presence, backbone)
        budget = cfg if entry.min_epochs is None or profile == "quick" else \
            dataclasses.replace(cfg, min_epochs=entry.min_epochs)
        f, _ = run_grid(data, [(entry.key, kw)], {st.label: st.missing}, seeds, budget, device, store=store,
                        profile=profile, validation="masked", test=st.test, pooled=st.protocol == "redcore",
                        corruption=st.corruption, log=log)
        frames.append(f.assign(row=entry.label, kind=entry.kind))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame.assign(dataset=dataset, protocol=st.protocol, level=st.level), pd.DataFrame(na)


def oracle_rows(data, dataset: str, st: Setting, seeds: list[int]) -> pd.DataFrame:
    """The Bayes oracle on ``gaussian`` (no fit: the exact posterior), per seed and test column
    of the setting: each test pattern on the complete test split, the masked test split (the
    seed's own mask, as every method sees it), and the pooled patterns. None on span settings
    (the oracle of a partly hidden modality is not computed here)."""
    from .data.gaussian import oracle_accuracy
    if st.corruption is not None or "oracle" not in data.info:
        return pd.DataFrame()
    names, n = data.modality_names, len(data.splits["test"])
    per_pattern = {"+".join(p): oracle_accuracy(data, "test", masks.pattern(n, names, p))
                   for p in masks.test_patterns(names)}
    rows = []
    for s in seeds:
        tests = dict(per_pattern)
        tests["pooled"] = float(np.mean(list(per_pattern.values())))      # equal-sized copies of the split
        if st.test == "masked":
            tests["masked"] = oracle_accuracy(data, "test", masked_test_presence(data, st.missing, s))
        rows += [{"method": "oracle", "row": ORACLE, "kind": "oracle", "setting": st.label, "seed": s, "test": t,
                  "accuracy": a, "dataset": dataset, "protocol": st.protocol, "level": st.level}
                 for t, a in tests.items()]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- tables
def column_name(dataset: str, protocol: str, level: float) -> str:
    return f"{dataset} · {protocol} {level:g}"


def headline(frame: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """One row per (row, dataset, protocol, level, seed): the headline test column's accuracy.
    ``settings``: ``{(dataset, protocol, level): Setting}``."""
    parts = []
    for (ds, pr, lv), st in settings.items():
        sub = frame[(frame["dataset"] == ds) & (frame["protocol"] == pr) & (frame["level"] == lv)
                    & (frame["test"] == st.headline)]
        parts.append(sub)
    out = pd.concat(parts, ignore_index=True) if parts else frame.iloc[:0]
    return out.drop_duplicates(["row", "dataset", "protocol", "level", "seed"])


def per_seed(h: pd.DataFrame, col: tuple, metric: str = "accuracy", scale: float = 100.0) -> dict[str, pd.Series]:
    ds, pr, lv = col
    sub = h[(h["dataset"] == ds) & (h["protocol"] == pr) & (h["level"] == lv)]
    return {r: g.set_index("seed")[metric] * scale for r, g in sub.groupby("row")}


def chosen_on_validation(val: dict[str, pd.Series], candidates) -> str:
    """The "best of k" side of a finding: the candidate with the highest mean *validation* score
    over seeds (the score each fit selected its epoch on, ``val_score`` in the frame), so that the
    test data that decides the finding did not also choose its sides."""
    scored = {r: float(val[r].mean()) for r in candidates if r in val and val[r].notna().any()}
    missing = [r for r in candidates if r not in scored]
    if missing:
        raise ValueError(f"no validation score for {missing}: a side of a finding is chosen on validation "
                         "(the records' selection.best_val, the frame's 'val_score'); re-run their grid")
    return max(scored, key=scored.get)


def best_separated(vals: dict[str, pd.Series], exclude=(ORACLE, "Upper-Bound", *VARIANTS),
                   val: dict[str, pd.Series] | None = None) -> tuple[str | None, report.Paired | None]:
    """The best row among ``vals`` (the oracle and the upper bound, which see more than the
    protocol allows, left out) and its paired test difference to the runner-up; the best is
    "separated" when that interval excludes 0. With ``val`` (each row's validation scores) the best
    and the runner-up are chosen on validation, so the test data that decides the mark did not
    choose the rows; without it, by their test means."""
    cand = {r: v for r, v in vals.items() if r not in exclude and len(v)}
    if len(cand) < 2:
        return (next(iter(cand)) if cand else None), None
    if val is None:
        score = {r: cand[r].mean() for r in cand}
    else:                                   # (a row without a validation score ranks last)
        score = {r: val[r].mean() if r in val and val[r].notna().any() else -math.inf for r in cand}
    order = sorted(cand, key=lambda r: -score[r])
    return order[0], report.paired(cand[order[0]], cand[order[1]])


def main_table(h: pd.DataFrame, na: pd.DataFrame, order: list[str], columns: list[tuple],
               numbering: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Rows x settings, each cell mean ± 95 % CI (accuracy %); the best (oracle and upper bound
    aside) in bold only where the paired test separates it from the runner-up; "n/a" with a
    footnote number where the method cannot take the protocol. ``numbering`` (reason -> number,
    updated): pass one dict to every table of a page, so that [1] means one thing on the whole
    page. Returns ``(table, footnotes)``: the footnotes this table uses."""
    notes: dict[str, int] = numbering if numbering is not None else {}
    used: set[str] = set()
    cells = {}
    for col in columns:
        vals = per_seed(h, col)
        best, pr = best_separated(vals, val=per_seed(h, col, "val_score") if "val_score" in h else None)
        name = column_name(*col)
        cells[name] = {}
        for r in order:
            if r in vals:
                s = report.fmt_mean_ci(list(vals[r] / 100), show_n=False)
                cells[name][r] = f"**{s}**" if (r == best and pr is not None and pr.excludes_zero) else s
            else:
                why = na[(na["dataset"] == col[0]) & (na["protocol"] == col[1]) & (na["level"] == col[2])
                         & (na["row"] == r)]["reason"] if len(na) else pd.Series(dtype=str)
                if len(why):
                    k = notes.setdefault(why.iloc[0], len(notes) + 1)
                    used.add(why.iloc[0])
                    cells[name][r] = f"n/a [{k}]"
                else:
                    cells[name][r] = "–"
    return pd.DataFrame(cells).reindex(order), {notes[w]: w for w in sorted(used, key=notes.get)}


def ranks(h: pd.DataFrame, exclude=(ORACLE, "Upper-Bound", *VARIANTS)) -> tuple[pd.DataFrame, pd.Series]:
    """Average rank per dataset and protocol (1 = best): within each level and seed the rows that
    ran are ranked by accuracy (ties share the mean rank), then averaged over the protocol's
    levels and seeds on that dataset, so every rank in a column is over the same competitors.
    Returns the table (rows x "dataset · protocol") and the number of competitors per column."""
    sub = h[~h["row"].isin(exclude)].copy()
    keys = ["dataset", "protocol", "level", "seed"]
    sub["rank"] = sub.groupby(keys)["accuracy"].rank(ascending=False, method="average")
    sub["col"] = [f"{d} · {p}" for d, p in zip(sub["dataset"], sub["protocol"])]
    out = sub.groupby(["row", "col"])["rank"].mean().unstack("col")
    cols = list(dict.fromkeys(sub["col"]))                  # the order the settings were run in
    k = sub.groupby(["col", "level", "seed"]).size().groupby("col").mean()
    return out[cols], k[cols]


def gaps(frame: pd.DataFrame, oracle: pd.DataFrame) -> pd.DataFrame:
    """Gap to the Bayes oracle, in points, per (row, dataset, protocol, level, test) from paired
    seeds (the oracle minus the method on the same test split): mean, 95 % CI and n."""
    if oracle.empty:
        return pd.DataFrame()
    keys = ["dataset", "protocol", "level", "test", "seed"]
    o = oracle.set_index(keys)["accuracy"]
    f = frame[frame["dataset"].isin(oracle["dataset"].unique())].drop_duplicates(["row"] + keys)
    f = f[f.set_index(keys).index.isin(o.index)]
    rows = []
    for (r, ds, pr, lv, t), g in f.groupby(["row", "dataset", "protocol", "level", "test"]):
        d = 100 * (o.loc[[(ds, pr, lv, t, s) for s in g["seed"]]].to_numpy() - g["accuracy"].to_numpy())
        mean, (lo, hi), _ = report.t_interval(d)
        rows.append({"row": r, "dataset": ds, "protocol": pr, "level": lv, "test": t, "gap": mean,
                     "ci_low": lo, "ci_high": hi, "n": len(d)})
    return pd.DataFrame(rows)


def findings(h: pd.DataFrame, columns: list[tuple], papers=("SMIL", "MLE", "M3S", "RedCore", "MLA")) -> list[report.Verdict]:
    """Per setting, the book's two questions, each decided by paired differences over seeds:
    "does the best of the papers' methods beat the best simple baseline?" (the paper method and
    the simple baseline -- lower bound, zero padding, late fusion -- with the highest mean
    validation score: :func:`chosen_on_validation`), and, where the protocol's own paper's method
    ran, "does it beat every other method?" (against the best of the others on validation; the
    upper bound and the oracle aside). Where both questions compare the same two methods, the
    comparison is one claim (declared once, its text names both questions), not two tests."""
    out = []
    for col in columns:
        vals, val = per_seed(h, col), per_seed(h, col, "val_score")
        pm = [r for r in papers if r in vals]
        sb = [r for r in SIMPLE if r in vals]
        if not pm or not sb:
            continue
        a, b = chosen_on_validation(val, pm), chosen_on_validation(val, sb)
        home = PROTOCOLS[col[1]].paper
        rest = [r for r in vals if r not in (home, ORACLE, "Upper-Bound", *VARIANTS)]
        other = chosen_on_validation(val, rest) if home in vals and rest else None
        same = (home, other) == (a, b)
        where = re.sub(r"[^a-z0-9.:]+", "-", column_name(*col).lower()).strip("-")
        out.append(report.compare_series(
            vals[a], vals[b], setting=column_name(*col), metric="accuracy", a_label=a, b_label=b, kind="book",
            id=f"h2h.{'simple+own' if same else 'simple'}.{where}",
            claim=f"(this book) the best paper method ({a}) beats the best simple baseline ({b})"
                  + (f"; here also {home} against the best other under its own protocol" if same else "")))
        if other is not None and not same:
            out.append(report.compare_series(vals[home], vals[other], claim=f"(this book) {home} beats every other method "
                                             f"under its own protocol (the best other: {other})", setting=column_name(*col),
                                             metric="accuracy", a_label=home, b_label=other, kind="book",
                                             id=f"h2h.own.{where}"))
    return out


def asks(v: report.Verdict, question: str) -> bool:
    """Whether a finding answers ``question``: "simple" (the best paper method against the best
    simple baseline) or "own" (a paper's method under its own protocol), read from its id."""
    parts = v.id.split(".")
    return len(parts) > 1 and question in parts[1].split("+")


def worse_with_more(frame: pd.DataFrame, names: dict) -> pd.DataFrame:
    """Where giving a method *every* modality at test time is worse than giving it its best single
    one: per (row, dataset, protocol, level), the paired difference (all modalities − the single
    modality with the best mean) over seeds, in points; the rows whose interval lies below 0.
    ``names``: each dataset's modality names. Span settings are left out (their test columns are
    corrupted copies)."""
    out = []
    f = frame[frame["kind"] != "oracle"].drop_duplicates(["row", "dataset", "protocol", "level", "test", "seed"])
    for (r, ds, pr, lv), g in f.groupby(["row", "dataset", "protocol", "level"]):
        full = "+".join(names[ds])
        by = {t: gg.set_index("seed")["accuracy"] * 100 for t, gg in g.groupby("test")}
        singles = [m for m in names[ds] if m in by]
        if full not in by or not singles:
            continue
        best = max(singles, key=lambda m: by[m].mean())
        pr_ = report.paired(by[full], by[best])
        if pr_.n >= 2 and pr_.ci[1] < 0:
            out.append({"row": r, "dataset": ds, "protocol": pr, "level": lv, "single": best, "effect": pr_.effect,
                        "ci_low": pr_.ci[0], "ci_high": pr_.ci[1], "n": pr_.n})
    return pd.DataFrame(out)


def cost(frame: pd.DataFrame, h: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and row: median fit seconds, trained parameters, the mean headline accuracy over
    the dataset's settings the row ran (each over seeds) and how many settings that is."""
    f = frame[frame["kind"] != "oracle"].drop_duplicates(["row", "dataset", "protocol", "level", "seed"])
    t = f.groupby(["dataset", "row"]).agg(fit_s=("fit_seconds", "median"), parameters=("parameters", "median"),
                                          runs=("seed", "size"))
    hh = h[h["kind"] != "oracle"]
    acc = hh.groupby(["dataset", "row"])["accuracy"].mean() * 100
    n = hh.drop_duplicates(["dataset", "row", "protocol", "level"]).groupby(["dataset", "row"]).size()
    return t.assign(accuracy=acc, settings=n).reset_index()



# ----------------------------------------------------------------------------- the chapter's plan and prose
AVDIGITS_TRAIN = 1000         # avdigits' training samples here, as in the SMIL and MLE chapters (their papers' scale)
# gaussian with two modalities, so that the two-modality methods (SMIL, MLE) meet the oracle too: the imbalanced
# preset's medium A and strong L
GAUSSIAN_PAIR = {"preset": "imbalanced", "dims": (8, 8), "names": ("A", "L"), "informativeness": (0.4, 0.6)}


def load_data(name: str, data_root=None, data_options: dict | None = None):
    """A dataset of the plan: ``gaussian:<preset>``, ``gaussian:pair`` (two modalities,
    :data:`GAUSSIAN_PAIR`); ``affect`` (its 4-class emotion task, as
    IEMOCAP); ``avdigits`` with a stratified subset of :data:`AVDIGITS_TRAIN` training samples (the
    SMIL and MLE chapters' data, so their records serve here too); or a real dataset's reader with
    ``data_root``."""
    from .data import load_dataset
    if data_root is not None:
        return load_dataset(name, data_root, **(data_options or {}))
    if name == "gaussian:pair":
        return load_dataset("gaussian", **GAUSSIAN_PAIR)
    if name.startswith("gaussian"):
        return load_dataset("gaussian", preset=name.split(":", 1)[1] if ":" in name else "balanced")
    if name == "affect":
        return load_dataset("affect", task="emotion")
    if name == "avdigits":
        return load_dataset("avdigits").with_train_subset(AVDIGITS_TRAIN)
    return load_dataset(name, **(data_options or {}))


DEFAULT_LEVELS = {"smil": 0.9, "mle": 0.9, "m3s": 0.5, "redcore": 0.8, "mla": 0.5}


def plan(profile: str, dataset: str | None = None, protocol: str | None = None,
         data_root=None) -> dict[str, dict[str, list[float]]]:
    """The settings a run covers: the profile's plan (:data:`mmlib.chapters.H2H_PLAN`), narrowed
    to one dataset and/or protocol. A dataset or protocol the plan does not list (a real dataset
    read from ``data_root``, another gaussian preset) runs at :data:`DEFAULT_LEVELS`."""
    from .chapters import H2H_PLAN
    if profile not in H2H_PLAN:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(H2H_PLAN)}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {sorted(PROTOCOLS)} (or None for all)")
    if data_root is not None and dataset is None:
        raise ValueError("with data_root, name the dataset's reader in `dataset` (e.g. 'iemocap')")
    full = H2H_PLAN[profile]
    if dataset is None:
        chosen = full
    elif dataset in full and data_root is None:
        chosen = {dataset: full[dataset]}
    else:
        chosen = {dataset: {p: [lv] for p, lv in DEFAULT_LEVELS.items()}}
    out = {}
    for ds, prots in chosen.items():
        keep = {p: list(lv) for p, lv in prots.items() if protocol is None or p == protocol}
        if protocol is not None and not keep:
            keep = {protocol: [DEFAULT_LEVELS[protocol]]}
        if keep:
            out[ds] = keep
    return out


def protocol_table(the_plan: dict) -> pd.DataFrame:
    """The protocols as a reader meets them: whose they are, what they hide, the levels per dataset."""
    rows = []
    for p in PROTOCOLS.values():
        levels = {ds: ", ".join(f"{lv:g}" for lv in prots[p.name]) for ds, prots in the_plan.items() if p.name in prots}
        rows.append({"protocol": p.name, "paper": p.paper, "what goes missing": p.what,
                     **{ds: levels.get(ds, "–") for ds in the_plan}})
    return pd.DataFrame(rows).set_index("protocol")


def learned(h: pd.DataFrame, verdicts: list, gap: pd.DataFrame, rank: pd.DataFrame, settings: dict,
            worse: pd.DataFrame | None = None) -> str:
    """"What we learned", written from the numbers: the findings' tally, who ranks first under
    each protocol and where each paper's method ranks under its own, where every modality reads
    worse than one (``worse``, from :func:`worse_with_more`), how far the best method stays from
    the oracle."""
    lines = []
    simple = [v for v in verdicts if asks(v, "simple")]
    home = [v for v in verdicts if asks(v, "own")]
    if simple:
        by = {k: [v for v in simple if v.verdict == k] for k in report.VERDICTS}
        win = "; ".join(f"{v.setting}: {v.a} over {v.b}, {v.text()}" for v in by["reproduced"]) or "none"
        lose = "; ".join(f"{v.setting}: {v.b} over {v.a}, {v.text()}" for v in by["contradicted"]) or "none"
        lines.append(f"- **The papers' ideas against the simple baselines.** In {len(by['reproduced'])} of "
                     f"{len(simple)} settings the best paper method beats the best simple baseline ({win}). "
                     f"A simple baseline is ahead in {len(by['contradicted'])} ({lose}); the other "
                     f"{len(by['inconclusive']) + len(by['not testable'])} cannot be told apart at these seeds (decided "
                     "family-wise: Holm's correction over the chapter's findings).")
    if home:
        lines.append("- **Each paper's method on its own protocol**, against the best other method there: "
                     + "; ".join(f"{v.a} at {v.setting}: {v.text()} vs {v.b} ({report.verdict_text(v)})" for v in home) + ".")
    if len(rank):
        parts = []
        for col in rank.columns:
            r = rank[col].dropna()
            home = PROTOCOLS[col.split(" · ")[1]].paper
            own = f"; {home} {r[home]:.1f}" if home in r and r.idxmin() != home else ""
            parts.append(f"{col}: {r.idxmin()} {r.min():.1f}{own}")
        lines.append("- **Who ranks first** (average rank over levels and seeds, 1 = best; then the protocol's own "
                     "paper's method): " + "; ".join(parts) + ".")
    if worse is not None and len(worse):
        lines.append("- **More is sometimes less.** Every modality at test time is worse than the best single one "
                     "(paired, the interval below 0) for: " + "; ".join(
                         f"{w.row} at {w.dataset} · {w.protocol} {w.level:g} ({w.effect:+.1f} [{w.ci_low:+.1f}, "
                         f"{w.ci_high:+.1f}] against {w.single} alone)" for w in worse.itertuples())
                     + ". A fusion trained mostly without a modality can read it worse than nothing.")
    if len(gap):
        head = []
        for (ds, pr, lv), sub in gap.groupby(["dataset", "protocol", "level"]):
            s = sub[(sub["test"] == settings[(ds, pr, lv)].headline) & (sub["row"] != "Upper-Bound")]
            if len(s):
                b = s.loc[s["gap"].idxmin()]
                head.append(f"{ds} {pr} {lv:g}: {b['row']} {b['gap']:.1f} [{b['ci_low']:.1f}, {b['ci_high']:.1f}]")
        if head:
            lines.append("- **Room left under the oracle** (the closest method's gap on the headline test, points, "
                         "95 % CI): " + "; ".join(head) + ".")
    return "\n".join(lines) if lines else "No runs to summarise."


# ----------------------------------------------------------------------------- the page: gather, tables, figures
@dataclass
class Gathered:
    """Every run of a plan, as the chapter's tables read them: ``frame`` (the methods' rows),
    ``na`` (what could not run, and why), ``oracle`` (the Bayes oracle's rows), ``settings``
    (``{(dataset, protocol, level): Setting}``), ``data`` (the datasets by name), ``head``
    (the headline rows), ``columns`` (the settings in run order) and ``order`` (the rows)."""
    frame: pd.DataFrame
    na: pd.DataFrame
    oracle: pd.DataFrame
    settings: dict
    data: dict
    head: pd.DataFrame
    columns: list
    order: list

    @property
    def all(self) -> pd.DataFrame:
        return pd.concat([self.frame, self.oracle], ignore_index=True)

    def describe(self, seeds) -> str:
        runs = self.frame.drop_duplicates(["row", "dataset", "protocol", "level", "seed"]).shape[0]
        fitted = int((~self.frame.drop_duplicates(["path"])["reused"]).sum())
        return (f"{runs} runs ({fitted} fitted now, the rest read from the record store), {len(self.settings)} "
                f"settings, seeds {list(seeds)}")


def gather(the_plan: dict, seeds, cfg, device, store, profile: str, data_root=None, data_options=None,
           dataset: str | None = None) -> Gathered:
    """Run (or read) every setting of ``the_plan`` on its dataset, with the oracle's rows."""
    frames, na, oracles, settings, data = [], [], [], {}, {}
    for name, protocols in the_plan.items():
        data[name] = d = load_data(name, data_root if name == dataset else None, data_options)
        for pr, levels in protocols.items():
            for lv in levels:
                st = setting(pr, lv, d.modality_names)
                f, n = run_setting(d, name, st, seeds, cfg, device, store, profile)
                frames.append(f)
                na.append(n)
                oracles.append(oracle_rows(d, name, st, seeds))
                settings[(name, pr, st.level)] = st
    frame = pd.concat(frames, ignore_index=True)
    oracle = pd.concat(oracles, ignore_index=True)
    head = headline(pd.concat([frame, oracle], ignore_index=True), settings)
    order = [e.label for e in roster(profile)] + ([ORACLE] if len(oracle) else [])
    return Gathered(frame, pd.concat(na, ignore_index=True), oracle, settings, data, head, list(settings), order)


def roster_table(profile: str) -> pd.DataFrame:
    """Every row of the chapter: its kind, registry key and training budget."""
    show = roster(profile)
    return pd.DataFrame({"row": [e.label for e in show], "kind": [e.kind for e in show],
                         "registry key": [e.key for e in show],
                         "budget": ["the same for every row" if e.min_epochs is None else
                                    f"at least {e.min_epochs} epochs (its chapter's), under {', '.join(e.protocols)}'s "
                                    "protocol only: a measured row, not in the ranks or findings" for e in show]}
                        ).set_index("row")


def dataset_tables(g: Gathered, n_seeds: int) -> list[tuple[str, str, str]]:
    """One main table per dataset, as ``(title, table, footnotes)`` Markdown; the footnotes are
    numbered once for the whole page."""
    numbering: dict = {}
    out = []
    for name in dict.fromkeys(c[0] for c in g.columns):
        cols = [c for c in g.columns if c[0] == name]
        table, notes = main_table(g.head, g.na, g.order, cols, numbering)
        table.columns = [c.split(" · ", 1)[1] for c in table.columns]
        table = table[~(table == "–").all(axis=1)]                     # the oracle exists on gaussian only
        out.append((f"**{name}** ({', '.join(g.data[name].modality_names)}; test accuracy %, n = {n_seeds} seeds)",
                    table.to_markdown(), "\n".join(f"- [{k}] {v}" for k, v in notes.items())))
    return out


def pattern_tables(g: Gathered) -> list[tuple[str, pd.DataFrame]]:
    """Per dataset and setting, every test pattern's accuracy (%) per row: one table per setting, so
    every column fits the page."""
    out = []
    for name in dict.fromkeys(c[0] for c in g.columns):
        sub = g.frame[(g.frame["dataset"] == name) & (g.frame["test"] != "pooled")]
        for setting_, part in sub.groupby("setting", sort=False):
            tab = report.table(part, "row", "test", "accuracy", show_n=False)
            tab = tab.reindex([r for r in g.order if r in tab.index])
            tab.index.name, tab.columns.name = "method", "test pattern"
            out.append((f"**{name} · {setting_}** (test accuracy %)", tab))
    return out


def rank_table(g: Gathered) -> pd.DataFrame:
    """:func:`ranks` as the page shows it, with the number of competitors per column."""
    r, k = ranks(g.head)
    tab = r.round(2).astype(object).where(r.notna(), "n/a")
    tab = tab.reindex([x for x in g.order if x in tab.index])
    tab.loc["(methods ranked)"] = [f"{k[c]:.0f}" for c in tab.columns]
    tab.index.name, tab.columns.name = "method", None
    return tab


def cost_tables(g: Gathered) -> list[tuple[str, pd.DataFrame]]:
    """Median fit time, trained parameters and mean headline accuracy (with the number of
    settings) per row and dataset."""
    c = cost(g.all, g.head)
    rows = [r for r in g.order if r in set(c["row"])]
    out = []
    for what, col, fmt in [("median fit time (s)", "fit_s", "{:.1f}"), ("trained parameters", "parameters", "{:,.0f}"),
                           ("headline accuracy (%), mean over the settings the method ran (their number in brackets)",
                            "accuracy", "{:.1f}")]:
        t = c.pivot_table(index="row", columns="dataset", values=col, aggfunc="first").reindex(rows)
        t = t.astype(object).map(lambda x: "–" if x != x else fmt.format(x))
        if col == "accuracy":
            n = c.pivot_table(index="row", columns="dataset", values="settings", aggfunc="first").reindex(rows)
            t = t.where(n.isna(), t + n.map(lambda x: "" if x != x else f" ({int(x)})"))
        out.append((f"**{what}**", t))
    return out


def gap_figure(g: Gathered, gap: pd.DataFrame):
    """Heat maps of the gap to the oracle (points) per row and test pattern, one per setting, two a
    row (the imbalanced preset first)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    x = gap.assign(col=[f"{d.split(':')[-1]} · {p} {lv:g}" for d, p, lv in zip(gap["dataset"], gap["protocol"],
                                                                                 gap["level"])])
    key = {c: (d != "gaussian:imbalanced", d, list(PROTOCOLS).index(p), lv)
           for c, d, p, lv in zip(x["col"], x["dataset"], x["protocol"], x["level"])}
    cols = sorted(key, key=key.get)
    pats = sorted([t for t in dict.fromkeys(x["test"]) if t != "pooled"], key=lambda t: (t == "masked", t.count("+"), t))
    ncols = min(2, len(cols))
    nrows = -(-len(cols) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 5.2 * nrows), squeeze=False, constrained_layout=True)
    axes = list(axes.flat)
    rows = [r for r in g.order if r in set(x["row"])]
    vmax = max(25.0, float(x["gap"].max()))
    for k, (ax, c) in enumerate(zip(axes, cols)):
        sub = x[x["col"] == c]
        m = sub.pivot_table(index="row", columns="test", values="gap").reindex(
            index=rows, columns=[t for t in pats if t in set(sub["test"])])
        sns.heatmap(m, ax=ax, cmap="rocket_r", vmin=0, vmax=vmax, annot=True, fmt=".0f", cbar=False,
                    annot_kws={"size": 10}, yticklabels=k % ncols == 0)
        ax.set(title=c, xlabel="test pattern" if k >= len(cols) - ncols else "", ylabel="")
        ax.tick_params(axis="x", rotation=60)
    for ax in axes[len(cols):]:
        ax.axis("off")
    fig.colorbar(axes[0].collections[0], ax=axes, shrink=0.6, label="points below the oracle")
    return fig


def curves_figure(g: Gathered, dataset: str):
    """Headline accuracy against each protocol's level on ``dataset``, one panel per protocol, one
    colour per row in every panel; the oracle dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from . import plots
    sub = g.head[g.head["dataset"] == dataset]
    prots = [p for p in PROTOCOLS if p in set(sub["protocol"])]
    rows = [r for r in g.order if r not in ("Upper-Bound", ORACLE)]
    colors = dict(zip(rows, sns.color_palette("tab10" if len(rows) <= 10 else "tab20", len(rows))))   # one each
    ncols = min(2, len(prots))                      # two panels a row: readable at the page's width
    nrows = -(-len(prots) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 4.4 * nrows), sharey=True, squeeze=False)
    axes, spare = list(grid.flat[:len(prots)]), list(grid.flat[len(prots):])
    for ax in spare:
        ax.axis("off")
    for ax, p in zip(axes, prots):
        s = sub[sub["protocol"] == p]
        summ = report.summary(s[s["row"] != ORACLE], ["row", "level"], "accuracy")
        summ = summ[summ["row"].isin(rows)].rename(columns={"level": "r"})
        plots.curves(summ, "r", "accuracy", "row", ax=ax, title=f"{PROTOCOLS[p].paper}'s protocol",
                     ylabel="accuracy (%)", colors=colors, order=rows)
        o = s[s["row"] == ORACLE].groupby("level")["accuracy"].mean() * 100
        if len(o) == 1:
            ax.axhline(o.iloc[0], color="k", ls="--", lw=1.5, label=ORACLE)
        elif len(o):
            ax.plot(o.index, o.values, "k--", lw=1.5, label=ORACLE)
        ax.get_legend().remove()
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h_, l_ in zip(*ax.get_legend_handles_labels()):
            if l_ not in labels:
                handles.append(h_)
                labels.append(l_)
    fig.tight_layout()
    if spare:                                       # the legend in the empty panel
        spare[0].legend(handles, labels, loc="center", fontsize=9)
    else:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    return fig
