"""SMIL: multimodal learning with severely missing modality, by Bayesian meta-learning.

Mengmeng Ma, Jian Ren, Long Zhao, Sergey Tulyakov, Cathy Wu, Xi Peng (AAAI 2021).
Authors' code: github.com/mengmenm/SMIL (avMNIST pipeline). This file implements the
paper's text, top to bottom, with the released code's behaviour as ``variant="code"``.

Setting. Two modalities: x1 (the image) is always present; x2 (the audio) is present in
a fraction eta of the training samples. D^f = the modality-complete samples, D^m = the
samples missing x2.

Networks.
- The main network f_theta: an encoder of x1, a feature of x2 (real or reconstructed),
  their concatenation h0, a hidden layer h1 and a classifier. theta = the x1 encoder and
  the fusion layers. The x2 encoder is trained first on D^f (the authors' ``train_sound``;
  the paper does not say how it is trained) and then frozen (the code variant keeps
  training it); the x1 encoder is warm-started on every training image (``train_mnist``)
  and the fusion layers on D^f (``train_soundmnist``). A warm start on a few complete pairs
  repeats them so that it takes as many steps as an epoch over the training split.
- The reconstruction network f_phi_c (Eq. 1-2): modality priors M are K-means centres of
  the x2 features of D^f (K = 10). From the x1 feature it predicts a Gaussian over the
  weights omega of the priors; the reconstruction is x2_hat = <omega, M> / K, so that
  omega = 1 gives the mean prior. The paper writes omega ~ N(1, sigma) with the network
  predicting sigma only; taken literally, every sample's reconstruction would have the
  same mean (the mean of the priors). We let the network predict the mean too, as the
  authors' code does (its weights softplus(fc(x1 feature))), and keep N(1, I) as the prior
  of omega in the KL term -- the one reading that makes x2_hat depend on x1 in expectation.
- The regularization network f_phi_r (Eq. 3): from the previous layer's feature it
  predicts (mu, sigma) of r ~ N(mu, sigma^2), and the feature becomes h o Softplus(r),
  o = multiplication (paper) or addition (code). It acts on h0 (from h0) and on h1
  (from h0, the previous layer). At evaluation r = mu and omega = its mean, on every row:
  a row that has x2 goes through Eq. 3 too, as D^f's rows do in the meta-test of Eq. 7, so
  selection and test read the features the way meta-learning trained them (the fusion warm
  start before it trains without Eq. 3; Eq. 3 starts at the identity, see ``reg_init``).

Training (Eq. 4-7, Algorithm 1). Each iteration draws a batch of D^m and a batch of D^f.
  Meta-train (inner loop, Eq. 4): theta' = theta - alpha grad_theta CE(D^m; theta, psi),
      x2 of D^m reconstructed, one step (K = 1 in Algorithm 1) of plain SGD, alpha = 1e-3.
  Meta-test and meta-update (Eq. 7): minimise over theta and psi = (phi_c, phi_r)
      1/L sum_l CE(D^f; theta', z_l) + kl_weight * KL[q(z | X; psi) || p(z)]  (+ CE(D^m; theta)),
      z = (omega, r), L Monte-Carlo samples, p(omega) = N(1, I), p(r) = N(0, I).
  The last term: Eq. 5-6 (the likelihood SMIL maximises) contain a factor p(y_j | x1_j, z)
  for every D^m sample, but Algorithm 1's meta-update shows only D^f. Read alone,
  Algorithm 1 trains theta on the few complete pairs only (D^m reaches theta through
  alpha-sized second-order terms). We keep D^m's term by default (``outer_dm=True``, what
  the authors' code does too) and measure Algorithm 1 as printed as ``smil_alg1``.
  KL weight: summed over units and weighted 1, as Eq. 7 prints it (``smil_kl_eq7``), the
  KL pushes the noise to unit variance and costs avdigits about 30 points; we average it
  over units and weigh it 0.1 (``kl_units``, ``kl_weight``). The gradient reaches theta
  and psi *through* theta' (second order: torch.func.grad keeps the graph);
  ``first_order=True`` treats grad_theta CE(D^m) as a
  constant (first-order MAML), and then the reconstruction network is trained by D^m's
  term and its KL only. Model selection: the validation split (see "Selection" below);
  the authors keep the checkpoint with the best *test* accuracy.

``variant="code"`` (the released code, checked line by line against
``train_missing_eval_missing.py``, ``models/soundlenet5.py``, ``newencoder.py`` and ``loss.py``):
deterministic weights w = softplus(fc(x1 feature)), x2_hat = sum_k w_k M_k / sum_k w_k;
additive regularizer h + softplus(mu + eps), eps ~ N(0, 1), whose first-layer network reads
the x1 feature only; no KL. The outer loss is the inner CE at theta (before the update)
+ CE(D^f with *reconstructed* x2; theta', no noise sampled) + 0.01 MSE(h0) + 0.01 MSE(h1)
between that pass's features *after* the noise and a pass with the real x2 and no
regularizer at all. The x2 encoder is fine-tuned with the fusion layers in the warm start
and keeps training in the outer step (through the MSE terms); it is not adapted in the
inner step. Kept differences: the inner step's decay 0.1^(t // 1000) and the learning-rate
step at 5,000 iterations (our runs stop on a plateau long before), the sizes (160 + 320-d
features), and checkpoints chosen on validation, not test. Evaluation as the code's: a row
with both modalities is classified without the regularizer (its ``mode='two'``), a row
missing x2 with the reconstruction and the regularizer at its mean (``mode='one'``).

Training on the engine: steps 1-2 (the warm starts and priors) run fit by fit; Algorithm 1 runs a
chapter's fits of one variant as the members of one ensemble (:func:`mmlib.engine.fit_ensemble`;
a fit alone: the plain loop): each member its own batches of D^m (its order) and of D^f
(:class:`CompleteBatches`), priors, x2 features and noise streams; the batches' means are weighted
(a padded batch's extra rows weigh 0).

Controls the paper lacks: ``meta=False`` (the warm-started network alone, the missing x2
being the mean prior) and ``inner_lr=0`` (theta' = theta: the same losses without the
inner step). ``reg_init``: Eq. 3's mu network starts at the identity (Softplus(mu) = 1,
so h o Softplus(r) = h before training; default) or at PyTorch's default initialisation,
which scales the warm-started features by about 0.3-1.3 at random.

Selection: with ``val_presence`` (a validation split masked like the training split) the
epoch is chosen on that split, each row with what it has, and the warm starts that read x2
select on the validation rows that have it; without it, on the mean accuracy of "x1 only"
and "x1 + x2" over the complete validation split.

Ablations (Table 3): ``kmeans=False`` (the reconstruction network generates the x2
feature directly, a linear map, no priors), ``regularize=False``, ``noise="fixed"``
(r ~ N(0, I), no learned mu, sigma), ``noise="none"`` (deterministic: omega and r are
their means; no sampling in Eq. 7, no KL).
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from ..engine import Program
from ..models import Dropout, encode, make_encoder, normal_like
from ..train import TrainConfig, batches, fit, get_device, seed_everything, stream_seed
from . import Method
from .common import (ensemble_ready, fits_one_by_one, full_presence, task_loss, two_roles, two_rows,
                     validation_score, validation_scores, weighted_mean)


def warm_path(shared_dir, key: str) -> Path:
    """Where the warm starts named ``key`` are kept, in the harness's folder of shared fits."""
    return Path(shared_dir) / f"smil-warm-{key}.pt"


