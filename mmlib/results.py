"""Run records and the tables made from them.

A *record* is one JSON file per fit (its identity: data, method and config, the part of
the presence matrix it uses, seed, budget; see :func:`mmlib.experiment.run_identity`):
the spec and presence matrix it trained with, metrics per test pattern, the per-epoch
history, timings, versions and provenance. Records are written atomically (temp file +
rename), so an interrupted run never leaves half a file, and a run whose record exists is
read instead of refitted.

:func:`load_records` flattens records into a pandas frame (one row per record x test
pattern); :func:`paper_table` reads a paper's own numbers (from ``mmlib/paper_tables``),
:func:`parse_setting` reads their ``setting`` column, and :func:`beside_paper` sets them
next to ours, in columns that say which is which. Means, intervals and verdicts over seeds
are :mod:`mmlib.report`'s.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

PAPER_TABLES = Path(__file__).resolve().parent / "paper_tables"


def versions() -> dict:
    import sklearn
    import torch
    from . import __version__
    return {"mmlib": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version()}


@functools.lru_cache(maxsize=1)
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": None if ram is None else round(ram, 1),
            "platform": platform.platform()}


@functools.lru_cache(maxsize=1)
def _git() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip()) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit, "git_dirty": dirty}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(device=None, started: str | None = None, parameters: int | None = None) -> dict:
    """Where and when a run ran: CPU model, cores, RAM, the GPU when one was used, the git
    commit and whether the tracked files had uncommitted changes, UTC start and end, the
    process's peak memory so far (resident set; on CUDA also the peak allocated), and the
    number of trained parameters."""
    import resource
    import torch
    out = {**machine(), **_git(), "utc_start": started, "utc_end": utc_now(),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "parameters": parameters, "gpu": None}
    if device is not None and torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)
    return out


def key(obj) -> str:
    """A short stable hash of a JSON-able object (the identity of a run)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_json_atomic(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=float)
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; records are shared like any file
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):              # e.g. no space left: name the file (nothing was replaced)
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
        raise
    return path


def record_path(directory: str | Path, identity: dict) -> Path:
    """Where the record of a run with this identity lives."""
    name = f"{identity.get('method', 'run')}-{key(identity)}.json"
    return Path(directory) / name


def write_record(directory: str | Path, record: dict) -> Path:
    """Write ``record`` (which must have an ``identity`` dict) atomically; return its path."""
    if "identity" not in record:
        raise ValueError("a record needs an 'identity' dict (dataset, method, config, presence, seed)")
    return write_json_atomic(record_path(directory, record["identity"]), record)


# A sweep sets this variable to a file in which every record a notebook run reads or writes is
# listed (one path per line): its marker then names the records it stands for (mmlib.sweep).
RECORD_LOG_ENV = "MMLIB_RECORD_LOG"


def log_record_use(path: str | Path) -> None:
    """Note that a run used (read or wrote) the record at ``path``, if a sweep asks for it."""
    log = os.environ.get(RECORD_LOG_ENV)
    if log:
        with open(log, "a") as f:
            f.write(str(Path(path).resolve()) + "\n")


RECORD_KEYS = ("dataset", "method", "seed")           # what every record's identity names


class CorruptRecord(ValueError):
    """A record file that cannot be parsed (e.g. truncated by a kill)."""


def read_record(path: str | Path) -> dict:
    """A record; a file that is not a readable record raises :class:`CorruptRecord` naming it."""
    try:
        with open(path) as f:
            r = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRecord(f"{path}: not a readable record ({e})") from e
    except OSError as e:
        raise CorruptRecord(f"{path}: not a readable record ({e.strerror or e})") from e
    if not isinstance(r, dict) or not isinstance(r.get("identity"), dict):
        raise CorruptRecord(f"{path}: not a readable record (no 'identity' dict)")
    lacking = [k for k in RECORD_KEYS if k not in r["identity"]]
    if lacking:
        raise CorruptRecord(f"{path}: not a readable record (its identity lacks {lacking})")
    if not isinstance(r.get("metrics", {}), dict):
        raise CorruptRecord(f"{path}: not a readable record ('metrics' is not a dict)")
    return r


