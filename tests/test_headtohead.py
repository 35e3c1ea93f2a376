"""The head-to-head harness: protocol specs, what applies where, tables marked only on paired
evidence, ranks, the gap to the oracle, and the scorecard read from verdict records."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from mmlib import headtohead as H, masks, report, scorecard
from mmlib.chapters import CHAPTERS, H2H_PLAN
from mmlib.data import load_dataset
from mmlib.methods import make_method
from mmlib.train import TrainConfig

AVL = ["A", "V", "L"]


def test_each_protocol_builds_its_papers_mask():
    st = H.setting("smil", 0.9, ["image", "audio"])
    assert st.missing == {"kind": "independent", "rates": {"audio": 0.9}} and st.headline == "image+audio"
    assert masks.from_spec(st.missing, 1000, ["image", "audio"], 0)[:, 1].sum() == 100          # eta = 10 %
    assert H.setting("mle", 0.95, ["image", "audio"]).missing == {"kind": "independent", "rates": {"image": 0.95}}
    rc = H.setting("redcore", 0.8, AVL)
    assert rc.missing["rates"] == {"A": 0.8, "V": 0.2, "L": 0.5} and rc.headline == "pooled"   # RedCore's (0.8, 0.2, 0.5)
    mla = H.setting("mla", 0.5, AVL)
    assert mla.missing == {"kind": "cpm", "rate": 0.5} and mla.test == "masked"
    m3s = H.setting("m3s", 0.5, AVL)
    assert m3s.corruption["band"] == [0.4, 0.6] and m3s.headline == "A+V+L@40-60%"
    with pytest.raises(ValueError, match="unknown protocol"):
        H.setting("cpm", 0.5, AVL)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        H.setting("mla", 1.0, AVL)


def test_a_method_that_cannot_take_a_protocol_says_why():
    n = 200
    by = {e.key: e for e in H.ROSTER}
    cpm = H.setting("mla", 0.5, AVL)
    P = masks.from_spec(cpm.missing, n, AVL, 0)
    assert "two-modality" in H.not_applicable(by["smil"], AVL, cpm, P)
    assert "present in every training sample" in H.not_applicable(by["lower_bound"], AVL, cpm, P)
    assert H.not_applicable(by["redcore"], AVL, cpm, P) == "" and H.not_applicable(by["mla"], AVL, cpm, P) == ""
    two = ["image", "audio"]
    smil = H.setting("smil", 0.9, two)
    P2 = masks.from_spec(smil.missing, n, two, 0)
    assert H.not_applicable(by["smil"], two, smil, P2) == "" and H.not_applicable(by["ae_impute"], two, smil, P2) == ""
    kw = H.entry_kwargs(by["smil"], two, smil, P2, "mlp")
    assert kw == {"backbone": "mlp", "x1": "image", "x2": "audio"}
    spans = H.setting("m3s", 0.5, AVL)
    Pf = masks.from_spec(spans.missing, n, AVL, 0)
    assert "zero padding" in H.not_applicable(by["upper_bound"], AVL, spans, Pf)
    assert "nothing to impute" in H.not_applicable(by["ae_impute"], AVL, spans, Pf)
    assert H.entry_kwargs(by["m3s"], AVL, H.setting("mla", 0.5, AVL), P, "mlp")["aug_band"] == H.M3S_AUG_BAND
    assert "aug_band" not in H.entry_kwargs(by["m3s"], AVL, spans, Pf, "mlp")


def _frame(values: dict, col=("d", "mla", 0.5), val: dict | None = None) -> pd.DataFrame:
    """Rows of a head-to-head frame; ``val``: a row's validation scores (default: its test accuracy)."""
    val = val or {}
    rows = [{"row": r, "dataset": col[0], "protocol": col[1], "level": col[2], "seed": s, "test": "masked",
             "accuracy": v, "val_score": val.get(r, vs)[s], "kind": "paper"}
            for r, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_the_best_cell_is_bold_only_when_paired_seeds_separate_it():
    col = ("d", "mla", 0.5)
    na = pd.DataFrame([{"dataset": "d", "protocol": "mla", "level": 0.5, "row": "SMIL", "reason": "two only"}])
    clear = _frame({"MLA": [0.80, 0.82, 0.81, 0.83, 0.80], "Zero padding": [0.70, 0.71, 0.72, 0.70, 0.69]})
    tab, notes = H.main_table(clear, na, ["MLA", "Zero padding", "SMIL"], [col])
    cell = tab.loc["MLA", H.column_name(*col)]
    assert cell.startswith("**") and not tab.loc["Zero padding", H.column_name(*col)].startswith("**")
    assert tab.loc["SMIL", H.column_name(*col)] == "n/a [1]" and notes == {1: "two only"}
    close = _frame({"MLA": [0.80, 0.70, 0.81, 0.69, 0.80], "Zero padding": [0.72, 0.78, 0.70, 0.79, 0.71]})
    tab, _ = H.main_table(close, na, ["MLA", "Zero padding"], [col])
    assert not any(str(v).startswith("**") for v in tab.values.ravel())
    # the upper bound sees what the protocol hides: never the marked winner
    up = _frame({"Upper-Bound": [0.99] * 5, "MLA": [0.80, 0.82, 0.81, 0.83, 0.80], "Zero padding": [0.5] * 5})
    tab, _ = H.main_table(up, na.iloc[:0], ["Upper-Bound", "MLA", "Zero padding"], [col])
    assert tab.loc["MLA", H.column_name(*col)].startswith("**")


def test_ranks_average_within_settings_and_share_ties():
    f = pd.concat([_frame({"A": [0.9, 0.9], "B": [0.8, 0.9], "C": [0.7, 0.7]}),
                   _frame({"A": [0.5, 0.5], "B": [0.6, 0.6]}, col=("d", "mla", 0.7))])
    r, k = H.ranks(f)
    # level 0.5: seed 0 ranks A1 B2 C3, seed 1 A1.5 B1.5 C3; level 0.7: B1 A2
    assert list(r.columns) == ["d · mla"]
    assert r.loc["A", "d · mla"] == pytest.approx((1 + 1.5 + 2 + 2) / 4)
    assert r.loc["B", "d · mla"] == pytest.approx((2 + 1.5 + 1 + 1) / 4)
    assert r.loc["C", "d · mla"] == pytest.approx(3.0) and k["d · mla"] == pytest.approx((3 + 3 + 2 + 2) / 4)
    r2, _ = H.ranks(pd.concat([f, _frame({"A": [0.9, 0.9]}, col=("e", "mla", 0.5))]))
    assert list(r2.columns) == ["d · mla", "e · mla"] and r2.loc["A", "e · mla"] == 1.0   # datasets apart


def test_gap_to_the_oracle_is_paired_by_seed():
    f = _frame({"MLA": [0.80, 0.70, 0.75]})
    o = _frame({H.ORACLE: [0.90, 0.80, 0.85]}).assign(kind="oracle")
    g = H.gaps(f, o)
    assert len(g) == 1 and g["gap"].iloc[0] == pytest.approx(10.0)
    assert g["ci_low"].iloc[0] == pytest.approx(10.0) and g["n"].iloc[0] == 3      # the same 10 points at each seed


def test_oracle_rows_cover_patterns_masked_and_pooled():
    d = load_dataset("gaussian", preset="imbalanced", n=600)
    st = H.setting("mla", 0.5, d.modality_names)
    o = H.oracle_rows(d, "g", st, [0, 1])
    assert set(o["test"]) == {"A", "V", "L", "A+V", "A+L", "V+L", "A+V+L", "pooled", "masked"}
    full = o[(o["test"] == "A+V+L")]["accuracy"]
    assert full.nunique() == 1 and (o[o["test"] == "V"]["accuracy"].iloc[0] < full.iloc[0])
    assert H.oracle_rows(d, "g", H.setting("m3s", 0.5, d.modality_names), [0]).empty      # no oracle under spans


def test_findings_compare_the_best_paper_method_with_the_best_simple_baseline():
    f = _frame({"MLA": [0.80, 0.82, 0.81, 0.83, 0.80], "RedCore": [0.6] * 5,
                "Late fusion": [0.70, 0.71, 0.72, 0.70, 0.69], "Zero padding": [0.5] * 5})
    (v,) = H.findings(f, [("d", "mla", 0.5)])
    assert v.a == "MLA" and v.b == "Late fusion" and v.verdict == "reproduced" and v.n == 5
    assert v.effect == pytest.approx(100 * (0.812 - 0.704))
    # MLA's own protocol: MLA against the best of the others, late fusion here too: one claim for both questions
    assert "under its own protocol" in v.claim
    rc = _frame({"MLA": [0.8] * 5, "RedCore": [0.6, 0.61, 0.6, 0.62, 0.6], "Late fusion": [0.7] * 5},
                col=("d", "redcore", 0.8))
    _, home = H.findings(rc, [("d", "redcore", 0.8)])
    assert (home.a, home.b, home.verdict) == ("RedCore", "MLA", "contradicted")    # RedCore's protocol: RedCore


def test_findings_choose_their_sides_on_validation_and_test_one_comparison_once():
    vals = {"MLA": [0.80, 0.82, 0.81, 0.83, 0.80], "RedCore": [0.6] * 5,
            "Late fusion": [0.75, 0.76, 0.77, 0.75, 0.74], "Zero padding": [0.70, 0.71, 0.72, 0.70, 0.69]}
    # late fusion is best on test, zero padding on validation: the side is zero padding
    f = _frame(vals, val={"Late fusion": [0.5] * 5, "Zero padding": [0.6] * 5, "RedCore": [0.55] * 5})
    (v,) = H.findings(f, [("d", "mla", 0.5)])
    assert (v.a, v.b) == ("MLA", "Zero padding")
    # and the own-protocol question compares MLA with the best other on validation: zero padding, the
    # same two methods, so it is declared once (one claim naming both questions), not tested twice
    assert "best simple baseline" in v.claim and "under its own protocol" in v.claim
    (v2, home) = H.findings(_frame(vals, val={"RedCore": [0.9] * 5}), [("d", "mla", 0.5)])
    assert (home.a, home.b) == ("MLA", "RedCore") and "under its own protocol" not in v2.claim
    with pytest.raises(ValueError, match="no validation score"):
        H.findings(_frame(vals).assign(val_score=float("nan")), [("d", "mla", 0.5)])


def test_more_modalities_can_read_worse_than_one():
    rows = []
    for s, (both, img, aud) in enumerate([(0.40, 0.55, 0.20), (0.35, 0.52, 0.22), (0.38, 0.56, 0.19)]):
        for t, a in [("image+audio", both), ("image", img), ("audio", aud)]:
            rows += [{"row": "RedCore", "dataset": "av", "protocol": "smil", "level": 0.9, "seed": s, "test": t,
                      "accuracy": a, "kind": "paper"},
                     {"row": "Late fusion", "dataset": "av", "protocol": "smil", "level": 0.9, "seed": s, "test": t,
                      "accuracy": a + (0.3 if t == "image+audio" else 0.0), "kind": "baseline"}]
    w = H.worse_with_more(pd.DataFrame(rows), {"av": ["image", "audio"]})
    assert list(w["row"]) == ["RedCore"] and w["single"].iloc[0] == "image"
    assert w["effect"].iloc[0] == pytest.approx(100 * ((0.40 + 0.35 + 0.38) - (0.55 + 0.52 + 0.56)) / 3)


def test_plan_narrows_to_a_dataset_and_protocol():
    assert H.plan("default") == H2H_PLAN["default"]
    assert H.plan("default", "avdigits", "smil") == {"avdigits": {"smil": H2H_PLAN["default"]["avdigits"]["smil"]}}
    assert H.plan("default", "gaussian:warped", "mla") == {"gaussian:warped": {"mla": [H.DEFAULT_LEVELS["mla"]]}}
    with pytest.raises(ValueError, match="unknown protocol"):
        H.plan("default", None, "nope")
    with pytest.raises(ValueError, match="name the dataset"):
        H.plan("default", None, None, data_root="/data")
    # one grid point per (dataset, protocol) of the plan
    pts = CHAPTERS["06_head_to_head"].points("default")
    assert {(p["dataset"], p["protocol"]) for p in pts} == {(d, p) for d, ps in H2H_PLAN["default"].items() for p in ps}


def test_run_setting_runs_what_applies_on_the_same_masks(tmp_path):
    d = load_dataset("gaussian", preset="imbalanced", n=400)
    st = H.setting("mle", 0.5, d.modality_names)
    cfg = TrainConfig(epochs=1, patience=None, batch_size=128)
    f, na = H.run_setting(d, "g", st, [0, 1], cfg, "cpu", tmp_path, "quick")
    assert {"SMIL", "MLE"} <= set(na["row"])                                       # two-modality methods: n/a
    assert {"Lower-Bound", "Zero padding", "M3S", "RedCore", "MLA"} <= set(f["row"])
    assert f["parameters"].gt(0).all()                                             # M3S counts its base's
    recs = [json.load(open(p)) for p in f.drop_duplicates("path")["path"]]
    by_seed = {}
    for r in recs:
        if r["identity"]["method"] in ("zp_concat", "mla", "redcore"):
            by_seed.setdefault(r["identity"]["seed"], set()).add(r["presence"]["bits"])
    assert all(len(b) == 1 for b in by_seed.values()) and len(by_seed) == 2       # the same mask per seed


def test_the_plans_datasets_load_as_the_paper_chapters_do():
    d = H.load_data("avdigits")
    assert len(d.splits["train"]) == H.AVDIGITS_TRAIN and d.modality_names == ["image", "audio"]
    g = H.load_data("gaussian:dominant")
    assert g.info["spec"]["informativeness"][0] > g.info["spec"]["informativeness"][1]
    assert H.load_data("affect").task == "multiclass"
    pair = H.load_data("gaussian:pair")                       # two modalities: SMIL and MLE meet the oracle
    assert pair.modality_names == ["A", "L"] and "oracle" in pair.info


def test_mla_predicts_from_the_data_it_is_given():
    d = load_dataset("gaussian", preset="dominant", n=400)
    m = make_method("mla").fit(d, masks.full(len(d.splits["train"]), d.modality_names), seed=0,
                               cfg=TrainConfig(epochs=2, patience=None), device="cpu")
    zeroed = d.with_spans({k: torch.zeros(len(d), x.shape[1], dtype=torch.bool) for k, x in d.modalities.items()})
    assert not torch.equal(m.predict(d, "test"), m.predict(zeroed, "test"))


def test_an_option_added_later_keeps_old_identities():
    assert "backbone" not in make_method("redcore").config()            # the records written before it stay valid
    assert make_method("mmin_lite", backbone="mlp").config()["backbone"] == "mlp"


# ----------------------------------------------------------------------------- the scorecard
def _verdicts(tmp_path, chapter, claims):
    vs = [report.Verdict(c, "a", "b", "accuracy", "s", ">", 1.0, 0.5, 1.5, 5, 0.01, verdict, kind=k) for c, verdict, k in claims]
    return report.write_verdicts(tmp_path / "verdicts" / f"{chapter}.json", chapter, vs, profile="quick")


def test_the_scorecard_reads_every_verdict_and_links_its_section(tmp_path):
    _verdicts(tmp_path, "01_smil", [("Table 1: SMIL beats AE", "reproduced", "paper"),
                                    ("(this book) warm starts", "inconclusive", "book")])
    _verdicts(tmp_path, "05_mla", [("(10) the paper's MLA beats the released code's", "contradicted", "code")])
    f = scorecard.frame(tmp_path / "verdicts")
    assert list(f["kind"]) == ["paper", "book", "code"]
    assert f["link"].iloc[0] == "chapters/01_smil.html#what-reproduced-and-what-did-not"
    s = scorecard.summary(f)
    assert s.loc["SMIL", "reproduced"] == 1 and s.loc["SMIL", "claims"] == 1 and "MLA" not in s.index
    html = scorecard.html_table(f)
    assert "Table 1: SMIL beats AE" in html and "+1.0 [+0.5, +1.5], n=5" in html
    assert "Reproduced: Table 1: SMIL beats AE" in scorecard.tally(f[f["chapter"] == "01_smil"])


def test_a_broken_verdict_file_is_named(tmp_path):
    (tmp_path / "verdicts").mkdir()
    (tmp_path / "verdicts" / "02_mle.json").write_text("{not json")
    with pytest.raises(ValueError, match="02_mle.json"):
        scorecard.frame(tmp_path / "verdicts")


def test_the_warm_up_variant_is_a_measured_row_under_redcores_protocol_only(monkeypatch):
    """The head-to-head gives every row one budget; RedCore's chapter budget (10 epochs at least)
    is a separate measured row, run under RedCore's protocol only and kept out of ranks and findings."""
    assert "RedCore, 10-epoch warm-up" in [e.label for e in H.roster("default", "redcore")]
    assert "RedCore, 10-epoch warm-up" not in [e.label for e in H.roster("default", "mla")]
    seen = {}

    def fake_grid(data, methods, settings, seeds, cfg, *a, **k):
        seen.setdefault(methods[0][0], []).append(cfg.min_epochs)
        return pd.DataFrame({"seed": [0]}), {}
    monkeypatch.setattr(H, "run_grid", fake_grid)
    d = load_dataset("gaussian", preset="imbalanced", n=300)
    H.run_setting(d, "g", H.setting("redcore", 0.5, d.modality_names), [0], TrainConfig(epochs=3), "cpu", None, "default")
    assert seen["redcore"] == [0, 10] and set(seen["zp_concat"]) == {0}
    f = _frame({"RedCore": [0.6] * 3, "RedCore, 10-epoch warm-up": [0.9] * 3, "Late fusion": [0.5, 0.51, 0.49]},
               col=("d", "redcore", 0.8))
    (v,) = H.findings(f, [("d", "redcore", 0.8)])       # the best other is late fusion, not the variant
    assert (v.a, v.b) == ("RedCore", "Late fusion") and "under its own protocol" in v.claim
    assert "RedCore, 10-epoch warm-up" not in H.ranks(f)[0].index


def test_footnotes_keep_their_number_across_the_tables_of_a_page():
    col1, col2 = ("d", "mla", 0.5), ("e", "mla", 0.5)
    na = pd.DataFrame([{"dataset": "d", "protocol": "mla", "level": 0.5, "row": "SMIL", "reason": "two only"},
                       {"dataset": "e", "protocol": "mla", "level": 0.5, "row": "SMIL", "reason": "no audio"},
                       {"dataset": "e", "protocol": "mla", "level": 0.5, "row": "MLE", "reason": "two only"}])
    f = pd.concat([_frame({"MLA": [0.8, 0.7]}, col=col1), _frame({"MLA": [0.8, 0.7]}, col=col2)])
    numbering = {}
    t1, n1 = H.main_table(f, na, ["MLA", "SMIL", "MLE"], [col1], numbering)
    t2, n2 = H.main_table(f, na, ["MLA", "SMIL", "MLE"], [col2], numbering)
    assert n1 == {1: "two only"} and n2 == {1: "two only", 2: "no audio"}
    assert t2.loc["MLE"].iloc[0] == "n/a [1]" and t2.loc["SMIL"].iloc[0] == "n/a [2]"


def test_findings_are_read_by_their_ids_not_their_text():
    vals = {"MLA": [0.80, 0.82, 0.81, 0.83, 0.80], "RedCore": [0.9] * 5, "Late fusion": [0.75, 0.76, 0.77, 0.75, 0.74]}
    simple, home = H.findings(_frame(vals, val={"RedCore": [0.5] * 5, "MLA": [0.9] * 5, "Late fusion": [0.4] * 5}),
                              [("d", "mla", 0.5)])
    assert simple.id.startswith("h2h.simple.d") and home.id.startswith("h2h.own.d")
    assert H.asks(simple, "simple") and not H.asks(simple, "own") and H.asks(home, "own") and home.kind == "book"
    simple.claim = "reworded"                                     # rewording a claim changes nothing
    assert H.asks(simple, "simple")


def _gathered() -> "H.Gathered":
    """A page's worth of synthetic runs: one dataset, two settings, four rows, the oracle, one n/a."""
    from types import SimpleNamespace
    cols = [("d", "mla", 0.5), ("d", "mla", 0.7)]
    vals = {"MLA": [0.80, 0.82, 0.81], "Late fusion": [0.70, 0.71, 0.72], "Zero padding": [0.6, 0.62, 0.61]}
    frame = pd.concat([_frame(vals, col=c).assign(setting=H.column_name(*c), fit_seconds=1.0, parameters=100,
                                                   path=[f"{c[2]}-{i}" for i in range(9)], reused=True)
                       for c in cols], ignore_index=True)
    frame = pd.concat([frame, frame.assign(test="A", accuracy=frame["accuracy"] - 0.1)], ignore_index=True)
    oracle = pd.concat([_frame({H.ORACLE: [0.9, 0.9, 0.9]}, col=c).assign(kind="oracle") for c in cols],
                       ignore_index=True)
    na = pd.DataFrame([{"dataset": "d", "protocol": "mla", "level": lv, "row": "SMIL", "reason": "two only"}
                       for lv in (0.5, 0.7)])
    settings = {c: H.setting("mla", c[2], ["A", "L"]) for c in cols}
    head = H.headline(pd.concat([frame, oracle], ignore_index=True), settings)
    return H.Gathered(frame, na, oracle, settings, {"d": SimpleNamespace(modality_names=["A", "L"])}, head, cols,
                      ["MLA", "SMIL", "Late fusion", "Zero padding", H.ORACLE])


def test_the_pages_tables_come_from_the_gathered_runs():
    g = _gathered()
    assert "18 runs" in g.describe([0, 1, 2]) and "0 fitted now" in g.describe([0, 1, 2])
    ((title, table, notes),) = H.dataset_tables(g, 3)
    assert title.startswith("**d** (A, L; test accuracy %, n = 3 seeds)")
    assert "n/a [1]" in table and notes == "- [1] two only" and "mla 0.5" in table and "mla 0.7" in table
    pats = H.pattern_tables(g)
    assert [t for t, _ in pats] == [f"**d · {H.column_name('d', 'mla', lv)}** (test accuracy %)" for lv in (0.5, 0.7)]
    assert list(pats[0][1].columns) == ["A", "masked"] and list(pats[0][1].index) == ["MLA", "Late fusion", "Zero padding"]
    ranks = H.rank_table(g)
    assert ranks.loc["MLA", "d · mla"] == 1.0 and ranks.loc["(methods ranked)", "d · mla"] == "3"
    (fit, params, acc) = H.cost_tables(g)
    assert fit[0] == "**median fit time (s)**" and acc[1].loc["MLA", "d"] == "81.0 (2)"
    roster = H.roster_table("default")
    assert "registry key" in roster.columns and roster.loc["RedCore, 10-epoch warm-up", "budget"].startswith("at least")


def test_the_pages_figures_draw_every_setting():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    g = _gathered()
    fig = H.gap_figure(g, H.gaps(g.frame, g.oracle))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["d · mla 0.5", "d · mla 0.7"]
    plt.close(fig)
    fig = H.curves_figure(g, "d")
    assert [ax.get_title() for ax in fig.axes] == ["MLA's protocol"]
    assert H.ORACLE in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
