"""A re-executor's sweep: pages replaced only on success, markers trusted only with their records,
corrupt records named and redone, misspelt parameters refused, unfinished pages never published."""
import json
import os
import time
import warnings

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mmlib import sweep
from mmlib.cli import main as cli
from mmlib.data import load_dataset
from mmlib.experiment import run
from mmlib.results import RECORD_LOG_ENV, explorer_frame, load_records, read_record, record_path, write_record
from mmlib.train import TrainConfig

CFG = TrainConfig(epochs=1, patience=None)


def _notebook(path, body="assert x == 1\ny = x + 1"):
    params = new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[params, new_code_cell(body)],
                                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}}), path)
    return path


@pytest.mark.slow
def test_a_failed_run_keeps_the_last_good_page_and_reports_the_failure(tmp_path):
    src = _notebook(tmp_path / "src.ipynb")
    page, failed = tmp_path / "book" / "page.ipynb", tmp_path / "runs" / "page.failed.ipynb"
    sweep.execute(src, page, {"x": 1}, failed=failed)
    good = page.read_text()
    with pytest.raises(Exception):
        sweep.execute(src, page, {"x": 2}, failed=failed)
    assert page.read_text() == good                                   # the last good page is still there
    assert failed.is_file() and "AssertionError" in failed.read_text()   # and the failed run is kept as a report
    assert not list(page.parent.glob(".*partial*"))                   # no half-run file left behind
    assert sweep.notebook_parameters(src) == {"x": 1}


def test_a_kernel_that_never_started_is_started_again(tmp_path, monkeypatch):
    """Two kernels starting at one moment can race for a port; the loser dies before it runs a
    cell. execute() starts it again (up to KERNEL_START_TRIES in all); any other failure is not retried."""
    import papermill
    calls = []

    def flaky(src, out, **kw):
        calls.append(out)
        if len(calls) == 1:
            raise RuntimeError(f"{sweep.KERNEL_NOT_STARTED}")
        nbformat.write(nbformat.read(src, 4), out)

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    src = _notebook(tmp_path / "src.ipynb")
    page = tmp_path / "book" / "page.ipynb"
    sweep.execute(src, page, {"x": 1})
    assert len(calls) == 2 and page.is_file()

    def broken(src, out, **kw):
        calls.append(out)
        raise RuntimeError("a cell failed")

    monkeypatch.setattr(papermill, "execute_notebook", broken)
    calls.clear()
    with pytest.raises(RuntimeError, match="a cell failed"):
        sweep.execute(src, page, {"x": 1})
    assert len(calls) == 1

    def dead(src, out, **kw):
        calls.append(out)
        raise RuntimeError(sweep.KERNEL_NOT_STARTED)

    monkeypatch.setattr(papermill, "execute_notebook", dead)
    calls.clear()
    with pytest.raises(RuntimeError, match="Kernel died"):
        sweep.execute(src, page, {"x": 1})
    assert len(calls) == sweep.KERNEL_START_TRIES


