import json

import pandas as pd
import pytest

from mmlib import results


def _rec(method, seed, acc, rate=0.5):
    return {"identity": {"dataset": "d", "method": method, "missing": {"kind": "independent", "rates": {"audio": round(1 - rate, 6)}},
                         "seed": seed, "profile": "test"},
            "tags": {"missing_rate": rate},
            "metrics": {"image+audio": {"accuracy": acc, "f1_macro": acc - 0.1}, "image": {"accuracy": acc / 2, "f1_macro": 0.0}},
            "timings": {"fit_seconds": 1.0}}


def test_records_round_trip(tmp_path):
    for seed, acc in enumerate([0.8, 0.9, 1.0]):
        results.write_record(tmp_path, _rec("zp", seed, acc))
    results.write_record(tmp_path, _rec("lb", 0, 0.5))
    assert not list(tmp_path.glob(".tmp-*"))                      # atomic: no leftovers
    one = results.read_record(next(tmp_path.glob("lb-*.json")))
    assert one["metrics"]["image"]["accuracy"] == 0.25
    df = results.load_records(tmp_path)
    assert len(df) == 8 and set(df["test"]) == {"image", "image+audio"}
    assert df["missing.rates.audio"].eq(0.5).all()
    zp = df[(df.method == "zp") & (df.test == "image+audio")].sort_values("seed")
    assert zp["accuracy"].tolist() == [0.8, 0.9, 1.0] and zp["seed"].tolist() == [0, 1, 2]


def test_same_identity_same_file_and_missing_identity_rejected(tmp_path):
    a = results.write_record(tmp_path, _rec("zp", 0, 0.1))
    b = results.write_record(tmp_path, _rec("zp", 0, 0.2))
    assert a == b and json.loads(a.read_text())["metrics"]["image+audio"]["accuracy"] == 0.2
    with pytest.raises(ValueError, match="identity"):
        results.write_record(tmp_path, {"metrics": {}})


def test_paper_tables_and_beside_paper():
    t = results.paper_table("smil_table1")
    assert {"method", "metric", "value", "std"} <= set(t.columns)
    lb = t[(t.method == "Lower-Bound") & (t.metric == "accuracy")]
    assert lb["value"].iloc[0] == pytest.approx(44.8)
    ours = pd.DataFrame({"method": ["Lower-Bound"], "ours": ["50.0 ± 1.0"]})
    both = results.beside_paper(ours, lb, ["method"], "ours (avdigits)", "paper (CMU-MOSI)")
    assert both.columns.tolist() == ["method", "ours (avdigits)", "paper (CMU-MOSI)"]
    assert both["paper (CMU-MOSI)"].iloc[0] == "44.8"
    with pytest.raises(ValueError, match="no paper table 'smil_table9'"):
        results.paper_table("smil_table9")


def test_paper_tables_name_the_papers_method_by_the_paper_not_ours():
    """In the book "ours" is the book's numbers: a paper's "Ours" row is the paper's method."""
    from mmlib.results import PAPER_TABLES
    for path in PAPER_TABLES.glob("*.csv"):
        assert not results.paper_table(path.stem)["method"].astype(str).str.contains("Ours").any(), path.stem
    assert "MLE" in set(results.paper_table("mle_table1")["method"])
    assert {"MLA", "CLIP + MLA"} <= set(results.paper_table("mla_table1")["method"]) | \
        set(results.paper_table("mla_table4")["method"])
    assert "Ours" in (PAPER_TABLES / "mle_table1.csv").read_text()      # the CSV keeps the paper's own words


def test_every_paper_setting_parses_into_one_vocabulary():
    from mmlib.results import PAPER_TABLES, paper_table, parse_setting
    assert parse_setting("eta=10%") == {"protocol": "independent", "rates": {"incomplete": 0.9}}
    assert parse_setting("visual_missing=95%") == {"protocol": "one_missing", "rates": {"visual": 0.95}}
    assert parse_setting("missing_rate=70%") == {"protocol": "cpm", "rates": {"all": 0.7}}
    assert parse_setting("MR(A,V,L)=(0.2,0.5,0.8)") == {"protocol": "independent",
                                                       "rates": {"A": 0.2, "V": 0.5, "L": 0.8}}
    assert parse_setting("input=40-60%,test=60-80%")["band"] == (0.4, 0.6)
    assert parse_setting(None)["protocol"] == parse_setting("split=Train")["protocol"] == "none"
    with pytest.raises(ValueError, match="unknown setting 'eta=ten'"):
        parse_setting("eta=ten")
    with pytest.raises(ValueError, match="3 modalities but 2 rates"):
        parse_setting("MR(A,V,L)=(0.2,0.5)")
    protocols = {}
    for path in PAPER_TABLES.glob("*.csv"):
        t = paper_table(path.stem)
        protocols[path.stem] = {parse_setting(s)["protocol"] for s in t["setting"]}
    assert protocols["smil_table1"] == {"independent"} and protocols["redcore_table1"] == {"independent"}
    assert protocols["mla_table2"] == {"cpm"} and protocols["m3s_table3"] == {"span"}


