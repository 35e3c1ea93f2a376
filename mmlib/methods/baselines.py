"""Baselines every chapter compares against, usable like any method.

- ``lower_bound``: train on the modalities present in *every* training sample only
  (e.g. images alone when audio is missing for some samples); the other samples' extra
  modality is thrown away.
- ``upper_bound``: all modalities, nothing missing -- trained on the complete training
  split whatever the missing pattern (the best one could hope for).
- ``zp_concat`` / ``zp_sum``: zero padding. Missing inputs are replaced by zeros and a
  concat / sum fusion network is trained on every training sample.
- ``late_fusion``: one encoder and classifier per modality, each trained on the samples
  that have its modality; at test time, the mean of the present modalities' logits.

All of them are a :class:`~mmlib.models.MultimodalNet` trained by :func:`mmlib.train.fit`
with the task's loss, selected on the validation split with every (used) modality present.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..data import MultimodalDataset
from ..models import MultimodalNet
from ..train import TrainConfig, get_device, seed_everything
from . import Method
from .common import EVAL_CHUNK, ensemble_ready, full_presence, keep_masks, read_inputs, task_loss, validation_scores


@dataclass(eq=False)
class FusionBaseline(Method):
    """A :class:`MultimodalNet` over ``use`` modalities (None: all) trained on the training
    rows that have at least one of them, missing inputs zeroed.

    ``ignore_missing=True`` trains as if nothing were missing (the upper bound).
    ``use="always_present"`` picks the modalities present in every training sample.
    """
    reads_data_at_predict = True      # predict() reads the data it is given (e.g. a corrupted test copy)
    embeds_modalities = True          # embed_modality(): the modality gap in the record
    name: str = "zp_concat"
    fusion: str = "concat"
    use: list | str | None = None
    ignore_missing: bool = False
    feat_dim: int = 64
    hidden: int = 64
    backbone: str = "cnn"
    sequence: str = "pooled"

    def used_presence(self, data: MultimodalDataset, presence: torch.Tensor) -> torch.Tensor:
        """The part of the training presence matrix the fit depends on: the columns of the
        modalities it uses (all present for the lower bound), nothing for the upper bound."""
        presence = full_presence(data, "train", presence)
        if self.ignore_missing:
            return torch.ones(len(presence), 0, dtype=torch.bool)
        return presence[:, self._columns(data, presence)]

    def _columns(self, data: MultimodalDataset, presence: torch.Tensor) -> list[int]:
        names = data.modality_names
        if self.use is None:
            return list(range(len(names)))
        if self.use == "always_present":
            cols = [j for j in range(len(names)) if bool(presence[:, j].all())]
            if not cols:
                raise ValueError("lower_bound: no modality is present in every training sample "
                                 f"(present fractions {presence.float().mean(0).tolist()})")
            return cols
        return [names.index(data.check_modality(m)) for m in self.use]

    def _setup(self, data, presence, seed, device, val_presence=None, inputs=None, keep=None):
        """Seed, choose the columns, build the network; return the member's tensors (``extra``:
        ``P``, the (len(data), columns) presence of the training and validation rows), the rows
        with something usable, and the pieces of the loop: the loss of a batch and the
        validation outputs. ``inputs``: the ``(X, L)`` an earlier set-up of the same method on the
        same data prepared (``_tensors[:2]``), reused for the modalities it has. ``keep``: masks
        every input is read through (:func:`read_inputs`; M3S's spans)."""
        self.device = get_device(device)
        seed_everything(seed)
        train = data.splits["train"]
        presence = full_presence(data, "train", presence)
        if self.ignore_missing:
            presence = torch.ones_like(presence)
        self.cols = self._columns(data, presence)
        self.used = [data.modality_names[j] for j in self.cols]
        self.task = data.task
        n_out = data.n_classes if data.task != "regression" else 1
        shapes = {m: tuple(data.modalities[m].shape[1:]) for m in self.used}
        self.model = MultimodalNet(self.used, shapes, n_out, self.fusion, self.feat_dim, self.hidden,
                                   self.backbone, self.sequence, self._head_options(data)).to(self.device)

        if inputs is not None and set(self.used) <= set(inputs[0]):
            X, L = ({m: inputs[0][m] for m in self.used}, {m: ln for m, ln in inputs[1].items() if m in self.used})
        else:
            X = {m: data.modalities[m].to(self.device) for m in self.used}
            L = {m: data.lengths[m].to(self.device) for m in self.used if m in data.lengths}   # padded sequences
            if keep is None:   # parameter-free input transforms (pooled statistics) once per dataset
                X, L = self.model.transform_inputs(X, L)
        y = data.y.to(self.device)
        train = train.to(self.device)
        P = torch.zeros(len(data), len(self.cols), dtype=torch.bool, device=self.device)
        P[train] = presence[:, self.cols].to(self.device)
        rows = train[P[train].any(1)]                                    # drop rows with nothing usable
        val = data.splits["val"].to(self.device)
        P[val] = full_presence(data, "val", val_presence)[:, self.cols].to(self.device)   # selection: as it is
        self._tensors = (X, L, y)                  # for subclasses that write their own loss (OGM-GE, QMF)
        self._train = train
        late, task, ncols = self.fusion == "late", self.task, len(self.cols)
        extra = {"P": P, **keep_masks(keep, self.used, self.device)}

        def loss_fn(model, idx, weight, e):
            """The task's loss of the batch ``idx``, a mean weighted by ``weight`` (1 per row; 0 marks
            the ensemble engine's padding)."""
            xs, p, ls = read_inputs(X, idx, e, self.used), e["P"][idx], {m: ln[idx] for m, ln in L.items()}
            if late:   # each modality's classifier learns from the samples that have it
                logits = model.fusion.unimodal_logits(model.features(xs, p, ls))      # (B, M, C)
                per = torch.stack([task_loss(task, logits[:, j], y[idx], reduction="none")
                                   for j in range(ncols)], 1)
                pw = p if weight is None else p * weight[:, None]
                return (per * pw).sum() / pw.sum().clamp(min=1)
            return task_loss(task, model(xs, p, ls), y[idx], weight=weight)

        def val_logits(model, e):
            return torch.cat([model(read_inputs(X, v, e, self.used), e["P"][v], {m: ln[v] for m, ln in L.items()})
                              for v in val.split(EVAL_CHUNK)])

        def val_score(out):                  # (K, n_val, ...) -> (K,)
            return validation_scores(task, out, y[val])
        return extra, rows, loss_fn, val_logits, val_score

    def _head_options(self, data) -> dict:
        """Extra arguments of the fusion head (e.g. FiLM's conditioning modality)."""
        return {}

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        """Train alone (a one-member ensemble: :func:`mmlib.train.fit`, the seed's own batches and
        dropout masks): what a member of :meth:`fit_seeds` gets, to rounding."""
        from ..engine import Member, Parts
        extra, rows, loss_fn, val_logits, val_score = self._setup(data, presence, seed, device, val_presence)
        self._train_parts(Parts([self], [Member(self.model, rows, extra, seed)], loss_fn, val_logits, val_score),
                          cfg or TrainConfig())
        return self

    def _engine(self, parts, cfg):
        """The loss and :class:`~mmlib.engine.Program` (None: no state) the engine trains ``parts`` with;
        a method with a training state of its own overrides it (QMF's loss history, OGM-GE's modulation)."""
        return parts.loss, None

    def _engine_finish(self, parts, program) -> None:
        """After training: what the program keeps for each fit (e.g. OGM-GE's coefficients)."""

    def _train_parts(self, parts, cfg) -> None:
        from ..engine import fit_ensemble
        loss, program = self._engine(parts, cfg)
        histories = fit_ensemble(parts.members, loss, parts.val_logits, parts.val_score, cfg, desc=self.name,
                                 program=program)
        for m, hist in zip(parts.copies, histories):
            m.history = hist
        self._engine_finish(parts, program)

    def batchable(self, data: MultimodalDataset | None = None) -> bool:
        """Several fits train as one ensemble (:meth:`fit_seeds`) when no encoder keeps buffers
        (the CNNs' BatchNorm does); without ``data``, when the encoders are MLPs."""
        if data is None:
            return self.backbone == "mlp"
        return ensemble_ready(data, self.feat_dim, self.backbone, self.sequence)

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None) -> list["FusionBaseline"]:
        """One fitted copy of this method per (training presence, seed) pair, trained together on
        the ensemble engine (:func:`mmlib.engine.fit_ensemble`); each equals ``fit`` at its seed up
        to rounding. ``val_presences``: each member's masked validation split (None: every
        modality). Members may have different row counts (different masks)."""
        cfg = cfg or TrainConfig()
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        if not self.batchable(data):
            return [copy.deepcopy(self).fit(data, P, seed=s, cfg=cfg, device=device, val_presence=vp)
                    for P, s, vp in zip(presences, seeds, vps)]
        parts = self.members(data, presences, seeds, cfg=cfg, device=device, val_presences=vps)
        self._train_parts(parts, cfg)
        return parts.copies

    def members(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                val_presences: list | None = None, keeps: list | None = None):
        """What :meth:`fit_seeds` trains, for a method that trains it its own way (M3S): one copy of
        this method per (presence, seed) pair and the engine's pieces (:class:`mmlib.engine.Parts`).
        ``keeps``: per member, masks every input is read through (None: the inputs as they are)."""
        from ..engine import Member, Parts
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        keeps = [None] * len(seeds) if keeps is None else list(keeps)
        copies, members, parts = [], [], None
        for presence, seed, vp, kp in zip(presences, seeds, vps, keeps):   # each member's P holds its
            m = copy.deepcopy(self)                                         # validation rows' presence too
            parts = m._setup(data, presence, seed, device, vp, inputs=copies[0]._tensors[:2] if copies else None,
                             keep=kp)
            copies.append(m)
            members.append(Member(m.model, parts[1], parts[0], seed))
        return Parts(copies, members, *parts[2:])

    def _forward(self, data, split, presence, what):
        idx = data.splits[split]
        p = full_presence(data, split, presence)[:, self.cols].to(self.device)
        xs = {m: data.modalities[m][idx.to(data.modalities[m].device)].to(self.device) for m in self.used}
        ls = {m: data.lengths[m][idx.to(data.lengths[m].device)].to(self.device)
              for m in self.used if m in data.lengths}
        self.model.eval()
        outs = []
        with torch.no_grad():
            for s in range(0, len(idx), EVAL_CHUNK):
                sl = slice(s, s + EVAL_CHUNK)
                b, lb = {m: x[sl] for m, x in xs.items()}, {m: ln[sl] for m, ln in ls.items()}
                outs.append(self.model(b, p[sl], lb) if what == "predict" else self.model.embed(b, p[sl], lb))
        return torch.cat(outs).cpu()

    def predict(self, data, split, presence=None):
        return self._forward(data, split, presence, "predict")

    def embed_modality(self, data, split, modality: str) -> torch.Tensor:
        """The encoder output h_m of one modality for every row of a split (e.g. the modality gap)."""
        from ..models import encode
        idx = data.splits[split]
        x = data.modalities[modality][idx].to(self.device)
        ln = data.lengths[modality][idx].to(self.device) if modality in data.lengths else None
        self.model.eval()
        with torch.no_grad():
            return torch.cat([encode(self.model.encoders[modality], x[s:s + EVAL_CHUNK],
                                     None if ln is None else ln[s:s + EVAL_CHUNK])
                              for s in range(0, len(idx), EVAL_CHUNK)]).cpu()

    def embed(self, data, split, presence=None):
        return self._forward(data, split, presence, "embed")


BASELINES = {
    "lower_bound": lambda **kw: FusionBaseline("lower_bound", use="always_present", **kw),
    "upper_bound": lambda **kw: FusionBaseline("upper_bound", ignore_missing=True, **kw),
    "zp_concat": lambda **kw: FusionBaseline("zp_concat", fusion="concat", **kw),
    "zp_sum": lambda **kw: FusionBaseline("zp_sum", fusion="sum", **kw),
    "late_fusion": lambda **kw: FusionBaseline("late_fusion", fusion="late", **kw),
    # a network on chosen modalities only, e.g. make_method("unimodal", use=["audio"])
    "unimodal": lambda use, **kw: FusionBaseline("unimodal", use=list(use), **kw),
}