def test_misspelt_parameters_are_refused_with_the_valid_names(capsys):
    assert cli(["run", "00_missing_modalities", "-p", "missing_rat=0.5", "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) ['missing_rat']" in err and "'missing_rate'" in err
    with pytest.raises(ValueError, match="unknown parameter"):
        sweep.sweep_book(["00_missing_modalities"], "quick", extra={"seedz": [0]}, log=lambda *a: None)


def _record(tmp_path, name="r"):
    rec = {"identity": {"dataset": "d", "method": name, "seed": 0}, "metrics": {}}
    return write_record(tmp_path / "records", rec)


def test_a_marker_is_trusted_only_with_its_records(tmp_path):
    seen = []
    rec = _record(tmp_path)
    marker = tmp_path / "m.json"
    marker.write_text(json.dumps({"status": "ok", "records": [str(rec)]}))
    assert sweep.marker_trusted(marker, seen.append)
    rec.write_text(rec.read_text()[:20])                               # truncated by a kill
    assert not sweep.marker_trusted(marker, seen.append) and "missing or unreadable" in seen[-1]
    rec.unlink()                                                       # deleted
    assert not sweep.marker_trusted(marker, seen.append)
    marker.write_text('{"status": "o')                                 # the marker itself truncated
    assert not sweep.marker_trusted(marker, seen.append) and str(marker) in seen[-1]
    marker.write_text(json.dumps({"status": "ok"}))                    # an old marker that lists no records
    assert not sweep.marker_trusted(marker, seen.append)


def test_runs_list_the_records_they_read_and_write(tmp_path, monkeypatch):
    d = load_dataset("gaussian", preset="dominant", n=400)
    log = tmp_path / "used.txt"
    monkeypatch.setenv(RECORD_LOG_ENV, str(log))
    rec, m = run(d, "late_fusion", {"kind": "full"}, 0, CFG, "cpu", records_dir=tmp_path / "store",
                 method_kwargs={"backbone": "mlp"})
    rec2, m2 = run(d, "late_fusion", {"kind": "full"}, 0, CFG, "cpu", records_dir=tmp_path / "store",
                   method_kwargs={"backbone": "mlp"})
    path = record_path(tmp_path / "store", rec["identity"]).resolve()
    assert m is not None and m2 is None                                # written, then read
    assert log.read_text().splitlines() == [str(path), str(path)]


def test_a_corrupt_record_is_named_set_aside_and_refitted(tmp_path):
    d = load_dataset("gaussian", preset="dominant", n=400)
    kw = dict(records_dir=tmp_path / "store", method_kwargs={"backbone": "mlp"})
    rec, _ = run(d, "late_fusion", {"kind": "full"}, 0, CFG, "cpu", **kw)
    path = record_path(tmp_path / "store", rec["identity"])
    path.write_text(path.read_text()[:100])                            # truncated
    with pytest.warns(UserWarning, match=f"{path.name}: not a readable record.*moved to.*is redone"):
        frame = load_records(tmp_path / "store")                      # any reader sets it aside
    assert frame.empty and (path.parent / (path.name + ".corrupt")).is_file()
    rec2, m = run(d, "late_fusion", {"kind": "full"}, 0, CFG, "cpu", **kw)
    assert m is not None and read_record(path)["identity"] == rec["identity"]
    path.write_text("")                                               # a 0-byte record is no record, for run()
    with pytest.warns(UserWarning, match="is redone"):
        rec3, m = run(d, "late_fusion", {"kind": "full"}, 0, CFG, "cpu", **kw)
    assert m is not None
    path.write_text(json.dumps({"identity": {"method": "late_fusion"}}))   # valid JSON, the wrong schema
    with pytest.warns(UserWarning, match="identity lacks"):
        explorer_frame(tmp_path / "store", tmp_path)                  # the explorer names it, sets it aside
    run(d, "late_fusion", {"kind": "full"}, 0, CFG, "cpu", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_records(tmp_path / "store")) > 0                # the store reads cleanly again


def test_unfinished_pages_are_named_before_the_html_build(tmp_path):
    book = tmp_path / "book"
    assert any("missing" in p for p in sweep.unfinished_pages(book))
    for ch in sweep.CHAPTERS.values():                                 # every page present and finished
        p = book / ch.page.removeprefix("book/")
        p.parent.mkdir(parents=True, exist_ok=True)
        nb = new_notebook(cells=[new_code_cell("1")])
        nb.cells[0].metadata["papermill"] = {"status": "completed"}
        nbformat.write(nb, p)
    assert sweep.unfinished_pages(book) == []
    pages = list(sweep.CHAPTERS.values())
    (book / pages[0].page.removeprefix("book/")).write_text("")        # a 0-byte page
    nb = nbformat.read(book / pages[1].page.removeprefix("book/"), 4)
    nb.cells[0].metadata["papermill"] = {"status": "running"}          # killed mid-run
    nbformat.write(nb, book / pages[1].page.removeprefix("book/"))
    nb.metadata["papermill"] = {"exception": True}
    nbformat.write(nb, book / pages[2].page.removeprefix("book/"))
    probs = sweep.unfinished_pages(book)
    assert [p.split(":")[0] for p in probs] == [pages[i].page for i in range(3)]
    assert "empty file" in probs[0] and "did not finish" in probs[1] and "execution failed" in probs[2]


def test_failure_summary_names_the_cell_and_the_exception():
    class Fake(Exception):
        ename, evalue, exec_count = "KeyError", "\n'MLA (Ours)' not found\n", 16
    assert sweep.describe_failure(Fake()) == "cell [16] raised KeyError: 'MLA (Ours)' not found"

    class Layout(Exception):            # a data folder's problems: every one is said, not only the first line
        ename, exec_count = "ValueError", 3
        evalue = "/data/x is not in the expected layout (2 problem(s)):\n  - a.npy: missing\n  - b.npy: NaN"
    text = sweep.describe_failure(Layout())
    assert "a.npy: missing" in text and "b.npy: NaN" in text


def test_a_good_page_run_removes_the_last_failures_report(tmp_path):
    src = _notebook(tmp_path / "src.ipynb")
    page, failed = tmp_path / "book" / "page.ipynb", tmp_path / "runs" / "page.failed.ipynb"
    with pytest.raises(Exception):
        sweep.execute(src, page, {"x": 2}, failed=failed)
    assert failed.is_file()
    sweep.execute(src, page, {"x": 1}, failed=failed)
    assert page.is_file() and not failed.exists()


def test_no_space_left_names_the_file_and_keeps_page_and_marker_consistent(tmp_path, monkeypatch):
    """A full disk: the error names the file it could not write; a page whose marker cannot be
    written is moved to the failed report (never a page without its marker); the runs' causes
    are printed one per line."""
    import errno
    from mmlib import results
    real = results.tempfile.mkstemp

    def full(*a, **kw):
        if "runs" in str(kw.get("dir", "")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)
    monkeypatch.setattr(results.tempfile, "mkstemp", full)
    with pytest.raises(OSError, match="cannot write .*page.json: No space left on device"):
        results.write_json_atomic(tmp_path / "runs" / "ch" / "page.json", {})
    page = tmp_path / "book" / "page.ipynb"
    page.parent.mkdir(parents=True)
    page.write_text("{}")
    info = sweep._land({"status": "ok", "notebook": str(page), "params": {}}, tmp_path / "runs" / "ch" / "page.json")
    assert info["status"] == "failed" and "No space left" in info["error"] and "page.json" in info["error"]
    assert not page.exists() and (tmp_path / "runs" / "ch" / "page.failed.ipynb").is_file()


def test_corrupt_data_files_and_out_of_range_labels_are_named(tmp_path):
    """mmbook data check on corrupt HDF5 / .npy files and on labels outside the class range."""
    import numpy as np
    import shutil
    from test_real_data import write_avmnist, write_mmimdb, write_mmin

    from mmlib.data import check_folder
    write_mmin(tmp_path / "iemocap", fold=1)
    shutil.copy(tmp_path / "iemocap" / "target/1/trn_label.npy", tmp_path / "good.npy")
    np.save(tmp_path / "iemocap" / "target/1/trn_label.npy", np.array([0, 5, 7, 1, 2, 3]))
    assert any("trn_label.npy: class ids must be 0..3" in p and "0..7" in p for p in check_folder("iemocap", tmp_path / "iemocap"))
    shutil.copy(tmp_path / "good.npy", tmp_path / "iemocap" / "target/1/trn_label.npy")
    (tmp_path / "iemocap" / "A/comparE_mean_std.h5").write_bytes(b"not hdf5 at all")
    probs = check_folder("iemocap", tmp_path / "iemocap")
    assert len(probs) == 1 and "comparE_mean_std.h5: not a readable HDF5 file (" in probs[0]
    write_avmnist(tmp_path / "av")
    (tmp_path / "av" / "train_labels.npy").write_bytes(b"\x93NUMPY garbage")
    probs = check_folder("avmnist", tmp_path / "av")
    assert len(probs) == 1 and "train_labels.npy: not a readable .npy file (" in probs[0]
    write_mmimdb(tmp_path / "imdb")
    import h5py
    with h5py.File(tmp_path / "imdb" / "multimodal_imdb.hdf5", "r+") as h:
        g = h["genres"][()]
        g[0, 0] = -3
        h["genres"][...] = g
    assert any("multi-hot 0/1 expected, found values [-3" in p for p in check_folder("mmimdb", tmp_path / "imdb"))


def test_sweep_takes_notebook_parameters_and_data_check_refuses_unknown_options(tmp_path, capsys):
    from test_real_data import write_mmin
    write_mmin(tmp_path / "iemocap", fold=1)
    assert cli(["data", "check", "iemocap", str(tmp_path / "iemocap"), "-o", "flod=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown option(s) ['flod'] for iemocap" in err and "'fold'" in err
    assert cli(["sweep", "05_mla", "--profile", "quick", "-p", "datset=\"crema_d\""]) == 2
    assert "unknown parameter(s) ['datset']" in capsys.readouterr().err


def test_train_config_and_record_files_are_checked_and_shared(tmp_path):
    import os
    for bad in ({"epochs": 0}, {"batch_size": -1}, {"epochs": 2.5}, {"patience": 0}, {"lr": 0.0}):
        with pytest.raises(ValueError, match="TrainConfig: " + next(iter(bad))):
            TrainConfig(**bad)
    p = _record(tmp_path)
    assert os.stat(p).st_mode & 0o044                                   # readable by group / others (umask allowing)


def test_a_page_reads_only_its_own_datasets_records(tmp_path):
    """Defect 1: a real-data run in the same record store must not enter an embedded dataset's
    tables. Pages read records through run_grid, whose identities hold the data's fingerprint."""
    from mmlib.experiment import run_grid
    a = load_dataset("gaussian", preset="dominant", n=400)
    b = load_dataset("gaussian", preset="dominant", n=400, seed=1)          # "another folder", same names
    store = tmp_path / "store"
    fb, _ = run_grid(b, [("late_fusion", {"backbone": "mlp"})], {"c": {"kind": "full"}}, [0], CFG, "cpu", store=store)
    fa, _ = run_grid(a, [("late_fusion", {"backbone": "mlp"})], {"c": {"kind": "full"}}, [0], CFG, "cpu", store=store)
    assert not fa["reused"].any() and set(fa["path"]).isdisjoint(fb["path"])
    assert len(load_records(store)["data_fingerprint"].unique()) == 2


def test_real_layout_variants_are_accepted_or_explained(tmp_path):
    """MMIN's own sibling layout (feature/ next to target/) reads; an MMSA folder with only the
    other alignment says which option to pass."""
    import shutil
    from test_real_data import write_mmin, write_mmsa
    from mmlib.data import check_folder
    root = tmp_path / "mmin"
    write_mmin(root, fold=1)
    (root / "feature").mkdir()
    for m in ("A", "V", "L"):
        shutil.move(str(root / m), str(root / "feature" / m))
    assert check_folder("iemocap", root) == []
    assert len(load_dataset("iemocap", root)) > 0
    write_mmsa(tmp_path / "mosi", aligned=True)
    probs = check_folder("mosi", tmp_path / "mosi")
    assert len(probs) == 1 and "the folder has aligned_50.pkl: pass aligned=true" in probs[0]


def test_one_sweep_per_book_folder_and_a_killed_sweeps_lock_is_taken_over(tmp_path):
    import os
    import subprocess
    import sys
    lock = sweep.SweepLock(tmp_path)
    with lock:
        assert lock.path.read_text() == str(os.getpid())
        with pytest.raises(RuntimeError, match=f"another sweep \\(process {os.getpid()}\\) is running"):
            with sweep.SweepLock(tmp_path):
                pass
    assert not lock.path.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.path.write_text(str(dead.pid))                                 # left by a killed sweep
    with sweep.SweepLock(tmp_path) as again:
        assert again.path.read_text() == str(os.getpid())


def test_status_says_what_is_done_failed_or_to_do(tmp_path):
    rows = sweep.status(["05_mla"], "quick", book_dir=tmp_path)
    assert rows and all(r["status"] == "to do" for r in rows) and rows[-1]["point"] == "page"
    grid = [r for r in rows if r["point"] != "page"]
    ch = sweep.chapter("05_mla")
    records = tmp_path.resolve() / "records"
    first = {"profile": "quick", "device": "auto", "results_dir": str(records), **ch.points("quick")[0], "page": False}
    k = sweep.key(first)
    rec = _record(tmp_path)
    (tmp_path / "runs" / "05_mla").mkdir(parents=True)
    (tmp_path / "runs" / "05_mla" / f"{k}.json").write_text(json.dumps({"status": "ok", "records": [str(rec)]}))
    assert sweep.status(["05_mla"], "quick", book_dir=tmp_path)[0]["status"] == "done"
    assert len(grid) == len(ch.points("quick"))
    # a second point: a finished notebook whose marker was never written (killed before it) is "to do";
    # a report of a failed run is "failed" with its cause
    second = sweep.key({"profile": "quick", "device": "auto", "results_dir": str(records), **ch.points("quick")[1],
                        "page": False})
    nb = new_notebook(cells=[new_code_cell("1")])
    nbformat.write(nb, tmp_path / "runs" / "05_mla" / f"{second}.ipynb")
    assert sweep.status(["05_mla"], "quick", book_dir=tmp_path)[1]["status"] == "to do"
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="bad band", traceback=[])]
    nb.metadata["papermill"] = {"exception": True}
    nbformat.write(nb, tmp_path / "runs" / "05_mla" / f"{second}.ipynb")
    row = sweep.status(["05_mla"], "quick", book_dir=tmp_path)[1]
    assert row["status"] == "failed" and row["cause"] == "ValueError: bad band"
    # the page: done only for the profile it was built with; a failed report goes with a good run
    page = tmp_path / ch.page.removeprefix("book/")
    page.parent.mkdir(parents=True)
    good = new_notebook(cells=[new_code_cell("1")], metadata={"papermill": {"parameters": {"profile": "quick"}}})
    nbformat.write(good, page)
    assert sweep.status(["05_mla"], "quick", book_dir=tmp_path)[-1]["status"] == "done"
    assert sweep.status(["05_mla"], "default", book_dir=tmp_path)[-1]["status"] == "to do"


def test_bad_seeds_and_split_points_get_clear_errors(tmp_path):
    from mmlib.experiment import run_grid
    from test_real_data import write_mmimdb
    d = load_dataset("gaussian", preset="dominant", n=400)
    for bad in ([], "0,1", [0, 1.5], [-1]):
        with pytest.raises(ValueError, match="seed"):
            run_grid(d, ["late_fusion"], {"c": {"kind": "full"}}, bad, CFG, "cpu")
    with pytest.raises(ValueError, match="a seed must be a non-negative integer, got '3'"):
        run(d, "late_fusion", {"kind": "full"}, "3", CFG, "cpu")
    write_mmimdb(tmp_path / "imdb")
    for bad in ("6,9", "69", [6.5, 9], 6):
        with pytest.raises(ValueError, match="split_at must be two integers"):
            load_dataset("mmimdb", tmp_path / "imdb", split_at=bad)
    with pytest.raises(ValueError, match="needs the key 'rate'"):
        run(d, "late_fusion", {"kind": "cpm"}, 0, CFG, "cpu")


def test_runs_table_lists_every_grid_point_with_its_records_and_hardware(tmp_path):
    rows = sweep.runs_table("quick", book_dir=tmp_path)
    chapters = [n for n, c in sweep.CHAPTERS.items() if not c.last]
    assert set(rows["chapter"]) == set(chapters) and (rows["status"] == "to do").all()
    ch = sweep.chapter("05_mla")
    params = {"profile": "quick", "device": "auto", "results_dir": str(tmp_path.resolve() / "records"),
              **ch.points("quick")[0], "page": False}
    d = load_dataset("gaussian", preset="dominant", n=400)
    rec, _ = run(d, "late_fusion", {"kind": "full"}, 0, CFG, "cpu", records_dir=tmp_path / "records",
                 method_kwargs={"backbone": "mlp"})
    path = record_path(tmp_path / "records", rec["identity"])
    (tmp_path / "runs" / "05_mla").mkdir(parents=True)
    (tmp_path / "runs" / "05_mla" / f"{sweep.key(params)}.json").write_text(
        json.dumps({"status": "ok", "records": [str(path)]}))
    row = sweep.runs_table("quick", book_dir=tmp_path).query("chapter == '05_mla'").iloc[0]
    assert row["status"] == "done" and row["records"] == 1 and "cores" in row["hardware"] and row["commit"]


@pytest.mark.slow
def test_a_dask_sweep_gives_the_same_records_as_the_process_pool(tmp_path):
    """`mmbook sweep --executor dask` on a 2-worker local cluster: every run of a quick grid and
    its page finish, the client writes the markers, and the records are byte-identical to a
    process-pool sweep's (one thread per run: the numbers do not depend on the executor)."""
    pytest.importorskip("distributed")
    quiet = lambda *a: None                                                   # noqa: E731
    a = sweep.sweep_book(["00_missing_modalities"], "quick", jobs=2, executor="dask", book_dir=tmp_path / "a",
                         log=quiet)
    b = sweep.sweep_book(["00_missing_modalities"], "quick", jobs=2, book_dir=tmp_path / "b", log=quiet)
    assert all(i["status"] == "ok" for i in a + b) and len(a) == len(b) == 3
    assert (tmp_path / "a" / "chapters" / "00_missing_modalities.ipynb").is_file()
    markers = [m for m in (tmp_path / "a" / "runs" / "00_missing_modalities").glob("*.json") if m.name != "page.json"]
    assert len(markers) == 2 and all(sweep.marker_trusted(m, quiet) for m in markers)
    ra = {p.name: json.loads(p.read_text())["metrics"] for p in (tmp_path / "a" / "records").glob("*.json")}
    rb = {p.name: json.loads(p.read_text())["metrics"] for p in (tmp_path / "b" / "records").glob("*.json")}
    assert ra and ra == rb


@pytest.mark.slow
def test_a_dask_sweep_survives_a_killed_worker(tmp_path):
    """kill -9 of a Dask worker while it runs a notebook: its task runs again on a worker the
    nanny restarts, and the grid completes with records identical to an undisturbed sweep's."""
    pytest.importorskip("distributed")
    import threading
    import time

    import psutil
    quiet = lambda *a: None                                                   # noqa: E731
    out, killed = {}, []

    def go():
        out["infos"] = sweep.sweep_book(["00_missing_modalities"], "quick", jobs=2, executor="dask",
                                        book_dir=tmp_path / "a", log=quiet, page=False)
    th = threading.Thread(target=go)
    th.start()
    deadline = time.time() + 120
    while time.time() < deadline and not killed:
        for proc in psutil.Process().children(recursive=True):
            try:                                               # a worker process that has a kernel running
                kids = proc.children()
                if any("ipykernel" in " ".join(k.cmdline()) for k in kids):
                    proc.kill()
                    killed.append(proc.pid)
                    break
            except psutil.Error:
                continue
        time.sleep(0.2)
    th.join(timeout=600)
    assert killed, "no worker was running a notebook to kill"
    assert [i["status"] for i in out["infos"]] == ["ok", "ok"]
    sweep.sweep_book(["00_missing_modalities"], "quick", jobs=2, book_dir=tmp_path / "b", log=quiet, page=False)
    ra = {p.name: json.loads(p.read_text())["metrics"] for p in (tmp_path / "a" / "records").glob("*.json")}
    rb = {p.name: json.loads(p.read_text())["metrics"] for p in (tmp_path / "b" / "records").glob("*.json")}
    assert ra and ra == rb


def test_slurm_workers_render_their_job_script_without_slurm():
    pytest.importorskip("dask_jobqueue")
    c = sweep.slurm_cluster("partition=gpu,memory=8GB,walltime=02:00:00,gres=gpu:1")
    try:
        script = c.job_script()
    finally:
        c.close()
    for line in ["#SBATCH -p gpu", "#SBATCH --mem=8G", "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:1",
                 "--nthreads 1"]:
        assert line in script, line
    with pytest.raises(ValueError, match="unknown --slurm key 'gpus'"):
        sweep.slurm_cluster("gpus=2")
    with pytest.raises(ValueError, match="cores must be 1"):
        sweep.slurm_cluster("cores=4")


def test_slurm_without_slurm_fails_at_once_names_the_cause_and_releases_the_lock(tmp_path, monkeypatch):
    """No sbatch on PATH: a clear error within seconds (not a wait for workers that never come),
    the lock released. An sbatch that refuses the job: its message is in the error."""
    pytest.importorskip("dask_jobqueue")
    book = tmp_path / "book"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="sbatch, which is not on PATH"):
        sweep.sweep_book(["affect_datasheet"], "quick", book_dir=book, executor="dask", slurm="partition=gpu",
                         log=lambda *a: None)
    assert time.perf_counter() - t0 < 30
    assert not (book / "runs" / ".sweep.lock").exists()
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="invalid partition specified: gpu"):
        sweep.sweep_book(["affect_datasheet"], "quick", book_dir=book, executor="dask", slurm="partition=gpu",
                         log=lambda *a: None)
    assert not (book / "runs" / ".sweep.lock").exists()


