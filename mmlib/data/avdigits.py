"""``avdigits``: the embedded avMNIST-like set (degraded MNIST images + spoken-digit MFCCs).

Built by ``data/avdigits/build_avdigits.py``; see the datasheet page in the book.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import DATA_DIR, MultimodalDataset, register

FILE = "avdigits.npz"
KEYS = {"image": (28, 28), "audio": (20, 20), "label": (), "split": (), "pair": ()}


def _check(path: Path, z) -> None:
    for key, shape in KEYS.items():
        if key not in z.files:
            raise ValueError(f"{path}: key {key!r} is missing (have {sorted(z.files)})")
        if tuple(z[key].shape[1:]) != shape:
            raise ValueError(f"{path}: {key!r} has per-sample shape {tuple(z[key].shape[1:])}, "
                             f"expected {shape}")


@register("avdigits")
def load_avdigits(root: str | Path | None = None, audio_standardize: bool = True) -> MultimodalDataset:
    """Images as (n, 28, 28) floats in [0, 1]; audio as (n, 20, 20) MFCCs of the clip paired
    with each image, standardized with the training split's mean and std per coefficient."""
    folder = Path(root) if root is not None else DATA_DIR / "avdigits"
    path = folder / FILE
    if not path.is_file():
        raise FileNotFoundError(f"avdigits: {path} not found; the embedded file ships with the "
                                "project (data/avdigits/), or rebuild it with "
                                "data/avdigits/build_avdigits.py")
    with np.load(path, allow_pickle=False) as z:
        _check(path, z)
        image = torch.from_numpy(z["image"].astype(np.float32) / 255.0)
        audio = torch.from_numpy(z["audio"][z["pair"]].astype(np.float32))
        y = torch.from_numpy(z["label"].astype(np.int64))
        split = torch.from_numpy(z["split"].astype(np.int64))
        info = json.loads(str(z["info"])) if "info" in z.files else {}
        info["audio_clip"] = z["pair"].tolist()
    splits = {s: torch.nonzero(split == k).flatten() for k, s in enumerate(("train", "val", "test"))}
    if audio_standardize:
        tr = audio[splits["train"]]
        audio = (audio - tr.mean(0)) / (tr.std(0) + 1e-6)
    return MultimodalDataset("avdigits", {"image": image, "audio": audio}, y, "multiclass",
                             [str(d) for d in range(10)], splits, info)
