"""Page modules (mmlib.pages): each chapter's plan, tables, claims and summaries on a handful of
synthetic records, fast; and how much analysis code the chapter notebooks keep."""
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmlib import report
from mmlib.pages import intro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import analysis_share  # noqa: E402

# the accuracy of each (method, test pattern) in the synthetic records; seeds add small noise
LEVEL = {("lower_bound", "image"): 0.60, ("lower_bound", "image+audio"): 0.60, ("lower_bound", "audio"): 0.10,
         ("zp_concat", "image+audio"): 0.80, ("zp_concat", "image"): 0.55, ("zp_concat", "audio"): 0.40,
         ("zp_sum", "image+audio"): 0.78, ("zp_sum", "image"): 0.55, ("zp_sum", "audio"): 0.40,
         ("late_fusion", "image+audio"): 0.82, ("late_fusion", "image"): 0.58, ("late_fusion", "audio"): 0.45,
         ("upper_bound", "image+audio"): 0.90, ("upper_bound", "image"): 0.62, ("upper_bound", "audio"): 0.60}


def _frame(rates=(0.5, 0.8), seeds=range(5), shift=0.0):
    """Records as run_grid returns them; a bound is one fit per seed, the same at every rate."""
    rng = np.random.default_rng(0)
    noise = {(m, t, s, r): rng.normal(0, 0.005) for (m, t) in LEVEL for s in seeds for r in rates}
    rows = [{"method": m, "variant": "", "setting": intro.setting(r), "seed": s, "test": t,
             "accuracy": acc + shift + noise[m, t, s, rates[0] if m in intro.BOUNDS else r]}
            for (m, t), acc in LEVEL.items() for r, s in itertools.product(rates, seeds)]
    return pd.DataFrame(rows)


def _pct(cell: str) -> float:
    return float(cell.split()[0])


def test_intro_tables_show_every_method_in_order():
    df = _frame()
    wide = intro.rates_table(df, [0.5, 0.8])
    assert list(wide.columns) == ["audio missing 50%", "audio missing 80%"]
    assert [m for t, m in wide.index if t == "image+audio"] == intro.ORDER
    at = intro.table_at(df[df["setting"] == "80%"], 0.8)
    assert list(at.index) == intro.ORDER and list(at.columns) == ["image+audio", "image", "audio"]
    assert _pct(at.loc[report.label("upper_bound"), "image+audio"]) == pytest.approx(90.0, abs=1.0)
    curves = intro.curves_frame(df, [0.5, 0.8])
    assert set(curves["missing_rate"]) == {0.5, 0.8} and set(curves["method"]) == set(intro.ORDER)


def test_intro_bounds_sit_beside_the_papers_numbers():
    both = intro.bounds_beside_paper(_frame())
    assert list(both.index) == ["Lower-Bound", "Upper-Bound"]
    assert _pct(both.iloc[0, 0]) == pytest.approx(60.0, abs=1) and _pct(both.iloc[1, 0]) == pytest.approx(90.0, abs=1)
    assert both.iloc[:, 1].notna().all()                         # SMIL's Table 1, from the CSV


def test_intro_claims_are_decided_with_ids_and_the_summary_reads_them():
    df = _frame()
    v = report.by_id(intro.claims(df, [0.5, 0.8]))
    assert set(v) == {"intro.zp_beats_lower_bound", "intro.late_beats_zp", "intro.concat_beats_sum",
                      "intro.gap_remains", "intro.image_only.zp_below_lb", "intro.image_only.late_below_lb"}
    assert v["intro.zp_beats_lower_bound"].verdict == "reproduced" and v["intro.zp_beats_lower_bound"].n == 5
    assert v["intro.zp_beats_lower_bound"].effect == pytest.approx(20.0, abs=1.0)     # points, paired over seeds
    assert v["intro.gap_remains"].setting == "audio missing 80%"
    assert v["intro.late_beats_zp"].setting == "audio missing 50%, 80%"
    assert v["intro.image_only.zp_below_lb"].verdict == "reproduced"                 # 55 < 60
    masked, complete = _frame(rates=[0.8]), _frame(rates=[0.8], shift=-0.02)
    sel = intro.selection_frame(masked, complete)
    assert set(sel["method"]) == set(intro.METHODS) and set(sel["selection"]) == {"masked validation",
                                                                                   "complete validation"}
    mv = intro.selection_claims(sel, 0.8)
    assert {x.id for x in mv} == {f"intro.book.masked_validation.{m}.{t}" for m in ("zp_concat", "late_fusion")
                                  for t in ("image+audio", "image")}
    assert all(x.verdict == "reproduced" for x in mv)                                  # +2 points on every seed
    text = intro.summary(list(v.values()), mv, [0.5, 0.8])
    assert "Of 6 statements" in text and report.fmt_effect(v["intro.gap_remains"]) in text
    assert intro.selection_table(sel).index.names == ["accuracy %", "selected on"]


