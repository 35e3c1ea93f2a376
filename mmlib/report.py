"""Paired statistics, verdicts and the tables a chapter shows -- computed from records.

Every claim of the book is decided here, by one tested function, never by comparing two
means in a notebook. Runs at one seed share their masks across methods, so two methods are
compared by the **paired differences** ``d_s = a_s - b_s`` over the seeds ``s`` both ran:

* the effect is the mean of ``d_s``, always the claimed side minus the other (a claim "a < b"
  is tested as "b > a"), so a positive effect supports the claim; its 95 % interval is the t-interval
  ``mean +- t_{0.975, n-1} * sd(d) / sqrt(n)``; ``p`` is the two-sided paired t-test;
* the verdict (``GUIDE.md``): **reproduced** -- the claimed direction and the interval
  excludes 0; **contradicted** -- the opposite direction and the interval excludes 0;
  **inconclusive** -- the interval contains 0; **not testable** -- fewer than two
  paired seeds, or the data cannot discriminate (both methods at the floor);
* a claim over several settings (e.g. "beats the baseline at every missing rate") averages
  each seed's differences over the settings, takes the t-interval over seeds (the settings
  of one seed share its masks, so they are not independent samples), and reports the sign
  count: in how many settings the mean difference has the claimed sign;
* **families** (:func:`adjust`): a chapter tests many claims, so within a chapter the paper's
  claims form one family and the book's own questions (the authors' code against the paper
  included) another; each family's p are adjusted with Holm's step-down method (the
  Benjamini-Hochberg q beside it, for readers who prefer the false discovery rate), and a
  verdict is reproduced or contradicted only when its Holm-adjusted p < 0.05 (and the
  unadjusted interval excludes 0 in that direction); otherwise it is inconclusive. The raw
  p, the unadjusted interval and the raw verdict stay in the record.

:func:`compare` works on the frame of :func:`mmlib.results.load_records`;
:func:`write_verdicts` stores one machine-readable verdict file per chapter (read back by
:func:`read_verdicts`) for the scorecard and the head-to-head chapter.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .results import write_json_atomic

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not testable")
LEVEL = 0.95
ALPHA = 0.05                         # the family-wise error rate of a chapter's family of claims
# within a chapter: the paper's claims, and the book's own questions (the authors' code against the paper included)
FAMILIES = {"paper": "the paper's claims", "book": "the book's own questions"}
KINDS = {"paper": "the paper's claims", "code": "the authors' code against the paper",
         "book": "the book's own questions"}


# ----------------------------------------------------------------------------- statistics
@dataclass
class Paired:
    """The paired differences of two methods over seeds, and what they say."""
    diffs: dict                      # seed -> a_s - b_s
    effect: float                    # mean difference (nan when n == 0)
    ci: tuple[float, float]          # 95 % t-interval of the mean difference
    n: int                           # number of paired seeds
    p: float                         # two-sided paired t-test (nan when n < 2)

    @property
    def excludes_zero(self) -> bool:
        lo, hi = self.ci
        return self.n >= 2 and (lo > 0 or hi < 0)


def t_interval(d, level: float = LEVEL) -> tuple[float, tuple[float, float], float]:
    """Mean, t-interval and two-sided one-sample t-test p of the values ``d`` against 0.
    With fewer than two values the interval and p are nan; with identical values the
    interval is the point itself (p = 0 unless every value is 0, then p = 1)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n == 0:
        return math.nan, (math.nan, math.nan), math.nan
    mean = float(d.mean())
    if n < 2:
        return mean, (math.nan, math.nan), math.nan
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return mean, (mean, mean), (1.0 if mean == 0 else 0.0)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return mean, (mean - half, mean + half), p


def paired(a: pd.Series | dict, b: pd.Series | dict, level: float = LEVEL) -> Paired:
    """Paired differences ``a - b`` over the keys (seeds) both have."""
    a, b = pd.Series(a, dtype=float).dropna(), pd.Series(b, dtype=float).dropna()
    common = sorted(set(a.index) & set(b.index))
    diffs = {s: float(a[s] - b[s]) for s in common}
    mean, ci, p = t_interval(list(diffs.values()), level)
    return Paired(diffs, mean, ci, len(diffs), p)


