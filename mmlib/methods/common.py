"""Plumbing every method shares, written once: the task's loss and validation score, the
training presence matrix, the two roles of a two-modality method (``x1`` always present,
``x2`` incomplete), and chunked evaluation. No method's algorithm lives here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import MultimodalDataset


# evaluation batch: 256 samples keep a small network's activations in cache (faster on a CPU
# than 1000 at once, the same numbers)
EVAL_CHUNK = 256


def task_loss(task: str, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean",
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy, binary cross-entropy (multilabel) or L1 (regression, as the MOSI
    papers). ``reduction="none"`` gives one loss per sample; ``weight`` (one per sample, 1 or 0:
    the ensemble engine's padding) makes the mean a weighted one."""
    if task == "multiclass":
        loss = F.cross_entropy(out, y, reduction="none")
    elif task == "multilabel":
        loss = F.binary_cross_entropy_with_logits(out, y.float(), reduction="none").mean(1)
    else:
        loss = F.l1_loss(out.squeeze(-1), y.float(), reduction="none")
    if reduction != "mean":
        return loss
    return loss.mean() if weight is None else weighted_mean(loss, weight)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w * v) / sum(w) over the batch (0 for a batch of padding only)."""
    return (values * weight).sum() / weight.sum().clamp(min=1)


def validation_scores(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`validation_score` of several members' outputs at once: ``out`` (K, n, ...) -> (K,)."""
    if task == "multiclass":
        return (out.argmax(-1) == y).float().mean(-1)
    if task == "multilabel":
        pred = (out > 0).float()
        tp = (pred * y).sum((-2, -1))
        return 2 * tp / (pred.sum((-2, -1)) + y.sum()).clamp(min=1)
    return -(out.squeeze(-1) - y).abs().mean(-1)


def validation_score(task: str, out: torch.Tensor, y: torch.Tensor) -> float:
    """Higher is better: accuracy, micro-F1 (multilabel) or minus MAE (regression)."""
    return float(validation_scores(task, out.unsqueeze(0), y)[0])


def full_presence(data: MultimodalDataset, split: str, presence=None) -> torch.Tensor:
    """The presence matrix of a split's rows: as given, or all modalities present."""
    n = len(data.splits[split])
    if presence is None:
        return torch.ones(n, len(data.modalities), dtype=torch.bool)
    presence = torch.as_tensor(presence, dtype=torch.bool)
    if presence.shape != (n, len(data.modalities)):
        raise ValueError(f"presence for split {split!r} must have shape {(n, len(data.modalities))} "
                         f"(rows x modalities {data.modality_names}), got {tuple(presence.shape)}")
    return presence


def two_roles(data: MultimodalDataset, presence: torch.Tensor, x1: str | None, x2: str | None, who: str):
    """For two-modality methods (MLE, SMIL): the always-present modality x1 and the
    incomplete one x2 -- as given, or inferred from the training presence matrix.
    Returns (x1, x2, column of x1, column of x2)."""
    names = data.modality_names
    if x1 is None or x2 is None:
        if len(names) != 2:
            raise ValueError(f"{who}: name x1 and x2 for a dataset with modalities {names}")
        always = [m for j, m in enumerate(names) if bool(presence[:, j].all())]
        if not always:
            raise ValueError(f"{who}: no modality is present in every training sample; "
                             "it needs one always-present modality x1")
        x1 = always[0]
        x2 = [m for m in names if m != x1][0]
    i1, i2 = names.index(data.check_modality(x1)), names.index(data.check_modality(x2))
    if not bool(presence[:, i1].all()):
        raise ValueError(f"{who}: modality x1={x1!r} must be present in every training sample")
    return x1, x2, i1, i2


def two_rows(data: MultimodalDataset, split: str, presence, i1: int, i2: int, who: str, device):
    """The rows of ``split`` (on ``device``) and whether each has x2 (column ``i2``), for a
    two-modality method that needs x1 (column ``i1``) in every row it predicts."""
    idx = data.splits[split].to(device)
    p = full_presence(data, split, presence)
    if not bool(p[:, i1].all()):
        raise ValueError(f"{who} predicts with x1={data.modality_names[i1]!r} present; some rows of {split!r} lack it")
    return idx, p[:, i2].to(device)


@dataclass
class Setup:
    """What :func:`fit_setup` prepares for a method that reads every modality: the device,
    the training presence of every dataset row (``P``: len(data) x M, False outside the
    training split), the training rows (``train``), those with at least one modality
    (``rows``), the validation rows and their presence, the labels."""
    device: torch.device
    P: torch.Tensor
    train: torch.Tensor
    rows: torch.Tensor
    val: torch.Tensor
    val_P: torch.Tensor
    y: torch.Tensor


def fit_setup(method, data: MultimodalDataset, presence, val_presence, seed: int, device,
              task: str = "multiclass") -> Setup:
    """The fit preamble of the methods that read every modality (RedCore, MMIN, CRA, AMAE):
    check the task, choose the device, seed, and put the data there once (``method.X``,
    ``method.L``: the padded sequences' lengths), set ``used`` / ``required``."""
    from ..train import get_device, seed_everything
    if data.task != task:
        raise ValueError(f"{method.name}: a {task} method; {data.name} has task {data.task!r}")
    method.device = dev = get_device(device)
    seed_everything(seed)
    presence = full_presence(data, "train", presence).to(dev)
    method.names, method.used, method.required = list(data.modality_names), list(data.modality_names), []
    method.X = {m: x.to(dev) for m, x in data.modalities.items()}
    method.L = {m: ln.to(dev) for m, ln in data.lengths.items()}
    train = data.splits["train"].to(dev)
    P = torch.zeros(len(data), len(method.names), dtype=torch.bool, device=dev)
    P[train] = presence
    return Setup(dev, P, train, train[presence.any(1)], data.splits["val"].to(dev),
                 full_presence(data, "val", val_presence).to(dev), data.y.to(dev))


def keep_masks(keep: dict | None, names, device) -> dict:
    """A member's input masks as engine tensors: ``{"keep:<modality>": mask}`` (none without ``keep``)."""
    return {} if keep is None else {f"keep:{m}": keep[m].to(device) for m in names}


def read_inputs(X: dict, idx: torch.Tensor, extra: dict, names) -> dict:
    """The rows ``idx`` of the modalities ``names``, each through the member's mask ``extra["keep:<m>"]``
    where it has one (M3S's spans, zeroed: :func:`mmlib.masks.apply_spans`)."""
    return {m: X[m][idx] * extra[f"keep:{m}"][idx] if f"keep:{m}" in extra else X[m][idx] for m in names}


# ----------------------------------------------------------------------------- ensembles
def ensemble_ready(data, d: int, backbone: str, sequence: str) -> bool:
    """Whether a method's fits on ``data`` can train as one ensemble (:mod:`mmlib.engine`): no
    encoder it builds (width ``d``) keeps buffers (the CNNs' BatchNorm does)."""
    from ..models import make_encoder
    return not any(True for x in data.modalities.values()
                   for _ in make_encoder(tuple(x.shape[1:]), d, backbone, sequence).buffers())


def fits_one_by_one(method, data, presences, seeds, cfg, device, val_presences) -> list:
    """``method.fit_seeds`` one (presence, seed) pair at a time: for fits that cannot share an
    ensemble (each is then an ensemble of one, the plain loop)."""
    return [method.fit_seeds(data, [P], [s], cfg=cfg, device=device, val_presences=[vp])[0]
            for P, s, vp in zip(presences, seeds, val_presences)]

