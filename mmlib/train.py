"""One training loop for every method in the book.

- The device is chosen once (:func:`get_device`): CUDA when present, else CPU, or what the
  caller asks for. Data are moved there once; batches are index tensors into them, so a
  training step does no per-sample Python work.
- Everything is seeded (:func:`seed_everything`); on CPU a run is bit-for-bit repeatable
  for a given number of torch threads (sums are ordered differently with more threads;
  ``mmbook sweep`` therefore runs every notebook with one thread).
- Model selection and early stopping use the **validation** split only. (Several authors'
  codes keep the checkpoint with the best *test* accuracy; the book never does.)
"""
from __future__ import annotations

import copy
import math
import numbers
import random
import time
from dataclasses import dataclass, asdict
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> CUDA if available, else CPU; otherwise exactly what is asked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False "
                         "(install a CUDA build of torch, or use device='cpu')")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# The random streams a fit draws besides its own (the fit's seed seeds its initialisation, batch
# order and dropout), each seeded from the fit's seed by one fixed offset, all named here: one
# place to see that no two streams of a method coincide.
STREAMS = {
    "smil:x1-encoder": 1, "smil:complete-batches": 2, "smil:fusion": 3, "smil:aux-init": 4,
    "m3s:support-batches": 1, "m3s:spans": 31,
    "mle:ae-imputation": 1, "hgr:top-up": 17,
    "mmin:teacher": 1, "amae:masks": 5,
    "impute:generator": 7,
}


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one of a fit's further random streams (:data:`STREAMS`)."""
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; streams: {sorted(STREAMS)}")
    return seed + STREAMS[stream]


@dataclass
class TrainConfig:
    """Training budget and optimiser. ``patience`` counts epochs without a better
    validation score before stopping (``None``: run all epochs); no stop comes before
    ``min_epochs`` epochs (a warm-up: a model still at the majority class after a few epochs
    has not reached a plateau, it has not started)."""
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int | None = 5
    progress: bool = False
    min_epochs: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"TrainConfig: {name} must be an integer >= 1, got {v!r}")
        if self.patience is not None and (not isinstance(self.patience, numbers.Integral) or self.patience < 1):
            raise ValueError(f"TrainConfig: patience must be None or an integer >= 1, got {self.patience!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["min_epochs"] == 0:          # (left out at its default: the identities of older records stay valid)
            del d["min_epochs"]
        return d



class Adam:
    """Adam (Kingma & Ba; L2 weight decay added to the gradient, as ``torch.optim.Adam``) on torch's
    fused kernel (one update for all parameters: ~20 % faster epochs for the book's small networks
    on a CPU than the per-parameter loop). The same algorithm and kernel as
    ``torch.optim.Adam(fused=True)``, without ``torch.optim``'s machinery, whose first step imports
    ``torch._dynamo`` (about 3 s of every run's start-up). A parameter without a gradient is left
    as it is, its step count too, as there."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, float(eps)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        for dev in {self.params[i].device for i in have}:       # the kernel takes one device per call
            on = [i for i in have if self.params[i].device == dev]
            steps = [self.steps[i] for i in on]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_([self.params[i] for i in on], [self.params[i].grad for i in on],
                               [self.exp_avg[i] for i in on], [self.exp_avg_sq[i] for i in on], [], steps,
                               amsgrad=False, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                               weight_decay=self.weight_decay, eps=self.eps, maximize=False)


def adam(params, cfg: TrainConfig) -> Adam:
    """:class:`Adam` with the budget's learning rate and weight decay."""
    return Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def batches(idx: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Shuffled (when a generator is given) batches of an index tensor, on idx's device."""
    if generator is not None:
        idx = idx[torch.randperm(len(idx), generator=generator).to(idx.device)]
    return idx.split(batch_size)


class Checkpoint:
    """Model selection on the validation split: keeps the state of the best epoch so far and
    says when ``patience`` epochs have passed without a better score (a plateau).

    ``update(epoch, score, snapshot)`` returns True when training should stop;
    ``snapshot()`` is called only on a new best (e.g. a copy of the state dict)."""

    def __init__(self, patience: int | None, min_epochs: int = 0):
        self.patience, self.min_epochs = patience, min_epochs
        self.best, self.epoch, self.state = -math.inf, -1, None

    def update(self, epoch: int, score: float, snapshot: Callable[[], dict]) -> bool:
        if score > self.best:
            self.best, self.epoch, self.state = score, epoch, snapshot()
        return (self.patience is not None and epoch - self.epoch >= self.patience
                and epoch + 1 >= self.min_epochs)

    def restore(self, model: nn.Module, strict: bool = True) -> nn.Module:
        """Load the best state into ``model`` (in eval mode)."""
        if self.state is not None:
            model.load_state_dict(self.state, strict=strict)
        return model.eval()


def fit(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
        train_idx: torch.Tensor, val_score: Callable[[torch.nn.Module], float], cfg: TrainConfig,
        seed: int = 0, params=None, desc: str = "train", epoch_start=None,
        steps_per_batch: int = 1) -> tuple[torch.nn.Module, list[dict]]:
    """Train ``model`` with Adam on batches of ``train_idx`` (the single-loss case; a method
    with its own algorithm writes its loop from :func:`batches`, :func:`adam` and
    :class:`Checkpoint`, as SMIL's Algorithm 1 does).

    ``loss_fn(model, idx)`` returns the mean loss of the samples ``idx`` (indices into the
    dataset's tensors, on the device); ``val_score(model)`` returns a validation score,
    higher is better, computed in eval mode. The weights of the best validation epoch
    are restored at the end. Returns the model and a history of per-epoch dicts.
    ``epoch_start(epoch)``, if given, runs before each epoch (e.g. to refresh imputed
    inputs between epochs, as a self-training baseline does). ``steps_per_batch``: optimiser steps
    on each batch (the loss tells them apart itself, e.g. M3S's compute-matched settings); the
    history's ``train_loss`` is the mean over every step's rows.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = adam(model.parameters() if params is None else params, cfg)
    keeper, history = Checkpoint(cfg.patience, cfg.min_epochs), []
    bar = tqdm(range(cfg.epochs), desc=desc, disable=not cfg.progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        if epoch_start is not None:
            epoch_start(epoch)
        model.train()
        total, count = 0.0, 0
        for idx in batches(train_idx, cfg.batch_size, gen):
            for _ in range(steps_per_batch):
                loss = loss_fn(model, idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
        model.eval()
        with torch.no_grad():
            score = float(val_score(model))
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_score": score,
                        "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{total / max(count, 1):.3f}", val=f"{score:.3f}")
        if keeper.update(epoch, score, lambda: copy.deepcopy(model.state_dict())):
            break
    return keeper.restore(model), history


# ----------------------------------------------------------------------------- dropout streams
class DropoutStream:
    """Uniform noise for dropout masks from a generator of its own, seeded per fit (CPU, so
    a seed gives the same masks on any device)."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(int(seed) + 7919)

    def draw(self, shape, device):
        return torch.rand(shape, generator=self.gen).to(device)


class Call(nn.Module):
    """Wraps a model so that ``torch.func.functional_call`` can run any function of it
    (``Call(model, fn)(*args)`` is ``fn(model, *args)``)."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args):
        return self.fn(self.model, *args)
