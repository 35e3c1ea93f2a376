"""``affect``: the embedded CMU-MOSI / IEMOCAP-like set (lexical, acoustic, visual).

Built by ``data/affect/build_affect.py``; see the datasheet page in the book. Two tasks
over the same samples: ``task="regression"`` (the sentiment score in [-3, 3], MOSI-style
metrics MAE, Corr, Acc-2, Acc-7) and ``task="emotion"`` (neutral / happy / sad / angry,
IEMOCAP-style weighted F1 and UAR).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import DATA_DIR, MultimodalDataset, register

FILE = "affect.npz"
SHAPES = {"lexical": (384,), "acoustic": (50, 14), "visual": (30, 17)}
EMOTIONS = ["neutral", "happy", "sad", "angry"]


@register("affect")
def load_affect(root: str | Path | None = None, task: str = "regression", standardize: bool = True) -> MultimodalDataset:
    """Modalities ``acoustic`` (50 frames x 14), ``visual`` (30 frames x 17 action units) and
    ``lexical`` (a 384-d sentence embedding); every feature is standardized with the
    training split's statistics (the sentence embeddings are unit vectors, so their
    coordinates have a standard deviation of about 0.05 before this)."""
    if task not in ("regression", "emotion"):
        raise ValueError(f"affect: task must be 'regression' or 'emotion', got {task!r}")
    folder = Path(root) if root is not None else DATA_DIR / "affect"
    path = folder / FILE
    if not path.is_file():
        raise FileNotFoundError(f"affect: {path} not found; the embedded file ships with the project "
                                "(data/affect/), or rebuild it with data/affect/build_affect.py")
    with np.load(path, allow_pickle=False) as z:
        for key, shape in SHAPES.items():
            if key not in z.files:
                raise ValueError(f"{path}: key {key!r} is missing (have {sorted(z.files)})")
            if tuple(z[key].shape[1:]) != shape:
                raise ValueError(f"{path}: {key!r} has per-sample shape {tuple(z[key].shape[1:])}, expected {shape}")
        mods = {m: torch.from_numpy(z[m].astype(np.float32)) for m in ("acoustic", "visual", "lexical")}
        split = torch.from_numpy(z["split"].astype(np.int64))
        if task == "regression":
            y, names, kind = torch.from_numpy(z["score"].astype(np.float32)), [], "regression"
        else:
            y, names, kind = torch.from_numpy(z["emotion"].astype(np.int64)), list(EMOTIONS), "multiclass"
        info = json.loads(str(z["info"]))
        info.update(task=task, valence=z["valence"].tolist(), arousal=z["arousal"].tolist())
    splits = {s: torch.nonzero(split == k).flatten() for k, s in enumerate(("train", "val", "test"))}
    if standardize:
        tr = splits["train"]
        for m in ("acoustic", "visual", "lexical"):          # per feature (and over frames)
            x = mods[m]
            dims = (0, 1) if x.dim() == 3 else (0,)
            mu, sd = x[tr].mean(dims), x[tr].std(dims) + 1e-6
            mods[m] = (x - mu) / sd
    return MultimodalDataset("affect", mods, y, kind, names, splits, info)