def test_intro_pattern_examples_cover_four_kinds():
    from mmlib import masks
    specs = intro.pattern_examples(0.2)
    assert [s["kind"] for s in specs.values()] == ["independent", "independent", "random_drop", "cpm"]
    names = ["image", "audio"]
    tab = intro.pattern_table({t: masks.describe(masks.from_spec(s, 100, names, 0), names) for t, s in specs.items()})
    assert list(tab.columns[:3]) == ["complete", "no modality", "missing (all entries)"]
    assert tab.loc[next(iter(specs)), "audio present"] == "20.0%"          # SMIL's: audio kept in eta = 20 %


# the chapters that have moved their analysis into a page module, and the share they may keep
CONVERTED = {"00_missing_modalities": 0.30, "01_smil": 0.30, "02_mle": 0.30, "03_redcore": 0.30, "04_m3s": 0.30, "05_mla": 0.30, "06_head_to_head": 0.30}


def test_analysis_share_of_the_converted_chapters():
    for name, most in CONVERTED.items():
        a, c = analysis_share.count(ROOT / "notebooks" / f"{name}.ipynb")
        assert a / (a + c) <= most, f"{name}: {a} analysis lines of {a + c}"


def test_analysis_share_counts_statements_not_lines_twice(tmp_path):
    import json
    cell = {"cell_type": "code", "metadata": {}, "source": [
        "from mmlib import report\n", "x = 1; y = 2\n", "report.table(df,\n", "             1)\n",
        "for i in range(3):\n", "    y += i\n", "if page:\n", "    report.x()\n", "# a comment\n"]}
    p = tmp_path / "n.ipynb"
    p.write_text(json.dumps({"cells": [cell]}))
    assert analysis_share.count(p) == (3, 4)        # x = 1; y = 2 (one line), the loop (2); the call (2), if + call


# -- SMIL ---------------------------------------------------------------------------------------------
from mmlib.pages import smil  # noqa: E402

SMIL_LEVEL = {"SMIL": 0.80, "AE": 0.74, "GAN": 0.72, "SMIL (authors' code)": 0.78, "MVAE": 0.50,
              "Lower-Bound": 0.66, "Upper-Bound": 0.85, "control: the warm starts alone": 0.77,
              "control: no inner step (alpha = 0)": 0.79}


def _smil_frame(etas=(0.1, 0.2, 1.0), seeds=range(5)):
    """Records as the chapter's frame holds them: a method per label, both test patterns, every eta
    (the bounds once per seed whatever eta, as their records are shared)."""
    key = {v: k for k, v in smil.LABEL.items()}
    rng = np.random.default_rng(1)
    rows = []
    for lbl, acc in {**SMIL_LEVEL, **{a: 0.77 for a in smil.ABL[:-1]}, **{v: 0.78 for v in smil.VAR[2:6]}}.items():
        for e, s in itertools.product(etas, seeds):
            if lbl == "MVAE" and e != 1.0:
                continue
            noise = rng.normal(0, 0.004)
            for t, drop in (("image+audio", 0.0), ("image", 0.10 if lbl in ("AE", "GAN") else 0.02)):
                a = acc - drop + noise + (0.01 * (0.2 - e) if lbl == "SMIL" else 0.0)
                rows.append({"method": key[lbl], "variant": "", "eta": e, "seed": s, "test": t, "accuracy": a,
                             "f1_macro": a - 0.01, "fit_seconds": 1.0, "epochs_run": 10})
    return smil.labelled(pd.DataFrame(rows))


def test_smil_plan_runs_the_variants_where_the_paper_reports_them():
    assert "smil_code" in smil.plan(0.1) and "smil_code" not in smil.plan(0.5)
    assert "mvae" in smil.plan(1.0) and "mvae" not in smil.plan(0.2)
    assert smil.spec(0.1, "audio") == {"kind": "independent", "rates": {"audio": 0.9}}
    assert smil.kwargs("unimodal", "image", "audio", "mlp") == {"use": ["image"], "backbone": "mlp"}
    assert smil.kwargs("smil_code", "image", "audio", "mlp") == {"backbone": "mlp", "x1": "image", "x2": "audio"}
    assert smil.metrics_of("multilabel") == ("f1_samples", "f1_micro")


