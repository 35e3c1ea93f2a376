"""Paired statistics and verdicts against values computed by hand."""
import math

import pandas as pd
import pytest

from mmlib import report


def test_t_interval_by_hand():
    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3); t_{0.975, 2} = 4.302653
    mean, (lo, hi), p = report.t_interval([1, 2, 3])
    assert mean == 2
    assert lo == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert hi == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    # with 2 degrees of freedom, P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2
    t = 2 * math.sqrt(3)
    assert p == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-6)


def test_t_interval_edge_cases():
    assert math.isnan(report.t_interval([])[0])
    mean, ci, p = report.t_interval([0.4])
    assert mean == 0.4 and math.isnan(ci[0]) and math.isnan(p)
    assert report.t_interval([2, 2, 2]) == (2, (2, 2), 0.0)
    assert report.t_interval([0, 0]) == (0, (0, 0), 1.0)


def test_paired_uses_common_seeds_only():
    pr = report.paired({0: 0.9, 1: 0.8, 2: 0.7, 3: 0.5}, {0: 0.8, 1: 0.6, 2: 0.4})
    assert pr.n == 3
    assert pr.diffs == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})
    assert pr.effect == pytest.approx(0.2)


@pytest.mark.parametrize("effect,ci,n,direction,expected", [
    (3.0, (1.04, 4.96), 5, ">", "reproduced"),
    (3.0, (1.04, 4.96), 5, "<", "contradicted"),
    (-3.0, (-4.96, -1.04), 5, "<", "reproduced"),
    (-3.0, (-4.96, -1.04), 5, ">", "contradicted"),
    (2.0, (-0.48, 4.48), 3, ">", "inconclusive"),
    (2.0, (0.0, 4.0), 3, ">", "inconclusive"),           # an interval touching 0 does not exclude it
    (1.0, (math.nan, math.nan), 1, ">", "not testable"),
])
def test_decide(effect, ci, n, direction, expected):
    assert report.decide(effect, ci, n, direction) == expected


def test_decide_rejects_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        report.decide(1.0, (0.5, 1.5), 5, ">=")


def _records():
    rows = []
    for s, (a, b, c) in enumerate([(0.81, 0.80, 0.40), (0.83, 0.80, 0.40), (0.85, 0.80, 0.41),
                                   (0.84, 0.81, 0.40), (0.82, 0.79, 0.40)]):
        rows += [{"method": "smil", "test": "image", "seed": s, "accuracy": a, "path": f"smil{s}"},
                 {"method": "ae", "test": "image", "seed": s, "accuracy": b, "path": f"ae{s}"},
                 {"method": "lb", "test": "image", "seed": s, "accuracy": c, "path": f"lb{s}"},
                 {"method": "lb", "test": "image", "seed": s, "accuracy": c, "path": f"lb{s}-again"}]
    return pd.DataFrame(rows)


def test_compare_from_records():
    df = _records()
    v = report.compare(df, {"method": "smil"}, {"method": "ae"}, "accuracy", claim="SMIL beats AE")
    # differences 1, 3, 5, 3, 3 points: mean 3, sd sqrt(2), t_{0.975, 4} = 2.776445
    assert v.n == 5 and v.effect == pytest.approx(3.0)
    assert v.ci_high - v.effect == pytest.approx(2.776445 * math.sqrt(2) / math.sqrt(5), abs=1e-4)
    assert v.verdict == "reproduced"
    assert report.compare(df, {"method": "ae"}, {"method": "smil"}, "accuracy").verdict == "contradicted"
    # the same run read twice at one seed counts once
    assert report.per_seed(df, "accuracy", {"method": "lb"}).tolist() == [0.40, 0.40, 0.41, 0.40, 0.40]


def test_floor_makes_a_claim_not_testable():
    df = _records()
    df.loc[df.method == "ae", "accuracy"] = 0.40
    v = report.compare(df, {"method": "lb"}, {"method": "ae"}, "accuracy", floor=0.40, tol=0.005)
    assert v.verdict == "not testable" and "floor" in v.reason


