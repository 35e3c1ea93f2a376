"""Methods: every paper's method and every baseline has the same small interface.

.. code-block:: python

    method = make_method("zp_concat")                      # or "smil", "mle", ...
    method.fit(data, presence, seed=0, cfg=TrainConfig(), device=device)
    scores = method.predict(data, "test", presence=None)   # logits / scores, on the CPU
    emb = method.embed(data, "test")                       # features for t-SNE

``presence`` is the boolean (n_train x n_modalities) matrix of the training split (rows in
the order of ``data.splits["train"]``); at prediction time it is the matrix of the split
being predicted (default: every modality present). One harness can run any method.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
from pathlib import Path

import torch

from ..data import MultimodalDataset


class Method:
    """Base class: subclasses implement ``fit``, ``predict`` and ``embed``.

    A method is a dataclass whose fields are its hyperparameters (``name``, the registry
    key, aside): :meth:`config` reads them, so a record's method identity is
    ``(name, config())`` and nothing else. State made by ``fit`` (networks, history) is set
    as plain attributes.

    What the harness (:mod:`mmlib.experiment`) reads of a method is declared here, with its
    default; a method overrides what it has (the harness probes nothing):

    - ``used`` / ``required``: the modalities the fit reads and those every predicted row must
      have, set by ``fit`` (default: every modality, none required): :meth:`used_modalities`;
    - ``masked_validation``: ``fit`` selects on a masked validation split (its ``val_presence``);
      a method that cannot says False and the harness refuses ``val_missing`` for it;
    - ``reads_data_at_predict``: ``predict`` reads the data it is given, so the method can be
      scored on a corrupted copy of the test split (M3S's spans);
    - ``history`` (one dict per epoch), ``trace`` (per update, e.g. RedCore's RA and eta) and
      ``warm_starts`` (SMIL's warm-start fits): written into the record when not empty;
    - ``embeds_modalities`` with :meth:`embed_modality`: one modality's embedding, for the
      modality gap;
    - :meth:`batchable` with :meth:`fit_seeds`: several (presence, seed) fits trained as one
      ensemble (:mod:`mmlib.engine`); ``data_per_member``: ``fit_seeds`` also takes one dataset per
      member (each seed's corrupted copy: M3S), so its fits batch under a corruption too;
    - ``shared_dir``: a folder where a fit keeps, and finds, fits it shares with other runs (SMIL's
      warm starts, shared by its variants at one setting); the harness sets it to its record
      store's ``shared/`` folder (None: nothing kept).
    """

    name = "method"
    history: list[dict]
    used: list[str] | None = None
    required: tuple[str, ...] | list[str] = ()
    device: torch.device | None = None            # where ``fit`` put the model
    masked_validation = True
    reads_data_at_predict = False
    trace: list[dict] | None = None
    warm_starts: dict | None = None
    embeds_modalities = False
    data_per_member = False
    shared_dir: str | None = None

    def __post_init__(self):
        self.history = []

    def fit(self, data: MultimodalDataset, presence: torch.Tensor, *, seed: int = 0, cfg=None,
            device=None, val_presence: torch.Tensor | None = None) -> "Method":
        """Train on the training split with ``presence`` (n_train x M), selecting the epoch on
        the validation split masked by ``val_presence`` (n_val x M; None: all present)."""
        raise NotImplementedError

    def predict(self, data: MultimodalDataset, split: str, presence: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, data: MultimodalDataset, split: str, presence: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def embed_modality(self, data: MultimodalDataset, split: str, modality: str) -> torch.Tensor:
        """One modality's embedding of ``split`` (methods with ``embeds_modalities``)."""
        raise NotImplementedError(f"{self.name} has no per-modality embedding")

    def used_modalities(self, names: list[str]) -> list[str]:
        """The modalities of ``names`` the fit read, in ``names``' order (default: all)."""
        return [n for n in names if self.used is None or n in self.used]

    def batchable(self, data: MultimodalDataset | None = None) -> bool:
        """Whether several fits on ``data`` can train as one ensemble (:meth:`fit_seeds`)."""
        return False

    def fit_seeds(self, data: MultimodalDataset, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None) -> list["Method"]:
        """Fit one copy per (presence, seed) pair as one ensemble; return the fitted copies."""
        raise NotImplementedError(f"{self.name} does not train as an ensemble (batchable() is False)")

    # options added after records were written: left out of ``config()`` at the value that reproduces the
    # behaviour before them, so those records stay valid (e.g. ``{"backbone": "cnn"}``)
    implicit: dict = {}

    def config(self) -> dict:
        """The hyperparameters: every dataclass field but ``name`` (and an ``implicit`` option at
        its implicit value)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name" and not (f.name in self.implicit and getattr(self, f.name) == self.implicit[f.name])}

    def code_modules(self) -> list[str]:
        """The files of ``mmlib`` whose code decides what this method's fit gives: the modules of its
        class and of every base class, the modules they import (at module level, transitively;
        the data's readers aside: the data's fingerprint covers them) and :data:`TRAINING_CODE`.
        A method that trains another adds that one's (M3S its base's)."""
        return list(_class_files(type(self)))

    def code_version(self) -> str:
        """A hash of :meth:`code_modules`' sources: part of a record's identity, so a record written by
        other code than today's is not read as today's (a change to one method's file refits that
        method's records only)."""
        return _hash_files(tuple(self.code_modules()))

    def used_presence(self, data: MultimodalDataset, presence: torch.Tensor) -> torch.Tensor:
        """The part of the training presence matrix this method's fit depends on (default:
        all of it). Two runs with the same used part, seed and config are the same fit, so
        the record store keeps one (e.g. the lower bound at every missing rate)."""
        return presence


@functools.lru_cache(maxsize=None)
def _class_files(cls) -> tuple[str, ...]:
    """The files of a method class's modules and its bases', with what they import, and the training code."""
    root = Path(__file__).resolve().parents[1]
    files = set(TRAINING_CODE)
    for c in cls.__mro__:
        mod = sys.modules.get(c.__module__)
        if c.__module__.startswith("mmlib") and getattr(mod, "__file__", None):
            files |= _imports_of(str(Path(mod.__file__).resolve().relative_to(root)))
    return tuple(sorted(files))


@functools.lru_cache(maxsize=None)
def _hash_files(rels: tuple[str, ...]) -> str:
    """A hash of these mmlib files' paths and contents (read once per process)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for rel in rels:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def _imports_of(rel: str) -> frozenset[str]:
    seen: set[str] = set()
    _imported(rel, seen)
    return frozenset(seen)


def _imported(rel: str, seen: set | None = None) -> set[str]:
    """``rel`` (a path inside mmlib/) and the mmlib modules it imports at module level, transitively,
    ``data/`` left out."""
    import ast
    root = Path(__file__).resolve().parents[1]
    seen = set() if seen is None else seen
    if rel in seen or rel.startswith("data/"):
        return seen
    seen.add(rel)
    pkg = Path(rel).parent
    for node in ast.parse((root / rel).read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = pkg
            for _ in range(node.level - 1):
                base = base.parent
            parts = (node.module or "").split(".") if node.module else []
            targets = [base.joinpath(*parts)] if parts else [base / a.name for a in node.names]
            for t in targets:
                for cand in (t.with_suffix(".py"), t / "__init__.py"):
                    if (root / cand).is_file():
                        _imported(cand.as_posix(), seen)
                        break
    return seen


# the code every fit runs through besides its method's own modules (paths inside mmlib/)
TRAINING_CODE = ("train.py", "engine.py", "masks.py", "metrics.py", "models/__init__.py", "methods/__init__.py",
                 "methods/common.py")


def decide(task: str, scores: torch.Tensor) -> torch.Tensor:
    """Turn a method's scores into predictions: argmax, sigmoid > 0.5, or the value itself."""
    if task == "multiclass":
        return scores.argmax(1)
    if task == "multilabel":
        return (scores > 0).long()
    return scores.squeeze(-1)


def _registry() -> dict:
    from . import balance, baselines, generative, m3s, misa, mla, mle, mmin, redcore, smil
    return {**baselines.BASELINES, **generative.METHODS, **mle.METHODS, **smil.METHODS, **redcore.METHODS,
            **mmin.METHODS, **m3s.METHODS, **misa.METHODS, **balance.METHODS, **mla.METHODS}


def available() -> list[str]:
    return sorted(_registry())


def make_method(name: str, **kwargs) -> Method:
    """A fresh method object by name; an unknown name lists the known ones."""
    reg = _registry()
    if name not in reg:
        raise ValueError(f"unknown method {name!r}; available: {sorted(reg)}")
    return reg[name](**kwargs)