def test_smil_tables_put_each_row_where_the_paper_has_it():
    df = _smil_frame()
    t = smil.table12(df, [0.1, 0.2, 1.0], "image+audio", "image", "accuracy", "f1_macro")
    assert t.loc["SMIL", ("accuracy", "η = 100%")] == "–" and t.loc["Lower-Bound", ("accuracy", "η = 10%")] == "–"
    assert _pct(t.loc["SMIL", ("accuracy", "η = 10%")]) == pytest.approx(80.1, abs=0.5)
    assert "MVAE (below the lower bound: not a working baseline)" in t.index        # 50 < 66
    paper = smil.paper_table12()
    assert list(paper.index) == smil.ROWS and ("paper, CMU-MOSI", "accuracy", "η = 10%") in paper.columns
    t3 = smil.table3(df, [0.1, 0.2, 1.0], "image+audio", "image", "accuracy", "avdigits")
    assert list(t3.index) == smil.ABL and ("paper (MM-IMDb)", "F1 samples", "η = 10%") in t3.columns
    assert smil.table3(df, [0.5, 1.0], "image+audio", "image", "accuracy", "avdigits") is None
    here = smil.here_table(df[df["eta"] == 0.1].assign(fit_seconds=1.0), "accuracy")
    assert set(here.index) <= set(smil.LABEL.values()) and "SMIL" in here.index        # display names, not keys
    tv = smil.variants_table(df, [0.1, 0.2], "image+audio", "image", "accuracy")
    assert list(tv.index) == smil.VAR and tv[("fit seconds", "(mean)")].eq(1.0).all()


def test_smil_claims_have_ids_and_the_summary_reads_them():
    df = _smil_frame()
    V = smil.claims(df, [0.1, 0.2, 1.0], "image+audio", "image", "accuracy")
    by = report.by_id(V)
    assert len(by) == len(V)                                               # one id per claim
    assert by["smil.table1.beats_ae.eta10"].verdict == "reproduced"       # 80 > 74 at every seed
    assert by["smil.fig4.audio_loss.less_than_ae"].verdict == "reproduced"   # SMIL drops 2, AE 10 points
    assert by["smil.table1.beats_mvae_full"].effect == pytest.approx(30.1, abs=1.0)
    assert by["smil.book.inner_step.both"].n == 5
    assert {"smil.table3.beats.smil_w_o_k_means", "smil.table1.gain_grows"} <= set(by)
    assert "smil.table1.beats_ae.eta10" not in report.by_id(smil.claims(df, [0.5, 1.0], "image+audio", "image",
                                                                         "accuracy"))
    from mmlib.train import TrainConfig
    text = smil.summary(V, df, 1000, TrainConfig(epochs=20, batch_size=64, patience=3))
    assert f"Of {len(V)} tests" in text and report.fmt_effect(by["smil.table1.beats_ae.eta10"]) in text
    assert "a median of 140 iterations (range 130-150)" in text    # 10 epochs x ceil(1000 x (1 - eta) / 64): 130, 150


def test_smil_per_class_text_reads_the_gain():
    per = pd.DataFrame({"Lower-Bound": [50.0, 60.0, 70.0], "SMIL, image + audio": [55.0, 60.0, 80.0],
                        "SMIL, image only": [50.0, 60.0, 70.0]}, index=["0", "1", "2"])
    text = smil.per_class_text(per, pd.Series([1, 2, 9], index=per.index), "image", "audio")
    assert "**+0.0**" in text and "**+10.0**" in text and "correlation with the number of pairs: **+0.80**" in text


# -- MLE ----------------------------------------------------------------------------------------------
from mmlib.pages import mle  # noqa: E402

MLE_LEVEL = {("mle_lb", None): 0.60, ("hgr", None): 0.65, ("mle_zp", None): 0.70, ("mle", None): 0.74,
             ("mle", "all_detached"): 0.76}
PHI_BONUS = {"add": 0.0, "concat": -0.02, "outer": 0.01}