def test_explorer_frame_lists_every_record_with_the_chapters_that_used_it(tmp_path):
    import json
    from mmlib.data import load_dataset
    from mmlib.experiment import run
    from mmlib.results import explorer_frame, record_path
    from mmlib.train import TrainConfig
    d = load_dataset("gaussian", preset="dominant", n=400)
    store = tmp_path / "records"
    rec, _ = run(d, "late_fusion", {"kind": "cpm", "rate": 0.5}, 3, TrainConfig(epochs=1, patience=None), "cpu",
                 records_dir=store, method_kwargs={"backbone": "mlp"})
    other, _ = run(d, "zp_concat", {"kind": "full"}, 0, TrainConfig(epochs=1, patience=None), "cpu",
                   records_dir=store, method_kwargs={"backbone": "mlp"})
    (tmp_path / "runs" / "05_mla").mkdir(parents=True)
    (tmp_path / "runs" / "05_mla" / "abc.json").write_text(
        json.dumps({"status": "ok", "records": [str(record_path(store, rec["identity"]))]}))
    f = explorer_frame(store, tmp_path)
    lf = f[f["method"] == "late_fusion"]
    assert set(lf["chapter"]) == {"05_mla"} and set(lf["test"]) == set(rec["metrics"])
    assert lf["missing"].iloc[0] == "cpm, rate=0.5" and (lf["seed"] == 3).all() and "accuracy" in f
    assert set(f[f["method"] == "zp_concat"]["chapter"]) == {"(not used by a page)"}
    assert "backbone" not in lf["options"].iloc[0]                       # plumbing left out


def test_student_notebooks_have_no_solutions_and_no_outputs(tmp_path):
    import zipfile
    import nbformat
    from mmlib.chapters import CHAPTERS
    from mmlib.edition import strip_solutions, write_notebooks_zip
    md = "text\n\n```{exercise}\n:label: x-ex-1\n\nDo it.\n```\n\n```{solution} x-ex-1\n:class: dropdown\n\nThe secret.\n```\n\nafter"
    out = strip_solutions(md)
    assert "The secret" not in out and "Do it." in out and out.endswith("after")
    z = zipfile.ZipFile(write_notebooks_zip(tmp_path / "nb.zip"))
    names = [n for n in z.namelist() if n.endswith(".ipynb")]
    assert len(names) == len(CHAPTERS)
    for n in names:
        nb = nbformat.reads(z.read(n).decode(), 4)
        assert all("{solution}" not in c.source for c in nb.cells), n
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), n
    mla = nbformat.reads(z.read("notebooks/05_mla.ipynb").decode(), 4)
    assert sum("{exercise}" in c.source for c in mla.cells) >= 1


def test_explorer_sorts_a_metrics_empty_cells_last():
    """The explorer's metric columns get the ordering type that the page script registers; the
    script's comparison puts empty cells last in both directions (checked in Chromium by hand:
    accuracy 0.7, NaN, 0.5, NaN, 0.9 sorts to 0.5 0.7 0.9 NaN NaN and 0.9 0.7 0.5 NaN NaN)."""
    frame = pd.DataFrame({"chapter": ["x"], "accuracy": [0.5], "options": [""], "mae": [float("nan")]})
    assert results.explorer_column_defs(frame) == [{"targets": [1, 3], "type": results.NAN_LAST_TYPE}]
    assert results.explorer_column_defs(frame[["chapter"]]) == []
    js = results.explorer_sort_script("2.9.1")
    assert "window._itables_2_9_1" in js and "itables-2.9.1-ready" in js
    assert f'order["{results.NAN_LAST_TYPE}-asc"]' in js and f'order["{results.NAN_LAST_TYPE}-desc"]' in js
