"""MM-IMDb from a user's folder: the ``multimodal_imdb.hdf5`` file (Arevalo et al., 2017).

``mmimdb``::

    ROOT/multimodal_imdb.hdf5
        features       (25959, 300)   mean word2vec of the plot              (text)
        vgg_features   (25959, 4096)  VGG-16 features of the poster          (image)
        genres         (25959, 23)    multi-hot genres

The standard split by index (Arevalo et al.; MultiBench): train [0, 15552), validation
[15552, 18160), test [18160, 25959); ``split_at`` moves the two boundaries (for a subset
of the file). The raw posters and word sequences in the file are not read. A multi-label
task: the methods use a sigmoid per genre, and the chapters report F1 samples and F1
micro (SMIL's Table 2).
"""
from __future__ import annotations

import numpy as np
import torch

from . import MultimodalDataset, register, register_check
from .checks import Checker, h5

FILE = "multimodal_imdb.hdf5"
KEYS = {"features": ("text", 300), "vgg_features": ("image", 4096)}
GENRES = ["Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
          "Musical", "Western", "Sport", "Short", "Film-Noir"]
SPLIT_AT = (15552, 18160)


def _split_at(split_at) -> tuple[int, int]:
    try:
        if isinstance(split_at, (str, bytes)):
            raise TypeError
        a, b = (int(x) for x in split_at)
        if [a, b] != [float(x) for x in split_at]:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"mmimdb: split_at must be two integers (validation start, test start), got {split_at!r}") from None
    return a, b


def _check(root, split_at=SPLIT_AT) -> Checker:
    c = Checker("mmimdb", root)
    f = c.file(FILE)
    if f is None:
        return c
    with h5(f) as h:
        n = None
        if "genres" not in h:
            c.add(f"{FILE}: key 'genres' is missing (have {sorted(h.keys())})")
        elif c.array(f"{FILE}['genres']", h["genres"], (None, len(GENRES)), "numeric"):
            n = h["genres"].shape[0]
            g = np.asarray(h["genres"][()])
            if g.size and not np.isin(g, (0, 1)).all():
                c.add(f"{FILE}['genres']: multi-hot 0/1 expected, found values {sorted(set(np.unique(g).tolist()) - {0, 1})[:5]}")
        for k, (_, dim) in KEYS.items():
            if k not in h:
                c.add(f"{FILE}: key {k!r} is missing (have {sorted(h.keys())})")
            else:
                c.array(f"{FILE}[{k!r}]", h[k], (n, dim), "float")
        a, b = split_at
        if n is not None and not 0 < a < b < n:
            c.add(f"{FILE}: {n} movies cannot be split at {a} and {b} (train [0, {a}), val [{a}, {b}), "
                  f"test [{b}, {n})); give split_at for a subset of the file")
    return c


@register_check("mmimdb")
def check_mmimdb(root, split_at=SPLIT_AT, **_) -> list[str]:
    return _check(root, _split_at(split_at)).problems


@register("mmimdb")
def load_mmimdb(root=None, split_at=SPLIT_AT) -> MultimodalDataset:
    split_at = _split_at(split_at)
    c = _check(root, split_at)
    c.raise_if_any()
    with h5(c.root / FILE) as h:
        mods = {m: torch.from_numpy(h[k][()].astype(np.float32)) for k, (m, _) in KEYS.items()}
        y = torch.from_numpy((h["genres"][()] > 0).astype(np.float32))
    n, (a, b) = len(y), split_at
    splits = {"train": torch.arange(0, a), "val": torch.arange(a, b), "test": torch.arange(b, n)}
    return MultimodalDataset("mmimdb", {"image": mods["image"], "text": mods["text"]}, y, "multilabel", GENRES,
                             splits, {"source": FILE, "root": str(root), "split_at": list(split_at)})