def _mle_frame(settings=(("image", 0.8), ("image", 0.9), ("image", 0.95), ("audio", 0.8), ("audio", 0.9),
                         ("audio", 0.95)), seeds=range(5)):
    rng = np.random.default_rng(2)
    rows = []
    for x2, r in settings:
        for (m, sup), acc in MLE_LEVEL.items():
            for phi in (["add"] if sup else list(PHI_BONUS)):
                if m == "mle_zp" and phi == "outer":
                    continue
                for s in seeds:
                    a = acc + PHI_BONUS[phi] - (0.05 if x2 == "image" else 0.0) - (0.2 * (r - 0.8) if m == "mle_zp" else 0)
                    rows.append({"method": m, "config.phi": phi, "config.support": sup or "all", "variant": "",
                                 "setting": mle.setting(x2, r), "modality": mle.role(x2), "rate": r, "seed": s,
                                 "test": "image+audio", "accuracy": a + rng.normal(0, 0.003), "fit_seconds": 1.0})
    return pd.DataFrame(rows)


def test_mle_plan_and_names():
    class D:
        name, modality_names = "avdigits", ["image", "audio"]
    at50 = mle.table1_methods(D, "audio", 0.5, "mlp")
    assert {m for m, _ in at50} == {"mle_zp", "mle"} and all(k["x1"] == "image" for _, k in at50)
    at90 = mle.table1_methods(D, "image", 0.9, "mlp")
    assert ("mle", {"backbone": "mlp", "x1": "audio", "x2": "image", "phi": "add", "support": "all_detached"}) in at90
    assert len(at90) == 3 + 3 + 2 + 3 + 1
    D.name = "affect"
    assert all(k["phi"] == "add" for _, k in mle.table1_methods(D, "image", 0.9, "mlp"))
    assert mle.setting("image", 0.95) == "visual_missing=95%" and mle.setting("audio", 0.5) == "audio_missing=50%"
    from mmlib.chapters import chapter
    ch = chapter("02_mle")
    assert mle.settings_for(ch, "default", "avdigits", "avdigits", False, ("image", 0.8)) == [("image", 0.8)]
    assert mle.settings_for(ch, "default", "affect", "avdigits", False, ("image", 0.8)) == []
    assert mle.settings_for(ch, "default", "avdigits", "avdigits", True, ("image", 0.8)) == \
        mle.grid_settings(ch, "default", "avdigits")
    backbones, epochs, pairs = mle.table2_plan("default", D, "avdigits")
    assert backbones == ["mlp"] and epochs == 20 and len(pairs) == 6


def test_mle_table1_sits_beside_the_paper_and_the_claims_have_ids():
    t1 = mle.paper_rows(_mle_frame())
    assert set(t1["row"]) == set(mle.ROWS)
    vis = mle.table1(t1, "visual")
    assert vis.index.names == ["method", "φ"] and list(vis.index.get_level_values(0).unique()) == mle.ROWS
    assert ("95%", "paper: eNTERFACE'05") in vis.columns
    assert vis.loc[("MLE", "addition"), ("80%", "paper: eNTERFACE'05")] == "72.37"      # the CSV's value
    assert _pct(vis.loc[("MLE", "addition"), ("80%", "this book: avdigits")]) == pytest.approx(69.0, abs=0.5)
    settings = [(x2, r) for x2 in ("image", "audio") for r in (0.8, 0.9, 0.95)]
    by = report.by_id(mle.claims(t1, settings, "image+audio"))
    assert by["mle.1.mle_beats_lower_bound"].verdict == "reproduced"
    assert by["mle.2.visual_hurts_more"].verdict == "reproduced"            # 5 points lower with the image missing
    assert by["mle.3.slower_drop"].verdict == "reproduced"                   # ZP loses 3 points from 80 to 95 %
    assert by["mle.4.outer_beats_concat"].effect == pytest.approx(3.0, abs=0.5)
    assert {"mle.1p.beats_hgr", "mle.5.hgr_below_mle_zp", "mle.book.g_constant.visual"} <= set(by)
    text = mle.summary(list(by.values()))
    assert report.fmt_effect(by["mle.1.mle_beats_lower_bound"]) in text and f"Of {len(by)} tests" in text