def load_warm(shared_dir, key: str, device):
    """The warm starts named ``key`` if a run kept them (None: not kept, unreadable, or no folder)."""
    if shared_dir is None or not warm_path(shared_dir, key).is_file():
        return None
    try:
        x2feat, main, priors, enc2, stages = torch.load(warm_path(shared_dir, key), map_location=device, weights_only=True)
    except Exception:                                  # (a truncated file: fitted again, and written again)
        return None
    return x2feat, main, priors, enc2, stages


def save_warm(shared_dir, key: str, warm) -> None:
    """Keep the warm starts for the other variants at this setting (written whole, then renamed,
    so a reader never sees half a file)."""
    if shared_dir is None:
        return
    path = warm_path(shared_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(warm, tmp)
    os.replace(tmp, path)


def _stage(history: list[dict], rows, on, seed: int, cfg) -> dict:
    """A warm start's record: its budget (rows, steps' rows per epoch, seed, training config), the
    epochs it ran, its best epoch and per-epoch history."""
    return {"rows": len(rows), "rows_per_epoch": len(on), "seed": seed, "train_config": cfg.to_dict(),
            "epochs_run": len(history), "best_epoch": max(range(len(history)), key=lambda i: history[i]["val_score"])
            if history else None, "seconds": sum(h.get("seconds", 0.0) for h in history), "history": history}


def _presence_key(presence: torch.Tensor) -> str:
    return hashlib.sha1(presence.cpu().numpy().tobytes()).hexdigest()


# ------------------------------------------------------------------------ the main network
class MainNet(nn.Module):
    """f_theta: x1 encoder, concatenation with the x2 feature, hidden layer, classifier.
    ``aux`` (the reconstruction and regularization networks) is passed in, not owned, so
    that theta = this module's parameters and psi = ``aux``'s."""

    def __init__(self, x_shape, d_x1: int, d_x2: int, hidden: int, n_classes: int, backbone: str = "cnn",
                 dropout: float = 0.5):
        super().__init__()
        self.enc = make_encoder(x_shape, d_x1, backbone)
        self.fc1 = nn.Linear(d_x1 + d_x2, hidden)
        self.drop = Dropout(dropout)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x, x2_feat, has_x2, aux, sample: bool, x_len=None, regularize: bool = True,
                weight=None, mixed: bool = False):
        """Logits, (h0, h1) after the regularization and the KL of this batch's z. Rows with
        ``has_x2`` False use the reconstruction of x2 from the x1 feature (Eq. 2). ``x_len``:
        lengths of padded x1 sequences, if any. ``regularize=False``: no Eq. 3 (the code's
        pass with the real x2). ``weight``: the rows' weights in the KL's batch mean (the ensemble
        engine's padding; None: every row); ``mixed``: reconstruct without looking whether every
        row has x2 (a mask that differs per member of an ensemble)."""
        hx = encode(self.enc, x, x_len)
        kl = hx.new_zeros(())
        if mixed or not bool(has_x2.all()):
            x2_hat, kl_w = aux.reconstruct(hx, sample)
            x2_feat = torch.where(has_x2[:, None], x2_feat, x2_hat)
            kl = kl + _mean(kl_w * (~has_x2), weight)
        h0 = torch.cat([hx, x2_feat], 1)
        if not regularize:
            h1 = torch.relu(self.fc1(h0))
            return self.fc2(self.drop(h1)), (h0, h1), kl
        src0 = hx if aux.variant == "code" else h0                         # the code's noise net reads x1 only
        h0r, kl0 = aux.regularize(0, src0, h0, sample)                     # Eq. 3 on h0
        h1 = torch.relu(self.fc1(h0r))
        h1, kl1 = aux.regularize(1, h0r, h1, sample)                       # Eq. 3 on h1, from h0
        return self.fc2(self.drop(h1)), (h0r, h1), kl + _mean(kl0 + kl1, weight)