def test_ambiguous_selection_is_named():
    df = _records()
    df.loc[df.path == "lb0-again", "accuracy"] = 0.5
    with pytest.raises(ValueError, match="different values of 'accuracy' at seed=0"):
        report.per_seed(df, "accuracy", {"method": "lb"})
    with pytest.raises(KeyError, match="no column 'methd'"):
        report.per_seed(df, "accuracy", {"methd": "lb"})


def test_too_few_seeds():
    df = _records()
    v = report.compare(df[df.seed == 0], {"method": "smil"}, {"method": "ae"}, "accuracy")
    assert v.verdict == "not testable" and v.n == 1 and v.text() == "n=1"


def test_compare_over_settings_averages_per_seed_and_counts_signs():
    rows = []
    for rate, gains in [(0.5, [1, 2, 3]), (0.9, [-1, 0, 1]), (0.95, [2, 2, 5])]:
        for s, g in enumerate(gains):
            rows += [{"method": "a", "rate": rate, "seed": s, "acc": 0.5 + g / 100},
                     {"method": "b", "rate": rate, "seed": s, "acc": 0.5}]
    df = pd.DataFrame(rows)
    v = report.compare_over(df, {"method": "a"}, {"method": "b"}, "acc",
                            [{"rate": r} for r in (0.5, 0.9, 0.95)], claim="a > b everywhere")
    per_seed = [(1 - 1 + 2) / 3, (2 + 0 + 2) / 3, (3 + 1 + 5) / 3]       # each seed averaged over the rates
    mean, (lo, hi), p = report.t_interval(per_seed)
    assert v.n == 3 and v.effect == pytest.approx(mean) and v.ci_low == pytest.approx(lo)
    assert v.signs == "2/3"                         # the 0.9 setting averages exactly 0
    # per-seed means 0.67, 1.33, 3.0 are all above 0, but with 3 seeds the interval is
    # 1.67 +- 4.303 * 1.20 / sqrt(3) = [-1.3, +4.6]: nine (seed, rate) pairs are not nine samples
    assert v.verdict == "inconclusive"
    # a seed missing one setting is left out rather than averaged over fewer settings
    v2 = report.compare_over(df[~((df.seed == 2) & (df.rate == 0.9))], {"method": "a"}, {"method": "b"}, "acc",
                             [{"rate": r} for r in (0.5, 0.9, 0.95)])
    assert v2.n == 2


def test_fmt_and_table():
    assert report.fmt_mean_ci([0.8]) == "80.0 (n=1)"
    assert report.fmt_mean_ci([]) == "–"
    assert report.fmt_mean_ci([0.81, 0.82, 0.83]).startswith("82.0 ± 2.5")     # 4.303 * 1 / sqrt(3)
    t = report.table(_records(), "method", "test", "accuracy", labels={"lb": "Lower-Bound"})
    assert t.loc["Lower-Bound", "image"] == "40.2 ± 0.6 (n=5)"


def test_verdict_records_round_trip(tmp_path):
    df = _records()
    vs = [report.compare(df, {"method": "smil"}, {"method": "ae"}, "accuracy", claim="c1", setting="eta=10%", kind="paper")]
    path = report.write_verdicts(report.verdicts_path(tmp_path / "records", "01_smil"), "01_smil", vs, profile="quick")
    assert path == tmp_path / "verdicts" / "01_smil.json"
    back = report.read_verdicts(path)
    assert back[0].claim == "c1" and back[0].verdict == "reproduced" and back[0].n == 5
    tab = report.verdict_table(back)
    assert list(tab.columns) == ["claim", "setting", "effect [95% CI], n", "p", "p (Holm)", "q (BH)", "verdict"]
    assert tab.loc[0, "effect [95% CI], n"].startswith("+3.0 [")
    bad = report.Verdict("c", "a", "b", "m", verdict="maybe", kind="paper")
    with pytest.raises(ValueError, match="maybe"):
        report.write_verdicts(tmp_path / "w.json", "x", [bad])


