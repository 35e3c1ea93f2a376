"""Checking a user's data folder before reading it, with messages that name the problem.

Every real-format reader declares what it expects (files, keys, shapes, dtypes) through
these helpers. ``mmbook data check NAME ROOT`` runs the same checks and prints every
problem at once; the readers run them first and raise :class:`DataFolderError` listing
them, so a wrong folder never fails halfway through a load with an obscure error.

Arrays are inspected without reading them whole: ``.npy`` files are memory-mapped, HDF5
datasets are opened lazily, and the finite-value scan reads them in blocks of rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class DataFolderError(ValueError):
    """A data folder that is not in the expected layout; ``problems`` lists each one."""

    def __init__(self, name: str, root, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{name}: the folder {root} is not in the expected layout "
                         f"({len(self.problems)} problem(s)):\n{lines}")


class Checker:
    """Collects problems while a folder is inspected."""

    def __init__(self, name: str, root):
        if root is None:
            raise ValueError(f"{name}: give the folder with the real data (data_root / --data-root); "
                             "nothing is downloaded")
        self.name, self.root, self.problems = name, Path(root), []
        if not self.root.is_dir():
            self.problems.append(f"{self.root}: no such folder")

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def file(self, rel: str) -> Path | None:
        """The path of a required file, or None (and a problem) when it is missing."""
        p = self.root / rel
        if not p.is_file():
            self.add(f"{rel}: missing file")
            return None
        return p

    def array(self, where: str, arr, shape: tuple, kind: str = "numeric", finite: bool = True) -> bool:
        """Check an array-like's shape (``None`` matches any size) and dtype kind
        (``"numeric"``, ``"float"``, ``"int"``, ``"bytes"``); scan for NaN/inf when asked."""
        ok = True
        if len(arr.shape) != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
            want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
            self.add(f"{where}: shape {tuple(arr.shape)}, expected {want}")
            ok = False
        dk = np.dtype(arr.dtype).kind
        kinds = {"numeric": "fiub", "float": "f", "int": "iub", "bytes": "SUO"}[kind]
        if dk not in kinds:
            self.add(f"{where}: dtype {arr.dtype}, expected {kind}")
            ok = False
        if ok and finite and dk == "f" and not all_finite(arr):
            self.add(f"{where}: contains NaN or infinite values")
            ok = False
        return ok

    def raise_if_any(self) -> None:
        if self.problems:
            raise DataFolderError(self.name, self.root, self.problems)


def all_finite(arr, block: int = 4096) -> bool:
    """True when every value is finite; reads ``block`` rows at a time."""
    if not len(arr.shape):
        return bool(np.isfinite(np.asarray(arr)).all())
    for s in range(0, arr.shape[0], block):
        if not np.isfinite(np.asarray(arr[s:s + block])).all():
            return False
    return True


class UnreadableFile(ValueError):
    """A file that exists but cannot be read as its format; the message names it and the cause."""


def npy(path: Path):
    """A memory-mapped view of a .npy file (nothing read yet); an unreadable file raises
    :class:`UnreadableFile` naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UnreadableFile(f"{path}: not a readable .npy file ({e})") from e


def h5(path: Path):
    """An open HDF5 file (use it in a ``with``); an unreadable one raises :class:`UnreadableFile`
    naming it (h5py's own message does not)."""
    h5py = require_h5py()
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise UnreadableFile(f"{path}: not a readable HDF5 file ({e})") from e


def require_h5py():
    try:
        import h5py
    except ImportError as e:                                   # pragma: no cover
        raise ImportError("reading HDF5 files needs h5py (pip install h5py)") from e
    return h5py


def pad_sequences(seqs: list[np.ndarray], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, D) zero-padded at the end, and the true lengths (capped at ``max_len``)."""
    lengths = np.array([min(len(s), max_len or len(s)) for s in seqs], dtype=np.int64)
    T = int(lengths.max()) if len(lengths) else 0
    D = seqs[0].shape[1] if seqs else 0
    out = np.zeros((len(seqs), T, D), dtype=np.float32)
    for i, s in enumerate(seqs):
        out[i, :lengths[i]] = s[:lengths[i]]
    return out, lengths
