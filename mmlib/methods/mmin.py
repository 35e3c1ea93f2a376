"""MMIN, CRA and AMAE, the baselines of RedCore's comparison, in a light form for a CPU.

- ``mmin_lite`` -- the missing modality imagination network (Zhao, Li and Jin, ACL 2021,
  github.com/AIM3-RUC/MMIN). Per-modality encoders read the inputs with the missing ones
  zero-filled; their embeddings are concatenated, E. A cascaded residual autoencoder
  *imagines* the missing modalities' embedding from E (forward), a second one maps the
  imagination back to E (backward, the cycle); the classifier reads the forward
  autoencoder's latent codes. Loss: CE + 4.0 MSE(imagined, teacher) + 2.0 MSE(back, E held
  constant), where the teacher is a network of the same encoders trained first on the
  *complete* training data and frozen (MMIN's ``utt_fusion``): its embedding of the
  sample's *missing* modalities (the present ones zeroed, MMIN's "reverse" input) is the
  target, and the student's encoders start from its weights. With every modality present
  the target is the teacher's embedding of all-zero inputs, one constant: on complete rows
  MMIN is an autoencoder (the cycle) plus a classifier. The autoencoders are MMIN's
  ``ResidualAE`` (linear latents, accumulated residual inputs, a transition MLP on the
  last block's input plus output: :class:`~mmlib.methods.redcore.ResidualAE`). Checked
  against ``models/mmin_model.py`` and ``models/networks/autoencoder.py`` of AIM3-RUC/MMIN;
  kept differences: no gradient clipping (the
  code clips each network at 1.0), the book's budget (Adam 1e-3 to a validation plateau,
  where MMIN runs Adam 2e-4 for 30 + 30 epochs), the sizes below.
- ``cra`` -- cascaded residual autoencoder imputation (Tran et al., CVPR 2017, as MMIN
  runs it): the forward autoencoder alone reconstructs the complete embedding (its target:
  the same encoders' embedding of the complete sample, held constant), and the classifier
  reads the reconstruction. No teacher, no cycle.

- ``amae_lite`` -- ActionMAE (Woo et al., AAAI 2023), as RedCore runs it: one token per
  modality (its encoder's embedding), a learnable token in place of a missing modality
  (plus a modality embedding), a one-layer transformer (4 heads) over the tokens; the
  output tokens at the masked places reconstruct the real embeddings (MSE), the mean of the
  output tokens is classified (CE). During training each present modality is also masked
  at random (``drop`` = 0.3), as ActionMAE's random modality dropout.

All three are *perfect data training* (PDT) as RedCore describes its baselines: a training
sample's missing modalities are hidden from the inputs but their features still supply
the targets. (MMIN's own training draws one of the six partial patterns per sample and
epoch; here it trains on the chapter's fixed presence matrix, like every method.)

CPU sizes: the book's pooled / MLP encoders (d = 64 per modality) and two residual
blocks of 64-32; MMIN has LSTM / TextCNN encoders of 128 and five blocks of 256-128-64.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..models import MLP, encode, make_encoder, uniform_noise
from ..train import TrainConfig, fit, seed_everything, stream_seed
from . import Method
from .common import (EVAL_CHUNK, ensemble_ready, fit_setup, fits_one_by_one, full_presence, keep_masks, read_inputs,
                     validation_score, validation_scores, weighted_mean)
from .redcore import ResidualAE


class Encoders(nn.Module):
    """One encoder per modality; missing inputs zero-filled; the embeddings concatenated."""

    def __init__(self, shapes: dict, d: int, sequence: str, backbone: str = "cnn"):
        super().__init__()
        self.names = list(shapes)
        self.enc = nn.ModuleDict({m: make_encoder(s, d, backbone, sequence) for m, s in shapes.items()})

    def forward(self, xs, present, lengths):
        out = []
        for j, m in enumerate(self.names):
            keep = present[:, j].to(xs[m].dtype).reshape(-1, *([1] * (xs[m].dim() - 1)))
            out.append(encode(self.enc[m], xs[m] * keep, lengths.get(m)))
        return torch.cat(out, 1)


class ImagineNet(nn.Module):
    """Encoders, the forward (imagination) and backward (cycle) autoencoders, a classifier."""

    def __init__(self, shapes: dict, n_classes: int, d: int, hidden: int, sequence: str, n_blocks: int, mmin: bool,
                 backbone: str = "cnn"):
        super().__init__()
        D = d * len(shapes)
        self.encoders = Encoders(shapes, d, sequence, backbone)
        self.forward_ae = ResidualAE(D, (64, 32), n_blocks)
        self.backward_ae = ResidualAE(D, (64, 32), n_blocks) if mmin else None
        self.mmin = mmin
        self.classifier = MLP(32 * n_blocks if mmin else D, [hidden], n_classes, dropout=0.3)

    def forward(self, xs, present, lengths):
        E = self.encoders(xs, present, lengths)
        imagined, latents = self.forward_ae(E)
        logits = self.classifier(torch.cat(latents, 1) if self.mmin else imagined)
        return logits, E, imagined


class EveryModality(Method):
    """Training and prediction shared by the methods that read every modality (MMIN, CRA,
    AMAE, MISA): ``fit`` trains what the method's :meth:`members` builds, alone; prediction runs
    the network in chunks of rows, on the device, with the given presence."""
    reads_data_at_predict = True      # predict() reads the data it is given (e.g. a corrupted test copy)

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        from ..engine import fit_ensemble
        cfg = cfg or TrainConfig()
        parts = self.members(data, [presence], [seed], cfg=cfg, device=device, val_presences=[val_presence], _into=[self])
        self.history = fit_ensemble(parts.members, parts.loss, parts.val_logits, parts.val_score, cfg, desc=self.name)[0]
        return self

    def members(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                val_presences: list | None = None, keeps: list | None = None, _into: list | None = None):
        """What ``fit`` trains (:class:`mmlib.engine.Parts`), for a method that trains it its own way
        (M3S); ``keeps``: per member, masks every input is read through (None: as they are)."""
        raise NotImplementedError(f"{self.name} has no ensemble members")

    @torch.no_grad()
    def _run(self, model, idx, present, pick, X=None):
        """``X``: the features to read (default: the training data's, on the device)."""
        model.eval()
        X = self.X if X is None else X
        return torch.cat([pick(model({m: X[m][b.to(X[m].device)].to(self.device) for m in self.names}, p,
                                     {m: ln[b] for m, ln in self.L.items()}))
                          for b, p in zip(idx.split(EVAL_CHUNK), present.split(EVAL_CHUNK))])

    def _logits(self, model, idx, present, X=None):
        return self._run(model, idx, present, lambda out: out[0], X)

    def predict(self, data, split, presence=None):
        """Logits of ``split``'s rows, read from ``data`` (which may be a corrupted copy)."""
        idx = data.splits[split].to(self.device)
        return self._logits(self.model, idx, full_presence(data, split, presence).to(self.device), data.modalities).cpu()

    def embed(self, data, split, presence=None):
        idx = data.splits[split].to(self.device)
        return self._run(self.model, idx, full_presence(data, split, presence).to(self.device), self._embedding,
                         data.modalities).cpu()


@dataclass(eq=False)
class MMINLite(EveryModality):
    """``imagine=True``: MMIN (teacher + cycle); ``imagine=False``: CRA. ``pdt=False``
    (MMIN only) trains it as an IDT method: the teacher learns from the training presence
    (missing inputs zeroed) instead of complete data, and in each batch a random part
    (``drop``) of every sample's *present* modalities is hidden from the student and
    imagined, with the teacher's embedding of those hidden-but-available modalities as the
    target: a missing modality is never read, as in RedCore."""
    name: str = "mmin_lite"
    imagine: bool = True
    pdt: bool = True
    drop: float = 0.3
    teacher_weight: float = 4.0
    cycle_weight: float = 2.0
    rec_weight: float = 1.0          # CRA's reconstruction term
    d: int = 64
    hidden: int = 64
    n_blocks: int = 2
    sequence: str = "pooled"
    backbone: str = "cnn"            # images and MFCCs: "cnn" (LeNet / MFCCNet) or "mlp"
    implicit = {"backbone": "cnn"}

    def batchable(self, data=None) -> bool:
        """Several fits train as one ensemble (teachers, then students) when no encoder keeps
        buffers (BatchNorm)."""
        if data is None:
            return self.backbone == "mlp"
        return ensemble_ready(data, self.d, self.backbone, self.sequence)

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        self.fit_seeds(data, [presence], [seed], cfg=cfg, device=device, val_presences=[val_presence], _into=[self])
        return self

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None, _into: list | None = None) -> list["MMINLite"]:
        """One fitted copy per (training presence, seed) pair on the ensemble engine
        (:func:`mmlib.engine.fit_ensemble`): MMIN's teachers as one ensemble, then the students
        as another. Each equals its fit alone up to rounding."""
        from ..engine import fit_ensemble
        cfg = cfg or TrainConfig()
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        if len(seeds) > 1 and not self.batchable(data):
            return fits_one_by_one(self, data, presences, seeds, cfg, device, vps)
        parts = self.members(data, presences, seeds, cfg=cfg, device=device, val_presences=vps, _into=_into)
        histories = fit_ensemble(parts.members, parts.loss, parts.val_logits, parts.val_score, cfg, desc=self.name)
        for m, hist in zip(parts.copies, histories):
            m.history = hist
        return parts.copies

    def members(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                val_presences: list | None = None, keeps: list | None = None, _into: list | None = None):
        """The students of :meth:`fit_seeds`, MMIN's teachers trained first (as one ensemble), for
        a method that trains the students its own way (M3S): :class:`mmlib.engine.Parts`. ``keeps``:
        per member, masks every input is read through, the teacher's too (None: as they are)."""
        from ..engine import Parts, fit_ensemble
        cfg = cfg or TrainConfig()
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        keeps = [None] * len(seeds) if keeps is None else list(keeps)
        copies = _into or [copy.deepcopy(self) for _ in seeds]
        setups, members = [], []
        for m, P, s, vp, kp in zip(copies, presences, seeds, vps, keeps):    # each teacher built right after
            setups.append(m._setup_fit(data, P, s, device, vp, kp))           # its seeding
            members.append(m._teacher(data, setups[-1], s) if self.imagine else None)
        lead = copies[0]
        teachers = [None] * len(copies)
        if self.imagine:              # MMIN's teachers: the same encoders + a classifier, trained first
            fit_ensemble(members, lead._teacher_loss, lead._teacher_logits, lead._score, cfg, desc=f"{self.name}:teacher")
            teachers = [mem.model for mem in members]
        members = [m._student(data, st, s, t) for m, st, s, t in zip(copies, setups, seeds, teachers)]
        for m, mem in zip(copies, members):
            m.model = mem.model                        # (trained in place)
        return Parts(copies, members, lead._student_loss, lead._student_logits, lead._score)

    # -- the pieces: set-up, teacher, student ---------------------------------------------------------
    def _setup_fit(self, data, presence, seed, device, val_presence, keep=None):
        st = fit_setup(self, data, presence, val_presence, seed, device)          # plumbing: data on the device
        self.val_P, self.y, self.val = st.val_P, st.y, st.val
        self.shapes = {m: tuple(x.shape[1:]) for m, x in data.modalities.items()}
        self.keep = keep_masks(keep, self.names, st.device)     # the inputs' masks (M3S's spans), in every extra
        return st

    def _batch(self, idx, extra):
        return read_inputs(self.X, idx, extra, self.names), {m: ln[idx] for m, ln in self.L.items()}

    def _teacher(self, data, st, seed):
        """MMIN's teacher (``utt_fusion``): built right after the fit's seeding, trained with its own stream (``mmin:teacher``)
        on the complete training data (PDT) or on the training presence (IDT)."""
        from ..engine import Member
        model = nn.ModuleDict({"enc": Encoders(self.shapes, self.d, self.sequence, self.backbone),
                               "cls": MLP(self.d * len(self.names), [self.hidden], data.n_classes, dropout=0.5)})
        full = torch.ones_like(st.P)
        return Member(model.to(st.device), st.train if self.pdt else st.rows,
                      {"seen": full if self.pdt else st.P, "val_P": torch.ones_like(st.val_P) if self.pdt else st.val_P,
                       **self.keep}, stream_seed(seed, "mmin:teacher"))

    def _teacher_loss(self, model, idx, weight, extra):
        xs, ls = self._batch(idx, extra)
        ce = F.cross_entropy(model["cls"](model["enc"](xs, extra["seen"][idx], ls)), self.y[idx], reduction="none")
        return ce.mean() if weight is None else weighted_mean(ce, weight)

    def _teacher_logits(self, model, extra):
        xs, ls = self._batch(self.val, extra)
        return model["cls"](model["enc"](xs, extra["val_P"], ls))

    def _score(self, out):
        return validation_scores("multiclass", out, self.y[self.val])

    def _student(self, data, st, seed, teacher):
        """The student, built after seeding with the fit's seed; MMIN's starts its encoders from its
        teacher's, whose encoder (weights in ``extra``, frozen) gives the imagination's targets."""
        from ..engine import Member
        seed_everything(seed)
        model = ImagineNet(self.shapes, data.n_classes, self.d, self.hidden, self.sequence, self.n_blocks,
                           self.imagine, self.backbone).to(st.device)
        extra = {"P": st.P, "val_P": st.val_P, **self.keep}
        if teacher is not None:
            model.encoders.load_state_dict(teacher["enc"].state_dict())
            self._template = copy.deepcopy(teacher["enc"]).eval().requires_grad_(False)
            extra.update({f"t.{k}": v.detach() for k, v in
                          [*teacher["enc"].named_parameters(), *teacher["enc"].named_buffers()]})
        return Member(model, st.rows, extra, seed)

    def _student_loss(self, model, idx, weight, extra):
        """CE + 4.0 MSE(imagined, teacher's embedding of what is hidden) + 2.0 MSE(cycle, E) for
        MMIN; CE + MSE(reconstruction, the complete sample's embedding) for CRA; ``weight``: the
        rows' weights in the batch means (None: every row counts)."""
        w = torch.ones(len(idx), device=idx.device) if weight is None else weight
        P = extra["P"]
        xs, ls = self._batch(idx, extra)
        shown = P[idx]
        if self.imagine and not self.pdt:                           # IDT: hide part of what is present
            shown = P[idx] & (uniform_noise(tuple(shown.shape), shown.device) >= self.drop)
            shown = torch.where(shown.any(1, keepdim=True), shown, P[idx])
        logits, E, imagined = model(xs, shown, ls)
        loss = weighted_mean(F.cross_entropy(logits, self.y[idx], reduction="none"), w)
        if self.imagine:
            hidden = ~P[idx] if self.pdt else P[idx] & ~shown       # PDT: the missing modalities; IDT: the
            with torch.no_grad():                                   # hidden present ones, through the teacher
                target = functional_call(self._template, {k[2:]: v for k, v in extra.items() if k.startswith("t.")},
                                         (xs, hidden, ls))
            back, _ = model.backward_ae(imagined)
            loss = loss + self.teacher_weight * weighted_mean(((imagined - target) ** 2).mean(1), w) \
                + self.cycle_weight * weighted_mean(((back - E.detach()) ** 2).mean(1), w)
        else:
            with torch.no_grad():
                target = model.encoders(xs, torch.ones_like(shown), ls)    # PDT: the complete sample
            loss = loss + self.rec_weight * weighted_mean(((imagined - target) ** 2).mean(1), w)
        return loss

    def _student_logits(self, model, extra):
        xs, ls = self._batch(self.val, extra)
        return model(xs, extra["val_P"], ls)[0]

    def _embedding(self, out):
        return out[2]                                  # the imagined embedding