def test_summary_and_labels():
    s = report.summary(_records(), ["method"], "accuracy").set_index("method")
    assert s.loc["lb", "n"] == 5 and s.loc["lb", "accuracy_mean"] == pytest.approx(0.402)
    assert s.loc["smil", "accuracy_ci"] == pytest.approx(2.776445 * 0.0158114 / math.sqrt(5), rel=1e-4)
    assert report.label("lower_bound") == "Lower-Bound" and report.label("nope") == "nope"


def test_compare_series():
    v = report.compare_series(pd.Series({0: 6.0, 1: 5.0, 2: 7.0}), pd.Series({0: 5.0, 1: 5.5, 2: 6.0}),
                              claim="drops less", direction="<")
    # "a drops less than b": recorded as b's drop minus a's (the claimed side minus the other)
    assert v.n == 3 and v.effect == pytest.approx(-0.5) and v.verdict == "inconclusive" and v.direction == ">"
    assert (v.a, v.b) == ("b", "a")
    assert report.compare_series(pd.Series({0: 1.0}), pd.Series({0: 2.0})).verdict == "not testable"


def test_equivalence_verdict_needs_the_whole_interval_inside_the_margin():
    from mmlib.report import decide_equivalence
    assert decide_equivalence((-0.4, 0.6), 5, 1.0) == "reproduced"
    assert decide_equivalence((-0.4, 1.6), 5, 1.0) == "inconclusive"
    assert decide_equivalence((1.2, 3.0), 5, 1.0) == "contradicted"
    assert decide_equivalence((-0.4, 0.6), 1, 1.0) == "not testable"


def test_a_verdict_file_of_the_wrong_shape_is_named(tmp_path):
    from mmlib import scorecard
    (tmp_path / "01_smil.json").write_text("[]")
    with pytest.raises(ValueError, match=r"verdict file .*01_smil\.json holds a list, not a JSON object"):
        scorecard.read_all(tmp_path)
    (tmp_path / "01_smil.json").write_text('{"verdicts": [{"claim": "x", "nonsense": 1}]}')
    with pytest.raises(ValueError, match="a verdict has the wrong fields"):
        scorecard.read_all(tmp_path)


# ----------------------------------------------------------------------------- families (Holm, BH)
def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, running max
    assert list(report.holm(p)) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: m p_(j) / j = 0.02, 0.02, 0.04, 0.04, running min from the top
    assert list(report.bh(p)) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert report.holm([]).size == 0 and list(report.holm([0.9, 0.8])) == [1.0, 1.0]


def _v(claim, p, verdict, effect=1.0, kind="paper"):
    return report.Verdict(claim, "a", "b", "accuracy", "s", ">", effect, effect - 0.5, effect + 0.5, 5, p, verdict,
                          kind=kind)


def test_adjust_decides_each_family_with_holm_and_keeps_the_raw_verdict():
    vs = [_v("Table 1: A beats B", 0.004, "reproduced"), _v("Table 2: A beats C", 0.03, "reproduced"),
          _v("Table 3: C beats A", 0.02, "contradicted", -1.0), _v("Table 4: D beats A", 0.4, "inconclusive"),
          _v("(this book) a control", 0.03, "reproduced", kind="book"),
          _v("(5) the released code's X", 0.9, "inconclusive", kind="code"),
          _v("too few seeds", math.nan, "not testable")]
    out = report.adjust(vs)
    assert out is vs
    assert [v.kind for v in vs] == ["paper"] * 4 + ["book", "code", "paper"]
    # the paper's family: 4 tests (the untestable one is not a test); Holm: 0.016, 0.06, 0.06, 0.4
    assert [v.p_holm for v in vs[:4]] == pytest.approx([0.016, 0.06, 0.06, 0.4])
    assert [v.verdict for v in vs[:4]] == ["reproduced", "inconclusive", "inconclusive", "inconclusive"]
    assert [v.raw_verdict for v in vs[:4]] == ["reproduced", "reproduced", "contradicted", "inconclusive"]
    # the book's family (the code's claim included): 2 tests, Holm 0.06 and 0.9
    assert vs[4].p_holm == pytest.approx(0.06) and vs[4].verdict == "inconclusive"
    assert vs[6].verdict == "not testable" and math.isnan(vs[6].p_holm)
    assert [v.claim for v in report.moved(vs)] == ["Table 2: A beats C", "Table 3: C beats A", "(this book) a control"]
    before = [(v.verdict, v.p_holm, v.q_bh) for v in vs]
    report.adjust(vs)                                       # twice: the same
    assert [(v.verdict, v.p_holm, v.q_bh) for v in vs] == before
    assert report.verdict_text(vs[1]) == "inconclusive (raw: reproduced)"