def _mean(values, weight=None):
    """The batch mean, or its mean weighted by ``weight`` (1 per row, 0 for the engine's padding)."""
    return values.mean() if weight is None else weighted_mean(values, weight)


def kl_normal(mu, logvar, prior_mu: float = 0.0, units: str = "mean"):
    """KL[N(mu, exp(logvar)) || N(prior_mu, 1)] per sample: averaged over the latent units
    (``"mean"``, so that layers of different widths weigh the same) or summed (``"sum"``,
    the KL of the whole vector, as Eq. 7 prints it)."""
    kl = 0.5 * ((mu - prior_mu) ** 2 + logvar.exp() - 1 - logvar)
    return kl.sum(-1) if units == "sum" else kl.mean(-1)


class Aux(nn.Module):
    """psi = (phi_c, phi_r): the reconstruction network (Eq. 1-2) and the regularization
    network (Eq. 3), in the paper's or the code's form."""

    def __init__(self, priors: torch.Tensor, d_x1: int, d_x2: int, hidden: int, variant: str = "paper",
                 kmeans: bool = True, regularize: bool = True, noise: str = "learned", kl_units: str = "mean",
                 reg_init: str = "identity"):
        super().__init__()
        self.variant, self.kmeans, self.reg_on, self.noise = variant, kmeans, regularize, noise
        self.kl_units = kl_units
        self.register_buffer("priors", priors)                              # M: (K, d_x2)
        K = len(priors)
        if kmeans:
            self.w_mu = nn.Linear(d_x1, K)                                   # weights of the priors
            self.w_logvar = nn.Linear(d_x1, K)                               # (paper: the sigma of omega)
            nn.init.zeros_(self.w_mu.weight)
            nn.init.constant_(self.w_mu.bias, 1.0 if variant == "paper" else 0.0)
            nn.init.constant_(self.w_logvar.bias, -4.0)
        else:                                                               # "w/o K-means": direct generation
            self.direct = nn.Linear(d_x1, d_x2)
        d0 = d_x1 + d_x2
        d_in0 = d_x1 if variant == "code" else d0                           # the code: from the x1 feature only
        self.r_mu = nn.ModuleList([nn.Linear(d_in0, d0), nn.Linear(d0, hidden)])
        self.r_logvar = nn.ModuleList([nn.Linear(d_in0, d0), nn.Linear(d0, hidden)])
        for lin in self.r_logvar:
            nn.init.constant_(lin.bias, -2.0)
        if reg_init == "identity" and variant == "paper":   # h o Softplus(mu) = h at the start: Softplus(log(e-1)) = 1
            for lin in self.r_mu:
                nn.init.zeros_(lin.weight)
                nn.init.constant_(lin.bias, math.log(math.e - 1))

    def reconstruct(self, hx, sample: bool):
        """x2_hat from the x1 feature (Eq. 2) and the per-sample KL of omega."""
        zero = hx.new_zeros(len(hx))
        if not self.kmeans:
            return self.direct(hx), zero
        if self.variant == "code":                                          # w = softplus(fc), normalised
            w = F.softplus(self.w_mu(hx))
            return (w @ self.priors) / w.sum(1, keepdim=True).clamp(min=1e-6), zero
        mu, logvar = self.w_mu(hx), self.w_logvar(hx).clamp(-10, 4)
        stochastic = self.noise != "none"
        omega = mu + (0.5 * logvar).exp() * normal_like(mu) if (sample and stochastic) else mu
        kl = kl_normal(mu, logvar, 1.0, self.kl_units) if stochastic else zero   # KL[q(omega|x1) || N(1, I)]
        return omega @ self.priors / len(self.priors), kl

    def regularize(self, layer: int, h_prev, h, sample: bool):
        """Eq. 3: h o Softplus(r), r ~ N(mu, sigma^2) with (mu, sigma) from h_prev; the KL of r."""
        zero = h.new_zeros(len(h))
        if not self.reg_on:
            return h, zero
        if self.variant == "code":                                          # additive, unit noise
            mu = self.r_mu[layer](h_prev)
            r = mu + normal_like(mu) if sample else mu
            return h + F.softplus(r), zero
        if self.noise == "fixed":                                           # "w/ Fixed Gaussian": N(0, I)
            r = normal_like(h) if sample else torch.zeros_like(h)
            return h * F.softplus(r), zero
        mu, logvar = self.r_mu[layer](h_prev), self.r_logvar[layer](h_prev).clamp(-10, 4)
        if self.noise == "none":                                            # "w/ Deterministic"
            return h * F.softplus(mu), zero
        r = mu + (0.5 * logvar).exp() * normal_like(mu) if sample else mu
        return h * F.softplus(r), kl_normal(mu, logvar, 0.0, self.kl_units)   # KL[q(r|h) || N(0, I)]