def decide(effect: float, ci: tuple[float, float], n: int, direction: str = ">",
           testable: bool = True) -> str:
    """The verdict on a claim "a ``direction`` b" (``">"``: a is better, ``"<"``: a is
    lower) from the mean paired difference a - b and its interval."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    if not testable or n < 2 or any(math.isnan(x) for x in ci):
        return "not testable"
    lo, hi = ci
    if lo <= 0 <= hi:
        return "inconclusive"
    claimed = (lo > 0) if direction == ">" else (hi < 0)
    return "reproduced" if claimed else "contradicted"


# ----------------------------------------------------------------------------- claims from records
@dataclass
class Verdict:
    """One claim tested on the book's records: what was compared, the effect (in the
    metric's units times ``scale``), its interval, n and the verdict."""
    claim: str
    a: str
    b: str
    metric: str
    setting: str = ""
    direction: str = ">"
    effect: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    p: float = math.nan
    verdict: str = "not testable"
    signs: str = ""                  # claims over several settings: "k/S settings in the claimed direction"
    reason: str = ""                 # why not testable, if so
    diffs: dict = field(default_factory=dict)
    margin: float = math.nan         # equivalence claims ("="): the margin, in display units
    kind: str = ""                   # "paper", "code" or "book", declared with the claim; its family: :func:`family`
    p_holm: float = math.nan         # p adjusted with Holm's method within the claim's family (:func:`adjust`)
    q_bh: float = math.nan           # the Benjamini-Hochberg q within the family
    raw_verdict: str = ""            # the verdict before the adjustment ("" until :func:`adjust`)
    sides: dict = field(default_factory=dict)   # {"a": {seed: value}, "b": {seed: value}}: what was compared
    id: str = ""                     # the claim's id, e.g. "h2h.simple.gaussian-mla-0.5" (unique in a chapter)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["diffs"] = {str(k): v for k, v in self.diffs.items()}
        d["sides"] = {side: {str(k): v for k, v in vals.items()} for side, vals in self.sides.items()}
        return d

    def text(self, digits: int = 1) -> str:
        """``"+7.1 [+4.0, +10.2], n=5"`` (at least ``digits`` decimals, more where the interval is
        narrower: :func:`fmt_effect`); ``"n=1"`` alone when it cannot be tested."""
        if self.n < 2:
            return f"n={self.n}"
        return f"{fmt_effect(self, digits)}, n={self.n}"


def decimals(scale: float, at_least: int = 1) -> int:
    """Decimals that show numbers of magnitude ``scale`` with two significant digits (at least
    ``at_least``): 25.9 -> 1, 1.5 -> 1, 0.031 -> 3."""
    if not (scale > 0) or not math.isfinite(scale):
        return at_least
    return max(at_least, 1 - math.floor(math.log10(scale)))


def fmt_effect(v: "Verdict", at_least: int = 1) -> str:
    """``"+0.017 [+0.002, +0.031]"``: the effect and its interval, rounded by their scale
    (:func:`decimals` of the largest of the three in magnitude), not to a fixed decimal that can
    read "+0.0 [+0.0, +0.0]"."""
    if v.n < 2 or math.isnan(v.ci_low):
        return f"{v.effect:+.{decimals(abs(v.effect), at_least)}f}"
    d = decimals(max(abs(v.effect), abs(v.ci_low), abs(v.ci_high)), at_least)
    return f"{v.effect:+.{d}f} [{v.ci_low:+.{d}f}, {v.ci_high:+.{d}f}]"


def _select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    if not where:
        return df
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        if col not in df.columns:
            raise KeyError(f"no column {col!r} in the records; columns: {sorted(df.columns)}")
        if isinstance(val, (list, tuple, set)):
            mask &= df[col].isin(list(val))
        elif isinstance(val, float) and math.isnan(val):
            mask &= df[col].isna()
        else:
            mask &= df[col] == val
    return df[mask]