def test_a_claim_alone_in_its_family_keeps_its_verdict():
    vs = report.adjust([_v("Table 1: A beats B", 0.04, "reproduced"), _v("(this book) x", 0.001, "reproduced", kind="book")])
    assert [v.verdict for v in vs] == ["reproduced", "reproduced"] and vs[0].p_holm == pytest.approx(0.04)


def test_write_verdicts_decides_family_wise_and_the_scorecard_counts_what_moved(tmp_path):
    from mmlib import scorecard
    vs = [_v("Table 1: A beats B", 0.004, "reproduced"), _v("Table 2: A beats C", 0.03, "reproduced"),
          _v("Table 3: A beats D", 0.5, "inconclusive")]
    path = report.write_verdicts(tmp_path / "verdicts" / "01_smil.json", "01_smil", vs)
    back = report.read_verdicts(path)
    assert [v.verdict for v in back] == ["reproduced", "inconclusive", "inconclusive"]
    assert [v.raw_verdict for v in back][:2] == ["reproduced", "reproduced"] and back[1].p_holm == pytest.approx(0.06)
    f = scorecard.frame(tmp_path / "verdicts")
    assert list(f["verdict"]) == ["reproduced", "inconclusive", "inconclusive"]
    assert "made 1 raw verdict inconclusive" in scorecard.tally(f)
    assert "0.030 / 0.060" in scorecard.html_table(f) and "inconclusive (raw: reproduced)" in scorecard.html_table(f)


def test_raw_decisive_exactly_when_p_below_005():
    """The adjustment's premise: a claim's p < 0.05 exactly when its 95 % interval decides it,
    for differences, claims over settings and equivalence claims."""
    import numpy as np
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = pd.Series(rng.normal(0.5, 1, 5)), pd.Series(rng.normal(0, 1, 5))
        v = report.compare_series(a, b)
        assert (v.p < 0.05) == (v.verdict != "inconclusive")
        d = (a - b).tolist()
        df = pd.DataFrame({"seed": list(range(5)) * 2, "method": ["a"] * 5 + ["b"] * 5, "x": a.tolist() + b.tolist()})
        e = report.equivalent(df, {"method": "a"}, {"method": "b"}, "x", margin=1.0, scale=1.0)
        assert e.p == pytest.approx(report.equivalence_p(d, 1.0))
        assert (e.p < 0.05) == (e.verdict != "inconclusive"), (e.ci_low, e.ci_high, e.p)


def test_duplicates_finds_a_claim_and_its_mirror_in_one_family():
    P = {"kind": "paper"}
    a = report.compare_series(pd.Series({0: 3.0, 1: 5.0, 2: 4.0}), pd.Series({0: 1.0, 1: 2.0, 2: 2.5}), claim="(1) A beats B", **P)
    mirror = report.compare_series(pd.Series({0: 1.0, 1: 2.0, 2: 2.5}), pd.Series({0: 3.0, 1: 5.0, 2: 4.0}),
                                   direction="<", claim="(4) B is below A", **P)
    other = report.compare_series(pd.Series({0: 3.0, 1: 5.0, 2: 4.0}), pd.Series({0: 1.0, 1: 2.0, 2: 2.0}), claim="(2) A beats C",
                                  **P)
    book = report.compare_series(pd.Series({0: 3.0, 1: 5.0, 2: 4.0}), pd.Series({0: 1.0, 1: 2.0, 2: 2.5}),
                                 claim="(this book) A beats B again", kind="book")
    zero = report.compare_series(pd.Series({0: 1.0, 1: 1.0}), pd.Series({0: 1.0, 1: 1.0}), claim="(3) same fit", **P)
    assert [(x.claim, y.claim) for x, y in report.duplicates([a, mirror, other, book, zero, zero])] == \
        [("(1) A beats B", "(4) B is below A")]          # the book's copy is another family; all-zero left out


