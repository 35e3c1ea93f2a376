"""Run chapter notebooks with papermill over their grids, as one queue for the whole book.

Each chapter notebook (see :mod:`mmlib.chapters`) is executed once per grid point (e.g. a
missing rate; the seeds loop inside the notebook); each run writes its records under
``book/records/<chapter>/`` and its executed notebook under ``book/runs/<chapter>/`` (kept
as an execution report, also when it fails). A run whose marker says it finished with the
same parameters is skipped, so an interrupted sweep resumes. When a chapter's grid has run,
the chapter is executed once more at its headline parameters with ``page=True`` into
``book/chapters/``: that executed copy *is* the book's page, and since it is re-run on every
build, its tables (which read the records) are never stale. All tasks of all chapters share
one longest-first queue over the workers (:func:`sweep_book`).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from .chapters import CHAPTERS, PROFILES, Chapter, chapter, profile  # noqa: F401  (re-exported)
from .results import key, utc_now, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

# Every notebook of a sweep runs with one CPU thread: floating-point sums depend on the
# thread count, so this makes a run's numbers the same whether it ran in the grid (in
# parallel) or as the page, and on any machine with the same library versions.
THREADS = 1


def hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected-parameters cell ``remove-cell`` so the book hides it."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nbformat.write(nb, path)


def notebook_parameters(src: Path) -> dict:
    """The parameters a notebook's parameters cell defines (papermill reads them), with their
    default values."""
    import ast

    import papermill as pm
    out = {}
    for name, info in pm.inspect_notebook(str(src)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = None                  # an expression: its type is not checked
    return out


def check_parameters(src: Path, params: dict, what: str) -> None:
    """Refuse a parameter the notebook does not define (a misspelt name would silently run
    the defaults), naming the valid ones, and a value of the wrong type or range, naming the
    parameter and what it takes (:data:`mmlib.chapters.PARAMETERS`), before anything runs."""
    from .chapters import check_value
    known = notebook_parameters(src)
    unknown = [k for k in params if k not in known]
    if unknown:
        raise ValueError(f"{what}: unknown parameter(s) {unknown}; its parameters are {list(known)}")
    for name, value in params.items():
        check_value(name, value, known[name], what)


# a kernel that dies before it answers has run nothing: start it again, up to this many times in all
KERNEL_START_TRIES = 3
KERNEL_NOT_STARTED = "Kernel died before replying to kernel_info"


def execute(src: Path, out: Path, params: dict, threads: int | None = None, failed: Path | None = None,
            record_log: Path | None = None) -> float:
    """Execute one notebook with papermill (cwd: the project root); return seconds.

    The notebook is executed into a hidden partial file beside ``out`` and moves to ``out``
    only when every cell ran, so a kill or a failed run never leaves a half-run page where the
    last good one was. A kernel that dies before it starts (nothing ran) is started again. A failed run's notebook is kept at ``failed`` (default: ``out``, for
    grid runs whose executed notebook is the report). ``record_log``: a file in which the run
    lists every record it reads or writes (see :func:`mmlib.results.log_record_use`)."""
    import papermill as pm
    from .results import RECORD_LOG_ENV
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    if record_log is not None:
        os.environ[RECORD_LOG_ENV] = str(record_log)
    else:
        os.environ.pop(RECORD_LOG_ENV, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    t0 = time.perf_counter()
    try:
        for attempt in range(KERNEL_START_TRIES):
            try:
                pm.execute_notebook(str(src), str(partial), parameters=params, cwd=str(ROOT),
                                    progress_bar=False, log_output=False, kernel_name="python3")
                break
            except RuntimeError as e:               # the kernel never started (e.g. its port was taken by a
                if KERNEL_NOT_STARTED not in str(e) or attempt + 1 == KERNEL_START_TRIES:   # kernel starting at the
                    raise                                                            # same moment): nothing ran
    except BaseException:
        if partial.exists():
            try:
                hide_injected_parameters(partial)
            except OSError:                           # e.g. no space left: keep the report as it is
                pass
            dest = Path(failed or out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, dest)
        raise
    finally:
        os.environ.pop(RECORD_LOG_ENV, None)
    hide_injected_parameters(partial)
    os.replace(partial, out)
    if failed is not None and Path(failed) != out:
        Path(failed).unlink(missing_ok=True)           # an earlier failure's report is not this run's
    return time.perf_counter() - t0


def marker_trusted(marker: Path, log=print) -> bool:
    """A grid run counts as done only if its marker parses, says "ok" and lists records that
    all exist and parse (a marker whose records were deleted or truncated is not trusted:
    the run is redone)."""
    from .results import CorruptRecord, read_record
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log(f"  marker {marker} is unreadable ({e}); the run is redone")
        return False
    if info.get("status") != "ok" or "records" not in info:
        return False
    for rel in info["records"]:
        p = Path(rel) if Path(rel).is_absolute() else ROOT / rel
        try:
            read_record(p)
        except (OSError, CorruptRecord):
            log(f"  marker {marker.name}: its record {rel} is missing or unreadable; the run is redone")
            return False
    return True


def describe_failure(e: Exception) -> str:
    """What a reader can act on: for a failed cell, its execution count and the
    exception's name and message (papermill's own message starts with an empty line and a
    coloured traceback); otherwise the exception's type and first line."""
    if hasattr(e, "ename") and hasattr(e, "evalue"):
        return f"cell [{getattr(e, 'exec_count', '?')}] raised {e.ename}: {_message(str(e.evalue))}"
    return f"{type(e).__name__}: {_message(str(e))}"


