import json

import pytest

from mmlib import cli, sweep


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "00_missing_modalities" in out and "avdigits" in out and "zp_concat" in out


def test_unknown_chapter_and_profile(capsys):
    assert cli.main(["run", "99_nope"]) == 2
    assert "unknown chapter '99_nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--profile", "huge"])
    with pytest.raises(ValueError, match="unknown profile"):
        sweep.profile("huge")


def test_param_parsing():
    assert cli._param("missing_rate=0.9") == ("missing_rate", 0.9)
    assert cli._param("data_root=/x/y") == ("data_root", "/x/y")
    assert cli._param('keep={"audio": 0.1}') == ("keep", {"audio": 0.1})


@pytest.mark.slow
def test_impossible_missing_rate_fails_clearly_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "bad.ipynb"
    code = cli.main(["run", "00_missing_modalities", "-p", "missing_rate=1.5", "--profile", "quick",
                     "--device", "cpu", "-o", str(out), "-p", f"results_dir={json.dumps(str(tmp_path))}"])
    assert code == 2
    assert "parameter missing_rate must be a number in [0, 1] (the fraction missing), got float 1.5" in \
        capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.json"))      # refused before a kernel started


@pytest.mark.parametrize("argv,message", [
    (["run", "00_missing_modalities", "-p", "missing_rate=abc"], "parameter missing_rate must be a number in [0, 1]"),
    (["run", "00_missing_modalities", "-p", 'missing_rate="0.5"'], "got str '0.5'"),
    (["run", "03_redcore", "-p", 'missing_rates="abc"'], "parameter missing_rates must be a list of numbers"),
    (["run", "03_redcore", "-p", 'missing_rates={"acoustic": 0.5}'], "got dict"),
    (["run", "04_m3s", "-p", 'band="ab"'], "parameter band must be [low, high]"),
    (["run", "04_m3s", "-p", "band=[0.6, 0.4]"], "low < high"),
    (["run", "01_smil", "-p", 'modalities=["image"]'], "parameter modalities must be a list of two different"),
    (["run", "01_smil", "-p", "modalities=[]"], "parameter modalities must be a list of two different"),
    (["run", "01_smil", "-p", "train_size=0"], "parameter train_size must be a positive integer"),
    (["run", "05_mla", "-p", "page=1"], "parameter page must be true or false"),
    (["run", "00_missing_modalities", "-p", "seeds=[1, 1]"], "parameter seeds must be a non-empty list of different"),
    (["sweep", "00_missing_modalities", "-p", "missing_rate=0.3"], "grid runs missing_rate in [0.5, 0.8, 0.9, 0.95], "
                                                                   "not 0.3"),
    (["sweep", "03_redcore", "-p", "missing_rates=[0.5, 0.5]"], "not [0.5, 0.5]"),
    (["sweep", "00_missing_modalities", "-p", 'profile="quick"'], "set profile with --profile"),
])
def test_every_parameter_is_checked_by_type_and_a_sweep_never_ignores_one(argv, message, capsys):
    """A value of the wrong type or range is refused before anything runs, naming the parameter
    and what it takes; a sweep's -p on a grid parameter restricts the grid or is refused."""
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_sweeps_p_restricts_its_grid_and_seeds_replace_the_profiles():
    ch = sweep.chapter("00_missing_modalities")
    points, page, rest = sweep.sweep_points(ch, "default", {"missing_rate": 0.8, "dataset": "avdigits"})
    assert [p["missing_rate"] for p in points] == [0.8] and rest == {"dataset": "avdigits"}
    points, page, rest = sweep.sweep_points(ch, "default", {"seeds": list(range(10))})
    assert len(points) == len(ch.points("default")) and all(p["seeds"] == list(range(10)) for p in points)
    assert page["seeds"] == list(range(10)) and rest == {}


def test_every_registry_value_passes_the_parameter_check():
    from mmlib.chapters import CHAPTERS, PROFILES
    for c in CHAPTERS.values():
        for prof in PROFILES:
            for point in c.points(prof) + [c.page_point(prof)]:
                sweep.check_parameters(sweep.ROOT / c.notebook, {"profile": prof, "device": "auto", **point},
                                       c.name)


def test_toc_is_the_registrys():
    """book/_toc.yml is written by `mmbook toc` from the chapter registry; edit the registry."""
    from mmlib.chapters import CHAPTERS, toc
    assert (sweep.ROOT / "book" / "_toc.yml").read_text() == toc()
    for c in CHAPTERS.values():
        assert (sweep.ROOT / c.notebook).is_file()
        assert c.page.removesuffix(".ipynb") in toc()


def test_points_carry_seeds_as_the_chapter_takes_them():
    from mmlib.chapters import chapter
    from mmlib.chapters import profile
    assert chapter("00_missing_modalities").points("quick") == [{"missing_rate": 0.5, "seeds": [0, 1]},
                                                                 {"missing_rate": 0.9, "seeds": [0, 1]}]
    assert chapter("00_missing_modalities").page_point("default")["seeds"] == profile("default")["seeds"]
    assert len(profile("default")["seeds"]) >= 5
    assert chapter("00_missing_modalities").grid_values("default", "missing_rate") == [0.5, 0.8, 0.9, 0.95]
    assert chapter("01_smil").points("quick")[0] == {"missing_rate": 0.8, "seeds": profile("quick")["seeds"]}
    assert chapter("avdigits_datasheet").points("default") == []