class AMAENet(nn.Module):
    """Per-modality encoders -> tokens; masked tokens replaced by a learnable one; a
    one-layer transformer; a classifier on the mean output token."""

    def __init__(self, shapes: dict, n_classes: int, d: int, hidden: int, sequence: str, heads: int = 4,
                 backbone: str = "cnn"):
        super().__init__()
        self.encoders = Encoders(shapes, d, sequence, backbone)
        M = len(shapes)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.modality = nn.Parameter(torch.randn(M, d) * 0.02)
        self.mixer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.1, batch_first=True)
        self.classifier = MLP(d, [hidden], n_classes, dropout=0.3)
        self.M, self.d = M, d

    def tokens(self, xs, present, lengths):
        return self.encoders(xs, present, lengths).reshape(-1, self.M, self.d)         # (B, M, d)

    def forward(self, xs, present, lengths):
        tok = self.tokens(xs, present, lengths)
        tok = torch.where(present[:, :, None], tok, self.mask_token.expand_as(tok)) + self.modality
        out = self.mixer(tok)
        return self.classifier(out.mean(1)), out


@dataclass(eq=False)
class AMAELite(EveryModality):
    """ActionMAE-like baseline (PDT): masked modality tokens reconstructed by a transformer."""
    name: str = "amae_lite"
    drop: float = 0.3                 # random modality dropout of present modalities in training
    rec_weight: float = 1.0
    d: int = 64
    hidden: int = 64
    sequence: str = "pooled"
    backbone: str = "cnn"
    implicit = {"backbone": "cnn"}

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        cfg = cfg or TrainConfig()
        s = fit_setup(self, data, presence, val_presence, seed, device)          # plumbing: data on the device
        dev, P, rows, val, self.val_P, y = s.device, s.P, s.rows, s.val, s.val_P, s.y
        full = torch.ones_like(P)
        self.model = AMAENet({m: tuple(x.shape[1:]) for m, x in data.modalities.items()}, data.n_classes,
                             self.d, self.hidden, self.sequence, backbone=self.backbone).to(dev)
        gen = torch.Generator().manual_seed(stream_seed(seed, "amae:masks"))

        def loss_fn(model, idx):
            xs, ls = {m: self.X[m][idx] for m in self.names}, {m: ln[idx] for m, ln in self.L.items()}
            keep = P[idx] & (torch.rand(P[idx].shape, generator=gen).to(dev) >= self.drop)   # random modality dropout
            keep = torch.where(keep.any(1, keepdim=True), keep, P[idx])                       # never drop them all
            logits, out = model(xs, keep, ls)
            with torch.no_grad():
                target = model.tokens(xs, full[idx], ls)                  # PDT: every modality's real token
            masked = (~keep).to(out.dtype)[:, :, None]
            rec = (((out - target) ** 2) * masked).sum() / (masked.sum() * self.d).clamp(min=1)
            return F.cross_entropy(logits, y[idx]) + self.rec_weight * rec

        def val_score(model):
            return validation_score("multiclass", self._logits(model, val, self.val_P), y[val])

        self.model, self.history = fit(self.model, loss_fn, rows, val_score, cfg, seed=seed, desc=self.name)
        return self

    def _embedding(self, out):
        return out[1].mean(1)                          # the mean output token


METHODS = {
    "amae_lite": lambda **kw: AMAELite(name="amae_lite", **kw),
    "mmin_lite": lambda **kw: MMINLite(name="mmin_lite", imagine=True, **kw),
    "cra": lambda **kw: MMINLite(name="cra", imagine=False, **kw),
}
