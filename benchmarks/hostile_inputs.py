"""Bad inputs, as a hostile user would give them: does each one get a clear error?

Runs every case through the command line (``mmbook data check``, ``mmbook run``, ``mmbook sweep``)
and sorts the outcome into

- **clear**: a non-zero exit with a message naming the problem, no traceback;
- **traceback**: a Python traceback reached the user;
- **silent**: exit 0, nothing said (the bad input was accepted).

    .venv/bin/python benchmarks/hostile_inputs.py            # prints the table and the counts

The data folders are written by the test suite's fixture writers (tests/), then broken.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_mla_data import write_crema_d, write_features, write_food101  # noqa: E402
from test_real_data import write_avmnist, write_mmimdb, write_mmin, write_mmsa, write_mosi_mfn  # noqa: E402

from mmlib.cli import main as cli  # noqa: E402


def in_process(argv) -> tuple[int | None, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli(argv)
    except SystemExit as e:                 # argparse
        code = e.code
    except Exception:                       # noqa: BLE001 -- this is what the audit counts
        return None, traceback.format_exc()
    return code, out.getvalue() + err.getvalue()


def by_subprocess(argv) -> tuple[int | None, str]:
    p = subprocess.run([str(ROOT / ".venv/bin/mmbook"), *argv], cwd=ROOT, capture_output=True, text=True,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return p.returncode, p.stdout + p.stderr


def classify(code, text) -> str:
    if code is None or "Traceback (most recent call last)" in text:
        return "traceback"
    if code == 0:
        return "silent"
    return "clear"


def cases(tmp: Path):
    """(name, how, argv, setup) for every bad input."""
    def avmnist(fix):
        def setup():
            d = tmp / "avmnist"
            shutil.rmtree(d, ignore_errors=True)
            write_avmnist(d)
            fix(d)
            return d
        return setup

    def save(rel, arr):
        return lambda d: np.save(d / rel, arr)
    yield ("no such folder", "check", ["avmnist", str(tmp / "nowhere")], None)
    yield ("empty folder", "check", ["avmnist", str(tmp / "empty")], lambda: (tmp / "empty").mkdir(exist_ok=True))
    yield ("avmnist: corrupt .npy", "check", ["avmnist", "{d}"],
           avmnist(lambda d: (d / "train_labels.npy").write_bytes(b"\x93NUMPY junk")))
    yield ("avmnist: label 12", "check", ["avmnist", "{d}"], avmnist(save("test_labels.npy", np.full(6, 12))))
    yield ("avmnist: NaN pixels", "check", ["avmnist", "{d}"],
           avmnist(save("image/test_data.npy", np.full((6, 784), np.nan, dtype=np.float32))))
    yield ("avmnist: wrong audio shape", "check", ["avmnist", "{d}"],
           avmnist(save("audio/test_data.npy", np.zeros((6, 100, 100), dtype=np.float32))))
    yield ("avmnist: 0-byte file", "check", ["avmnist", "{d}"],
           avmnist(lambda d: (d / "test_labels.npy").write_bytes(b"")))

    def folder(name, writer, fix, **kw):
        def setup():
            d = tmp / name
            shutil.rmtree(d, ignore_errors=True)
            writer(d, **kw)
            fix(d)
            return d
        return setup
    yield ("mosi_mfn: corrupt h5", "check", ["mosi_mfn", "{d}"],
           folder("mfn", write_mosi_mfn, lambda d: next(d.glob("*.h5")).write_bytes(b"junk")))
    yield ("mmsa: truncated pickle", "check", ["mosi", "{d}"],
           folder("mmsa", write_mmsa, lambda d: (lambda f: f.write_bytes(f.read_bytes()[:50]))(next(d.glob("*.pkl")))))
    yield ("mmsa: other alignment only", "check", ["mosi", "{d}"],
           folder("mmsa2", write_mmsa, lambda d: None, aligned=True))
    yield ("iemocap: fold 11", "check", ["iemocap", "{d}", "-o", "fold=11"], folder("mmin", write_mmin, lambda d: None))
    yield ("iemocap: class ids 5 and 7", "check", ["iemocap", "{d}"],
           folder("mmin2", write_mmin, save("target/1/trn_label.npy", np.array([0, 5, 7, 1, 2, 3]))))
    yield ("iemocap: corrupt h5", "check", ["iemocap", "{d}"],
           folder("mmin3", write_mmin, lambda d: (d / "L/bert_large.h5").write_bytes(b"junk")))
    yield ("iemocap: unknown option", "check", ["iemocap", "{d}", "-o", "flod=1"], folder("mmin4", write_mmin, lambda d: None))

    def genre(d):
        import h5py
        with h5py.File(d / "multimodal_imdb.hdf5", "r+") as h:
            g = h["genres"][()]
            g[0, 0] = -3
            h["genres"][...] = g
    yield ("mmimdb: genre -3", "check", ["mmimdb", "{d}", "-o", "split_at=[6, 9]"], folder("imdb", write_mmimdb, genre))
    yield ("mmimdb: split_at '6,9'", "check", ["mmimdb", "{d}", "-o", "split_at=\"6,9\""],
           folder("imdb2", write_mmimdb, lambda d: None))
    yield ("crema_d: missing fbank", "check", ["crema_d", "{d}"],
           folder("cre", write_crema_d, lambda d: next((d / "audio/train_fbank").glob("*.npy")).unlink()))
    yield ("crema_d: unknown label", "check", ["crema_d", "{d}"],
           folder("cre2", write_crema_d, lambda d: open(d / "my_test_cre.txt", "a").write("1_X_Y_Z.flv Surprise\n")))
    yield ("food101: corrupt token file", "check", ["food101", "{d}"],
           folder("food", write_food101, lambda d: (d / "text_token/train_token" /
                                                    ((d / "my_train_food.txt").read_text().split(".jpg")[0] + "_token.npy"))
                  .write_bytes(b"junk")))
    yield ("features: label out of range", "check", ["features", "{d}"],
           folder("feat", write_features, save("test/labels.npy", np.array([0, 1, 9, 0, 1, 2, 0, 1]))))
    yield ("features: corrupt .npy", "check", ["features", "{d}"],
           folder("feat2", write_features, lambda d: (d / "val/clip_image.npy").write_bytes(b"junk")))
    yield ("unknown dataset", "check", ["imagenet", str(tmp)], None)
    yield ("embedded dataset as a folder", "check", ["avdigits", str(tmp)], None)
    yield ("run: misspelt parameter", "run", ["run", "00_missing_modalities", "-p", "missing_rat=0.5"], None)
    yield ("run: unknown chapter", "run", ["run", "07_nothing"], None)
    yield ("run: unknown profile", "run", ["run", "00_missing_modalities", "--profile", "huge"], None)
    yield ("sweep: misspelt parameter", "run", ["sweep", "05_mla", "-p", "datset=\"crema_d\""], None)
    yield ("run: missing_rate 1.5", "sub", ["run", "00_missing_modalities", "--profile", "quick", "-p", "missing_rate=1.5",
                                            "-p", "page=false", "-o", str(tmp / "out.ipynb")], None)
    yield ("run: SMIL on a dataset without its modalities", "sub",
           ["run", "01_smil", "--profile", "quick", "-p", "dataset=\"gaussian\"", "-p", "page=false",
            "-o", str(tmp / "out3.ipynb")], None)
    yield ("run: seeds []", "sub", ["run", "00_missing_modalities", "--profile", "quick", "-p", "seeds=[]",
                                    "-p", "page=false", "-o", str(tmp / "out2.ipynb")], None)
    # parameters of the wrong type or range, refused before a kernel starts
    for chapter, param in [("00_missing_modalities", "missing_rate=abc"), ("00_missing_modalities", 'missing_rate="0.5"'),
                           ("03_redcore", 'missing_rates="abc"'), ("03_redcore", 'missing_rates={"acoustic": 0.5}'),
                           ("04_m3s", 'band="ab"'), ("01_smil", 'modalities=["image"]'), ("01_smil", "modalities=[]")]:
        yield (f"run: {chapter[:2]} {param}", "run", ["run", chapter, "-p", param], None)
    # a sweep told a value: it restricts the grid to it, or refuses it
    yield ("sweep: missing_rate off the grid", "run", ["sweep", "00_missing_modalities", "-p", "missing_rate=0.3"], None)
    yield ("sweep: missing_rates [0.5, 0.5]", "run", ["sweep", "03_redcore", "-p", "missing_rates=[0.5,0.5]"], None)
    yield ("sweep: -p profile", "run", ["sweep", "00_missing_modalities", "-p", 'profile="quick"'], None)
    yield ("sweep: --slurm without Slurm", "sub", ["sweep", "affect_datasheet", "--executor", "dask", "--slurm",
                                                   "partition=gpu"], None)
    yield ("run: MLA on one modality", "sub",
           ["run", "05_mla", "--profile", "quick", "-p", 'dataset="features"', "--data-root", "{d}", "-p", "page=false",
            "-o", str(tmp / "out4.ipynb")], folder("feat1", write_features, lambda d: None, seq=False))
    # the library and the book folder
    yield ("masks.from_spec('full')", "call", lambda: _api_from_spec(), None)
    yield ("verdict file holding a list", "call", lambda: _api_verdicts(tmp), None)
    yield ("record of the wrong schema", "call", lambda: _api_record(tmp, '{"identity": {"method": "x"}}'), None)
    yield ("0-byte record", "call", lambda: _api_record(tmp, ""), None)


def _api_from_spec():
    from mmlib import masks
    masks.from_spec("full", 4, ["a", "b"], 0)


def _api_verdicts(tmp: Path):
    from mmlib import scorecard
    d = tmp / "verdicts"
    d.mkdir(exist_ok=True)
    (d / "01_smil.json").write_text("[]")
    scorecard.read_all(d)


def _api_record(tmp: Path, text: str):
    """A bad file in the record store: the explorer names it and sets it aside (a warning)."""
    from mmlib.results import explorer_frame
    d = tmp / "records"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "x-000000000000.json").write_text(text)
    explorer_frame(d, tmp)


def by_call(fn) -> tuple[int | None, str]:
    """A library call: a ValueError / RuntimeError that names the problem, or a warning that
    names the file it set aside, is clear; anything else is a traceback; no word is silent."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except (ValueError, RuntimeError) as e:
            return 2, str(e)
        except Exception:                   # noqa: BLE001 -- this is what the audit counts
            return None, traceback.format_exc()
    said = [str(w.message) for w in caught if "set aside" in str(w.message) or "moved to" in str(w.message)]
    return (1, said[-1]) if said else (0, "")


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name, how, argv, setup in cases(tmp):
            d = setup() if setup else None
            argv = argv if callable(argv) else [a.replace("{d}", str(d)) for a in argv]
            if how == "check":
                code, text = in_process(["data", "check", *argv])
            elif how == "call":
                code, text = by_call(argv)
            elif how == "run":
                code, text = in_process(argv)
            else:
                code, text = by_subprocess(argv)
            kind = classify(code, text)
            last = [ln for ln in text.strip().splitlines() if ln.strip()]
            rows.append((name, kind, (last[-1] if last else "")[:110]))
    width = max(len(r[0]) for r in rows)
    for name, kind, msg in rows:
        print(f"{name:{width}s}  {kind:9s}  {msg}")
    counts = {k: sum(r[1] == k for r in rows) for k in ("clear", "traceback", "silent")}
    print(f"\n{len(rows)} cases: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0 if counts["traceback"] == counts["silent"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