def test_detectable_effect_matches_the_normal_approximation_and_shrinks_with_seeds():
    # many seeds: the t-test is a z-test, MDE = (z_0.975 + z_0.8) sd / sqrt(n)
    assert report.detectable_effect(1.0, 400) == pytest.approx((1.959964 + 0.841621) / 20, rel=0.01)
    five, ten = report.detectable_effect(2.0, 5), report.detectable_effect(2.0, 10)
    assert ten < five and five > 2.0 * (1.959964 + 0.841621) / math.sqrt(5)      # t's heavier tails at 4 df
    assert report.detectable_effect(2.0, 5, alpha=0.005) > five                      # a stricter (Holm) level
    assert math.isnan(report.detectable_effect(0.0, 5)) and math.isnan(report.detectable_effect(1.0, 1))


def test_the_scorecard_power_table_reads_the_claims_spread(tmp_path):
    from mmlib import scorecard
    vs = [report.compare_series(pd.Series({s: 1.0 + s % 2 * 2 for s in range(5)}), pd.Series({s: 0.0 for s in range(5)}),
                                claim=f"Table {i}: A beats B", kind="paper") for i in range(3)]
    report.write_verdicts(tmp_path / "verdicts" / "02_mle.json", "02_mle", vs)
    p = scorecard.power(scorecard.frame(tmp_path / "verdicts"))
    row = p.loc["MLE"]
    sd = pd.Series([1.0, 3.0, 1.0, 3.0, 1.0]).std()
    assert row["claims"] == 3 and row["n"] == 5 and row["typical SD"] == pytest.approx(round(sd, 2))
    assert row["MDE 10"] == pytest.approx(round(report.detectable_effect(sd, 10), 1))
    assert row["MDE 5, Holm"] == pytest.approx(round(report.detectable_effect(sd, 5, 0.05 / 3), 1))


def test_every_effect_is_the_claimed_side_minus_the_other():
    """One sign convention: a positive effect supports the claim, whichever way it was phrased."""
    df = _records()
    hi = report.compare(df, {"method": "smil"}, {"method": "ae"}, "accuracy", claim="SMIL beats AE")
    lo = report.compare(df, {"method": "ae"}, {"method": "smil"}, "accuracy", direction="<", claim="AE is below SMIL")
    assert hi.effect > 0 and lo.effect == pytest.approx(hi.effect) and (lo.ci_low, lo.ci_high) == pytest.approx((hi.ci_low, hi.ci_high))
    assert lo.verdict == hi.verdict == "reproduced" and (lo.a, lo.b) == (hi.a, hi.b) and lo.direction == ">"
    over = report.compare_over(df.assign(s=1), {"method": "ae"}, {"method": "smil"}, "accuracy", [{"s": 1}], direction="<")
    assert over.effect == pytest.approx(hi.effect) and over.signs == "1/1"
    with pytest.raises(ValueError, match="direction"):
        report.compare(df, {"method": "ae"}, {"method": "smil"}, "accuracy", direction="less")


def test_effects_are_rounded_by_their_intervals_scale():
    small = report.Verdict("c", "a", "b", "mae", effect=0.0166, ci_low=0.00214, ci_high=0.031, n=5)
    assert small.text() == "+0.017 [+0.002, +0.031], n=5"          # not "+0.0 [+0.0, +0.0]"
    points = report.Verdict("c", "a", "b", "accuracy", effect=16.1, ci_low=6.4, ci_high=25.9, n=5)
    assert points.text() == "+16.1 [+6.4, +25.9], n=5"
    assert report.decimals(0.0004) == 5 and report.decimals(float("nan")) == 1
    assert report.Verdict("c", "a", "b", "kl", effect=-0.004, ci_low=-0.009, ci_high=0.001, n=5).text() == \
        "-0.0040 [-0.0090, +0.0010], n=5"