class SMILModel(nn.Module):
    """Everything fit() trains and checkpoints: theta (``main``) and psi (``aux``). Its one buffer, the
    priors, is set before training and never written (``constant_buffers``: the ensemble engine
    passes each member's own)."""
    constant_buffers = True

    def __init__(self, main: MainNet, aux: Aux, enc2: nn.Module | None = None):
        super().__init__()
        self.main, self.aux, self.enc2 = main, aux, enc2          # enc2: the code variant's trainable x2 encoder

    def theta(self) -> dict:
        return dict(self.main.named_parameters())

    def forward(self, x, x2_feat, has_x2, params=None, sample=False, x_len=None, regularize=True, weight=None,
                mixed=False):
        params = self.theta() if params is None else params
        return functional_call(self.main, params, (x, x2_feat, has_x2, self.aux, sample, x_len, regularize, weight,
                                                   mixed))


class CompleteBatches(Program):
    """Algorithm 1's second stream for every fit of an ensemble: each iteration's batch of D^f, from the
    fit's own generator (``smil:complete-batches``), its batches drawn when the last is used up, as
    the plain loop pops them. An epoch's batches are drawn at its start (one per batch of D^m),
    padded to the batch size with zero weights; the step's row is the state the loss reads."""

    def __init__(self, completes: list, seeds: list[int], batch_size: int):
        self.complete, self.B = completes, batch_size
        self.gens = [torch.Generator().manual_seed(stream_seed(int(s), "smil:complete-batches")) for s in seeds]
        self.left: list[list] = [[] for _ in seeds]         # each fit's batches of D^f not used yet
        self.t = 0

    def init(self, members):
        self.n_m = [len(mem.rows) for mem in members]
        dev = members[0].rows.device
        return {"f_idx": torch.zeros(len(members), self.B, dtype=torch.long, device=dev),
                "f_w": torch.zeros(len(members), self.B, device=dev)}

    def epoch(self, extra, alive, epoch):
        T = [-(-self.n_m[i] // self.B) for i in alive]
        dev = self.complete[0].device
        self.f_idx = torch.zeros(len(alive), max(T), self.B, dtype=torch.long, device=dev)
        self.f_w = torch.zeros(len(alive), max(T), self.B, device=dev)
        for r, i in enumerate(alive):
            for t in range(T[r]):
                if not self.left[i]:
                    self.left[i] = list(batches(self.complete[i], self.B, self.gens[i]))
                b = self.left[i].pop()
                self.f_idx[r, t, :len(b)], self.f_idx[r, t, len(b):] = b, b[0]
                self.f_w[r, t, :len(b)] = 1.0
        return extra

    def at(self, t, j):
        self.t = t

    def before(self, state, active, alive, epoch):
        state["f_idx"], state["f_w"] = self.f_idx[:, self.t], self.f_w[:, self.t]


# ------------------------------------------------------------------------------ the method
@dataclass(eq=False)
class SMIL(Method):
    """SMIL on a two-modality dataset: ``x1`` always present, ``x2`` severely missing.
    The fields are the hyperparameters (see the module docstring for each option)."""
    name: str = "smil"
    variant: str = "paper"          # "paper" or "code" (the released code's losses)
    kmeans: bool = True             # Eq. 2's modality priors (False: "w/o K-means")
    regularize: bool = True         # Eq. 3 (False: "w/o regularizer")
    noise: str = "learned"          # "learned", "fixed" (N(0, I)) or "none" (deterministic)
    first_order: bool = False       # first-order MAML in Eq. 7
    inner_lr: float = 1e-3          # alpha of Eq. 4
    outer_dm: bool = True           # D^m's likelihood term in the meta-update (Eq. 5-6)
    mc_samples: int = 1             # L of Eq. 7
    kl_weight: float = 0.1
    kl_units: str = "mean"          # "mean" over units, or "sum" (Eq. 7 as printed)
    n_priors: int = 10              # K of the K-means priors
    reg_init: str = "identity"      # Eq. 3's mu network: "identity" (Softplus(mu) = 1 at the start) or "default"
    meta: bool = True               # False: the warm starts alone, no Algorithm 1 (a control)
    feat_dim: int = 64
    hidden: int = 64
    backbone: str = "cnn"
    x1: str | None = None           # the always-present modality (None: inferred)
    x2: str | None = None           # the severely missing one

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in ("paper", "code"):
            raise ValueError(f"unknown SMIL variant {self.variant!r}; use 'paper' or 'code'")
        if self.noise not in ("learned", "fixed", "none"):
            raise ValueError(f"unknown noise={self.noise!r}; use 'learned', 'fixed' or 'none'")
        if self.mc_samples < 1 or self.n_priors < 1:
            raise ValueError("mc_samples and n_priors must be at least 1")
        if self.kl_units not in ("mean", "sum"):
            raise ValueError(f"unknown kl_units={self.kl_units!r}; use 'mean' or 'sum'")
        if self.reg_init not in ("identity", "default"):
            raise ValueError(f"unknown reg_init={self.reg_init!r}; use 'identity' or 'default'")

    # -- set-up: warm starts and priors -----------------------------------------------------
    def _on(self, rows):
        """The rows of a warm start, repeated so that an epoch on a few complete pairs takes as
        many steps as an epoch over the whole training split (validation once per epoch)."""
        return rows.repeat(max(1, min(20, self.n_train // max(len(rows), 1))))

    def _pretrain_encoder(self, shape, rows, X, lengths, cfg, seed, desc, val):
        """An encoder + linear classifier trained on ``rows`` of X, selected on the validation
        rows ``val`` (those that have X)."""
        net = nn.ModuleDict({"enc": make_encoder(shape, self.feat_dim, self.backbone),
                             "head": nn.Linear(self.feat_dim, self.n_classes)}).to(self.device)
        lbl = self.labels

        def out(model, idx):
            return model["head"](encode(model["enc"], X[idx], None if lengths is None else lengths[idx]))

        def loss_fn(model, idx):
            return self._loss(out(model, idx), lbl[idx])

        def val_score(model):
            return validation_score(self.task, out(model, val), lbl[val])

        net, hist = fit(net, loss_fn, self._on(rows), val_score, cfg, seed=seed, desc=desc)
        self._stages[desc] = _stage(hist, rows, self._on(rows), seed, cfg)
        return net["enc"]

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        self.fit_seeds(data, [presence], [seed], cfg=cfg, device=device, val_presences=[val_presence], _into=[self])
        return self

    def batchable(self, data=None) -> bool:
        """Several fits' meta-learning trains as one ensemble when the encoders keep no buffers."""
        if data is None:
            return self.backbone == "mlp"
        return ensemble_ready(data, self.feat_dim, self.backbone, "pooled")

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None, _into: list | None = None) -> list["SMIL"]:
        """One fitted copy per (training presence, seed) pair: each its warm starts and priors (steps
        1-2, shared with the other variants at its setting), then Algorithm 1 for all of them as one
        ensemble on the engine (:func:`mmlib.engine.fit_ensemble`; a fit alone: the plain loop): each
        iteration a batch of D^m from the fit's order and one of D^f from its own stream
        (:class:`CompleteBatches`), Eq. 4 inside the loss, Eq. 7 its value."""
        from ..engine import Member, fit_ensemble
        cfg = cfg or TrainConfig()
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        if len(seeds) > 1 and not self.batchable(data):
            return fits_one_by_one(self, data, presences, seeds, cfg, device, vps)
        copies = _into or [copy.deepcopy(self) for _ in seeds]
        rows = [c._prepare(data, P, s, cfg, device, vp) for c, P, s, vp in zip(copies, presences, seeds, vps)]
        if not self.meta:                                  # the control: the warm starts, scored once
            for c in copies:
                c.history = [{"epoch": 0, "train_loss": float("nan"), **c._val_scores(c.model), "seconds": 0.0}]
            return copies
        lead, masked = copies[0], copies[0].val_has is not None
        members = [Member(c.model, missing, {"X2feat": c.X2feat, **({"val_has": c.val_has} if masked else {})}, s)
                   for c, (_, missing), s in zip(copies, rows, seeds)]
        program = CompleteBatches([complete for complete, _ in rows], seeds, cfg.batch_size)
        val, y, keys = lead.val, lead.labels[lead.val], ["val_x1", "val_x1_x2"] + (["val_masked"] if masked else [])

        def loss_fn(model, idx, weight, e, st):            # 3. Bayesian meta-learning: Algorithm 1
            return lead.meta_loss(model, idx, st["f_idx"], weight, st["f_w"], e["X2feat"]), {}

        def val_logits(model, e):                          # x1 only, x1 + x2, and the masked split as it is
            n = len(val)
            outs = [lead._eval(model, val, torch.full((n,), present, dtype=torch.bool, device=val.device),
                               e["X2feat"])[0] for present in (False, True)]
            if masked:
                outs.append(lead._eval(model, val, e["val_has"], e["X2feat"], mixed=True)[0])
            return torch.stack(outs)

        def val_score(out):                                # (K, patterns, n, C) -> (K,)
            sc = torch.stack([validation_scores(lead.task, out[:, p], y) for p in range(out.shape[1])], 1)
            return sc[:, 2] if masked else (sc[:, 0] + sc[:, 1]) / 2

        def val_report(o):
            return {k: validation_score(lead.task, o[p], y) for p, k in enumerate(keys)}
        histories = fit_ensemble(members, loss_fn, val_logits, val_score, cfg, desc=self.name, program=program,
                                 val_report=val_report)
        for c, hist in zip(copies, histories):
            c.history = [{**{k: v for k, v in h.items() if k != "val_metrics"}, **h["val_metrics"]} for h in hist]
        return copies

    def _prepare(self, data, presence, seed, cfg, device, val_presence):
        """Steps 1-2 for one fit: the roles, the data on the device, the warm starts and priors (kept
        for the other variants at this setting), the networks. Returns (D^f, D^m): the rows."""
        self.device = dev = get_device(device)
        seed_everything(seed)
        presence = full_presence(data, "train", presence)
        masked_val = val_presence is not None
        self.x1, self.x2, self.i1, self.i2 = two_roles(data, presence, self.x1, self.x2, self.name)
        self.required, self.used = [self.x1], [self.x1, self.x2]
        if data.task == "regression":
            raise ValueError(f"{self.name}: SMIL is a classification method; {data.name} is a regression task "
                             "(load it with task='binary' or '7class')")
        self.task, self.n_classes = data.task, data.n_classes
        train = data.splits["train"].to(dev)
        self.X = data.modalities[self.x1].to(dev)
        self.X2 = X2 = data.modalities[self.x2].to(dev)
        self.X1L, self.X2L = (data.lengths[m].to(dev) if m in data.lengths else None for m in (self.x1, self.x2))
        self.labels = data.y.to(dev)
        self.val = data.splits["val"].to(dev)
        # selection: on a validation split masked like the training split, each row with what it has (the
        # warm starts that read x2 on its rows that have it); else on the complete split (mean of x1 only, x1 + x2)
        self.val_has = full_presence(data, "val", val_presence)[:, self.i2].to(dev) if masked_val else None
        self.val_x2 = self.val[self.val_has] if masked_val else self.val
        if len(self.val_x2) < 1:
            raise ValueError(f"{self.name}: no validation row has {self.x2!r} under the masked validation split")
        has_x2 = presence[:, self.i2].to(dev)
        complete, missing = train[has_x2], train[~has_x2]
        self.n_train = len(train)
        if len(complete) < 2:
            raise ValueError(f"{self.name}: needs at least 2 training samples with {self.x2!r}, has {len(complete)}")
        if len(missing) == 0:                      # eta = 100%: the inner loop sees D^f with x2 hidden
            missing = complete

        # 1-2. warm starts and priors; the same fits for every variant and ablation at one setting: fitted once
        #      and kept in the harness's folder of shared fits (``shared_dir``), where the other variants find them
        #      (the meta-learning reseeds, so a variant's numbers do not depend on who fitted them)
        key = (data.fingerprint(), _presence_key(presence), seed, str(cfg), self.feat_dim, self.hidden, self.backbone,
               self.n_priors, self.x1, self.x2, str(dev), self.variant == "code",
               _presence_key(self.val_has) if masked_val else None,
               self.code_version())                # (warm starts kept by other code are not read as today's)
        name = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
        warm = load_warm(self.shared_dir, name, dev)
        if warm is None:
            warm = self._warm_starts(X2, train, complete, cfg, seed)
            save_warm(self.shared_dir, name, warm)
        self.X2feat, main_state, priors, enc2_state, stages = warm
        # the warm starts are part of this fit's record: each stage's budget and per-epoch history (shared by the
        # variants at one setting: ``key`` names them), so the like-for-like budget can be checked from the records
        self.warm_starts = {"key": name, "stages": stages,
                            "epochs": sum(st.get("epochs_run", 0) for st in stages.values())}
        main = MainNet(tuple(self.X.shape[1:]), self.feat_dim, self.feat_dim, self.hidden, self.n_classes,
                       self.backbone).to(dev)
        main.load_state_dict(main_state)
        seed_everything(stream_seed(seed, "smil:aux-init"))
        aux = Aux(priors, self.feat_dim, self.feat_dim, self.hidden, self.variant, self.kmeans,
                  self.regularize, self.noise, self.kl_units, self.reg_init)
        enc2 = None
        if self.variant == "code":                         # the code keeps training the x2 encoder (outer step)
            enc2 = make_encoder(tuple(X2.shape[1:]), self.feat_dim, self.backbone)
            enc2.load_state_dict(enc2_state)
        self.model = SMILModel(main, aux, enc2).to(dev)
        return complete, missing

    def _warm_starts(self, X2, train, complete, cfg, seed):
        """The authors' pipeline before meta-learning: the x2 encoder trained on D^f (its features
        of every sample are kept; the paper variant freezes it, the code variant fine-tunes it in
        the fusion warm start and the outer step); the x1 encoder trained on every training x1;
        the modality priors M = K-means centres of D^f's x2 features (Eq. 2); the fusion
        layers trained on D^f (the code also fine-tunes the x2 encoder there). Returns (x2 features,
        main network state, priors, x2 encoder state)."""
        from sklearn.cluster import KMeans
        dev = self.device
        self._stages = {}
        enc_x2 = self._pretrain_encoder(tuple(X2.shape[1:]), complete, X2, self.X2L, cfg, seed, "smil:x2-encoder",
                                        self.val_x2).eval()
        with torch.no_grad():
            X2feat = torch.cat([encode(enc_x2, X2[c], None if self.X2L is None else self.X2L[c])
                               for c in torch.arange(len(X2), device=dev).split(1024)])
        self.X2feat = X2feat
        enc_x1 = self._pretrain_encoder(tuple(self.X.shape[1:]), train, self.X, self.X1L, cfg, stream_seed(seed, "smil:x1-encoder"),
                                       "smil:x1-encoder", self.val)
        K = min(self.n_priors, len(complete))
        km = KMeans(K, n_init=10, random_state=seed).fit(X2feat[complete].cpu().numpy())
        priors = torch.tensor(km.cluster_centers_, dtype=torch.float32, device=dev)
        main = MainNet(tuple(self.X.shape[1:]), self.feat_dim, self.feat_dim, self.hidden, self.n_classes,
                       self.backbone)
        self._stages["smil:priors"] = {"kmeans_clusters": K, "n_init": 10, "random_state": seed,
                                       "rows": len(complete), "inertia": float(km.inertia_)}
        main.enc.load_state_dict(enc_x1.state_dict())
        main, enc_x2 = self._warm_start_fusion(main, enc_x2, priors, complete, cfg, seed)
        return X2feat, copy.deepcopy(main.state_dict()), priors, copy.deepcopy(enc_x2.state_dict()), self._stages

    def _warm_start_fusion(self, main, enc_x2, priors, complete, cfg, seed):
        """The fusion layers (and the x1 encoder) trained on D^f with the real x2 (the authors'
        ``train_soundmnist``); the code variant fine-tunes the x2 encoder with them, as theirs does."""
        plain = Aux(priors, self.feat_dim, self.feat_dim, self.hidden, regularize=False).to(self.device)
        tune_x2 = self.variant == "code"
        net = nn.ModuleDict({"main": main, "enc2": enc_x2}).to(self.device)
        if not tune_x2:
            net["enc2"].requires_grad_(False)
        val = self.val_x2

        def x2_feat(model, idx):
            return self._x2_features(model["enc2"], idx) if tune_x2 else self.X2feat[idx]

        def loss_fn(model, idx):
            has = torch.ones(len(idx), dtype=torch.bool, device=self.device)
            return self._loss(model["main"](self.X[idx], x2_feat(model, idx), has, plain, False, self._xl(idx))[0],
                              self.labels[idx])

        def val_score(model):
            has = torch.ones(len(val), dtype=torch.bool, device=self.device)
            out = model["main"](self.X[val], x2_feat(model, val), has, plain, False, self._xl(val))[0]
            return validation_score(self.task, out, self.labels[val])

        net, hist = fit(net, loss_fn, self._on(complete), val_score, cfg, seed=stream_seed(seed, "smil:fusion"), desc="smil:fusion")
        self._stages["smil:fusion"] = _stage(hist, complete, self._on(complete), stream_seed(seed, "smil:fusion"), cfg)
        return net["main"], net["enc2"]

    def _x2_features(self, enc2, idx):
        return encode(enc2, self.X2[idx], None if self.X2L is None else self.X2L[idx])

    def meta_loss(self, model: SMILModel, idx_m: torch.Tensor, idx_f: torch.Tensor, w_m=None, w_f=None,
                  x2feat=None) -> torch.Tensor:
        """One iteration of Algorithm 1: the inner update on D^m (Eq. 4), the outer loss on
        D^f (Eq. 7). Returns the loss whose gradient updates theta and psi. ``w_m``, ``w_f``: the
        rows' weights in each batch's means (the ensemble engine's padding; None: every row);
        ``x2feat``: the fit's x2 features (default: its own)."""
        X, lbl = self.X, self.labels
        Yf = self.X2feat if x2feat is None else x2feat
        no_x2 = torch.zeros(len(idx_m), dtype=torch.bool, device=X.device)

        # meta-train (Eq. 4): theta' = theta - alpha grad_theta CE(D^m; theta, psi)
        def inner_loss(params):
            logits, _, kl = model(X[idx_m], Yf[idx_m], no_x2, params, sample=True, x_len=self._xl(idx_m), weight=w_m)
            ce = self._loss(logits, lbl[idx_m], w_m)
            return ce, (ce, kl)

        theta = model.theta()
        g, (ce_m, kl_m) = grad(inner_loss, has_aux=True)(theta)
        if self.first_order:
            g = {k: v.detach() for k, v in g.items()}
        theta_new = {k: theta[k] - self.inner_lr * g[k] for k in theta}

        # meta-test and meta-update (Eq. 7)
        yes = torch.ones(len(idx_f), dtype=torch.bool, device=X.device)
        if self.variant == "code":       # the code's meta-test: D^f with x2 reconstructed, no noise sampled ...
            no = ~yes
            logits, (h0_hat, h1_hat), _ = model(X[idx_f], Yf[idx_f], no, theta_new, False, self._xl(idx_f), weight=w_f)
            x2_real = self._x2_features(model.enc2, idx_f)           # ... and with the real x2 (its encoder
            _, (h0, h1), _ = model(X[idx_f], x2_real, yes, theta_new, False, self._xl(idx_f),  # trains), no Eq. 3;
                                   regularize=False, weight=w_f)     # aligned after the noise of the first pass
            return (ce_m + self._loss(logits, lbl[idx_f], w_f)
                    + 0.01 * _mean(((h0_hat - h0) ** 2).mean(1), w_f) + 0.01 * _mean(((h1_hat - h1) ** 2).mean(1), w_f))
        ce_f, kl_f = 0.0, 0.0
        for _ in range(self.mc_samples):                                    # L Monte-Carlo samples of z
            logits, _, kl = model(X[idx_f], Yf[idx_f], yes, theta_new, sample=True, x_len=self._xl(idx_f), weight=w_f)
            ce_f = ce_f + self._loss(logits, lbl[idx_f], w_f) / self.mc_samples
            kl_f = kl_f + kl / self.mc_samples
        loss = ce_f + self.kl_weight * (kl_m + kl_f)
        if self.outer_dm:                          # + D^m's likelihood term of Eq. 5-6, at theta (as the code)
            loss = loss + ce_m
        return loss

    # -- evaluation ------------------------------------------------------------------------
    def _eval(self, model, idx, has_x2, x2feat=None, mixed=False):
        """Logits and h1 of rows ``idx``, x2 read where ``has_x2`` (else reconstructed); the code
        variant classifies a row with both modalities without the regularizer (its ``mode='two'``).
        ``mixed``: ``has_x2`` may differ per member of an ensemble."""
        x2f = (self.X2feat if x2feat is None else x2feat)[idx] if model.enc2 is None else self._x2_features(model.enc2, idx)
        logits, (_, h1), _ = model(self.X[idx], x2f, has_x2, x_len=self._xl(idx), mixed=mixed)
        if self.variant == "code" and (mixed or bool(has_x2.any())):   # the code's evaluation with both modalities
            plain, (_, h1_plain), _ = model(self.X[idx], x2f, has_x2, x_len=self._xl(idx), regularize=False,
                                            mixed=mixed)
            logits = torch.where(has_x2[:, None], plain, logits)
            h1 = torch.where(has_x2[:, None], h1_plain, h1)
        return logits, h1

    @torch.no_grad()
    def _forward(self, model, idx, has_x2):
        model.eval()
        outs = [self._eval(model, idx[s:s + 1024], has_x2[s:s + 1024]) for s in range(0, len(idx), 1024)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _xl(self, idx):
        """Lengths of the x1 sequences of rows ``idx`` (None for fixed-size inputs)."""
        return None if self.X1L is None else self.X1L[idx]

    def _loss(self, logits, y, weight=None):
        """-log p(y | ...): cross-entropy, or binary cross-entropy per label (MM-IMDb); a mean weighted
        by ``weight`` when given."""
        return task_loss(self.task, logits, y, weight=weight)

    def _val_scores(self, model) -> dict:
        """Validation scores (accuracy; micro-F1 for multi-label) with x1 only and with
        x1 + x2 (the two test patterns); ``val_score`` selects the epoch: the score of the
        masked validation split (each row with what it has), or without one the mean of the two."""
        out = {}
        for key, present in (("val_x1", False), ("val_x1_x2", True)):
            has = torch.full((len(self.val),), present, dtype=torch.bool, device=self.device)
            out[key] = validation_score(self.task, self._forward(model, self.val, has)[0], self.labels[self.val])
        if self.val_has is None:
            return {**out, "val_score": (out["val_x1"] + out["val_x1_x2"]) / 2}
        masked = validation_score(self.task, self._forward(model, self.val, self.val_has)[0], self.labels[self.val])
        return {**out, "val_masked": masked, "val_score": masked}

    def _rows(self, data, split, presence):
        return two_rows(data, split, presence, self.i1, self.i2, self.name, self.device)

    def predict(self, data, split, presence=None):
        """Logits; rows missing x2 use its reconstruction (omega and r at their means)."""
        return self._forward(self.model, *self._rows(data, split, presence))[0].cpu()

    def embed(self, data, split, presence=None):
        """The regularized hidden feature h1 (for t-SNE)."""
        return self._forward(self.model, *self._rows(data, split, presence))[1].cpu()


def _smil(name, **fixed):
    return lambda **kw: SMIL(name=name, **{**fixed, **kw})


METHODS = {
    "smil": _smil("smil"),
    "smil_code": _smil("smil_code", variant="code"),
    "smil_first_order": _smil("smil_first_order", first_order=True),
    "smil_alg1": _smil("smil_alg1", outer_dm=False),
    "smil_kl_eq7": _smil("smil_kl_eq7", kl_units="sum", kl_weight=1.0),
    "smil_reg_default_init": _smil("smil_reg_default_init", reg_init="default"),
    # controls: what the warm starts alone give, and the joint losses without the inner step
    "smil_warm_only": _smil("smil_warm_only", meta=False),
    "smil_no_inner": _smil("smil_no_inner", inner_lr=0.0),
    # Table 3's ablations
    "smil_no_kmeans": _smil("smil_no_kmeans", kmeans=False),
    "smil_no_reg": _smil("smil_no_reg", regularize=False),
    "smil_fixed_gaussian": _smil("smil_fixed_gaussian", noise="fixed"),
    "smil_deterministic": _smil("smil_deterministic", noise="none"),
}