def test_mle_affect_and_gaussian_checks():
    aff = mle.paper_rows(_mle_frame(settings=(("visual", 0.9),)))
    assert "not testable" in mle.affect_text(aff, 0.9) and "not testable" not in mle.affect_text(aff, 0.3)
    V = mle.claims(aff.iloc[:0], [], "image+audio", aff, 0.3)
    assert [v.id for v in V] == ["mle.affect.beats_zp.visual_missing=90%"]
    gq = pd.DataFrame([{"method": m, "row": mle.LABEL[m], "rate": r, "seed": s, "test": t, "accuracy": 0.7,
                        "oracle": 0.8, "kl": kl + 0.001 * s}
                       for m, kl in [("mle", 0.1), ("mle_zp", 0.2), ("mle_lb", 0.3)] for r in (0.8, 0.95)
                       for s in range(5) for t in ("x", "x+y")])
    tab = mle.gaussian_table(gq)
    assert tab.index.names == ["y missing", "test", "method"] and (tab["oracle %"] == 80.0).all()
    by = report.by_id(mle.claims(gq.iloc[:0], [], "x+y", gq=gq, g_rates=[0.8, 0.95]))
    assert by["mle.book.posterior_closer.mle_zp.x"].verdict == "reproduced"
    assert "KL(P || Q) is 0.102 nats for MLE" in mle.summary(list(by.values()), gq)


# -- RedCore ------------------------------------------------------------------------------------------
from types import SimpleNamespace  # noqa: E402

from mmlib.pages import redcore  # noqa: E402

RC_LEVEL = {"zp_concat": 0.60, "late_fusion": 0.58, "cra": 0.55, "mmin_lite": 0.62, "redcore": 0.64,
            "redcore_core": 0.61, "redcore_red": 0.63, "amae_lite": 0.57}


def _rc_page(profile="default"):
    names = ["acoustic", "visual", "lexical"]
    data = SimpleNamespace(name="affect", modality_names=names)
    return redcore.Page(data, profile, (0.8, 0.2, 0.5), range(5), None, "cpu", None)


def _rc_frame(pg, triples, seeds=range(5)):
    rng = np.random.default_rng(3)
    rows = []
    for rates in triples:
        for m in pg.plan(rates):
            m, v = (m, "") if isinstance(m, str) else (m[0], ", ".join(f"{k}={x}" for k, x in m[1].items()))
            if m == "mvae":
                continue
            for s in seeds:
                base = RC_LEVEL[m] - 0.1 * max(rates) - (0.01 if v else 0.0)
                for t in pg.patterns + ["pooled"]:
                    a = base - 0.02 * (3 - len(t.split("+"))) + rng.normal(0, 0.002)
                    rows.append({"method": m, "variant": v, "setting": redcore.key(rates), "rates": tuple(rates),
                                 "seed": s, "test": t, "f1_weighted": a, "accuracy": a + 0.01, "uar": a,
                                 "path": None})
    f = pd.DataFrame(rows)
    return f.assign(run=redcore.names(f), pattern=f["test"].map(lambda t: pg.pat.get(t, "pooled")))


def test_redcore_plan_and_names():
    pg = _rc_page()
    assert pg.pat["acoustic+visual"] == "AV" and len(pg.patterns) == 7
    assert pg.spec((0.8, 0.2, 0.5))["rates"] == {"acoustic": 0.8, "visual": 0.2, "lexical": 0.5}
    page = pg.plan((0.8, 0.2, 0.5))
    assert "redcore_core" in page and ("redcore", {"kl": "code"}) in page and "amae_lite" not in page
    assert "amae_lite" in pg.plan((0.9, 0.9, 0.9)) and ("mmin_lite", {"pdt": False}) in pg.plan((0.8, 0.5, 0.5))
    assert redcore.key((0.8, 0.2, 0.5)) == "MR(A,V,L)=(0.8,0.2,0.5)"
    with pytest.raises(ValueError, match="three rates in"):
        redcore.check_rates(pg.names, [0.8, 0.2])
    f = pd.DataFrame({"method": ["mmin_lite", "redcore"], "variant": ["pdt=False", "kl=code"]})
    assert redcore.names(f) == ["MMIN, IDT", "RedCore (kl=code)"]