def per_seed(df: pd.DataFrame, metric: str, where: dict | None = None, seed_col: str = "seed") -> pd.Series:
    """One value of ``metric`` per seed among the rows matching ``where``. Rows that are
    the same run read twice (identical values at one seed) count once; different values at
    one seed mean the selection is ambiguous and raise, naming the columns that differ."""
    rows = _select(df, where)
    if metric not in rows.columns:
        raise KeyError(f"no metric {metric!r} in the records; columns: {sorted(df.columns)}")
    out = {}
    for s, g in rows.groupby(seed_col):
        vals = g[metric].dropna().unique()
        if len(vals) > 1:
            differ = [c for c in g.columns if c not in (metric, "path") and g[c].astype(str).nunique() > 1]
            raise ValueError(f"{len(vals)} different values of {metric!r} at {seed_col}={s} for {where}: "
                             f"add one of {differ or ['path']} to `where` to pick one run")
        if len(vals):
            out[s] = float(vals[0])
    return pd.Series(out, dtype=float)


def claimed_first(a, b, direction: str):
    """The sign convention of every verdict: the effect is **the claimed side minus the other**,
    so a positive effect supports the claim. A claim "a < b" (``direction="<"``, e.g. a smaller
    drop, a lower MAE, a smaller KL) is the claim "b > a": the sides are swapped and the direction
    becomes ">"."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    return (b, a, ">") if direction == "<" else (a, b, ">")


def compare(df: pd.DataFrame, a: dict, b: dict, metric: str, *, claim: str = "", setting: str = "",
            direction: str = ">", scale: float = 100.0, floor: float | None = None,
            tol: float = 0.005, level: float = LEVEL, id: str = "", kind: str = "") -> Verdict:
    """Test "a ``direction`` b" on ``metric`` from paired seeds. ``a`` and ``b`` select
    rows of the records frame (e.g. ``{"method": "smil", "test": "image"}``); shared
    conditions may go into both. With ``floor`` (e.g. the majority-class rate) a claim
    where both sides are within ``tol`` of the floor is not testable. A claim "a < b" is
    recorded as "b > a" (:func:`claimed_first`): every effect is the claimed side minus the other."""
    a, b, direction = claimed_first(a, b, direction)
    va, vb = per_seed(df, metric, a), per_seed(df, metric, b)
    pr = paired(va * scale, vb * scale, level)
    v = Verdict(claim, _label(a), _label(b), metric, setting, direction, pr.effect, pr.ci[0], pr.ci[1],
                pr.n, pr.p, diffs=pr.diffs, sides=_sides(va * scale, vb * scale, pr.diffs))
    reason = ""
    if pr.n < 2:
        reason = f"{pr.n} paired seed(s) (a: {len(va)}, b: {len(vb)})"
    elif floor is not None and va.mean() <= floor + tol and vb.mean() <= floor + tol:
        reason = f"both at the floor ({floor * scale:.1f})"
    v.verdict = decide(pr.effect, pr.ci, pr.n, direction, testable=not reason)
    v.reason, v.id, v.kind = reason, id, kind
    return v


def compare_series(a: pd.Series, b: pd.Series, *, claim: str = "", setting: str = "", direction: str = ">",
                   metric: str = "", a_label: str = "a", b_label: str = "b", level: float = LEVEL,
                   id: str = "", kind: str = "") -> Verdict:
    """A claim on two per-seed quantities computed by the caller (already in display
    units), e.g. each seed's drop in accuracy from 80 % to 95 % missing for two methods. A claim
    "a < b" is recorded as "b > a" (:func:`claimed_first`)."""
    if direction == "<":
        (a, a_label), (b, b_label), direction = (b, b_label), (a, a_label), ">"
    pr = paired(a, b, level)
    v = Verdict(claim, a_label, b_label, metric, setting, direction, pr.effect, pr.ci[0], pr.ci[1], pr.n, pr.p,
                diffs=pr.diffs, sides=_sides(pd.Series(a, dtype=float), pd.Series(b, dtype=float), pr.diffs))
    v.reason = "" if pr.n >= 2 else f"{pr.n} paired seed(s)"
    v.verdict = decide(pr.effect, pr.ci, pr.n, direction, testable=not v.reason)
    v.id, v.kind = id, kind
    return v


def compare_over(df: pd.DataFrame, a: dict, b: dict, metric: str, settings: list[dict], *,
                 claim: str = "", setting: str = "", direction: str = ">", scale: float = 100.0,
                 floor: float | None = None, tol: float = 0.005, level: float = LEVEL, id: str = "",
                 kind: str = "") -> Verdict:
    """A claim over several settings (each a dict of conditions added to ``a`` and ``b``).

    The differences at one seed are not independent across settings (the same seed draws
    nested masks, and a method that ignores the setting is one fit per seed), so they are
    averaged per seed over the settings first; the t-interval is then taken over seeds
    (``n`` = seeds). ``signs`` counts the settings whose mean difference has the claimed
    sign. Settings where both sides sit at ``floor`` are left out. A claim "a < b" is recorded
    as "b > a" (:func:`claimed_first`)."""
    a, b, direction = claimed_first(a, b, direction)
    by_seed, signs, total, side_a, side_b = {}, 0, 0, {}, {}
    for s in settings:
        v = compare(df, {**a, **s}, {**b, **s}, metric, direction=direction, scale=scale,
                    floor=floor, tol=tol, level=level)
        if v.reason.startswith("both at the floor") or not v.diffs:
            continue
        total += 1
        mean = float(np.mean(list(v.diffs.values())))
        signs += int(mean > 0) if direction == ">" else int(mean < 0)
        for seed, d in v.diffs.items():
            by_seed.setdefault(seed, []).append(d)
            side_a.setdefault(seed, []).append(v.sides["a"][seed])
            side_b.setdefault(seed, []).append(v.sides["b"][seed])
    full = {seed: float(np.mean(ds)) for seed, ds in by_seed.items() if len(ds) == total}
    sides = {"a": {s_: float(np.mean(side_a[s_])) for s_ in full}, "b": {s_: float(np.mean(side_b[s_])) for s_ in full}}
    mean, ci, p = t_interval(list(full.values()), level)
    out = Verdict(claim, _label(a), _label(b), metric, setting or f"{len(settings)} settings", direction,
                  mean, ci[0], ci[1], len(full), p, signs=f"{signs}/{total}", diffs=full, sides=sides)
    out.reason = "" if len(full) >= 2 else f"{len(full)} seed(s) with every setting"
    out.verdict = decide(mean, ci, len(full), direction, testable=not out.reason)
    out.id, out.kind = id, kind
    return out


def decide_equivalence(ci: tuple[float, float], n: int, margin: float) -> str:
    """The verdict on a claim "a equals b within +-``margin``" (two one-sided tests at the
    interval's level): reproduced when the whole interval lies inside (-margin, margin),
    contradicted when it lies wholly outside, else inconclusive."""
    if n < 2 or any(math.isnan(x) for x in ci):
        return "not testable"
    lo, hi = ci
    if -margin < lo and hi < margin:
        return "reproduced"
    if lo >= margin or hi <= -margin:
        return "contradicted"
    return "inconclusive"


def equivalent(df: pd.DataFrame, a: dict, b: dict, metric: str, margin: float, *, claim: str = "",
               setting: str = "", scale: float = 100.0, level: float = LEVEL, id: str = "", kind: str = "") -> Verdict:
    """Test "a equals b within +-``margin``" (in display units) from paired seeds; the
    verdict's ``direction`` is ``"="``."""
    va, vb = per_seed(df, metric, a), per_seed(df, metric, b)
    pr = paired(va * scale, vb * scale, level)
    v = Verdict(claim, _label(a), _label(b), metric, setting, "=", pr.effect, pr.ci[0], pr.ci[1],
                pr.n, equivalence_p(list(pr.diffs.values()), margin), diffs=pr.diffs, margin=margin,
                sides=_sides(va * scale, vb * scale, pr.diffs))
    v.reason = "" if pr.n >= 2 else f"{pr.n} paired seed(s) (a: {len(va)}, b: {len(vb)})"
    v.verdict = decide_equivalence(pr.ci, pr.n, margin)
    v.id, v.kind = id, kind
    return v


def equivalence_p(d, margin: float) -> float:
    """The p of an equivalence claim "|mean d| < margin", on the scale of a two-sided test (so
    that p < 0.05 exactly when :func:`decide_equivalence` decides at the 95 % interval): with
    the mean inside the margins, twice the larger of the two one-sided t-tests (TOST) against
    -margin and +margin (small: equivalent); outside, twice the one-sided test that the mean
    lies beyond the nearer margin (small: not equivalent)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return math.nan
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        return 0.0 if abs(mean) != margin else 1.0
    if abs(mean) < margin:
        one = max(float(stats.t.sf((mean + margin) / se, n - 1)), float(stats.t.sf((margin - mean) / se, n - 1)))
    else:
        one = float(stats.t.sf((abs(mean) - margin) / se, n - 1))
    return min(1.0, 2 * one)


def _sides(a: pd.Series, b: pd.Series, diffs: dict) -> dict:
    """The two sides' values at the paired seeds (``diffs``' keys)."""
    return {"a": {s: float(a[s]) for s in diffs}, "b": {s: float(b[s]) for s in diffs}}


def _label(sel: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel.items())


# ----------------------------------------------------------------------------- families
KIND_HELP = ("'paper' (the paper's claim), 'code' (the authors' code, or one of its differences, against the "
             "paper's reading) or 'book' (a question the book asks)")


def family(kind: str) -> str:
    """The family a claim of ``kind`` is adjusted in: "paper" or "book" (the code's claims are
    questions the book asks of the paper's reading)."""
    return "paper" if kind == "paper" else "book"


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p (family-wise error rate): the i-th smallest of m p-values
    becomes max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def bh(p) -> np.ndarray:
    """Benjamini-Hochberg q (false discovery rate): the i-th smallest of m p-values becomes
    min_{j >= i} min(1, m p_(j) / j)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    q = np.minimum.accumulate((m * p[order] / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, q)
    return out


def adjust(verdicts: list[Verdict], alpha: float = ALPHA) -> list[Verdict]:
    """Decide a chapter's claims family-wise, in place (and return them): each claim gets its
    ``kind`` (unless declared), the Holm-adjusted p and the BH q within its family (the paper's
    claims; the book's own questions), and its verdict becomes the raw verdict when that is
    decisive (reproduced or contradicted) and the Holm p < ``alpha``, else "inconclusive";
    "not testable" claims are not tests and stay out of the family. ``raw_verdict`` keeps the
    unadjusted verdict, so adjusting twice gives the same result."""
    for v in verdicts:
        if not v.kind:
            raise ValueError(f"claim {v.id or v.claim!r} declares no kind: pass kind= {KIND_HELP}")
        if v.kind not in KINDS:
            raise ValueError(f"claim {v.id or v.claim!r}: kind {v.kind!r} is not one of {list(KINDS)}")
        v.raw_verdict = v.raw_verdict or v.verdict
    for fam in FAMILIES:
        tests = [v for v in verdicts if family(v.kind) == fam and v.raw_verdict != "not testable"
                 and not math.isnan(v.p)]
        ps = [v.p for v in tests]
        for v, ph, q in zip(tests, holm(ps), bh(ps)):
            v.p_holm, v.q_bh = float(ph), float(q)
    for v in verdicts:
        decisive = v.raw_verdict in ("reproduced", "contradicted")
        v.verdict = v.raw_verdict if not decisive or (v.p_holm < alpha) else "inconclusive"
    return verdicts


def same_comparisons(verdicts: list[Verdict]) -> list[tuple[Verdict, Verdict]]:
    """Pairs of claims in one family declared on the same two sides (in either order), metric and
    setting: a claim and its mirror, found from what the claims name (no data needed)."""
    seen, out = {}, []
    for v in verdicts:
        if v.direction == "=" or {v.a, v.b} == {"a", "b"}:     # (compare_series' default labels name nothing)
            continue
        key = (family(v.kind), v.metric, v.setting, frozenset((v.a, v.b)))
        if key in seen:
            out.append((seen[key], v))
        else:
            seen[key] = v
    return out


def duplicates(verdicts: list[Verdict], tol: float = 1e-9) -> list[tuple[Verdict, Verdict]]:
    """Pairs of claims in one family that test the same paired differences (equal, or equal with
    the sign flipped: a claim and its mirror) at the same seeds: one test counted twice. Claims
    whose differences are all 0 are left out (both sides the same fit, or at the floor), and so
    are claims with a side that is one number at every seed (a fit at the majority-class floor:
    two such claims against the same method coincide without being one claim)."""
    def constant(v):
        return any(len(vals) >= 2 and max(vals.values()) - min(vals.values()) <= tol for vals in v.sides.values())
    out = []
    tested = [v for v in verdicts if v.n >= 2 and v.diffs and not constant(v)]
    for i, a in enumerate(tested):
        da = [a.diffs[k] for k in sorted(a.diffs, key=str)]
        if all(abs(x) <= tol for x in da):
            continue
        for b in tested[i + 1:]:
            if family(a.kind) != family(b.kind) or \
                    set(map(str, a.diffs)) != set(map(str, b.diffs)):
                continue
            db = [dict((str(k), x) for k, x in b.diffs.items())[str(k)] for k in sorted(a.diffs, key=str)]
            if any(all(abs(x - sg * y) <= tol * max(1.0, abs(x)) for x, y in zip(da, db)) for sg in (1, -1)):
                out.append((a, b))
    return out


def detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The minimal detectable effect of a paired claim: the smallest true mean difference that a
    two-sided paired t-test on ``n`` seeds at level ``alpha`` detects with probability ``power``,
    when the seed-to-seed standard deviation of the differences is ``sd`` (non-central t)."""
    if n < 2 or not sd > 0:
        return math.nan
    from scipy.optimize import brentq
    df, se = n - 1, sd / math.sqrt(n)
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def shortfall(delta):
        nc = delta / se
        p = float(stats.nct.sf(crit, df, nc)) + float(np.nan_to_num(stats.nct.cdf(-crit, df, nc)))
        return (p if math.isfinite(p) else float(stats.norm.sf(crit - nc))) - power   # (scipy's nct can fail far out)
    return float(brentq(shortfall, 0.0, (crit + 6) * se))     # (power at a non-centrality of crit + 6: ~1)


def by_id(verdicts: list[Verdict]) -> dict[str, Verdict]:
    """The claims that have an id, by id: what a chapter's summary reads (never the claim's text)."""
    return {v.id: v for v in verdicts if v.id}


def moved(verdicts: list[Verdict]) -> list[Verdict]:
    """The claims whose verdict the family-wise adjustment changed."""
    return [v for v in verdicts if v.raw_verdict and v.raw_verdict != v.verdict]


# ----------------------------------------------------------------------------- tables
def mean_ci(values, level: float = LEVEL) -> tuple[float, float, int]:
    """Mean, half-width of the 95 % t-interval (nan for one value) and n."""
    mean, (lo, hi), _ = t_interval(values, level)
    n = len(np.asarray(values))
    return mean, (hi - mean if n >= 2 else math.nan), n


def fmt_mean_ci(values, scale: float = 100.0, digits: int = 1, show_n: bool = True) -> str:
    """``"80.5 ± 2.1 (n=5)"`` -- ± is the 95 % interval's half-width; ``"80.5 (n=1)"`` for one
    run; ``"–"`` for none."""
    vals = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
                      dtype=float) * scale
    if len(vals) == 0:
        return "–"
    mean, half, n = mean_ci(vals)
    s = f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if n >= 2 else "")
    return s + (f" (n={n})" if show_n else "")


