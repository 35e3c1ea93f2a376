"""Datasets: one container type, one registry.

Every dataset, embedded or read from a user's folder, becomes a :class:`MultimodalDataset`:
named modalities as tensors (first dimension = samples), labels, a task type and fixed
train/val/test indices. Methods never see files, only this object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

TASKS = ("multiclass", "multilabel", "regression")


@dataclass
class MultimodalDataset:
    """Named modalities as tensors plus labels and a fixed split.

    Attributes
    ----------
    name : dataset name, e.g. ``"avdigits"``.
    modalities : ``{modality name: tensor of shape (n_samples, ...)}``, in a fixed order
        (the column order of presence matrices).
    y : labels, ``(n,)`` int64 for multiclass, ``(n, n_classes)`` float for multilabel,
        ``(n,)`` float for regression.
    task : one of ``"multiclass"``, ``"multilabel"``, ``"regression"``.
    class_names : names of the classes (empty for regression).
    splits : ``{"train": idx, "val": idx, "test": idx}``, disjoint int64 index tensors.
    info : free-form provenance (build recipe, source files, licences).
    lengths : ``{modality: (n,) int64}`` true lengths of zero-padded sequence modalities
        (real datasets; empty for fixed-size ones).
    """

    name: str
    modalities: dict[str, torch.Tensor]
    y: torch.Tensor
    task: str
    class_names: list[str]
    splits: dict[str, torch.Tensor]
    info: dict = field(default_factory=dict)
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        n = len(self.y)
        for m, x in self.modalities.items():
            if len(x) != n:
                raise ValueError(f"modality {m!r} has {len(x)} samples but there are {n} labels")
        for s in ("train", "val", "test"):
            if s not in self.splits:
                raise ValueError(f"split {s!r} is missing (have {sorted(self.splits)})")
        for m, ln in self.lengths.items():
            if m not in self.modalities or ln.shape != (n,):
                raise ValueError(f"lengths of {m!r} must be a ({n},) tensor of a sequence modality")
        seen = torch.zeros(n, dtype=torch.bool)
        for s, idx in self.splits.items():
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"split {s!r} has indices outside [0, {n})")
            if seen[idx].any():
                raise ValueError(f"split {s!r} overlaps another split")
            seen[idx] = True

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "MultimodalDataset":
        """The same dataset with every tensor on ``device`` (done once, before training)."""
        return MultimodalDataset(
            self.name, {m: x.to(device) for m, x in self.modalities.items()}, self.y.to(device),
            self.task, self.class_names, {s: i.to(device) for s, i in self.splits.items()}, self.info,
            {m: ln.to(device) for m, ln in self.lengths.items()})

    def with_spans(self, kept: dict[str, torch.Tensor], keep_clean: bool = False) -> "MultimodalDataset":
        """The same dataset with what the span masks ``kept`` hide set to zero (see
        :func:`mmlib.masks.span_masks`). ``keep_clean``: the uncorrupted features stay
        reachable as ``info["clean"]`` (only a method that is *meant* to see them reads it)."""
        from ..masks import apply_spans
        mods = {m: (apply_spans(x, kept[m]) if m in kept else x) for m, x in self.modalities.items()}
        info = {**self.info, **({"clean": self.modalities} if keep_clean else {})}
        return MultimodalDataset(self.name, mods, self.y, self.task, self.class_names, self.splits, info, self.lengths)

    def select(self, modalities: list[str]) -> "MultimodalDataset":
        """The same samples with only the named modalities (in the order given)."""
        for m in modalities:
            self.check_modality(m)
        if not modalities:
            raise ValueError("select at least one modality")
        return MultimodalDataset(self.name, {m: self.modalities[m] for m in modalities}, self.y, self.task,
                                 self.class_names, self.splits, {**self.info, "modalities": list(modalities)},
                                 {m: ln for m, ln in self.lengths.items() if m in modalities})

    def fingerprint(self) -> str:
        """A short hash of what identifies this data for a run record: name, split indices,
        labels, modality shapes and any generator spec. Two datasets that differ in any of
        them (another preset, another training subset) never share a record."""
        import hashlib
        import json
        h = hashlib.sha1(self.name.encode())
        for s in ("train", "val", "test"):
            h.update(self.splits[s].cpu().numpy().tobytes())
        h.update(self.y.cpu().numpy().tobytes())
        for m, x in self.modalities.items():
            h.update(f"{m}{tuple(x.shape)}".encode())
        if "spec" in self.info:
            h.update(json.dumps(self.info["spec"], sort_keys=True, default=str).encode())
        return h.hexdigest()[:12]

    def with_train_subset(self, n: int, seed: int = 0) -> "MultimodalDataset":
        """The same dataset with a stratified random subset of ``n`` training samples
        (validation and test unchanged). Multiclass only; the subset depends on ``seed``."""
        train = self.splits["train"]
        if not 0 < n <= len(train):
            raise ValueError(f"train subset size must be in [1, {len(train)}], got {n}")
        if n == len(train):
            return self
        if self.task != "multiclass":
            raise ValueError("with_train_subset stratifies by class: multiclass datasets only")
        g = torch.Generator().manual_seed(seed)
        y = self.y[train].cpu()
        keep = []
        for c in range(self.n_classes):
            idx = torch.nonzero(y == c).flatten()
            k = round(n * len(idx) / len(train))
            keep.append(idx[torch.randperm(len(idx), generator=g)[:k]])
        sub = train[torch.sort(torch.cat(keep)).values.to(train.device)]
        return MultimodalDataset(self.name, self.modalities, self.y, self.task, self.class_names,
                                 {**self.splits, "train": sub}, {**self.info, "train_subset": n}, self.lengths)

    def check_modality(self, modality: str) -> str:
        if modality not in self.modalities:
            raise ValueError(f"unknown modality {modality!r} for dataset {self.name!r}; "
                             f"it has {self.modality_names}")
        return modality

    def need_modalities(self, n: int, why: str) -> "MultimodalDataset":
        """This dataset, if it has at least ``n`` modalities; else a ValueError that says why
        they are needed and what the dataset has."""
        if len(self.modalities) < n:
            raise ValueError(f"{why}: it needs a dataset with at least {n} modalities; {self.name!r} has "
                             f"{len(self.modalities)} ({self.modality_names})")
        return self

    def summary(self) -> str:
        mods = ", ".join(f"{m} {tuple(x.shape[1:])}" for m, x in self.modalities.items())
        sizes = ", ".join(f"{s} {len(i)}" for s, i in self.splits.items())
        return f"{self.name}: {self.task}, {self.n_classes} classes; modalities: {mods}; splits: {sizes}"


DATA_DIR = Path(__file__).resolve().parents[2] / "data"
_REGISTRY: dict[str, Callable[..., MultimodalDataset]] = {}


def register(name: str):
    """Decorator: make ``load_dataset(name, root)`` call the decorated builder."""
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def load_dataset(name: str, root: str | Path | None = None, **kwargs) -> MultimodalDataset:
    """Load a dataset by name. ``root`` is a folder with the real data (for readers of real
    benchmarks) or ``None`` for the embedded copy in the project's ``data/`` folder."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {available()}")
    return _REGISTRY[name](root=root, **kwargs)