@pytest.mark.slow
def test_every_hostile_input_gets_a_clear_error():
    """benchmarks/hostile_inputs.py: 30 bad inputs (corrupt, mislabelled or misshapen files in every
    reader's layout, misspelt parameters and options, out-of-range values) each end in a clear
    message, never a traceback or a silent default run."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("hostile", sweep.ROOT / "benchmarks" / "hostile_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main() == 0


def _no_run(args):                     # a stand-in for a notebook run (module level: the workers unpickle it)
    return {"status": "ok", "seconds": 0.0, "params": args[3], "notebook": args[1], "error": None}


def test_with_two_workers_the_pages_own_setting_is_a_grid_point(tmp_path, monkeypatch):
    """One worker: the page run fits its own setting (one kernel less). Several: the page's
    setting is a grid point beside the others, and the page, which waits for the grid, only
    reads records (so a page whose setting holds most of the fits is not the sweep's tail)."""
    monkeypatch.setattr(sweep, "_run_point", _no_run)
    quiet = lambda *a: None                                                   # noqa: E731
    page = sweep.chapter("04_m3s").page_point("quick")
    assert [{k: v for k, v in p.items()} for p in sweep.chapter("04_m3s").points("quick")] == [page]
    one = sweep.sweep_book(["04_m3s"], "quick", jobs=1, book_dir=tmp_path / "one", log=quiet)
    assert [i["page"] for i in one] == [True]
    two = sweep.sweep_book(["04_m3s"], "quick", jobs=2, book_dir=tmp_path / "two", log=quiet)
    assert [i["page"] for i in two] == [False, True]
    assert {k: two[0]["params"][k] for k in page} == page


def test_chapter_costs_add_up_each_fit_once_and_bound_the_clock(tmp_path):
    """Two grid runs sharing a record and a page with a fit of its own: the fits count once,
    the longest run and the page's own fits are found, and two workers need at least
    max(grid / 2, longest) + page seconds."""
    def record(name, seconds):
        path = tmp_path / "records" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"identity": {"dataset": "d", "method": name, "seed": 0}, "timings": {"fit_seconds": seconds}}))
        return str(path)
    a, b, c, d = record("a", 10.0), record("b", 30.0), record("c", 5.0), record("d", 2.0)
    runs = tmp_path / "runs" / "04_m3s"
    runs.mkdir(parents=True)
    (runs / "one.json").write_text(json.dumps({"status": "ok", "records": [a, b]}))
    (runs / "two.json").write_text(json.dumps({"status": "ok", "records": [a, c]}))
    (runs / "page.json").write_text(json.dumps({"status": "ok", "records": [a, b, c, d]}))
    row = sweep.chapter_costs(book_dir=tmp_path).loc["04_m3s"]
    assert row["grid runs"] == 2 and row["fits"] == 4 and row["fit seconds"] == 47
    assert row["longest grid run"] == 40 and row["page's own fits (s)"] == 2
    assert row["two workers, at least (s)"] == 40 + 2                  # max(45 / 2, 40) + 2
    assert list(sweep.chapter_costs(book_dir=tmp_path).index) == ["04_m3s"]
    # the page's "Re-run this page" box quotes the same numbers as the Runs appendix
    box = sweep.rerun_text("04_m3s", tmp_path / "records", "default")
    assert "grid of 2 runs" in box and "fit 4 models in 47 fit-seconds" in box and "at least 42 s" in box
    assert sweep.rerun_text("01_smil", tmp_path / "records", "default") == ""