def test_redcore_tables_and_claims_from_synthetic_records():
    pg = _rc_page()
    triples = redcore.T1_SETTINGS + [r for r in redcore.PERMS.values() if r not in redcore.T1_SETTINGS] + \
        [redcore.ZERO, redcore.HIGH]
    df = _rc_frame(pg, triples)
    dfa, ave = redcore.with_ave(df)
    assert set(ave["pattern"]) == {"Ave."} and (ave["variant"] == "").all()
    t1 = redcore.table1(dfa, list(pg.pat.values()))
    assert list(t1.index) == list(pg.pat.values()) + ["Ave.", "pooled"]
    assert ("(0.8,0.5,0.5)", "RedCore, paper") in t1.columns and t1[("(0.8,0.5,0.5)", "RedCore, paper")].ne("–").any()
    t2 = redcore.table2(ave)
    assert len(t2) == 6 and ("Red", "paper") in t2.columns
    assert redcore.pooled_gap(dfa).abs().max() < 5
    tv, ref = redcore.variants_table(df, ave, pg.page_rates, pg.patterns)
    assert len(tv) == len(redcore.CODE_VARIANTS)
    assert all(-1.2 < float(x.split()[0]) < -0.8 for x in tv["minus the default (points)"])     # 1 point below
    floor = {"accuracy": 0.3, "f1_weighted": 0.2}
    pg.trace = lambda df_, m, rates=None, seed=None: pd.DataFrame(          # noqa: E731  (records not needed)
        {"step": [0, 1, 2, 3], **{f"ra_{n}": ([0.1, 0.2, 0.1, 0.1] if m == "redcore" else [0.5, -0.5, 0.4, -0.4])
                                  for n in pg.names}})
    V = redcore.claims(pg, df, dfa, ave, set(triples), floor)
    by = report.by_id(V)
    assert len(by) == len(V)
    assert by["redcore.1.beats_mmin"].verdict == "reproduced" and by["redcore.4.redcore_beats_redcore_core"].verdict == "reproduced"
    assert by["redcore.10.code.kl=code"].effect == pytest.approx(-1.0, abs=0.2)
    assert {"redcore.5.rate0.beats_cra", "redcore.7.smaller_drop.mmin_lite", "redcore.8.ra_spread"} <= set(by)
    text = redcore.summary(V, ave, pg.page_rates)
    assert f"Of {len(V)} tests" in text and "the largest effect on Ave. F1" in text


def test_redcore_gaussian_gap_and_floor():
    oracle = {"A": 60.0, "AV": 70.0, "Ave.": 65.0}
    gdf = pd.DataFrame([{"run": r, "pattern": "Ave.", "accuracy": a, "setting": "s", "seed": 0}
                        for r, a in [("RedCore", 0.60), ("MMIN", 0.55)]])
    gap = redcore.oracle_gap(gdf, oracle)
    assert list(gap.index) == ["RedCore", "MMIN"] and gap["RedCore"] == pytest.approx(5.0)
    import torch
    data = SimpleNamespace(y=torch.tensor([0, 0, 0, 1]), splits={"test": torch.arange(4)})
    assert redcore.majority_share(data) == 75.0


# -- M3S ----------------------------------------------------------------------------------------------
from mmlib.pages import m3s  # noqa: E402

M3S_GAIN = {"ORIG": 0.0, "ORIG + SPL-TRN": 0.01, "ORIG + M3S": 0.02, "M3S, alpha = 0": 0.01,
            "M3S, alpha x 10": 0.015, "M3S, spans on clean features": 0.03, "ORIG, compute-matched": 0.005,
            "ORIG + SPL-TRN, compute-matched": 0.012}


def _m3s_frame(seeds=range(5)):
    rng = np.random.default_rng(4)
    rows = []
    for task, base in [("emotion", "MMIN (lite)"), ("emotion", "zero padding"), ("regression", "zero padding")]:
        for band in ("20-40%", "40-60%", "60-80%"):
            for tested in ([band, "60-80%"] if band == "40-60%" else [band]):
                for s_, g in M3S_GAIN.items():
                    first = base == ("MMIN (lite)" if task == "emotion" else "zero padding")
                    if s_ not in m3s.SETTING.values() and (band != "40-60%" or not first):
                        continue                  # the controls: at 40-60 %, on each task's first base
                    for seed in seeds:
                        gain = g * (2 if band == "40-60%" else 1) + rng.normal(0, 0.001)
                        r = {"task": task, "base": base, "band": band, "tested": tested, "setting": s_, "seed": seed,
                             "path": None}
                        if task == "emotion":
                            r.update(accuracy=0.5 + gain, uar=0.45 + gain, f1_weighted=0.48 + gain)
                        else:
                            r.update(mae=1.0 - gain, corr=0.5 + gain, acc2=0.6 + gain, f1_2=0.6 + gain, acc7=0.3 + gain)
                        rows.append(r)
    return pd.DataFrame(rows)


