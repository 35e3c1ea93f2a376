"""Run chapter notebooks with papermill over a grid of parameters.

Each chapter notebook is executed once per grid point (e.g. missing rate x seed); each run
writes its records under ``book/records/<chapter>/`` and its executed notebook under
``book/runs/<chapter>/`` (kept as an execution report, also when it fails). A run whose
marker says it finished with the same parameters is skipped, so an interrupted sweep
resumes. Last, the chapter is executed once more at its headline parameters into
``book/chapters/``: that executed copy *is* the book's page, and since it is re-run on
every build, its tables (which read all the records) are never stale.

Profiles set the budget: ``quick`` (tests: seconds per run), ``default`` (the published
book, a 2-core CPU), ``full`` (a GPU and real data).
"""
from __future__ import annotations

import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .results import key, write_json_atomic
from .train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

PROFILES = {
    "quick": {"train": TrainConfig(epochs=2, patience=None, batch_size=128), "seeds": [0]},
    "default": {"train": TrainConfig(epochs=12, patience=4), "seeds": [0, 1, 2]},
    "full": {"train": TrainConfig(epochs=60, patience=10), "seeds": [0, 1, 2, 3, 4]},
}


# Every notebook of a sweep runs with one CPU thread: floating-point sums depend on the
# thread count, so this makes a run's numbers the same whether it ran in the grid (in
# parallel) or as the page, and on any machine with the same library versions.
THREADS = 1


def profile(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; use one of {sorted(PROFILES)}")
    return PROFILES[name]


@dataclass
class Chapter:
    """A notebook of the book: where its source is, where its page goes, and the grid of
    parameters (per profile) its sweep runs before the page."""
    name: str
    notebook: str
    page: str
    grid: dict[str, dict[str, list]] = field(default_factory=dict)
    page_params: dict = field(default_factory=dict)
    seeded: bool = True

    def points(self, prof: str) -> list[dict]:
        """Every parameter combination of the profile's grid (a dict of lists, or a list of
        such dicts whose products are joined), times the seeds when the chapter is seeded."""
        grids = self.grid.get(prof, {})
        grids = grids if isinstance(grids, list) else [grids]
        seeds = profile(prof)["seeds"] if self.seeded else [None]
        pts = []
        for grid in grids:
            if not grid:
                continue
            names = list(grid)
            for values in itertools.product(*(grid[n] for n in names)):
                for s in seeds:
                    p = dict(zip(names, values))
                    if s is not None:
                        p["seed"] = s
                    pts.append(p)
        return pts


CHAPTERS = {c.name: c for c in [
    Chapter("avdigits_datasheet", "notebooks/avdigits_datasheet.ipynb", "book/datasheets/avdigits.ipynb",
            seeded=False),
    Chapter("affect_datasheet", "notebooks/affect_datasheet.ipynb", "book/datasheets/affect.ipynb",
            seeded=False),
    Chapter("gaussian_datasheet", "notebooks/gaussian_datasheet.ipynb", "book/datasheets/gaussian.ipynb",
            seeded=False),
    Chapter("00_missing_modalities", "notebooks/00_missing_modalities.ipynb",
            "book/chapters/00_missing_modalities.ipynb",
            grid={"quick": {"missing_rate": [0.5, 0.9]},
                  "default": {"missing_rate": [0.5, 0.8, 0.9, 0.95]},
                  "full": {"missing_rate": [0.2, 0.5, 0.8, 0.9, 0.95]}},
            page_params={"missing_rate": 0.8, "seed": 0}),
    # every run loops over the profile's seeds itself (one kernel per setting, not per seed); the
    # page (eta = 10%, with figures) reuses the grid's records and refits only the figures' models
    Chapter("01_smil", "notebooks/01_smil.ipynb", "book/chapters/01_smil.ipynb", seeded=False,
            grid={"quick": {"eta": [0.2, 1.0], "figures": [False]},
                  "default": {"eta": [0.05, 0.1, 0.2, 0.5, 1.0], "figures": [False]},
                  "full": {"eta": [0.05, 0.1, 0.15, 0.2, 0.5, 1.0], "figures": [False]}},
            page_params={"eta": 0.1}),
    Chapter("02_mle", "notebooks/02_mle.ipynb", "book/chapters/02_mle.ipynb", seeded=False,
            grid={"quick": [{"missing_modality": ["image", "audio"], "missing_rate": [0.5, 0.95]},
                            {"dataset": ["affect"], "missing_modality": ["visual"], "missing_rate": [0.8]}],
                  "default": [{"missing_modality": ["image", "audio"], "missing_rate": [0.5, 0.8, 0.9, 0.95]},
                              {"dataset": ["affect"], "missing_modality": ["visual", "acoustic"],
                               "missing_rate": [0.8, 0.95]}],
                  "full": [{"missing_modality": ["image", "audio"], "missing_rate": [0.5, 0.8, 0.9, 0.95]},
                           {"dataset": ["affect"], "missing_modality": ["visual", "acoustic"],
                            "missing_rate": [0.8, 0.9, 0.95]}]},
            page_params={"missing_modality": "image", "missing_rate": 0.95}),
]}


def chapter(name: str) -> Chapter:
    if name not in CHAPTERS:
        raise ValueError(f"unknown chapter {name!r}; chapters: {sorted(CHAPTERS)}")
    return CHAPTERS[name]


def hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected-parameters cell ``remove-cell`` so the book hides it."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nbformat.write(nb, path)


def execute(src: Path, out: Path, params: dict, threads: int | None = None) -> float:
    """Execute one notebook with papermill (cwd: the project root); return seconds."""
    import papermill as pm
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(out), parameters=params, cwd=str(ROOT),
                            progress_bar=False, log_output=False, kernel_name="python3")
    finally:
        if out.exists():
            hide_injected_parameters(out)
    return time.perf_counter() - t0