def table(df: pd.DataFrame, rows: str | list[str], cols: str | list[str], metric: str,
          scale: float = 100.0, digits: int = 1, show_n: bool = True, labels: dict | None = None) -> pd.DataFrame:
    """A display table: ``rows`` x ``cols`` (record columns), each cell mean ± 95 % CI over
    seeds (duplicates of one run at one seed counted once), with n. ``labels`` renames
    values of the row and column keys (e.g. registry keys to display names)."""
    rows = [rows] if isinstance(rows, str) else list(rows)
    cols = [cols] if isinstance(cols, str) else list(cols)
    keyed = df.drop_duplicates(subset=rows + cols + ["seed", metric])
    cells = keyed.groupby(rows + cols, dropna=False)[metric].agg(
        lambda v: fmt_mean_ci(list(v), scale, digits, show_n))
    out = cells.unstack(cols) if cols else cells.to_frame(metric)
    if labels:
        out = out.rename(index=labels, columns=labels)
    return out.fillna("–")


def summary(df: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """Per group: ``<metric>_mean``, ``<metric>_ci`` (95 % half-width, nan for one seed)
    and ``n`` (seeds), the same run at one seed counted once."""
    keyed = df.drop_duplicates(subset=by + ["seed", metric])
    rows = []
    for k, g in keyed.groupby(by, dropna=False, sort=False):
        mean, half, n = mean_ci(g[metric].to_numpy())
        rows.append({**dict(zip(by, k if isinstance(k, tuple) else (k,))), f"{metric}_mean": mean,
                     f"{metric}_ci": half, "n": n})
    return pd.DataFrame(rows)


def fmt_p(p: float) -> str:
    """A p-value for a table: "–" (none), "<0.001" or three decimals."""
    return "–" if p is None or math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def verdict_text(v: Verdict) -> str:
    """The verdict as a reader sees it: with the reason it could not be tested, or the raw verdict
    the family-wise adjustment overruled ("inconclusive (raw: reproduced)")."""
    if v.reason:
        return f"{v.verdict} ({v.reason})"
    if v.raw_verdict and v.raw_verdict != v.verdict:
        return f"{v.verdict} (raw: {v.raw_verdict})"
    return v.verdict


def verdict_table(verdicts: list[Verdict], digits: int = 1) -> pd.DataFrame:
    """Claims as a reader sees them: the claim, the setting, the effect with its unadjusted 95 %
    interval and n, the sign count where there is one, the raw p, the family-wise p (Holm) and
    q (BH) after :func:`adjust` (which this applies, in place), and the verdict (with the reason
    when it could not be tested, or the raw verdict when the adjustment changed it)."""
    adjust(verdicts)
    rows = []
    for v in verdicts:
        rows.append({"claim": v.claim, "setting": v.setting,
                     "effect [95% CI], n": v.text(digits) + (f" ({v.signs} settings)" if v.signs else ""),
                     "p": fmt_p(v.p), "p (Holm)": fmt_p(v.p_holm), "q (BH)": fmt_p(v.q_bh),
                     "verdict": verdict_text(v)})
    return pd.DataFrame(rows)


def anchor(claim_id: str) -> str:
    """The HTML id of a claim's row on its chapter's page (the scorecard links to it)."""
    import re
    return "claim-" + re.sub(r"[^a-z0-9]+", "-", claim_id.lower()).strip("-")


def verdict_html(verdicts: list[Verdict], digits: int = 1) -> str:
    """:func:`verdict_table` as an HTML table a page shows: one row per claim, each row with an
    anchor (:func:`anchor`) so the scorecard's links land on the claim itself."""
    import html
    table = verdict_table(verdicts, digits)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for v, (_, r) in zip(verdicts, table.iterrows()):
        rid = f" id='{anchor(v.id)}'" if v.id else ""
        rows.append(f"<tr{rid}>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>")
    return (f"<table class='verdicts' style='font-size:0.85em'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


# ----------------------------------------------------------------------------- verdict records
def verdicts_path(records_dir: str | Path, chapter: str) -> Path:
    """Where a chapter's verdicts go: ``verdicts/<chapter>.json`` beside the record store."""
    return Path(records_dir).parent / "verdicts" / f"{chapter}.json"


def write_verdicts(path: str | Path, chapter: str, verdicts: list[Verdict], **context) -> Path:
    """One JSON file per chapter: ``{"chapter", "context", "verdicts": [...]}``; the verdicts are
    decided family-wise first (:func:`adjust`, in place: the chapter's tables show the same)."""
    ids = [v.id for v in verdicts if v.id]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"chapter {chapter}: claim ids declared more than once: {twice}")
    adjust(verdicts)
    context = {"alpha": ALPHA, "adjustment": "Holm within each family (paper; book), BH q beside it", **context}
    for v in verdicts:
        if v.verdict not in VERDICTS:
            raise ValueError(f"verdict {v.verdict!r} of claim {v.claim!r} is not one of {VERDICTS}")
    return write_json_atomic(path, {"chapter": chapter, "context": context,
                                    "verdicts": [v.to_dict() for v in verdicts]})


def read_verdict_file(path: str | Path) -> tuple[dict, list[Verdict]]:
    """A chapter's verdict file as (context, verdicts); a file that is not one raises a
    ValueError naming the file, what it holds and what a verdict file is."""
    expected = 'a JSON object {"chapter", "context", "verdicts": [verdict, ...]} (report.write_verdicts)'
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"verdict file {path} cannot be read ({type(e).__name__}: {e}); re-run its chapter's "
                         "page (mmbook sweep <chapter>)") from e
    if not isinstance(d, dict) or not isinstance(d.get("verdicts"), list) or \
            not isinstance(d.get("context", {}), dict) or not all(isinstance(v, dict) for v in d["verdicts"]):
        raise ValueError(f"verdict file {path} holds a {type(d).__name__}, not {expected}; re-run its chapter's "
                         "page (mmbook sweep <chapter>)")
    try:
        return d.get("context", {}), [Verdict(**v) for v in d["verdicts"]]
    except TypeError as e:
        raise ValueError(f"verdict file {path}: a verdict has the wrong fields ({e}); expected {expected}") from e


