"""``features``: precomputed per-modality feature arrays, for backbones that cannot run offline.

A GPU user with features from M3AE, CLIP, CAV-MAE, wav2vec or BERT (MLA's encoders, none of
which can be downloaded here) saves them as arrays, one file per modality and split::

    ROOT/classes.txt                  (optional) one class name per line, in label order
    ROOT/train/labels.npy             (N,) int class ids (multiclass), (N,) float (regression)
                                      or (N, C) 0/1 (multi-label)
    ROOT/train/<modality>.npy         (N, D) vectors or (N, T, D) zero-padded sequences
    ROOT/train/<modality>_lengths.npy (optional, sequences) (N,) true lengths
    ROOT/val/...                      (optional) the same files; without it, a fixed 10 % of the
                                      training rows (seed 0) is held out for validation
    ROOT/test/...                     the same files

Every split must have the same modalities with the same feature shape. The modalities are
the ``.npy`` files of ``train/`` other than ``labels.npy`` and ``*_lengths.npy``, in
alphabetical order unless ``modalities=[...]`` orders them. ``task`` is inferred from the
labels (int 1-D: multiclass, float 1-D: regression, 2-D: multi-label) unless given.
"""
from __future__ import annotations

import numpy as np
import torch

from . import MultimodalDataset, register, register_check
from .checks import Checker

SPLITS = ("train", "val", "test")


def _load(c: Checker, rel: str):
    """A memory-mapped array, or None and a problem naming the file and the cause."""
    p = c.file(rel)
    if p is None:
        return None
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        c.add(f"{rel}: not a readable .npy file ({e})")
        return None


def _modalities(c: Checker, modalities) -> list[str]:
    found = sorted(p.stem for p in (c.root / "train").glob("*.npy")
                   if p.stem != "labels" and not p.stem.endswith("_lengths")) if (c.root / "train").is_dir() else []
    if modalities is None:
        if not found and not c.problems:
            c.add("train/: no <modality>.npy files")
        return found
    for m in modalities:
        if m not in found:
            c.add(f"train/{m}.npy: missing file (modalities={list(modalities)}; found {found})")
    return list(modalities)


def _check(root, modalities=None, task=None):
    c = Checker("features", root)
    if c.problems:
        return c, None
    names = _modalities(c, modalities)
    splits = [s for s in SPLITS if s != "val" or (c.root / "val").is_dir()]
    arrays, classes = {}, None
    if (c.root / "classes.txt").is_file():
        classes = [ln.strip() for ln in (c.root / "classes.txt").read_text().splitlines() if ln.strip()]
    for s in splits:
        lab = _load(c, f"{s}/labels.npy")
        n = None
        if lab is not None:
            if lab.ndim not in (1, 2):
                c.add(f"{s}/labels.npy: shape {lab.shape}, expected (N,) or (N, C)")
            else:
                n = lab.shape[0]
        arrays[s] = {"labels": lab}
        for m in names:
            a = _load(c, f"{s}/{m}.npy")
            if a is None:
                continue
            if a.ndim not in (2, 3):
                c.add(f"{s}/{m}.npy: shape {a.shape}, expected (N, D) or (N, T, D)")
                continue
            if n is not None and a.shape[0] != n:
                c.add(f"{s}/{m}.npy: {a.shape[0]} rows, but {s}/labels.npy has {n}")
            ref = arrays.get("train", {}).get(m)
            if ref is not None and s != "train" and a.shape[1:] != ref.shape[1:] and a.ndim == 2:
                c.add(f"{s}/{m}.npy: feature shape {a.shape[1:]}, train/{m}.npy has {ref.shape[1:]}")
            c.array(f"{s}/{m}.npy", a, (a.shape[0],) + tuple(a.shape[1:]), "numeric")
            arrays[s][m] = a
            if (c.root / s / f"{m}_lengths.npy").is_file():
                ln = _load(c, f"{s}/{m}_lengths.npy")
                if ln is not None and (ln.shape != (a.shape[0],) or a.ndim != 3):
                    c.add(f"{s}/{m}_lengths.npy: shape {ln.shape}; expected ({a.shape[0]},) for a (N, T, D) modality")
                elif ln is not None and (np.asarray(ln).min() < 1 or np.asarray(ln).max() > a.shape[1]):
                    c.add(f"{s}/{m}_lengths.npy: lengths must be in 1..{a.shape[1]}")
                arrays[s][f"{m}_lengths"] = ln
    kinds = {np.dtype(a["labels"].dtype).kind for a in arrays.values() if a.get("labels") is not None}
    if task is None and kinds:
        lab = arrays["train"].get("labels")
        task = "multilabel" if lab is not None and lab.ndim == 2 else ("multiclass" if kinds <= set("iub") else "regression")
    if task == "multiclass":
        for s, a in arrays.items():
            lab = a.get("labels")
            if lab is None or lab.ndim != 1:
                continue
            if np.dtype(lab.dtype).kind not in "iub":
                c.add(f"{s}/labels.npy: dtype {lab.dtype}; class ids must be integers")
                continue
            k = len(classes) if classes else None
            if len(lab) and (lab.min() < 0 or (k is not None and lab.max() >= k)):
                c.add(f"{s}/labels.npy: class ids {int(lab.min())}..{int(lab.max())} outside 0..{(k or 0) - 1}"
                      + (" (classes.txt)" if k else ""))
    return c, {"names": names, "arrays": arrays, "classes": classes, "task": task}