def test_a_side_at_the_floor_is_no_evidence_of_a_twin():
    a = pd.Series({0: 3.0, 1: 5.0, 2: 4.0})
    x = report.compare_series(a, pd.Series({0: 1.0, 1: 1.0, 2: 1.0}), claim="(1) A beats X")        # X at the floor
    y = report.compare_series(a, pd.Series({0: 1.0, 1: 1.0, 2: 1.0}), claim="(7) A beats Y")        # Y at the floor too
    assert x.sides["b"] == {0: 1.0, 1: 1.0, 2: 1.0} and report.duplicates([x, y]) == []
    back = report.Verdict(**{**x.to_dict()})
    assert back.sides["a"]["0"] == 3.0                                                     # written with str keys


def test_same_comparisons_are_found_from_the_claims_sides():
    df = _records()
    a = report.compare(df, {"method": "smil"}, {"method": "ae"}, "accuracy", claim="(1) SMIL beats AE")
    m = report.compare(df, {"method": "ae"}, {"method": "smil"}, "accuracy", direction="<", claim="(5) AE is worse")
    o = report.compare(df, {"method": "smil"}, {"method": "lb"}, "accuracy", claim="(2) SMIL beats LB")
    assert [(x.claim, y.claim) for x, y in report.same_comparisons([a, m, o])] == [("(1) SMIL beats AE", "(5) AE is worse")]


def test_every_method_of_the_registry_has_a_display_name():
    """One display-name table (report.LABELS) for every registry key: no table shows an internal name."""
    from mmlib.methods import _registry
    missing = sorted(k for k in _registry() if k not in report.LABELS)
    assert not missing, missing
    assert report.label("hgr", "phi=add") == "HGR maximal correlation (phi=add)"


def test_claim_ids_are_unique_in_a_chapter_and_kinds_are_declared(tmp_path):
    a = report.compare_series(pd.Series({0: 2.0, 1: 3.0}), pd.Series({0: 1.0, 1: 1.0}), claim="x", id="c.one", kind="book")
    b = report.compare_series(pd.Series({0: 2.0, 1: 3.0}), pd.Series({0: 1.0, 1: 0.0}), claim="y", id="c.one", kind="paper")
    with pytest.raises(ValueError, match="claim ids declared more than once: \\['c.one'\\]"):
        report.write_verdicts(tmp_path / "v.json", "c", [a, b])
    assert a.kind == "book" and report.adjust([a])[0].kind == "book"          # declared, not read from the text
    bad = report.compare_series(pd.Series({0: 2.0, 1: 3.0}), pd.Series({0: 1.0, 1: 1.0}), claim="z", kind="papers")
    with pytest.raises(ValueError, match="kind 'papers'"):
        report.adjust([bad])
    # a kind is declared, never read from the claim's words: a claim without one is refused, naming it
    silent = report.compare_series(pd.Series({0: 2.0, 1: 3.0}), pd.Series({0: 1.0, 1: 1.0}), claim="(this book) w", id="c.w")
    with pytest.raises(ValueError, match="claim 'c.w' declares no kind"):
        report.adjust([silent])


def test_verdict_html_anchors_each_claim_and_the_scorecard_links_there(tmp_path):
    from mmlib import scorecard
    v = report.compare_series(pd.Series({0: 2.0, 1: 3.0}), pd.Series({0: 1.0, 1: 1.0}), claim="Table 1: A beats B",
                              id="smil.table1.beats_ae.eta10", kind="paper")
    html = report.verdict_html([v])
    assert "id='claim-smil-table1-beats-ae-eta10'" in html and "Table 1: A beats B" in html
    report.write_verdicts(tmp_path / "verdicts" / "01_smil.json", "01_smil", [v])
    f = scorecard.frame(tmp_path / "verdicts")
    assert f["link"].iloc[0] == "chapters/01_smil.html#claim-smil-table1-beats-ae-eta10"