def existing_record(path: str | Path) -> dict | None:
    """The record at ``path`` if there is a readable one, else None: a missing file, and a file
    that is not a record (empty, truncated, the wrong schema) count as no record, everywhere.
    A corrupt file is set aside (``<name>.corrupt``) with a warning that names it, so its run
    is redone."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read_record(path)
    except CorruptRecord as e:
        try:
            where = f"moved to {set_aside(path).name}"
        except OSError as err:
            where = f"could not be moved aside ({err.strerror or err})"
        warnings.warn(f"{e}; {where}, the run is redone")
        return None


def set_aside(path: str | Path) -> Path:
    """Move a corrupt record out of the store (``<name>.corrupt``), so its run is redone."""
    path = Path(path)
    dest = path.with_name(path.name + ".corrupt")
    os.replace(path, dest)
    return dest


def load_records(directory: str | Path, pattern: str = "*.json") -> pd.DataFrame:
    """One row per (record, test pattern): identity fields, ``test`` (the modalities
    present at test time) and one column per metric. Empty frame if there are none."""
    rows = []
    for p in sorted(Path(directory).rglob(pattern)):
        if p.name.startswith(".tmp-"):
            continue
        r = existing_record(p)                  # not a record: set aside, named in a warning, left out
        if r is None:
            continue
        ident = r["identity"]
        base = {"dataset": ident["dataset"], "data_fingerprint": ident.get("data_fingerprint"),
                "method": ident["method"], "seed": ident["seed"],
                "profile": ident.get("profile"), **{f"missing.{k}": v for k, v in
                                                    _flat(r.get("missing", ident.get("missing", {}))).items()},
                **{f"config.{k}": v for k, v in _flat(ident.get("method_config") or {}).items()},
                **{f"val_missing.{k}": v for k, v in _flat(ident.get("val_missing") or {}).items()},
                **{f"corruption.{k}": v for k, v in _flat(ident.get("corruption") or {}).items()},
                **{f"tag.{k}": v for k, v in r.get("tags", {}).items()},
                "fit_seconds": r.get("timings", {}).get("fit_seconds"),
                "epochs_run": r.get("selection", {}).get("epochs_run"),
                "best_epoch": r.get("selection", {}).get("best_epoch"), "path": str(p)}
        for test, ms in r.get("metrics", {}).items():
            rows.append({**base, "test": test, **ms})
    return pd.DataFrame(rows)


EXPLORER_METRICS = ["accuracy", "f1_weighted", "f1_macro", "uar", "mae", "corr", "acc2", "acc7", "f1_micro",
                    "f1_samples"]
# options that set the plumbing (encoders, sizes), left out of the explorer's "options" column
PLUMBING = ("backbone", "sequence", "feat_dim", "hidden", "d", "k", "x1", "x2")


def _compact(d: dict) -> str:
    return ", ".join(f"{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in d.items()
                     if v is not None)


def explorer_frame(records_dir: str | Path, book_dir: str | Path | None = None) -> pd.DataFrame:
    """Every record of the store, one row per test pattern, for the Results explorer page: the
    chapter(s) whose runs used it (from the sweep's markers in ``book_dir/runs``), the dataset,
    method and its options, the missing pattern, the seed, the test pattern, the metrics, the
    epochs, the fit time and the record's file."""
    book = Path(book_dir) if book_dir is not None else Path(records_dir).parent
    used: dict[str, set] = {}
    for marker in (book / "runs").glob("*/*.json"):
        try:
            info = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for rel in info.get("records", []):
            used.setdefault(Path(rel).name, set()).add(marker.parent.name)
    rows = []
    for p in sorted(Path(records_dir).glob("*.json")):
        r = existing_record(p)                  # not a record: set aside, named in a warning, left out
        if r is None:
            continue
        ident = r["identity"]
        conf = {k: v for k, v in (ident.get("method_config") or {}).items() if k not in PLUMBING}
        miss = r.get("missing", {})
        setting = _compact({"kind": miss.get("kind"), **{k: v for k, v in miss.items() if k != "kind"}})
        setting = setting.replace("kind=", "").replace("{", "").replace("}", "").replace("'", "")
        if ident.get("corruption"):
            setting += f"; spans {'-'.join(str(x) for x in ident['corruption'].get('band', []))}"
        base = {"chapter": ", ".join(sorted(used.get(p.name, []))) or "(not used by a page)",
                "dataset": ident["dataset"], "method": ident["method"], "options": _compact(conf),
                "missing": setting, "selection": "masked validation" if ident.get("val_missing") else "complete validation",
                "seed": ident["seed"], "profile": ident.get("profile"),
                "epochs": r.get("selection", {}).get("epochs_run"),
                "fit s": round(r.get("timings", {}).get("fit_seconds") or 0.0, 2), "record": p.name}
        for test, ms in r.get("metrics", {}).items():
            rows.append({**base, "test": test, **{m: ms[m] for m in EXPLORER_METRICS if m in ms}})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # the metrics right after what names a row (on screen without scrolling), the long descriptions after them
    order = ["chapter", "dataset", "method", "test", "seed"] + [m for m in EXPLORER_METRICS if m in df] + \
        ["options", "missing", "selection", "epochs", "fit s", "profile", "record"]
    out = df[order].copy()
    for m in EXPLORER_METRICS:
        if m in out:
            out[m] = out[m].round(4)
    return out


# The explorer's metric columns sort with the empty cells (a metric another task reports) last in
# both directions; DataTables' numeric order would put them first when ascending. A DataTables
# ordering type, registered on the page before the table starts (itables' offline bundle exports
# DataTable as its default).
NAN_LAST_TYPE = "num-empty-last"


def explorer_sort_script(itables_version: str) -> str:
    """The page script that registers :data:`NAN_LAST_TYPE` with the DataTables of itables
    ``itables_version`` (its offline bundle, whose default export is DataTable)."""
    v = "_itables_" + itables_version.replace(".", "_")
    return f"""<script type="module">
(async () => {{
  async function register() {{
    const {{ default: DataTable }} = await window.{v};
    const empty = (v) => typeof v !== "number" || Number.isNaN(v);
    const cmp = (sign) => (a, b) => (empty(a) || empty(b)) ? empty(a) - empty(b) : sign * (a - b);
    DataTable.ext.type.order["{NAN_LAST_TYPE}-asc"] = cmp(1);
    DataTable.ext.type.order["{NAN_LAST_TYPE}-desc"] = cmp(-1);
  }}
  if (window.{v}) {{ await register(); }}
  else {{ window.addEventListener("itables-{itables_version}-ready", register); }}
}})();
</script>"""


def explorer_column_defs(frame: pd.DataFrame) -> list[dict]:
    """DataTables ``columnDefs`` for the explorer's table (``frame`` as shown, no index): the
    metric columns sort with their empty cells last (:func:`explorer_sort_script` must be on
    the page first)."""
    cols = [i for i, c in enumerate(frame.columns) if c in EXPLORER_METRICS]
    return [{"targets": cols, "type": NAN_LAST_TYPE}] if cols else []


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def paper_table(name: str) -> pd.DataFrame:
    """A paper's own results table, e.g. ``paper_table("smil_table1")`` (columns: paper,
    table, dataset, method, setting, test_modalities, metric, value, std, note).

    The papers call their own method "Ours" (MLE) or "MLA (Ours)": in this book "ours" means the
    book's numbers, so the paper's method is named by the paper (``Ours`` -> ``MLE``,
    ``CLIP + MLA (Ours)`` -> ``CLIP + MLA``)."""
    path = PAPER_TABLES / f"{name}.csv"
    if not path.is_file():
        known = sorted(p.stem for p in PAPER_TABLES.glob("*.csv"))
        raise ValueError(f"no paper table {name!r}; known: {known}")
    df = pd.read_csv(path, dtype={"method": str, "setting": str, "test_modalities": str, "note": str})
    own = df["method"].str.strip() == "Ours"
    df.loc[own, "method"] = df.loc[own, "paper"]
    df["method"] = df["method"].str.replace(r"\s*\(Ours\)$", "", regex=True)
    return df


def parse_setting(text) -> dict:
    """The ``setting`` column of the paper CSVs, in one vocabulary: ``protocol`` and
    ``rates`` (missing rate per modality, in [0, 1]).

    - ``eta=10%`` (SMIL): the incomplete modality is kept in 10 %, so missing in 90 %:
      ``{"protocol": "independent", "rates": {"incomplete": 0.9}}``;
    - ``visual_missing=80%`` (MLE): ``{"protocol": "one_missing", "rates": {"visual": 0.8}}``;
    - ``missing_rate=10%`` (MLA, CPM-Nets' mask over all entries):
      ``{"protocol": "cpm", "rates": {"all": 0.1}}``;
    - ``MR(A,V,L)=(0.2,0.5,0.8)`` (RedCore): ``{"protocol": "independent", "rates": {"A": 0.2, ...}}``;
    - ``input=40-60%,test=60-80%`` (M3S, spans inside modalities):
      ``{"protocol": "span", "band": (0.4, 0.6), "test_band": (0.6, 0.8), "rates": {}}``;
    - ``split=Train`` (a dataset-statistics table) and an empty cell: ``protocol`` ``"none"``.
    Anything else raises ``ValueError`` naming the text."""
    import re
    t = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text).strip()
    pct = lambda v: round(float(v) / 100, 6)                                       # noqa: E731
    if t == "" or t.startswith("split="):
        return {"protocol": "none", "rates": {}}
    if m := re.fullmatch(r"eta=([\d.]+)%", t):
        return {"protocol": "independent", "rates": {"incomplete": round(1 - pct(m[1]), 6)}}
    if m := re.fullmatch(r"(\w+)_missing=([\d.]+)%", t):
        return {"protocol": "one_missing", "rates": {m[1]: pct(m[2])}}
    if m := re.fullmatch(r"missing_rate=([\d.]+)%", t):
        return {"protocol": "cpm", "rates": {"all": pct(m[1])}}
    if m := re.fullmatch(r"MR\(([\w,]+)\)=\(([\d.,]+)\)", t):
        names, vals = m[1].split(","), m[2].split(",")
        if len(names) != len(vals):
            raise ValueError(f"setting {text!r}: {len(names)} modalities but {len(vals)} rates")
        return {"protocol": "independent", "rates": {n: float(v) for n, v in zip(names, vals)}}
    if m := re.fullmatch(r"input=([\d.]+)-([\d.]+)%,test=([\d.]+)-([\d.]+)%", t):
        return {"protocol": "span", "band": (pct(m[1]), pct(m[2])), "test_band": (pct(m[3]), pct(m[4])), "rates": {}}
    raise ValueError(f"unknown setting {text!r} in a paper table (known forms: eta=10%, visual_missing=80%, "
                     "missing_rate=10%, MR(A,V,L)=(0.2,0.5,0.8), input=40-60%,test=40-60%, split=...)")


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame, on: list[str],
                 ours_label: str, paper_label: str) -> pd.DataFrame:
    """Join our formatted results and the paper's on ``on`` columns (e.g. method and
    setting). Column names carry the labels, e.g. ``"ours (avdigits)"`` and
    ``"paper (CMU-MOSI)"``, so nobody mistakes one for the other."""
    p = paper.copy()
    p[paper_label] = p["value"].astype(str) + np.where(p["std"].notna(), " ± " + p["std"].astype(str), "")
    return ours.merge(p[on + [paper_label]], on=on, how="left").rename(columns={"ours": ours_label})