def test_m3s_plan_and_labels():
    assert m3s.lbl([0.4, 0.6]) == "40-60%" and set(m3s.corruption([0.4, 0.6])["test"]) == {"40-60%", "60-80%"}
    with pytest.raises(ValueError, match="band must be"):
        m3s.check([0.6, 0.4], "all")
    with pytest.raises(ValueError, match="part must be"):
        m3s.check([0.4, 0.6], "some")
    pg = m3s.Page({"emotion": None}, "default", [0], None, "cpu", None)
    plan = pg.plan("emotion", [0.4, 0.6])
    assert ("m3s", {"base": "mmin_lite", "base_kwargs": {}, "inner_lr": 0.0}) in plan
    assert len(pg.plan("emotion", [0.2, 0.4])) == 6                 # three settings for each of two bases
    assert all(m in m3s.SETTING for m, _ in m3s.Page({"emotion": None}, "default", [0], None, "cpu", None,
                                                     share="settings").plan("emotion", [0.4, 0.6]))
    r = {"method": "m3s", "config.inner_lr": 2e-3, "config.augment_on": "masked", "config.second_order": False,
         "config.compute_matched": False}
    assert pg.row_name(r) == "M3S, alpha x 10"
    assert pg.row_name({**r, "method": "m3s_orig", "config.inner_lr": 2e-4, "config.compute_matched": True}) == \
        "ORIG, compute-matched"


def test_m3s_tables_and_claims():
    df = _m3s_frame()
    tables = m3s.tables(df, ["emotion", "regression"])
    titles = [t for t, _ in tables]
    assert titles[0].startswith("**Table 2**, emotion, MMIN (lite)") and any(t.startswith("**Table 4**") for t in titles)
    t2 = tables[0][1]
    assert list(t2.index) == list(m3s.SETTING.values()) and ("Acc", "paper (MMIN)") in t2.columns
    t5 = m3s.table5(df, ["emotion", "regression"])
    assert float(t5.loc[("emotion", "MMIN (lite)", "Acc"), "M3S - ORIG"].split()[0]) == pytest.approx(4.0, abs=0.3)
    assert "The paper's p-values" in m3s.paper_p_values()
    V = m3s.claims(df, ["emotion", "regression"])
    by = report.by_id(V)
    assert len(by) == len(V)
    assert by["m3s.1.emotion.mmin_lite"].verdict == "reproduced"
    assert by["m3s.1.regression.zero_padding"].verdict == "reproduced"          # MAE: lower is better
    assert by["m3s.4.vs_20.emotion.mmin_lite"].verdict == "reproduced"         # the gain is twice as large
    assert by["m3s.book.equal_compute.m3s_orig.emotion.mmin_lite"].n == 5
    assert "m3s.book.meta_step.regression.zero_padding" in by
    assert "m3s.book.meta_step.emotion.zero_padding" not in by                  # controls: the first base only
    text = m3s.summary(V, df, ["emotion", "regression"])
    assert f"Of {len(V)} tests" in text and "At equal compute" in text


# -- MLA ----------------------------------------------------------------------------------------------
from mmlib.pages import mla  # noqa: E402

MLA_LEVEL = {"Sum": 0.60, "Concat": 0.61, "Late Fusion": 0.63, "FiLM": 0.60, "BiGated": 0.60, "OGM-GE": 0.62,
             "QMF": 0.62, "MLA": 0.66}


def _mla_t1(seeds=range(5)):
    """Complete-data runs on one two-modality dataset: every Table 1 row, the ablations and the code's
    choices; the weak modality is 'image'."""
    rng = np.random.default_rng(5)
    key = {v: k for k, v in mla.NAMES.items()}
    runs = [(key[r], "", r, acc) for r, acc in MLA_LEVEL.items()]
    runs += [("mla", "hgm=off", "MLA (hgm=off)", 0.65), ("mla", "df=off", "MLA (df=off)", 0.64),
             ("mla", "hgm=off, df=off", "MLA (hgm=off, df=off)", 0.63), ("mla_code", "", "mla_code", 0.62)]
    runs += [("mla", k, f"MLA ({k})", 0.655) for k in mla.CODE_PARTS]
    rows = []
    for m, v, row, acc in runs:
        for s in seeds:
            noise = rng.normal(0, 0.002)
            for col, a in [("Multi", acc), ("audio", acc - 0.05), ("image", acc - 0.3 + (0.05 if m == "mla" else 0))]:
                rows.append({"dataset": "av", "method": m, "variant": v, "row": row, "col": col,
                             "test": "audio+image" if col == "Multi" else col, "seed": s, "accuracy": a + noise,
                             "gap.audio|image": 0.5 + (0.1 if m == "mla" else 0) + noise})
    return pd.DataFrame(rows)