def _run_point(args) -> dict:
    src, out, marker, params, threads = args
    try:
        seconds = execute(Path(src), Path(out), params, threads)
        status, error = "ok", None
    except Exception as e:                                   # keep going; report at the end
        seconds, status, error = None, "failed", f"{type(e).__name__}: {str(e)[:2000]}"
    info = {"params": params, "status": status, "seconds": seconds, "notebook": str(out),
            "error": error}
    if status == "ok":
        write_json_atomic(marker, info)
    return info


def run_chapter(name: str, prof: str = "default", jobs: int = 1, device: str = "auto",
                data_root: str | None = None, extra: dict | None = None, page: bool = True,
                book_dir: str | Path = BOOK, log=print) -> list[dict]:
    """The chapter's grid (skipping finished points), then its page. Returns run infos;
    raises RuntimeError naming the failed runs after everything else has run.
    ``book_dir`` is where records, runs and pages go (default: the project's ``book/``)."""
    ch = chapter(name)
    profile(prof)
    src = ROOT / ch.notebook
    book = Path(book_dir)
    records = book.resolve() / "records" / name
    records = records.relative_to(ROOT) if records.is_relative_to(ROOT) else records   # no machine paths in pages
    common = {"profile": prof, "device": device, "results_dir": str(records),
              **({"data_root": data_root} if data_root else {}), **(extra or {})}
    page_point = dict(ch.page_params)
    todo, infos = [], []
    for p in ch.points(prof):
        if p == page_point:
            continue                                         # the page run covers it
        params = {**common, **p}
        k = key(params)
        marker = book / "runs" / name / f"{k}.json"
        if marker.is_file() and json.loads(marker.read_text()).get("status") == "ok":
            infos.append({"params": params, "status": "skipped"})
            continue
        todo.append((str(src), str(book / "runs" / name / f"{k}.ipynb"), str(marker), params, THREADS))
    log(f"[{name}] profile={prof}: {len(todo)} runs to do, {len(infos)} already done")
    t0 = time.perf_counter()
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(jobs) as ex:
            for info in ex.map(_run_point, todo):
                infos.append(info)
                log(f"  {info['status']:>6} {info['params']} ({info['seconds'] or 0:.0f} s)")
    else:
        for t in todo:
            info = _run_point(t)
            infos.append(info)
            log(f"  {info['status']:>6} {info['params']} ({info['seconds'] or 0:.0f} s)")
    if page:
        params = {**common, **page_point}
        page_path = book / Path(ch.page).relative_to("book")
        info = _run_point((str(src), str(page_path), str(book / "runs" / name / "page.json"), params, THREADS))
        info["page"] = True
        infos.append(info)
        log(f"  {info['status']:>6} page {ch.page} ({info['seconds'] or 0:.0f} s)")
    log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
    failed = [i for i in infos if i["status"] == "failed"]
    if failed:
        msg = "; ".join(f"{i['params']} -> {i['notebook']}: {i['error'].splitlines()[0] if i['error'] else ''}"
                        for i in failed)
        raise RuntimeError(f"{len(failed)} run(s) of {name} failed (executed notebooks kept as reports): {msg}")
    return infos