def _message(text: str, keep: int = 25) -> str:
    """An exception's message for a reader: every non-empty line (a data folder's list of
    problems, say), up to ``keep`` of them."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    more = f"\n    ... ({len(lines) - keep} more lines)" if len(lines) > keep else ""
    return "\n    ".join(ln.strip() if i == 0 else ln for i, ln in enumerate(lines[:keep])) + more


def _here(path: str | Path) -> Path:
    """A path as the sweep passes it: relative to the project root, or absolute."""
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def _portable(path: str | Path) -> str:
    """A path relative to the project root when it is inside it (workers on other machines
    resolve it against their own checkout), else absolute."""
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else str(p)


def _execute_point(args, collect: bool = False) -> dict:
    """Run one notebook and describe it; nothing is marked done here. With ``collect`` (a
    worker of another executor), the run's executed notebook and the records it used come
    back as bytes in ``info["files"]`` so the client can write them (no shared filesystem
    needed for outputs)."""
    src, out, marker, params, threads, failed = args
    import tempfile
    fd, log = tempfile.mkstemp(prefix=".records-", suffix=".txt")
    os.close(fd)
    started = time.time()
    try:
        seconds = execute(_here(src), _here(out), params, threads, failed=_here(failed) if failed else None,
                          record_log=Path(log))
        status, error = "ok", None
    except Exception as e:                                   # keep going; report at the end
        seconds, status, error = None, "failed", describe_failure(e)
        if isinstance(e, OSError) and not e.filename:        # e.g. no space left while writing the notebook
            error += f" (writing {out} or its partial copy beside it)"
    used = sorted({ln.strip() for ln in Path(log).read_text().splitlines() if ln.strip()})
    Path(log).unlink(missing_ok=True)
    notebook = out if status == "ok" else (failed or out)
    def written(p):                                          # by this run (a run that only read records
        try:                                                 # says nothing of what its fits cost)
            return os.stat(p).st_mtime >= started
        except OSError:
            return False
    info = {"params": params, "status": status, "seconds": seconds, "notebook": str(notebook), "error": error,
            "records": [_portable(p) for p in used], "fitted": sum(1 for p in used if written(p))}
    if collect:
        import socket
        info["worker"] = socket.gethostname()
        files = {}
        for rel in info["records"] + [_portable(notebook)]:
            try:
                files[rel] = _here(rel).read_bytes()
            except OSError:
                pass
        info["files"] = files
    return info


def _land(info: dict, marker) -> dict:
    """On the client: write what a worker sent back (records and the executed notebook; a
    file that already exists with the same bytes is left alone), then, for a finished run,
    its marker. Only the client writes markers."""
    for rel, data in info.pop("files", {}).items():
        p = _here(rel)
        if not (p.is_file() and p.read_bytes() == data):
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.landing")
            tmp.write_bytes(data)
            os.replace(tmp, p)
    if info["status"] == "ok":
        try:
            write_json_atomic(marker, info)
        except OSError as e:                  # e.g. no space left: the run is not marked done, and a page
            info.update(status="failed", error=f"the run finished but its marker could not be written ({e})")
            page, report = Path(info["notebook"]), Path(marker).with_name("page.failed.ipynb")
            if Path(marker).name == "page.json" and page.is_file():    # is not published without its marker
                os.replace(page, report)
                info["notebook"] = str(report)
    return info


def _run_point(args) -> dict:
    """Run one notebook in this machine's process pool and mark it done when it finished."""
    return _land(_execute_point(args), args[2])