def read_verdicts(path: str | Path) -> list[Verdict]:
    return read_verdict_file(path)[1]


# ----------------------------------------------------------------------------- names
# One display name per method (its registry key), or per "key[variant]" where a variant has
# its own name, used by every table and legend of the book.
LABELS = {
    "lower_bound": "Lower-Bound", "upper_bound": "Upper-Bound", "zp_concat": "Zero padding (concat)",
    "zp_sum": "Zero padding (sum)", "late_fusion": "Late fusion", "unimodal": "One modality",
    "unimodal[use=image]": "image only", "unimodal[use=audio]": "audio only",
    "ae_impute": "AE imputation", "gan_impute": "GAN imputation", "mvae": "MVAE",
    # SMIL and its variants, ablations and controls
    "smil": "SMIL", "smil_code": "SMIL (the authors' code)", "smil_first_order": "SMIL, first-order Eq. 4",
    "smil_alg1": "SMIL, Algorithm 1 as printed (no CE on D^m)", "smil_kl_eq7": "SMIL, Eq. 7's KL as printed",
    "smil_reg_default_init": "SMIL, Eq. 3 at the default init", "smil_warm_only": "control: the warm starts alone",
    "smil_no_inner": "control: no inner step (alpha = 0)", "smil_no_kmeans": "SMIL w/o K-means priors",
    "smil_no_reg": "SMIL w/o regularization", "smil_fixed_gaussian": "SMIL, fixed Gaussian noise",
    "smil_deterministic": "SMIL, deterministic regularizer",
    # MLE and its baselines
    "mle": "MLE", "mle_lb": "MLE's lower bound (x only)", "mle_zp": "Zero padding (MLE's ZP)",
    "hgr": "HGR maximal correlation", "ae1": "AE1 (imputation)", "ae2": "AE2 (self-training imputation)",
    # M3S, RedCore and theirs
    "m3s": "ORIG + M3S", "m3s_orig": "ORIG", "m3s_spl_trn": "ORIG + SPL-TRN", "misa_lite": "MISA (lite)",
    "redcore": "RedCore", "redcore_core": "Core (RedCore w/o regulation)", "redcore_red": "Red (RedCore w/o unimodal CE)",
    "mmin_lite": "MMIN (lite)", "cra": "CRA", "amae_lite": "AMAE (lite)",
    # MLA and the balancing baselines
    "mla": "MLA", "mla_code": "MLA (the released code)", "sum_linear": "Sum", "concat_linear": "Concat",
    "film": "FiLM", "bigated": "BiGated", "ogm_ge": "OGM-GE", "qmf": "QMF",
}


def label(method: str, variant: str = "") -> str:
    """The display name of a method and variant (see ``experiment.variant_label``): its
    own name if it has one, else the method's name with the variant in brackets."""
    if variant and f"{method}[{variant}]" in LABELS:
        return LABELS[f"{method}[{variant}]"]
    base = LABELS.get(method, method)
    return f"{base} ({variant})" if variant else base
