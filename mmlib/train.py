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

from .models import noise_stream


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



def adam(params, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the fused kernel (one update for all parameters: ~20 % faster epochs for
    the book's small networks on a CPU than the per-parameter loop, the same algorithm)."""
    params = list(params)
    fused = all(isinstance(p, torch.Tensor) and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


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
        seed: int = 0, params=None, desc: str = "train", epoch_start=None) -> tuple[torch.nn.Module, list[dict]]:
    """Train ``model`` with Adam on batches of ``train_idx`` (the single-loss case; a method
    with its own algorithm writes its loop from :func:`batches`, :func:`adam` and
    :class:`Checkpoint`, as SMIL's Algorithm 1 does).

    ``loss_fn(model, idx)`` returns the mean loss of the samples ``idx`` (indices into the
    dataset's tensors, on the device); ``val_score(model)`` returns a validation score,
    higher is better, computed in eval mode. The weights of the best validation epoch
    are restored at the end. Returns the model and a history of per-epoch dicts.
    ``epoch_start(epoch)``, if given, runs before each epoch (e.g. to refresh imputed
    inputs between epochs, as a self-training baseline does).
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


class _Listed:
    """Hands out pre-drawn noise tensors in call order (inside a batched step)."""

    def __init__(self, tensors):
        self.tensors = list(tensors)

    def draw(self, shape, device):
        u = self.tensors.pop(0)
        if tuple(u.shape) != tuple(shape):
            raise RuntimeError(f"dropout noise of shape {tuple(u.shape)} drawn for an input of shape {shape}")
        return u


class _Recorder:
    def __init__(self):
        self.shapes = []

    def draw(self, shape, device):
        self.shapes.append(tuple(shape))
        return torch.ones(shape, device=device)


class _Call(nn.Module):
    """Wraps a model so that ``torch.func.functional_call`` can run any function of it."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args):
        return self.fn(self.model, *args)


def fit_batched(models: list[nn.Module], loss_fn: Callable, rows: list[torch.Tensor], extras: list,
                val_logits: Callable, val_score: Callable, cfg: TrainConfig, seeds: list[int],
                desc: str = "train") -> tuple[list[nn.Module], list[list[dict]]]:
    """Train several seeds of one network at once: their weights stacked along a new first
    dimension and every step ``torch.func.vmap``-ed over it (one call per layer instead of
    one per seed and layer: faster for small MLPs, see ``make benchmark``).

    Each member keeps what :func:`fit` with its seed would give it: its initialisation
    (``models[s]``, built after seeding), its rows and extra inputs (``rows[s]``,
    ``extras[s]``, e.g. its presence matrix), its batch order and dropout masks (its own
    generators, drawn in the same order) and its early stopping and best epoch; Adam is
    elementwise, so one optimiser over the stacked weights is one per member. Only the
    floating-point order of the batched matrix products differs, so results agree with
    sequential fits to rounding (a test checks it). ``loss_fn(model, idx, extra)`` is the
    per-member loss; ``val_logits(model, extra)`` the validation outputs (no Python control flow
    on values; ``extra`` lets each member score its own masked validation split), scored per
    member by ``val_score(logits)``. Members need equal row counts and
    no buffers (no BatchNorm)."""
    from torch.func import functional_call, stack_module_state, vmap
    S = len(models)
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"fit_batched needs the same number of training rows per member, got {[len(r) for r in rows]}")
    if any(True for _ in models[0].buffers()):
        raise ValueError("fit_batched needs models without buffers (BatchNorm): fit them one by one")
    for m in models:
        m.train()
    params, _ = stack_module_state(models)
    base = _Call(copy.deepcopy(models[0]).to("meta"), loss_fn).train()
    vbase = _Call(copy.deepcopy(models[0]).to("meta"), val_logits).eval()
    names = {k: "model." + k for k in params}
    opt = adam(params.values(), cfg)
    order = [torch.Generator().manual_seed(s) for s in seeds]           # batch order, as fit()
    drops = [DropoutStream(s) for s in seeds]
    # the dropout layers' input shapes in call order; a first dimension that follows the batch
    # size (found by two dry runs) is None, others (e.g. a fixed support set) are kept
    recs = []
    for bs in (2, 3):
        rec = _Recorder()
        with noise_stream(rec), torch.no_grad():
            loss_fn(models[0], rows[0][:bs], extras[0])
        recs.append(rec.shapes)
    shapes = [(None, *a[1:]) if a[0] != b[0] else a for a, b in zip(*recs)]
    if isinstance(extras[0], dict):              # several per-member tensors, stacked key by key
        stacked_extra = {k: torch.stack([e[k] for e in extras]) for k in extras[0]}
    else:
        stacked_extra = torch.stack(extras)

    def member_loss(p, idx, extra, *noise):
        with noise_stream(_Listed(noise)):
            return functional_call(base, {names[k]: v for k, v in p.items()}, (idx, extra))

    def member_val(p, extra):
        return functional_call(vbase, {names[k]: v for k, v in p.items()}, (extra,))

    step = vmap(member_loss)
    val = vmap(member_val)
    keepers = [Checkpoint(cfg.patience, cfg.min_epochs) for _ in range(S)]
    stopped, histories = [False] * S, [[] for _ in range(S)]
    n = len(rows[0])
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        perms = [r[torch.randperm(n, generator=g).to(r.device)] for r, g in zip(rows, order)]
        totals = torch.zeros(S)
        for b in range(0, n, cfg.batch_size):
            idx = torch.stack([p[b:b + cfg.batch_size] for p in perms])
            bs = idx.shape[1]
            noise = [torch.stack([d.draw((bs, *shp[1:]) if shp[0] is None else shp, idx.device) for d in drops])
                     for shp in shapes]
            losses = step(params, idx, stacked_extra, *noise)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            totals += losses.detach().cpu() * bs
        with torch.no_grad():
            logits = val({k: v.detach() for k, v in params.items()}, stacked_extra)
        seconds = (time.perf_counter() - t0) / S
        for s in range(S):
            if stopped[s]:
                continue
            score = float(val_score(logits[s]))
            histories[s].append({"epoch": epoch, "train_loss": float(totals[s]) / n, "val_score": score,
                                 "seconds": seconds, "batched": S})
            stopped[s] = keepers[s].update(epoch, score, lambda: {k: v[s].detach().clone() for k, v in params.items()})
        if all(stopped):
            break
    for keeper, m in zip(keepers, models):
        keeper.restore(m, strict=False)
    return models, histories