def reader_options(name: str) -> list[str]:
    """The options a dataset's reader takes (its keyword arguments besides ``root``)."""
    import inspect
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {available()}")
    return [p for p, v in inspect.signature(_REGISTRY[name]).parameters.items()
            if p != "root" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]


_CHECKS: dict[str, Callable[..., list[str]]] = {}


def register_check(name: str):
    """Decorator: the folder check of a real-format reader (returns a list of problems)."""
    def deco(fn):
        _CHECKS[name] = fn
        return fn
    return deco


def check_folder(name: str, root: str | Path, **kwargs) -> list[str]:
    """Every problem of ``root`` as a folder of dataset ``name`` (empty list: it looks right).
    Reads file headers and scans arrays in blocks; it does not load the dataset."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {available()}")
    if name not in _CHECKS:
        raise ValueError(f"{name!r} is embedded in the project, not read from a folder; "
                         f"folders can be checked for {sorted(_CHECKS)}")
    from .checks import UnreadableFile
    try:
        return _CHECKS[name](root, **kwargs)
    except UnreadableFile as e:                  # a corrupt file: named, with the cause
        return [str(e)]


from . import affect, avdigits, gaussian  # noqa: E402,F401  (registers the embedded datasets)
from . import avmnist, features, mla_sets, mmimdb, mmin, mosi  # noqa: E402,F401  (registers the real-format readers)