@register_check("features")
def check_features(root, modalities=None, task=None, **_) -> list[str]:
    return _check(root, modalities, task)[0].problems


@register("features")
def load_features(root=None, modalities=None, task=None, name: str = "features") -> MultimodalDataset:
    c, found = _check(root, modalities, task)
    c.raise_if_any()
    names, arrays, task = found["names"], found["arrays"], found["task"]
    parts = [s for s in SPLITS if s in arrays]
    labels = np.concatenate([np.asarray(arrays[s]["labels"]) for s in parts])
    sizes = [len(arrays[s]["labels"]) for s in parts]
    offsets = np.cumsum([0] + sizes)
    idx = {s: torch.arange(int(offsets[i]), int(offsets[i + 1])) for i, s in enumerate(parts)}
    if "val" not in idx:                          # a fixed, seeded 10 % of the training rows
        tr = idx["train"][torch.randperm(len(idx["train"]), generator=torch.Generator().manual_seed(0))]
        k = max(1, len(tr) // 10)
        idx["val"], idx["train"] = tr[:k].sort().values, tr[k:].sort().values
    X, L = {}, {}
    for m in names:
        a = [np.asarray(arrays[s][m], dtype=np.float32) for s in parts]
        if a[0].ndim == 3:                        # sequences: pad every split to the longest
            T = max(x.shape[1] for x in a)
            a = [np.pad(x, ((0, 0), (0, T - x.shape[1]), (0, 0))) for x in a]
            lens = [np.asarray(arrays[s][f"{m}_lengths"]) if f"{m}_lengths" in arrays[s]
                    else np.full(len(x), x.shape[1]) for s, x in zip(parts, a)]
            L[m] = torch.from_numpy(np.concatenate(lens).astype(np.int64))
        X[m] = torch.from_numpy(np.concatenate(a))
    if task == "multiclass":
        y = torch.from_numpy(labels.astype(np.int64))
        classes = found["classes"] or [str(k) for k in range(int(labels.max()) + 1)]
    elif task == "multilabel":
        y = torch.from_numpy(labels.astype(np.float32))
        classes = found["classes"] or [str(k) for k in range(labels.shape[1])]
    else:
        y, classes = torch.from_numpy(labels.astype(np.float32)), []
    return MultimodalDataset(name, X, y, task, classes, idx,
                             {"source": "precomputed per-modality feature arrays", "root": str(root)}, L)