def test_failure_message_names_the_cell_and_the_exception():
    class CellError(Exception):                       # the attributes papermill's error carries
        exec_count, ename, evalue = 7, "ValueError", "missing_rate must be in [0, 1], got 1.5\nmore"
    assert sweep.describe_failure(CellError("\n\x1b[31m---\ntraceback")) == \
        "cell [7] raised ValueError: missing_rate must be in [0, 1], got 1.5\n    more"
    assert sweep.describe_failure(RuntimeError("\nkernel died\n")) == "RuntimeError: kernel died"


def test_rerun_text_reads_the_chapters_costs_and_the_last_sweep_alone(tmp_path):
    """The "Re-run this page" box quotes the Runs appendix's source (the chapter's markers and
    records) and the clock of the last sweep of the chapter alone that found nothing done."""
    import json
    from mmlib.results import write_json_atomic
    assert sweep.rerun_text("02_mle", tmp_path / "records", "default") == ""
    rec = tmp_path / "records" / "a.json"
    rec.parent.mkdir(parents=True)
    rec.write_text(json.dumps({"identity": {"dataset": "d", "method": "mle", "seed": 0}, "timings": {"fit_seconds": 15.4}}))
    (tmp_path / "runs" / "02_mle").mkdir(parents=True)
    (tmp_path / "runs" / "02_mle" / "k.json").write_text(json.dumps({"status": "ok", "records": [str(rec)]}))
    box = sweep.rerun_text("02_mle", tmp_path / "records", "default")
    assert "its grid of 1 runs and its page fit 1 models in 15 fit-seconds" in box and "alone" not in box
    base = {"profile": "default", "executor": "process", "runs": 12, "failed": 0, "machine": "x, 2 cores"}
    write_json_atomic(tmp_path / "runs" / "sweeps.json", [
        {**base, "chapters": ["02_mle"], "jobs": 2, "seconds": 301.2, "skipped": 0, "finished (UTC)": "2026-01-02T00:00"},
        {**base, "chapters": ["02_mle"], "jobs": 2, "seconds": 9.0, "skipped": 11, "finished (UTC)": "2026-01-03T00:00"},
        {**base, "chapters": ["01_smil", "02_mle"], "jobs": 2, "seconds": 5.0, "skipped": 0,
         "finished (UTC)": "2026-01-04T00:00"}])
    assert ("The last sweep of this chapter alone from scratch took 301 s on the clock with 2 workers (2026-01-02)"
            in sweep.rerun_text("02_mle", tmp_path / "records", "default"))


def test_registry_parameters_are_notebook_parameters():
    """Every parameter the registry passes (grid, page, seeds) is one the notebook's
    parameters cell declares, as papermill parses it (a name it cannot parse would be
    injected as an unknown parameter and silently ignored)."""
    from papermill.inspection import inspect_notebook
    from mmlib.chapters import CHAPTERS, PROFILES
    for c in CHAPTERS.values():
        declared = set(inspect_notebook(c.notebook))
        passed = {"profile", "device", "results_dir", "page"}     # (data_root only when a user gives one)
        for prof in PROFILES:
            for point in c.points(prof) + [c.page_point(prof)]:
                passed |= set(point)
        assert passed <= declared, (c.name, sorted(passed - declared))


def test_student_on_a_half_built_book_names_the_pages_and_ctrl_c_is_one_line(monkeypatch, capsys):
    from mmlib import edition
    monkeypatch.setattr(sweep, "unfinished_pages", lambda: ["book/chapters/01_smil.ipynb: missing"])
    monkeypatch.setattr(edition, "build_student", lambda: pytest.fail("built a half-built book"))
    assert cli.main(["student"]) == 1
    err = capsys.readouterr().err
    assert "01_smil.ipynb: missing" in err and "make book" in err

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "sweep_book", interrupted)
    assert cli.main(["sweep", "00_missing_modalities", "--jobs", "1"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_solution_follows_its_own_exercise():
    """In every chapter, exercise k is followed by its solution before exercise k + 1 starts
    (a reader should never meet a solution before its question)."""
    import re
    for nb in sorted((sweep.ROOT / "notebooks").glob("*.ipynb")):
        text = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown")
        seen, last = [], None
        for kind, rest in re.findall(r"```\{(exercise|solution)\}([^\n]*\n(?::label: [^\n]+)?)", text):
            label = rest.split(":label:")[-1].strip() if kind == "exercise" else rest.strip()
            if kind == "exercise":
                seen.append(label)
                last = label
            else:
                assert label == last, f"{nb.name}: the solution of {label} comes after exercise {last}"


def test_the_scorecard_and_the_teachers_page_follow_the_registry():
    """The chapter registry is the one place a chapter is named: the scorecard's papers (their
    order, names, verdict headings) come from it, every paper's bibliography key is in the
    references, and the teachers' page has learning goals for every chapter that decides claims."""
    from mmlib import scorecard
    from mmlib.chapters import CHAPTERS
    deciding = [n for n, c in CHAPTERS.items() if c.paper]
    assert list(scorecard.papers()) == deciding
    assert deciding == ["00_missing_modalities", "01_smil", "02_mle", "03_redcore", "04_m3s", "05_mla", "06_head_to_head"]
    bib = (sweep.ROOT / "book" / "references.bib").read_text()
    teachers = (sweep.ROOT / "book" / "teachers.md").read_text()
    for n in deciding:
        c = CHAPTERS[n]
        assert not c.bib or "{" + c.bib + "," in bib, n
        assert not c.bib or c.scorecard_note, n
        short = c.paper.split(" (")[0] if c.bib else c.title.split(":")[0]
        assert f"**{short}" in teachers or f"**{c.title.split(':')[0]}" in teachers, (n, short)