def test_a_sweep_that_ran_something_is_logged_with_its_clock(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_run_point", _no_run)
    quiet = lambda *a: None                                                   # noqa: E731
    sweep.sweep_book(["04_m3s"], "quick", jobs=1, book_dir=tmp_path, log=quiet)
    h = sweep.sweep_history(tmp_path)
    assert len(h) == 1 and h.iloc[0]["chapters"] == "04_m3s" and h.iloc[0]["runs"] == 1
    assert h.iloc[0]["jobs"] == 1 and h.iloc[0]["seconds"] >= 0 and "cores" in h.iloc[0]["machine"]
    assert sweep.sweep_history(tmp_path / "nowhere").empty


def _read_only_run(args):              # a run that found every record done: it read, it fitted nothing
    return {**_no_run(args), "seconds": 1.0, "fitted": 0}


def _fitting_run(args):
    return {**_no_run(args), "seconds": 50.0, "fitted": 3}


def test_a_run_that_only_read_records_keeps_the_time_of_the_last_one_that_fitted(tmp_path, monkeypatch):
    """The queue puts the longest runs first by their recorded seconds: a re-run that found its
    records done (a second ``make book``) must not make a long run look short."""
    quiet = lambda *a: None                                                   # noqa: E731
    times = tmp_path / "runs" / "timings.json"
    monkeypatch.setattr(sweep, "_run_point", _fitting_run)
    sweep.sweep_book(["04_m3s"], "quick", jobs=1, book_dir=tmp_path, log=quiet)
    assert list(json.loads(times.read_text()).values()) == [50.0]
    monkeypatch.setattr(sweep, "_run_point", _read_only_run)
    sweep.sweep_book(["04_m3s"], "quick", jobs=1, book_dir=tmp_path, log=quiet)
    assert list(json.loads(times.read_text()).values()) == [50.0]
    monkeypatch.setattr(sweep, "_run_point", _read_only_run)
    sweep.sweep_book(["04_m3s"], "quick", jobs=1, book_dir=tmp_path / "new", log=quiet)
    assert list(json.loads((tmp_path / "new" / "runs" / "timings.json").read_text()).values()) == [1.0]