def test_mla_tables_and_claims():
    t1 = _mla_t1()
    d = SimpleNamespace(modality_names=["audio", "image"])
    tab = mla.table1(t1, "av", d)
    assert list(tab.index) == mla.ORDER and list(tab.columns) == ["audio", "image", "Multi", "n"] and (tab["n"] == "5").all()
    ab = mla.ablations(t1)
    t3 = mla.table3(ab, "av", d)
    assert list(t3.index) == mla.ORDER3 and _pct(t3.loc["HGM on, DF on", "Multi"]) == pytest.approx(66.0, abs=0.5)
    code = mla.code_table(t1, ["av"])
    delta = code.loc["all at once (mla_code)", "av"].split("(Δ ")[1].split()[0]
    assert float(delta) == pytest.approx(-4.0, abs=0.5)
    assert mla.weak_modality(t1, "av", d) == "image"
    V = mla.claims(t1, {"av": d}, "av", {"av": "audio|image"})
    by = report.by_id(V)
    assert len(by) == len(V)
    assert by["mla.1+4.av.late_fusion"].verdict == "reproduced" and by["mla.2.av.qmf"].verdict == "reproduced"
    assert by["mla.9.gap.av"].verdict == "reproduced" and by["mla.10.beats_code.av"].verdict == "reproduced"
    assert by["mla.10.ablation_equals_late.av"].verdict == "reproduced"        # both at 63 %
    assert "(1) MLA best on Multi" in mla.tallies(V)
    assert "released code as a whole" in mla.summary(V, "av")
    gaps = mla.gap_table(t1, ["av"], {"av": "audio|image"})
    assert list(gaps.columns) == ["av (audio vs image)"] and _pct(gaps.loc["MLA"].iloc[0]) == pytest.approx(0.6, abs=0.01)


def test_mla_table2_and_isolation():
    rng = np.random.default_rng(6)
    m2 = pd.DataFrame([{"row": r, "rate": e, "seed": s, "accuracy": acc - e / 2 + rng.normal(0, 0.002),
                        "val_score": acc - e / 2}
                       for r, acc in [("MLA", 0.7), ("QMF", 0.68), ("Late Fusion", 0.66)]
                       for e in (0.1, 0.3) for s in range(5)])
    t2 = mla.table2(m2, [0.1, 0.3])
    assert "MLA, ours" in t2.index and "MLA, paper" in t2.index and any(i.endswith("paper only") for i in t2.index)
    by = report.by_id(mla.claims(_mla_t1(), {"av": SimpleNamespace(modality_names=["audio", "image"])}, "av",
                                 {"av": "audio|image"}, m2=m2, rates=[0.1, 0.3]))
    assert by["mla.5.rate10"].b == "row=QMF" and by["mla.5.rate10"].verdict == "reproduced"
    assert by["mla.6.mla"].verdict == "reproduced" and abs(by["mla.6.mla"].effect) == pytest.approx(5.0, abs=0.3)
    iso = pd.DataFrame([{"method": m, "gone": g, "test": "image" if g == "audio" else "audio", "rate": r, "seed": s,
                         "accuracy": 0.8 - (0.3 * r if m == "qmf" else 0.02 * r)}
                        for m in ("mla", "qmf") for g in ("audio", "image") for r in (0.0, 0.5, 0.9) for s in range(5)])
    iso = mla.isolation_frame(iso)
    assert set(iso["row"]) == {"MLA", "QMF"}


def test_mle_table2_names_its_rows_for_a_reader():
    t2 = pd.DataFrame([{"method": m, "setting": s, "seed": 0, "accuracy": 0.5} for m in ("ae1", "ae2", "mle")
                       for s in ("visual_missing=50%", "audio_missing=90%")])
    tab = mle.table2(t2)
    assert list(tab.columns) == ["visual_missing=50%", "audio_missing=90%"]
    assert set(tab.index) == {report.LABELS["ae1"], report.LABELS["ae2"], "MLE"}
