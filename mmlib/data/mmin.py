"""IEMOCAP and MSP-IMPROV in the MMIN layout (AIM3-RUC/MMIN, also used by RedCore).

``iemocap`` / ``msp_improv``, one cross-validation fold at a time::

    ROOT/A/comparE.h5             utterance id -> (T, 130) ComParE frames       (acoustic)
    ROOT/A/comparE_mean_std.h5    group per fold "1", "2", ...: "mean" (130,), "std" (130,)
    ROOT/V/denseface.h5           utterance id -> (T, 342) DenseNet face features (visual)
    ROOT/L/bert_large.h5          utterance id -> (T, 1024) BERT-large tokens    (lexical)
    ROOT/target/{fold}/{trn,val,tst}_label.npy      (N, 4) one-hot (or (N,) class ids)
    ROOT/target/{fold}/{trn,val,tst}_int2name.npy   (N,) or (N, 1) utterance ids (bytes)

(MMIN's ``feature_root`` holds A/, V/, L/; put its ``target_root`` beside them as
``target/``.) Sequences are zero-padded to the longest utterance of the dataset, or cut
at ``max_len`` frames, with the true lengths kept; the acoustic frames are normalised
with the fold's mean and std, as MMIN does. Classes: the four IEMOCAP emotions
(neutral, happy incl. excited, angry, sad) in MMIN's label order. IEMOCAP has 10 folds,
MSP-IMPROV 12.
"""
from __future__ import annotations

import numpy as np
import torch

from . import MultimodalDataset, register, register_check
from .checks import Checker, h5, npy, pad_sequences

FEATURES = {"acoustic": ("A/comparE.h5", 130), "visual": ("V/denseface.h5", 342), "lexical": ("L/bert_large.h5", 1024)}
SETS = {"trn": "train", "val": "val", "tst": "test"}
CLASSES = ["neutral", "happy", "angry", "sad"]
FOLDS = {"iemocap": 10, "msp_improv": 12}


def _names(path) -> list[str]:
    """Utterance ids from an int2name array ((N,) or (N, 1), bytes or str)."""
    out = []
    for r in np.load(path, allow_pickle=True):
        v = r[0] if np.ndim(r) else r
        out.append(v.decode() if isinstance(v, bytes) else str(v))
    return out


def _rel(c, rel: str) -> str:
    """Feature files under ROOT/ (the book's layout) or under ROOT/feature/ (MMIN's own: its
    feature_root and target_root as siblings)."""
    sib = c.root / "feature"
    return f"feature/{rel}" if (sib / rel.split("/")[0]).is_dir() and not (c.root / rel.split("/")[0]).is_dir() else rel


def _check(name: str, root, fold: int):
    c = Checker(name, root)
    if not 1 <= int(fold) <= FOLDS[name]:
        c.add(f"fold {fold}: {name} has folds 1..{FOLDS[name]}")
        return c, {}
    wanted = {}
    for s in SETS:
        fl, fn = c.file(f"target/{fold}/{s}_label.npy"), c.file(f"target/{fold}/{s}_int2name.npy")
        n = None
        if fl is not None:
            lab = npy(fl)
            rel = f"target/{fold}/{s}_label.npy"
            if c.array(rel, lab, (None, 4) if lab.ndim == 2 else (None,), "numeric"):
                n = len(lab)
                a = np.asarray(lab)
                if a.ndim == 1 and len(a) and (a.min() < 0 or a.max() > 3 or not np.all(a == np.round(a))):
                    c.add(f"{rel}: class ids must be 0..3 ({', '.join(CLASSES)}), found {a.min():g}..{a.max():g}")
                elif a.ndim == 2 and len(a) and not (np.isin(a, (0, 1)).all() and (a.sum(1) == 1).all()):
                    bad = int(np.flatnonzero(~(np.isin(a, (0, 1)).all(1) & (a.sum(1) == 1)))[0])
                    c.add(f"{rel}: one-hot rows expected (one 1 among 4), row {bad} is {a[bad].tolist()}")
        if fn is not None:
            try:
                names = _names(fn)
            except Exception as e:                                    # noqa: BLE001
                c.add(f"target/{fold}/{s}_int2name.npy: unreadable utterance ids ({e})")
                continue
            if n is not None and len(names) != n:
                c.add(f"target/{fold}/{s}_int2name.npy: {len(names)} ids for {n} labels")
            wanted[s] = names
    for m, (rel, dim) in FEATURES.items():
        rel = _rel(c, rel)
        f = c.file(rel)
        if f is None:
            continue
        with h5(f) as h:
            for s, names in wanted.items():
                missing = [u for u in names if u not in h]
                if missing:
                    c.add(f"{rel}: {len(missing)} utterance(s) of {s} are missing, e.g. {missing[:3]}")
                for u in [u for u in names if u in h]:
                    if not c.array(f"{rel}[{u!r}]", h[u], (None, dim), "float"):
                        break                                       # one bad utterance is enough to report
    f = c.file(_rel(c, "A/comparE_mean_std.h5"))
    if f is not None:
        with h5(f) as h:
            if str(fold) not in h:
                c.add(f"A/comparE_mean_std.h5: group {str(fold)!r} (this fold) is missing (have {sorted(h.keys())})")
            else:
                for k in ("mean", "std"):
                    if k not in h[str(fold)]:
                        c.add(f"A/comparE_mean_std.h5[{str(fold)!r}]: key {k!r} is missing")
                    else:
                        c.array(f"A/comparE_mean_std.h5[{str(fold)!r}][{k!r}]", h[str(fold)][k],
                                (130,) if h[str(fold)][k].ndim == 1 else (1, 130), "float")
    return c, wanted


def _loader(name: str):
    @register_check(name)
    def check(root, fold: int = 1, **_) -> list[str]:
        return _check(name, root, fold)[0].problems

    @register(name)
    def load(root=None, fold: int = 1, max_len: int | None = None) -> MultimodalDataset:
        c, wanted = _check(name, root, fold)
        c.raise_if_any()
        order = [u for s in SETS for u in wanted[s]]
        labels = []
        for s in SETS:
            lab = np.load(c.root / f"target/{fold}/{s}_label.npy")
            labels.append(lab.argmax(1) if lab.ndim == 2 else lab.astype(np.int64))
        with h5(c.root / _rel(c, "A/comparE_mean_std.h5")) as h:
            mean = h[str(fold)]["mean"][()].reshape(-1).astype(np.float32)
            std = h[str(fold)]["std"][()].reshape(-1).astype(np.float32)
        mods, lengths = {}, {}
        for m, (rel, _) in FEATURES.items():
            with h5(c.root / _rel(c, rel)) as h:
                seqs = [h[u][()].astype(np.float32) for u in order]
            if m == "acoustic":
                seqs = [(s - mean) / (std + 1e-8) for s in seqs]
            x, ln = pad_sequences(seqs, max_len)
            mods[m], lengths[m] = torch.from_numpy(x), torch.from_numpy(ln)
        sizes = np.cumsum([0] + [len(wanted[s]) for s in SETS])
        splits = {v: torch.arange(int(sizes[i]), int(sizes[i + 1])) for i, v in enumerate(SETS.values())}
        return MultimodalDataset(name, mods, torch.from_numpy(np.concatenate(labels).astype(np.int64)), "multiclass",
                                 CLASSES, splits, {"source": f"{name}, MMIN layout", "root": str(root), "fold": fold,
                                                   "utterances": order}, lengths)
    return load


for _name in FOLDS:
    _loader(_name)
