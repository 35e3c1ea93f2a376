"""CMU-MOSI, CMU-MOSEI and CH-SIMS from a user's folder, in the two layouts the papers use.

``mosi_mfn`` -- the MFN / SMIL files (pliang279/MFN; SMIL ``src/dataset/mosi.py``)::

    ROOT/X_train.h5  ROOT/X_valid.h5  ROOT/X_test.h5    key "data": (N, 20, 325) float
    ROOT/y_train.h5  ROOT/y_valid.h5  ROOT/y_test.h5    key "data": (N,) or (N, 1) sentiment in [-3, 3]

  Each time step holds text [0:300) (GloVe), audio [300:305) (COVAREP) and visual
  [305:325) (Facet): three modalities of shape (20, 300), (20, 5), (20, 20).

``mosi`` / ``mosei`` / ``sims`` -- MMSA's pickles (thuiar/MMSA)::

    ROOT/aligned_50.pkl or ROOT/unaligned_50.pkl     (MOSI, MOSEI)
    ROOT/unaligned_39.pkl                            (SIMS)

  a dict with "train", "valid", "test", each a dict with "text" (N, L, 768) BERT features,
  "audio" (N, L_a, d_a), "vision" (N, L_v, d_v), "regression_labels" (N,), and for
  unaligned data "audio_lengths" / "vision_lengths". Feature sizes: MOSI 5 / 20, MOSEI
  74 / 35, SIMS 33 / 709. As MMSA does, -inf in the audio is set to 0. Reading a pickle
  loads it whole (there is no way to peek into one); ``mmbook data check`` says so.

Labels. ``task="regression"`` keeps the score; ``"binary"`` is negative (< 0) vs
non-negative (>= 0), the convention of the book's Acc-2; ``"7class"`` is the score rounded
to -3..3; ``"3class"`` is negative (< 0), neutral (= 0), positive (> 0), MMSA's
``classification_labels`` when the pickle has them (RedCore's MOSEI task). SMIL uses the
binary task (its Table 1), M3S the regression one, RedCore the 3-class one.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch

from . import MultimodalDataset, register, register_check
from .checks import Checker, h5

SPLITS = {"train": "train", "valid": "val", "test": "test"}
TASKS = ("regression", "binary", "7class", "3class")
MFN_SLICES = {"text": (0, 300), "audio": (300, 305), "visual": (305, 325)}


def _labels(score: np.ndarray, task: str):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} for a sentiment dataset; use one of {TASKS}")
    score = score.astype(np.float32).reshape(-1)
    if task == "regression":
        return torch.from_numpy(score), "regression", []
    if task == "binary":
        return torch.from_numpy((score >= 0).astype(np.int64)), "multiclass", ["negative", "non-negative"]
    if task == "3class":
        return torch.from_numpy((np.sign(score) + 1).astype(np.int64)), "multiclass", ["negative", "neutral", "positive"]
    return (torch.from_numpy((np.clip(np.round(score), -3, 3) + 3).astype(np.int64)), "multiclass",
            [str(k) for k in range(-3, 4)])


# ---------------------------------------------------------------------------- MFN h5
def _mfn_check(root) -> Checker:
    c = Checker("mosi_mfn", root)
    for s in SPLITS:
        fx, fy = c.file(f"X_{s}.h5"), c.file(f"y_{s}.h5")
        n = None
        if fx is not None:
            with h5(fx) as f:
                if "data" not in f:
                    c.add(f"X_{s}.h5: key 'data' is missing (have {sorted(f.keys())})")
                elif c.array(f"X_{s}.h5['data']", f["data"], (None, None, 325), "float"):
                    n = f["data"].shape[0]
        if fy is not None:
            with h5(fy) as f:
                if "data" not in f:
                    c.add(f"y_{s}.h5: key 'data' is missing (have {sorted(f.keys())})")
                else:
                    y = f["data"]
                    shape = (n,) if len(y.shape) == 1 else (n, 1)
                    c.array(f"y_{s}.h5['data']", y, shape, "float")
    return c


@register_check("mosi_mfn")
def check_mosi_mfn(root, **_) -> list[str]:
    return _mfn_check(root).problems


@register("mosi_mfn")
def load_mosi_mfn(root=None, task: str = "binary") -> MultimodalDataset:
    c = _mfn_check(root)
    c.raise_if_any()
    xs, ys, split = [], [], []
    for s, name in SPLITS.items():
        with h5(c.root / f"X_{s}.h5") as f:
            xs.append(f["data"][()].astype(np.float32))
        with h5(c.root / f"y_{s}.h5") as f:
            ys.append(f["data"][()].reshape(-1))
        split += [name] * len(xs[-1])
    X, score = np.concatenate(xs), np.concatenate(ys)
    y, kind, names = _labels(score, task)
    split = np.array(split)
    mods = {m: torch.from_numpy(np.ascontiguousarray(X[:, :, a:b])) for m, (a, b) in MFN_SLICES.items()}
    splits = {v: torch.from_numpy(np.nonzero(split == v)[0]) for v in SPLITS.values()}
    return MultimodalDataset("mosi_mfn", mods, y, kind, names, splits,
                             {"source": "CMU-MOSI, MFN h5 files", "root": str(root), "task": task})


# ------------------------------------------------------------------------ MMSA pickles
MMSA = {"mosi": {"files": ("aligned_50.pkl", "unaligned_50.pkl"), "dims": (768, 5, 20)},
        "mosei": {"files": ("aligned_50.pkl", "unaligned_50.pkl"), "dims": (768, 74, 35)},
        "sims": {"files": ("unaligned_39.pkl",), "dims": (768, 33, 709)}}
MMSA_MODS = {"text": "text", "audio": "audio", "vision": "visual"}


def _mmsa_file(name: str, aligned: bool) -> str:
    files = MMSA[name]["files"]
    if aligned and name == "sims":
        raise ValueError("CH-SIMS comes unaligned only (unaligned_39.pkl); use aligned=False")
    return files[0] if aligned and len(files) > 1 else files[-1]


def _mmsa_check(name: str, root, aligned: bool):
    c = Checker(name, root)
    fname = _mmsa_file(name, aligned)
    other = _mmsa_file(name, not aligned) if name != "sims" else fname
    if not c.problems and not (c.root / fname).is_file() and other != fname and (c.root / other).is_file():
        c.add(f"{fname}: missing file; the folder has {other}: pass aligned={str(not aligned).lower()} "
              f"(-o aligned={str(not aligned).lower()}, or data_options={{\"aligned\": {str(not aligned).lower()}}})")
        return c, None
    path = c.file(fname)
    data = None
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
        except Exception as e:                                        # noqa: BLE001 -- report, do not crash
            c.add(f"{fname}: not a readable pickle ({type(e).__name__}: {e})")
    if data is not None:
        if not isinstance(data, dict):
            c.add(f"{fname}: expected a dict with train/valid/test, got {type(data).__name__}")
            data = None
        else:
            dims = dict(zip(MMSA_MODS, MMSA[name]["dims"]))
            for s in SPLITS:
                if s not in data:
                    c.add(f"{fname}: split {s!r} is missing (have {sorted(data)})")
                    continue
                d = data[s]
                n = len(d["regression_labels"]) if "regression_labels" in d else None
                if n is None:
                    c.add(f"{fname}[{s!r}]: key 'regression_labels' is missing")
                else:
                    c.array(f"{fname}[{s!r}]['regression_labels']", np.asarray(d["regression_labels"]),
                            (n,) if np.asarray(d["regression_labels"]).ndim == 1 else (n, 1), "float")
                for k, dim in dims.items():
                    if k not in d:
                        c.add(f"{fname}[{s!r}]: key {k!r} is missing (have {sorted(d)})")
                        continue
                    a = np.asarray(d[k])
                    if k == "audio":                                 # MMSA: -inf in the audio means 0
                        a = np.where(np.isneginf(a), 0, a)
                    c.array(f"{fname}[{s!r}][{k!r}]", a, (n, None, dim), "float")
                for k in ("audio_lengths", "vision_lengths"):
                    if not aligned and k not in d:
                        c.add(f"{fname}[{s!r}]: key {k!r} is missing (unaligned data needs it)")
    return c, data


def _mmsa_loader(name: str):
    @register_check(name)
    def check(root, aligned: bool = False, **_) -> list[str]:
        return _mmsa_check(name, root, aligned)[0].problems

    @register(name)
    def load(root=None, aligned: bool = False, task: str = "regression") -> MultimodalDataset:
        c, data = _mmsa_check(name, root, aligned)
        c.raise_if_any()
        mods, lengths, scores, split = {}, {}, [], []
        for s, v in SPLITS.items():
            d = data[s]
            n = len(d["regression_labels"])
            for k, m in MMSA_MODS.items():
                a = np.asarray(d[k], dtype=np.float32)
                if k == "audio":
                    a = np.where(np.isneginf(a), 0, a)
                mods.setdefault(m, []).append(a)
                key = f"{k}_lengths"
                ln = np.asarray(d[key]) if (not aligned and key in d) else np.full(n, a.shape[1])
                lengths.setdefault(m, []).append(np.minimum(ln.astype(np.int64), a.shape[1]))
            scores.append(np.asarray(d["regression_labels"]).reshape(-1))
            split += [v] * n
        y, kind, names = _labels(np.concatenate(scores), task)
        if task == "3class" and all("classification_labels" in data[s] for s in SPLITS):
            y = torch.from_numpy(np.concatenate([np.asarray(data[s]["classification_labels"]).reshape(-1)
                                                 for s in SPLITS]).astype(np.int64))
        split = np.array(split)
        return MultimodalDataset(
            name, {m: torch.from_numpy(np.concatenate(a)) for m, a in mods.items()}, y, kind, names,
            {v: torch.from_numpy(np.nonzero(split == v)[0]) for v in SPLITS.values()},
            {"source": f"MMSA {_mmsa_file(name, aligned)}", "root": str(root), "task": task},
            {m: torch.from_numpy(np.concatenate(ln)) for m, ln in lengths.items()})
    return load


for _name in MMSA:
    _mmsa_loader(_name)