def _read_json(path: Path, default):
    """A JSON file of the sweep's (timings, the sweep log), or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text()) if path.is_file() else default
    except (OSError, json.JSONDecodeError):
        return default


def _timings(book: Path) -> dict:
    return _read_json(book / "runs" / "timings.json", {})


def rerun_text(chapter_name: str, records_dir: str | Path, prof: str) -> str:
    """A sentence for a page's "Re-run this page" box, from the one source every page that
    quotes a chapter's cost reads: :func:`chapter_costs` (the chapter's markers and records, the
    Runs appendix's "What each chapter costs"), and the clock of the last sweep of the chapter
    alone that found nothing done (:func:`sweep_history`), if there is one ("" if the chapter
    has no runs yet)."""
    book = Path(records_dir).parent
    costs = chapter_costs(book)
    if chapter_name not in costs.index:
        return ""
    c = costs.loc[chapter_name]
    alone = sweep_history(book)
    alone = alone[(alone["chapters"] == chapter_name) & (alone["profile"] == prof) & (alone["skipped"] == 0)
                  & (alone["failed"] == 0)] if len(alone) else alone
    clock = (f" The last sweep of this chapter alone from scratch took {alone.iloc[0]['seconds']:.0f} s on the clock "
             f"with {alone.iloc[0]['jobs']} worker{'s' if alone.iloc[0]['jobs'] > 1 else ''} "
             f"({alone.iloc[0]['finished (UTC)'][:10]}).") if len(alone) else ""
    return (f"On this machine ({_machine_line()}) its grid of {c['grid runs']} runs and its page fit {c['fits']} models "
            f"in {c['fit seconds']} fit-seconds ({prof} profile): two workers need at least "
            f"{c['two workers, at least (s)']} s on the clock, plus about 10 s a run to start a kernel and load the "
            f"data (the Runs appendix's \"What each chapter costs\" gives every chapter's, from the same records)."
            f"{clock} This page was executed on {utc_now()[:10]}.")


def _task_key(name: str, params: dict) -> str:
    return f"{name}/{key({k: v for k, v in params.items() if k not in ('device', 'results_dir', 'data_root')})}"


class SweepLock:
    """One sweep per book folder at a time: a lock file holding the sweep's process id. A second
    sweep on the same folder is refused (naming the first); a lock left by a killed sweep (its
    process is gone) is taken over."""

    def __init__(self, book: Path):
        self.path = Path(book) / "runs" / ".sweep.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise RuntimeError(f"another sweep (process {pid}) is running on {self.path.parent.parent}; "
                                       f"wait for it, or remove {self.path} if it is not")
                self.path.unlink(missing_ok=True)             # stale: its sweep was killed
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise RuntimeError(f"could not take the sweep lock {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# set by the sweep's own options, not by -p
_OPTIONS = {"profile": "--profile", "device": "--device", "data_root": "--data-root", "results_dir": "the book folder",
            "page": "--no-page"}


def sweep_points(ch: Chapter, prof: str, extra: dict | None = None) -> tuple[list[dict], dict, dict]:
    """What a sweep of ``ch`` runs, given its ``-p`` parameters: (grid points, page point,
    the parameters every run takes). A ``-p`` on a parameter the grid varies restricts the
    grid to that value (refused, with the grid's values, if no grid point has it); ``seeds``
    replaces the profile's seeds in every run and the page of a chapter that trains; any other
    parameter goes to every run. A parameter that has a sweep option of its own is refused."""
    extra = dict(extra or {})
    for name in extra:
        if name in _OPTIONS:
            raise ValueError(f"chapter {ch.name}: set {name} with {_OPTIONS[name]}, not -p {name}=...")
    seeds = extra.pop("seeds", None)
    points, page_point = ch.points(prof), ch.page_point(prof)
    for name in [n for n in extra if any(n in p for p in points)]:
        value = extra.pop(name)
        values = ch.grid_values(prof, name)
        also = [e for e, of in ch.extends.items() if of == name]      # a run's further values of ``name``
        kept = [{**{k: v for k, v in p.items() if k not in also}, name: value} for p in points
                if p.get(name) == value or any(value in p.get(e, []) for e in also)]
        points = [p for i, p in enumerate(kept) if p not in kept[:i]]
        if not points:
            raise ValueError(f"chapter {ch.name}: its {prof!r} grid runs {name} in {values}, not {value!r}; a sweep "
                             f"runs only grid points (for another setting: mmbook run {ch.name} -p {name}=...)")
    if seeds is not None and ch.seeded:                    # (a chapter that trains nothing takes none)
        points = [{**p, "seeds": seeds} for p in points]
        page_point = {**page_point, "seeds": seeds}
    return points, page_point, extra


def status(names: list[str] | None = None, prof: str = "default", book_dir: str | Path = BOOK,
           data_root: str | None = None, extra: dict | None = None) -> list[dict]:
    """Per grid point and page of each chapter, for profile ``prof``: "done" (a grid point's
    marker is trusted; a page that ran to the end with this profile), "failed" (its last run's
    executed notebook says it failed; ``cause``: the error) or "to do" (never run, killed, its
    records gone, or its page built with another profile), with the seconds the last run took."""
    book = Path(book_dir)
    times = _timings(book)
    rows = []
    for ch in [chapter(n) for n in (names or CHAPTERS)]:
        records = book.resolve() / "records"
        records = records.relative_to(ROOT) if records.is_relative_to(ROOT) else records
        points, page_point, rest = sweep_points(ch, prof, extra)
        common = {"profile": prof, "device": "auto", "results_dir": str(records),
                  **({"data_root": data_root} if data_root else {}), **rest}
        for p in points:
            params = {**common, **p, "page": False}
            k = key(params)
            marker = book / "runs" / ch.name / f"{k}.json"
            if p == page_point and not marker.is_file():
                continue                       # run by the page (a one-worker sweep), or not yet run
            state, cause = "to do", None       # never run, killed, or its records are gone
            if marker_trusted(marker, log=lambda *a: None):
                state = "done"
            else:
                report = notebook_outcome(book / "runs" / ch.name / f"{k}.ipynb")
                if report["state"] == "failed":
                    state, cause = "failed", report["cause"] or "see its executed notebook"
            rows.append({"chapter": ch.name, "point": {q: v for q, v in p.items() if q != "seeds"}, "status": state,
                         "cause": cause, "seconds": times.get(_task_key(ch.name, {**params, "device": "auto"}))})
        page = notebook_outcome(book / Path(ch.page).relative_to("book"))
        report = notebook_outcome(book / "runs" / ch.name / "page.failed.ipynb")
        state, cause = "to do", None
        if page["state"] == "finished" and page["parameters"].get("profile", "default") == prof:
            state = "done"                     # (a page built with another profile is not this profile's)
        elif report["state"] != "missing":
            state, cause = "failed", report["cause"] or report["state"]
        rows.append({"chapter": ch.name, "point": "page", "status": state, "cause": cause,
                     "seconds": times.get(_task_key(ch.name, {**common, **page_point, "page": True}))})
    return rows


def sweep_book(names: list[str] | None = None, prof: str = "default", jobs: int = 1, device: str = "auto",
               data_root: str | None = None, extra: dict | None = None, page: bool = True,
               book_dir: str | Path = BOOK, log=print, executor: str = "process",
               scheduler: str | None = None, slurm: str | None = None) -> list[dict]:
    """Run the chapters' grids and pages as one queue over ``jobs`` workers.

    Every grid point not yet done (its marker says ok) and every page is a task; a page
    becomes ready when its chapter's grid has run. With one worker the page's own setting is
    left to the page run (one kernel less); with several it is a grid point like the others, so
    its fits run beside the rest of the grid and the page, which waits for the grid, only reads
    records (the 04_m3s page's setting holds 60 % of the chapter's fits). Among ready tasks
    the longest goes first, by the seconds of its last run that fitted something
    (``book/runs/timings.json``; a run that only read records leaves it; unknown tasks count
    as long), so the workers finish together. Failed runs are reported at the end (their
    executed notebooks are kept); everything else still runs. Returns one info per task.
    """
    profile(prof)
    book = Path(book_dir)
    names = list(names or CHAPTERS)
    chapters = [chapter(n) for n in names]
    times = _timings(book)
    todo, infos, grid_left = [], [], {}
    for ch in chapters:
        records = book.resolve() / "records"                        # the record store every chapter shares
        records = records.relative_to(ROOT) if records.is_relative_to(ROOT) else records  # no machine paths in pages
        points, page_point, rest = sweep_points(ch, prof, extra)
        common = {"profile": prof, "device": device, "results_dir": str(records),
                  **({"data_root": data_root} if data_root else {}), **rest}
        src = str(ROOT / ch.notebook)
        for p in points + [page_point]:
            check_parameters(Path(src), {**common, **p, "page": p is page_point}, f"chapter {ch.name}")
        grid_left[ch.name] = 0
        for p in points:
            if p == page_point and jobs <= 1:
                continue                                     # one worker: the page run covers it
            params = {**common, **p, "page": False}
            k = key(params)
            marker = book / "runs" / ch.name / f"{k}.json"
            if marker_trusted(marker, log):
                infos.append({"chapter": ch.name, "params": params, "status": "skipped"})
                continue
            todo.append({"chapter": ch.name, "page": False, "args": (src, str(book / "runs" / ch.name / f"{k}.ipynb"),
                                                                     str(marker), params, THREADS, None)})
            grid_left[ch.name] += 1
        if page:
            params = {**common, **page_point, "page": True}
            out = book / Path(ch.page).relative_to("book")
            todo.append({"chapter": ch.name, "page": True,
                         "args": (src, str(out), str(book / "runs" / ch.name / "page.json"), params, THREADS,
                                  str(book / "runs" / ch.name / "page.failed.ipynb"))})
    for ch in chapters:
        n = sum(1 for t in todo if t["chapter"] == ch.name and not t["page"])
        log(f"[{ch.name}] profile={prof}: {n} runs to do, "
            f"{sum(1 for i in infos if i['chapter'] == ch.name)} already done{', then its page' if page else ''}")
    for t in todo:
        t["expected"] = times.get(_task_key(t["chapter"], t["args"][3]), float("inf"))

    others = {"left": sum(1 for t in todo if not CHAPTERS[t["chapter"]].last)}

    def ready():
        return [t for t in todo if (not t["page"] or grid_left[t["chapter"]] == 0)
                and (not CHAPTERS[t["chapter"]].last or others["left"] == 0)]

    def finished(t, info):
        info.update(chapter=t["chapter"], page=t["page"])
        infos.append(info)
        k = _task_key(t["chapter"], t["args"][3])
        if info["seconds"] is not None and (info.get("fitted", 1) or k not in times):
            times[k] = info["seconds"]                       # a run that only read records keeps the time of
            try:                                             # the last one that fitted
                write_json_atomic(book / "runs" / "timings.json", times)
            except OSError as e:
                log(f"  (run times not saved: {e})")
        if not t["page"]:
            grid_left[t["chapter"]] -= 1
        if not CHAPTERS[t["chapter"]].last:
            others["left"] -= 1
        what = "page" if t["page"] else {k: v for k, v in info["params"].items()
                                         if k not in ("profile", "device", "results_dir", "page")}
        log(f"  {info['status']:>6} [{t['chapter']}] {what} ({info['seconds'] or 0:.0f} s)")

    if executor not in ("process", "dask"):
        raise ValueError(f"executor must be 'process' or 'dask', got {executor!r}")
    t0 = time.perf_counter()
    with SweepLock(book):
        if executor == "dask":
            _dask_loop(todo, ready, finished, jobs, scheduler, log, slurm)
        elif jobs <= 1:
            while todo:
                t = max(ready(), key=lambda t: t["expected"])
                todo.remove(t)
                finished(t, _run_point(t["args"]))
        else:
            with ProcessPoolExecutor(jobs) as ex:
                running = {}
                while todo or running:
                    for t in sorted(ready(), key=lambda t: -t["expected"])[: jobs - len(running)]:
                        todo.remove(t)
                        running[ex.submit(_run_point, t["args"])] = t
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for f in done:
                        finished(running.pop(f), f.result())
    seconds = time.perf_counter() - t0
    log(f"[{', '.join(names)}] done in {seconds:.0f} s")
    ran = [i for i in infos if i["status"] != "skipped"]
    if ran:
        _log_sweep(book, log, {"chapters": names, "profile": prof, "jobs": jobs, "executor": executor,
                          "seconds": round(seconds, 1), "runs": len(ran),
                          "skipped": sum(1 for i in infos if i["status"] == "skipped"),
                          "failed": sum(1 for i in infos if i["status"] == "failed"), "machine": _machine_line(),
                          "finished (UTC)": utc_now()})
    failed = [i for i in infos if i["status"] == "failed"]
    if failed:
        msg = "\n".join(f"  - [{i['chapter']}] {'page' if i.get('page') else i['params']} -> {i['notebook']}:\n"
                        f"    {i['error']}" for i in failed)
        raise RuntimeError(f"{len(failed)} run(s) failed (executed notebooks kept as reports):\n{msg}")
    return infos


SWEEP_LOG_KEEP = 100


def _machine_line() -> str:
    from .results import machine
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores" + (f", {m['ram_gib']:.0f} GiB" if m.get("ram_gib") else "")


def _log_sweep(book: Path, log, entry: dict) -> None:
    """Append a finished sweep (its chapters, workers and seconds on the clock) to
    ``book/runs/sweeps.json`` (the last ``SWEEP_LOG_KEEP``); a failure to write it is said, not
    raised (the runs' own results and failures come first)."""
    path = book / "runs" / "sweeps.json"
    try:
        write_json_atomic(path, (_read_json(path, []) + [entry])[-SWEEP_LOG_KEEP:])
    except OSError as e:
        log(f"  (the sweep log was not saved: {e})")


def sweep_history(book_dir: str | Path = BOOK) -> "pd.DataFrame":
    """The sweeps that ran on this book folder, newest first: chapters, profile, workers,
    seconds on the clock, how many runs they ran and skipped (already done). A sweep that
    skipped nothing timed its chapters from scratch."""
    import pandas as pd
    rows = _read_json(Path(book_dir) / "runs" / "sweeps.json", [])
    cols = ["finished (UTC)", "chapters", "profile", "jobs", "executor", "seconds", "runs", "skipped", "failed", "machine"]
    df = pd.DataFrame(rows[::-1], columns=cols)
    return df.assign(chapters=df["chapters"].map(lambda c: ", ".join(c) if isinstance(c, list) else c))


def chapter_costs(book_dir: str | Path = BOOK) -> "pd.DataFrame":
    """Per chapter, what its fits cost, read from its markers and records (so a later sweep
    that only re-read records does not change it): the distinct fits of its grid and page,
    their fit seconds, the fit seconds of its longest grid run and of the fits only its page
    makes, and the least time on the clock two workers need for them, ``max(grid / 2,
    longest) + page`` (the page waits for the grid). Kernels, imports and data loading (about
    10 s a run on the book's 2-core machine) come on top; :func:`sweep_history` has the clock."""
    import pandas as pd
    from .results import CorruptRecord, read_record
    book = Path(book_dir)
    cost = {}

    def fit_seconds(rel: str) -> float:
        if rel not in cost:
            try:
                cost[rel] = read_record(_here(rel))["timings"]["fit_seconds"]
            except (OSError, CorruptRecord, KeyError, TypeError):
                cost[rel] = 0.0
        return cost[rel]

    rows = []
    for name in CHAPTERS:
        folder = book / "runs" / name
        points, page = [], set()
        for marker in sorted(folder.glob("*.json")):
            try:
                recs = set(json.loads(marker.read_text()).get("records", []))
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            if marker.name == "page.json":
                page = recs
            else:
                points.append(recs)
        grid = set().union(*points) if points else set()
        if not grid and not page:
            continue
        grid_s = sum(fit_seconds(r) for r in grid)
        page_s = sum(fit_seconds(r) for r in page - grid)
        longest = max((sum(fit_seconds(r) for r in p) for p in points), default=0.0)
        rows.append({"chapter": name, "grid runs": len(points), "fits": len(grid | page),
                     "fit seconds": round(grid_s + page_s), "longest grid run": round(longest),
                     "page's own fits (s)": round(page_s),
                     "two workers, at least (s)": round(max(grid_s / 2, longest) + page_s)})
    return pd.DataFrame(rows, columns=["chapter", "grid runs", "fits", "fit seconds", "longest grid run",
                                       "page's own fits (s)", "two workers, at least (s)"]).set_index("chapter")


def runs_table(prof: str = "default", book_dir: str | Path = BOOK) -> "pd.DataFrame":
    """Every grid point of every chapter (the Runs appendix): its status, the seconds the last
    sweep took, how many records it used, where and with which commit they were computed, and
    its executed notebook."""
    import pandas as pd
    from .results import CorruptRecord, read_record
    book = Path(book_dir)
    rows = []
    for r in status([n for n, c in CHAPTERS.items() if not c.last], prof, book_dir=book):
        ch = r["chapter"]
        if r["point"] == "page":
            marker, nb = book / "runs" / ch / "page.json", book / Path(CHAPTERS[ch].page).relative_to("book")
        else:
            params = {"profile": prof, "device": "auto", "results_dir": str(_records_rel(book)),
                      **r["point"], **({"seeds": CHAPTERS[ch].seeds(prof)} if CHAPTERS[ch].seeded else {}),
                      "page": False}
            k = key(params)
            marker, nb = book / "runs" / ch / f"{k}.json", book / "runs" / ch / f"{k}.ipynb"
        info = _read_json(marker, {})
        recs = info.get("records", [])
        prov = {}
        for rel in recs[:1]:
            try:
                prov = read_record(_here(rel)).get("provenance", {})
            except (OSError, CorruptRecord):
                pass
        rows.append({"chapter": ch, "setting": "page" if r["point"] == "page" else
                     ", ".join(f"{q}={v}" for q, v in r["point"].items()) or "(defaults)",
                     "status": r["status"], "seconds": None if r["seconds"] is None else round(r["seconds"]),
                     "records": len(recs) if info else None,
                     "hardware": f"{prov['cpu']}, {prov['cores']} cores" + (f", {prov['gpu']}" if prov.get("gpu") else "")
                     if prov else "", "commit": (prov.get("git_commit") or "")[:10],
                     "finished (UTC)": prov.get("utc_end", ""),
                     "executed notebook": str(nb.relative_to(book.parent)) if nb.is_relative_to(book.parent) else str(nb)})
    return pd.DataFrame(rows)


def _records_rel(book: Path) -> Path:
    records = book.resolve() / "records"
    return records.relative_to(ROOT) if records.is_relative_to(ROOT) else records


def notebook_outcome(path: Path) -> dict:
    """How an executed notebook ended: ``{"state": "finished" | "failed" | "unfinished" |
    "unreadable" | "missing", "cause": a line or None, "parameters": what papermill ran it
    with}``. papermill marks a failed or interrupted run in the notebook's metadata; a cell with
    an error output counts as failed, and its error is the cause."""
    import nbformat
    if not path.is_file():
        return {"state": "missing", "cause": None, "parameters": {}}
    if path.stat().st_size == 0:
        return {"state": "unreadable", "cause": "empty file", "parameters": {}}
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:                                  # nbformat raises several kinds
        return {"state": "unreadable", "cause": f"not a readable notebook ({type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0][:120]})", "parameters": {}}
    pm = nb.metadata.get("papermill", {})
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    cause = f"{errors[0].get('ename')}: {_message(str(errors[0].get('evalue', '')), 1)}" if errors else None
    state = ("failed" if pm.get("exception") or errors else
             "unfinished" if any(c.get("metadata", {}).get("papermill", {}).get("status") not in (None, "completed")
                                 for c in code) else "finished")
    return {"state": state, "cause": cause, "parameters": pm.get("parameters", {})}


def unfinished_pages(book_dir: str | Path = BOOK) -> list[str]:
    """The chapter pages the HTML build must not publish: missing, empty or unreadable files,
    and notebooks whose execution did not finish (:func:`notebook_outcome`)."""
    book = Path(book_dir)
    problems = []
    for ch in CHAPTERS.values():
        p = book / Path(ch.page).relative_to("book")
        rel = f"book/{Path(ch.page).relative_to('book')}"
        out = notebook_outcome(p)
        if out["state"] == "missing":
            problems.append(f"{rel}: missing (run `mmbook sweep {ch.name}`)")
        elif out["state"] == "unreadable":
            problems.append(f"{rel}: {out['cause']}")
        elif out["state"] == "failed" and not out["cause"]:
            problems.append(f"{rel}: its execution failed (see book/runs/{ch.name}/page.failed.ipynb)")
        elif out["state"] == "failed":
            problems.append(f"{rel}: a cell raised an error ({out['cause']})")
        elif out["state"] == "unfinished":
            problems.append(f"{rel}: its execution did not finish")
    return problems


SLURM_KEYS = {"partition": "queue", "cores": "cores", "memory": "memory", "walltime": "walltime",
              "gres": None, "account": "account"}


def slurm_cluster(spec: str):
    """A dask-jobqueue SLURMCluster from ``"partition=gpu,cores=1,memory=8GB,walltime=02:00:00,gres=gpu:1"``:
    one single-threaded worker per Slurm job (every notebook run uses one thread). Its
    ``job_script()`` shows the batch script it submits."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as e:                                   # pragma: no cover
        raise RuntimeError("the Slurm executor needs dask-jobqueue: pip install -e '.[cluster]'") from e
    opts, extra = {"cores": 1, "memory": "4GB", "processes": 1}, []
    for item in [x for x in spec.split(",") if x.strip()]:
        if "=" not in item:
            raise ValueError(f"--slurm takes KEY=VALUE items separated by commas, got {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        if k not in SLURM_KEYS:
            raise ValueError(f"unknown --slurm key {k!r}; use {sorted(SLURM_KEYS)}")
        if k == "gres":
            extra.append(f"--gres={v}")
        else:
            opts[SLURM_KEYS[k]] = int(v) if k == "cores" else v
    if opts["cores"] != 1:
        raise ValueError("--slurm cores must be 1: each worker runs one notebook with one thread")
    return SLURMCluster(**opts, job_extra_directives=extra, scheduler_options={"dashboard_address": None})


def check_slurm_submission(job_script: str, timeout: float = 60) -> None:
    """Fail at once, not by waiting for workers that never come, when the workers' Slurm job
    cannot be submitted from here: no ``sbatch`` on PATH, or ``sbatch --test-only`` (which
    checks the script, partition and resources without queueing anything) refuses it."""
    import shutil
    import subprocess
    import tempfile
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise RuntimeError("--slurm submits the workers with sbatch, which is not on PATH on this machine: run the "
                           "sweep on a Slurm login node, or give --scheduler tcp://HOST:PORT of a running Dask "
                           "scheduler")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="mmbook-worker-") as f:
        f.write(job_script)
        f.flush()
        try:
            r = subprocess.run([sbatch, "--test-only", f.name], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"sbatch --test-only did not answer in {timeout:.0f} s: is the Slurm controller "
                               "reachable from this machine?") from None
    if r.returncode != 0:
        raise RuntimeError(f"Slurm refuses the workers' job (sbatch --test-only exited {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip() or 'no message'}")


def _dask_loop(todo: list, ready, finished, jobs: int, scheduler: str | None, log, slurm: str | None = None) -> None:
    """The sweep's queue on Dask: a scheduler's workers (``scheduler="tcp://host:port"``) or a
    local cluster of ``jobs`` single-threaded worker processes on the loopback interface. A task
    lost with its worker is run again (``retries``); workers need the project and its
    environment (and the data folder), outputs come back to this process."""
    try:
        from distributed import Client, LocalCluster, wait as dwait
    except ImportError as e:                                   # pragma: no cover
        raise RuntimeError("the dask executor needs the cluster extra: pip install -e '.[cluster]'") from e
    cluster = None
    if scheduler:
        client = Client(scheduler)
    elif slurm:
        cluster = slurm_cluster(slurm)
        try:
            check_slurm_submission(cluster.job_script())
        except BaseException:
            cluster.close()
            raise
        cluster.scale(jobs=max(jobs, 1))
        client = Client(cluster)
        log(f"  dask: Slurm, up to {max(jobs, 1)} job(s); job script:\n{cluster.job_script()}")
    else:
        cluster = LocalCluster(n_workers=max(jobs, 1), threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
    try:
        slots = max(jobs, 1) if not scheduler else max(sum(client.nthreads().values()), 1)
        where = f"scheduler {scheduler}" if scheduler else "Slurm workers" if slurm else "local cluster"
        log(f"  dask: {where}, {slots} task(s) at a time")
        running = {}
        while todo or running:
            for t in sorted(ready(), key=lambda t: -t["expected"])[: slots - len(running)]:
                todo.remove(t)
                src, out, marker, params, threads, failed = t["args"]
                args = (_portable(src), _portable(out), marker, params, threads, failed and _portable(failed))
                running[client.submit(_execute_point, args, True, pure=False, retries=2)] = t
            done, _ = dwait(list(running), return_when="FIRST_COMPLETED")
            for f in done:
                t = running.pop(f)
                try:
                    info = f.result()
                except Exception as e:                          # e.g. the task failed on every retry
                    info = {"params": t["args"][3], "status": "failed", "seconds": None, "notebook": t["args"][1],
                            "error": describe_failure(e), "records": []}
                finished(t, _land(info, t["args"][2]))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_chapter(name: str, prof: str = "default", jobs: int = 1, device: str = "auto",
                data_root: str | None = None, extra: dict | None = None, page: bool = True,
                book_dir: str | Path = BOOK, log=print) -> list[dict]:
    """One chapter's grid, then its page (:func:`sweep_book` for one chapter)."""
    return sweep_book([name], prof, jobs, device, data_root, extra, page, book_dir, log)
