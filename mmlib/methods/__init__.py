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

import torch

from ..data import MultimodalDataset


class Method:
    """Base class: subclasses implement ``fit``, ``predict`` and ``embed``.

    A method is a dataclass whose fields are its hyperparameters (``name``, the registry
    key, aside): :meth:`config` reads them, so a record's method identity is
    ``(name, config())`` and nothing else. State made by ``fit`` (networks, history) is set
    as plain attributes. Methods declare what they read: ``used`` (modalities the fit
    reads) and ``required`` (modalities every predicted row must have), set by ``fit``.
    """

    name = "method"
    history: list[dict]

    def __post_init__(self):
        self.history = []

    def fit(self, data: MultimodalDataset, presence: torch.Tensor, *, seed: int = 0, cfg=None,
            device=None) -> "Method":
        """Train on the training split with ``presence`` (n_train x M). Methods that can select
        on a masked validation split also take ``val_presence`` (n_val x M; None: all present)."""
        raise NotImplementedError

    def predict(self, data: MultimodalDataset, split: str, presence: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, data: MultimodalDataset, split: str, presence: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    # options added after records were written: left out of ``config()`` at the value that reproduces the
    # behaviour before them, so those records stay valid (e.g. ``{"backbone": "cnn"}``)
    implicit: dict = {}

    def config(self) -> dict:
        """The hyperparameters: every dataclass field but ``name`` (and an ``implicit`` option at
        its implicit value)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name" and not (f.name in self.implicit and getattr(self, f.name) == self.implicit[f.name])}

    def used_presence(self, data: MultimodalDataset, presence: torch.Tensor) -> torch.Tensor:
        """The part of the training presence matrix this method's fit depends on (default:
        all of it). Two runs with the same used part, seed and config are the same fit, so
        the record store keeps one (e.g. the lower bound at every missing rate)."""
        return presence


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
