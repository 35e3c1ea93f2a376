"""RedCore: relative advantage aware cross-modal representation learning for missing
modalities with imbalanced missing rates.

Jun Sun, Xinxin Zhang, Shoukang Han, Yu-Ping Ruan, Taihao Li (AAAI 2024), arXiv:2312.10386.
Authors' code: github.com/sunjunaimer/RedCore (built on MMIN). This file implements the
paper's text, top to bottom; where the released code differs, its behaviour is an option
(named ``"code"``) that the chapter measures.

Setting. M modalities, each sample's presence row C_n (the presence matrix of the book),
one label shared by every modality. Training is *imperfect data training* (IDT): a missing
modality's features are never read, not even as a target.

Core (cross-modal representation learning).
- Eq. 1. Each present modality m has a variational self-encoder (theta_senc^m) giving
  p(zbar^m | x^m) = N(mu, diag(sigma^2)); every modality, present or not, has a
  cross-modal encoder g^m (theta_xenc^m) that imputes zhat^m from the zbar of the *other
  available* modalities (those missing are zeroed in g's input). z^m = zbar^m if present,
  else zhat^m; the joint modality M+1 is z^{M+1} = [z^1; ...; z^M].
- Eq. 2-3 (variational information bottleneck). Every m in 1..M+1 predicts the label with
  its own decoder q(y | z^m) = softmax(f_c^m(z^m)) and pays a KL to N(0, I). The paper
  prints the IB objective as I(z;y) - gamma I(z;y) and Eq. 2 as KL - gamma log q with
  gamma = 0.008, which would weigh the KL 125 times the likelihood. We read it as the VIB
  of Alemi et al. that it cites, gamma on the KL: sum_m [-log q(y|z^m) + gamma KL^m]
  (``kl="paper"``). ``kl="as_printed"`` is Eq. 2 letter for letter; ``kl="code"`` is the
  released code's CE_{M+1} + sum_m CE_m + 0.0016 sum_m KL^m. The KL of an imputed zhat is
  undefined (g is deterministic): only present modalities pay one; KL^{M+1} is the KL of
  the concatenated Gaussian, the sum of its present parts' KLs (the code leaves it out).
- Imputation loss. L_MSE^m = 1/N_m sum_n C_nm ||zbar_n^m - zhat_n^m||^2, over the samples
  that have m; the total is L = L_VIB + sum_m eta^m L_MSE^m (Eq. after 3).

Red (relative advantage aware supervision regulation).
- Eq. 10: L_MAL^m <- (1 - beta) L_MAL^m + beta L_MSE^m after every step (initialised with
  the first value; the code starts at 0).
- Eq. 4-5: Lbar = mean_m L_MAL^m; RA^m = (Lbar - L_MAL^m) / Lbar (they sum to 0, Eq. 8).
- Eq. 9 and Algorithm 1: every K steps, eta <- Proj_Gamma1[eta - alpha1 RA] with
  Gamma1 = {eta >= xi1, ||eta||_2 = xi2}. Gamma1 is not convex (a sphere cut by a box);
  the projection is still exact (:func:`project_gamma1`). ``eta_update="code"``: the
  released code's clamp-then-normalise with a step that grows 1.5x every 500 iterations.
  eta starts equal, xi2 / sqrt(M) each (the paper says "randomly"; the code starts equal).

Ablations (Table 2): ``regulate=False`` is "Core" (eta fixed and equal); ``unimodal_ce=False``
is "Red": Eq. 2 loses the label-likelihood terms of the unimodal predictions (only the joint
modality M+1 predicts the label) and keeps every KL, m = 1..M+1.

Options where the code differs (each a measured row in the chapter): ``kl``,
``eta_update``, ``sample_at_eval`` (the code samples z at test time), ``mask_follows``
("batch_position": the code indexes its mask by batch position while the loader shuffles,
so a sample's missing modalities change every epoch and it eventually shows every modality
of every sample; the same as permuting the presence matrix's rows every epoch),
``xenc_input`` ("code": g^m reads every other encoder's output, a missing modality's
computed from its zero-filled input). Samples with no modality at all are dropped from
training (``empty_rows="keep"`` as the code). ``eta_update="code"`` also takes the code's
order (this batch's moving average updates eta before this batch's step; the average starts
at 0). Differences kept in every variant: the code clips each sub-network's gradient norm
at 1.0 and runs 30 + 30 epochs with Adam 2e-4, where the book trains every method of the
chapter with the same budget (Adam 1e-3, early stopping on validation).

CPU sizes (``default`` profile): self-encoders are the book's pooled encoders (mean and std
of the frames, then an MLP) or an MLP for vectors, d = 64, and two residual autoencoder
blocks; the paper's 3-layer transformers and 5 blocks of 256-128-64 are for a GPU.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MLP, encode, make_encoder, normal_like
from ..engine import Program
from ..train import TrainConfig
from . import Method
from .common import (EVAL_CHUNK, ensemble_ready, fit_setup, fits_one_by_one, full_presence, validation_scores,
                     weighted_mean)


# --------------------------------------------------------------------------- Eq. 9's projection
def project_gamma1(v: torch.Tensor, xi1: float, xi2: float) -> torch.Tensor:
    """The point of Gamma1 = {eta >= xi1, ||eta||_2 = xi2} nearest to v (Eq. 9, p = 2), for
    every row of ``v`` (..., M) at once.

    On the sphere ||eta - v||^2 = xi2^2 - 2 v.eta + ||v||^2, so the projection maximises
    v.eta over Gamma1. Its KKT conditions give eta_i = max(xi1, c v_i) with c > 0 such that
    ||eta|| = xi2, when some v_i > 0; when every v_i <= 0 the maximiser puts every coordinate
    at xi1 except the largest v_i's, which takes the rest of the norm. ``c`` in closed form:
    if the j largest v_i are the coordinates above xi1, c^2 (sum of their squares) + (M - j)
    xi1^2 = xi2^2; of the M candidates, the one whose coordinates are consistent has norm
    exactly xi2 (any other lands above it), so it is the candidate nearest the sphere.
    Gamma1 is the single point xi1 * 1 when xi1 sqrt(M) = xi2, and empty when it is larger.
    Computed in float64 as tensor operations (no Python per row); returned in ``v``'s dtype."""
    M, dtype = v.shape[-1], v.dtype
    if math.isclose(xi1 * math.sqrt(M), xi2, rel_tol=1e-12):
        return torch.full_like(v, xi1)                     # Gamma1 is the single point xi1 * 1
    if xi1 * math.sqrt(M) > xi2:
        raise ValueError(f"Gamma1 is empty: xi1 * sqrt(M) = {xi1 * math.sqrt(M):.4g} > xi2 = {xi2}")
    flat = v.double().reshape(-1, M)
    # every v_i <= 0: xi1 everywhere, the rest of the norm on the largest v_i
    nonpos = torch.full_like(flat, xi1).scatter_(1, flat.argmax(1, keepdim=True),
                                                 math.sqrt(xi2 ** 2 - (M - 1) * xi1 ** 2))
    # some v_i > 0: candidate j = 1..M (the j largest coordinates above xi1), c_j from the norm
    top = flat.sort(1, descending=True).values
    j = torch.arange(1, M + 1, dtype=flat.dtype, device=flat.device)
    c = ((xi2 ** 2 - (M - j) * xi1 ** 2) / (top ** 2).cumsum(1).clamp(min=1e-300)).sqrt()        # (n, M)
    cand = torch.clamp(c[:, :, None] * flat[:, None, :], min=xi1)                               # (n, M, M)
    best = (cand.norm(dim=2) - xi2).abs().argmin(1)
    eta = cand[torch.arange(len(flat), device=flat.device), best]
    eta = torch.where((flat <= 0).all(1, keepdim=True), nonpos, eta)
    return eta.reshape(v.shape).to(dtype)


def relative_advantage(mal: torch.Tensor) -> torch.Tensor:
    """Eq. 4-5: RA^m = (Lbar - L^m) / Lbar with Lbar the mean over modalities (the last
    dimension: one row per member of an ensemble)."""
    mean = mal.mean(-1, keepdim=True)
    return (mean - mal) / mean.clamp(min=1e-12)


# ------------------------------------------------------------------------------- networks
class SelfEncoder(nn.Module):
    """theta_senc^m: x^m -> (mu, logvar) of p(zbar^m | x^m) (Eq. 1, Gaussian, diagonal).
    The standard deviation is softplus(h - 5), as in Alemi et al.'s VIB: the noise starts
    small (0.007) and the KL term raises it (a unit-variance start buries the signal and,
    measured on affect, leaves every decoder at the majority class for the first epochs)."""

    def __init__(self, shape, d: int, sequence: str = "pooled", backbone: str = "cnn"):
        super().__init__()
        self.body = make_encoder(shape, d, backbone, sequence)
        self.mu, self.std = nn.Linear(self.body.out_dim, d), nn.Linear(self.body.out_dim, d)

    def forward(self, x, lengths=None):
        h = encode(self.body, x, lengths)
        std = F.softplus(self.std(h) - 5.0) + 1e-6
        return self.mu(h), 2 * std.log()


class ResidualAE(nn.Module):
    """Cascaded residual autoencoders, as MMIN's ``ResidualAE`` and RedCore's ``ResidualXE``
    (``models/networks/autoencoder.py`` of both repositories, with their ``dropout=0``).

    Block b's encoder is Linear-LeakyReLU-...-Linear: its last layer has no activation, so
    the latent code is linear (it can be negative); its decoder is Linear-ReLU-...-Linear.
    Block b reads x_b = x_{b-1} + out_{b-1} (x_0 = x, out_0 = 0: the input accumulates every
    earlier block's output), and the result is transition(x_B + out_B), a two-layer MLP
    (Linear-ReLU-Linear) applied to the last block's input plus its output. ``out_dim``:
    the transition's output width (RedCore's cross-modal encoder maps the other modalities'
    codes to one modality's; MMIN keeps the input's width)."""

    def __init__(self, dim: int, widths: tuple[int, ...] = (64, 32), n_blocks: int = 2, out_dim: int | None = None):
        super().__init__()

        def ae():
            dims = [dim, *widths]
            enc = [layer for a, b in zip(dims, dims[1:]) for layer in (nn.Linear(a, b), nn.LeakyReLU())][:-1]
            back = dims[::-1]
            dec = [layer for a, b in zip(back, back[1:]) for layer in (nn.Linear(a, b), nn.ReLU())][:-1]
            return nn.ModuleDict({"enc": nn.Sequential(*enc), "dec": nn.Sequential(*dec)})
        self.blocks = nn.ModuleList(ae() for _ in range(n_blocks))
        self.transition = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim or dim))

    def forward(self, x):
        """transition(x_B + out_B) and every block's latent code."""
        x_in, out, latents = x, torch.zeros_like(x), []
        for blk in self.blocks:
            x_in = x_in + out                                   # the input plus every earlier block's output
            h = blk["enc"](x_in)                                # a linear latent
            latents.append(h)
            out = blk["dec"](h)
        return self.transition(x_in + out), latents


class CrossEncoder(nn.Module):
    """theta_xenc^m: g({zbar^{m'} : m' in A^m}) -> zhat^m (Eq. 1), the code's ``ResidualXE``:
    a residual autoencoder over the other modalities' zbar concatenated (a missing one
    zeroed), whose transition maps to one modality's d units."""

    def __init__(self, n_others: int, d: int, widths=(64, 32), n_blocks: int = 2):
        super().__init__()
        self.ae = ResidualAE(n_others * d, widths, n_blocks, out_dim=d)

    def forward(self, others):
        return self.ae(others)[0]


class RedCoreNet(nn.Module):
    """Self-encoders, cross-modal encoders and the M + 1 decoders f_c^m."""

    def __init__(self, shapes: dict, n_classes: int, d: int = 64, hidden: int = 64, sequence: str = "pooled",
                 widths=(64, 32), n_blocks: int = 2, zero_missing: bool = True, backbone: str = "cnn"):
        super().__init__()
        self.names, self.zero_missing = list(shapes), zero_missing
        M = len(self.names)
        self.senc = nn.ModuleDict({m: SelfEncoder(s, d, sequence, backbone) for m, s in shapes.items()})
        self.xenc = nn.ModuleDict({m: CrossEncoder(M - 1, d, widths, n_blocks) for m in shapes})
        self.dec = nn.ModuleList([MLP(d, [hidden], n_classes, dropout=0.3) for _ in range(M)]
                                 + [MLP(M * d, [hidden], n_classes, dropout=0.5)])       # f_c^1..M, f_c^{M+1}

    def forward(self, xs: dict, present: torch.Tensor, lengths: dict, sample: bool):
        """Eq. 1 for a batch: per modality (mu, logvar, zbar, zhat, z), and z^{M+1}."""
        out = {}
        for j, m in enumerate(self.names):
            keep = present[:, j].to(xs[m].dtype).reshape(-1, *([1] * (xs[m].dim() - 1)))
            mu, logvar = self.senc[m](xs[m] * keep, lengths.get(m))          # read only where present
            zbar = mu + normal_like(mu) * (0.5 * logvar).exp() if sample else mu
            out[m] = {"mu": mu, "logvar": logvar, "zbar": zbar}
        for j, m in enumerate(self.names):
            others = [out[o]["zbar"] * (present[:, k:k + 1].to(out[o]["zbar"].dtype) if self.zero_missing else 1.0)
                      for k, o in enumerate(self.names) if o != m]                # A^m: the available others
            zhat = self.xenc[m](torch.cat(others, 1))
            out[m]["zhat"] = zhat
            out[m]["z"] = torch.where(present[:, j:j + 1], out[m]["zbar"], zhat)  # Eq. 1
        joint = torch.cat([out[m]["z"] for m in self.names], 1)                  # z^{M+1}
        return out, joint


def kl_standard_normal(mu, logvar):
    """KL[N(mu, diag(e^logvar)) || N(0, I)] per sample (summed over the d units)."""
    return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)


# -------------------------------------------------------------------- Algorithm 1's eta schedule
class EtaSchedule(Program):
    """Algorithm 1's state for every fit of an ensemble at once (rows: the live fits): eta
    (K, M), the moving averages L_MAL (Eq. 10), the step counts, and with
    ``eta_update="code"`` the code's normalised weights. Every K steps, before the batch (line
    3-4): RA = Eq. 4-5 of L_MAL, eta <- Proj_Gamma1[eta - alpha1 RA] (Eq. 9, one batched
    bisection); after each batch: Eq. 10 over the modalities the batch has (L_MAL starts at the
    first value; the code's starts at 0). A fit whose epoch has ended keeps its state."""

    def __init__(self, method: "RedCore", fits: list, seeds: list[int], train: torch.Tensor):
        self.m, self.fits, self.train, self.log = method, fits, train, []
        self.shuffles = [torch.Generator().manual_seed(s + 1) for s in seeds]   # mask_follows="batch_position"
        self.presence = None

    def init(self, members):
        K, M, dev = len(members), len(self.m.names), members[0].rows.device
        self.presence = [mem.extra["P"][self.train].clone() for mem in members]
        return {"eta": torch.full((K, M), self.m.xi2 / math.sqrt(M), device=dev),    # eta_0: equal
                "mal": torch.zeros(K, M, device=dev), "started": torch.zeros(K, dtype=torch.bool, device=dev),
                "code_w": torch.ones(K, M, device=dev), "step": torch.zeros(K, dtype=torch.long, device=dev)}

    def epoch(self, extra, alive, epoch):
        if self.m.mask_follows != "batch_position":
            return extra
        P = extra["P"].clone()                       # the code: the mask moves to other samples each epoch
        for r, i in enumerate(alive):
            P[r, self.train] = self.presence[i][torch.randperm(len(self.train), generator=self.shuffles[i])
                                                .to(P.device)]
        return {**extra, "P": P}

    def before(self, state, active, alive, epoch):
        m = self.m
        if m.eta_update != "projection":
            return
        due = active & state["started"] & (state["step"] % m.K == 0)
        if not bool(due.any()):
            return
        ra = relative_advantage(state["mal"])                          # line 3: Eqs. 10, 4, 5
        if m.regulate:                                                 # line 4: Eq. 9 (Core: eta kept)
            state["eta"] = torch.where(due[:, None], project_gamma1(state["eta"] - m.alpha1 * ra, m.xi1, m.xi2),
                                       state["eta"])
        self.log.append((list(alive), due, state["step"].clone(), epoch, ra, state["eta"].clone(),
                         state["mal"].clone()))

    def after(self, state, aux, active, alive, epoch):
        m, now = self.m, aux["mse"]
        have = aux["have"] & active[:, None]
        ema = torch.where(have, (1 - m.beta) * state["mal"] + m.beta * now, state["mal"])
        if m.eta_update == "projection":                               # starts at the first value
            first = active & ~state["started"]
            state["mal"] = torch.where(first[:, None], now, ema)
            state["started"] = state["started"] | active
        else:                                                          # (the code starts at 0)
            state["mal"] = ema
            if m.regulate:
                due = active & (state["step"] % m.K == 0)
                state["code_w"] = torch.where(active[:, None], aux["code_w"], state["code_w"])
                state["eta"] = m.xi2 * state["code_w"]
                if bool(due.any()):
                    self.log.append((list(alive), due, state["step"].clone(), epoch,
                                     relative_advantage(state["mal"]), state["eta"].clone(), state["mal"].clone()))
        state["step"] = state["step"] + active.long()

    def history(self, state):
        return [{"eta": row} for row in state["eta"].tolist()]

    def write_traces(self):
        """Each fit's eta updates into its ``trace`` (Figure 5 reads them from the record)."""
        for alive, due, step, epoch, ra, eta, mal in self.log:
            for r in torch.nonzero(due).flatten().tolist():
                self.fits[alive[r]]._log(int(step[r]), epoch, ra[r], eta[r], mal[r])


# ------------------------------------------------------------------------------ the method
@dataclass(eq=False)
class RedCore(Method):
    """RedCore on any number of modalities (the fields are its hyperparameters)."""
    reads_data_at_predict = True      # predict() reads the data it is given (e.g. a corrupted test copy)
    name: str = "redcore"
    regulate: bool = True             # Red: eta regulated by the relative advantage (False: "Core")
    unimodal_ce: bool = True          # every modality predicts the label (False: "Red", joint only; KLs kept)
    gamma: float = 0.008              # the VIB coefficient (see ``kl``)
    kl: str = "paper"                 # "paper" (gamma on the KL), "as_printed" (gamma on the CE), "code"
    eta_update: str = "projection"    # "projection" (Eq. 9) or "code" (clamp, normalise, growing step)
    xi1: float = 0.015
    xi2: float = 0.15
    alpha1: float = 0.1
    beta: float = 0.7                 # Eq. 10's moving-average weight
    K: int = 3                        # eta is updated every K steps (Algorithm 1)
    sample_at_eval: bool = False      # the code samples z at test time
    mask_follows: str = "sample"      # "sample" (IDT) or "batch_position" (the code: rows permuted per epoch)
    empty_rows: str = "drop"          # training rows with no modality: "drop" or "keep" (code)
    xenc_input: str = "available"     # g^m reads the available others' zbar ("code": every other encoder's
                                      # output, a missing one computed from its zero-filled input)
    d: int = 64
    hidden: int = 64
    n_blocks: int = 2
    sequence: str = "pooled"
    backbone: str = "cnn"             # images and MFCCs: "cnn" (LeNet / MFCCNet) or "mlp"
    implicit = {"backbone": "cnn"}

    def __post_init__(self):
        super().__post_init__()
        for opt, allowed in [("kl", ("paper", "as_printed", "code")), ("eta_update", ("projection", "code")),
                             ("xenc_input", ("available", "code")),
                             ("mask_follows", ("sample", "batch_position")), ("empty_rows", ("drop", "keep"))]:
            if getattr(self, opt) not in allowed:
                raise ValueError(f"unknown {opt}={getattr(self, opt)!r}; use one of {allowed}")
        if self.K < 1 or not 0 < self.beta <= 1:
            raise ValueError(f"K must be >= 1 and beta in (0, 1], got K={self.K}, beta={self.beta}")

    # -- the loss of one batch (Eq. 1-3 and the imputation loss) -------------------------------
    def losses(self, model: RedCoreNet, idx: torch.Tensor, present: torch.Tensor,
               weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L_VIB (Eq. 3, the ``kl`` reading), the vector of L_MSE^m and which modalities the batch
        has, for the rows ``idx`` with presence ``present`` (B x M). ``weight`` (B,): each row's
        weight in the batch means (0 for an ensemble's padding; None: every row counts)."""
        xs = {m: self.X[m][idx] for m in self.names}
        ls = {m: ln[idx] for m, ln in self.L.items()}
        y = self.labels[idx]
        w = torch.ones(len(idx), device=idx.device) if weight is None else weight
        parts, joint = model(xs, present, ls, sample=True)
        pf = present.to(joint.dtype) * w[:, None]                    # the rows that have m (and count)
        kls = torch.stack([kl_standard_normal(parts[m]["mu"], parts[m]["logvar"]) for m in self.names], 1) * pf
        ce = [weighted_mean(F.cross_entropy(model.dec[j](parts[m]["z"]), y, reduction="none"), w)
              for j, m in enumerate(self.names)]
        ce_joint = weighted_mean(F.cross_entropy(model.dec[-1](joint), y, reduction="none"), w)
        kl_m = kls.sum(0) / w.sum().clamp(min=1)                     # per modality, over the batch
        kl_joint = kls.sum() / w.sum().clamp(min=1)                  # the concatenated Gaussian's KL
        ce_m = torch.stack(ce) if self.unimodal_ce else torch.zeros(len(self.names), device=joint.device)
        if self.kl == "paper":                                       # sum_m [-log q + gamma KL]
            vib = ce_m.sum() + ce_joint + self.gamma * (kl_m.sum() + kl_joint)
        elif self.kl == "as_printed":                                # sum_m [KL - gamma log q]
            vib = kl_m.sum() + kl_joint + self.gamma * (ce_m.sum() + ce_joint)
        else:                                                        # the released code
            vib = ce_joint + ce_m.sum() + 0.0016 * kl_m.sum()
        sq = torch.stack([((parts[m]["zbar"] - parts[m]["zhat"]) ** 2).sum(1) for m in self.names], 1)
        mse = (sq * pf).sum(0) / pf.sum(0).clamp(min=1)              # L_MSE^m over the rows that have m
        return vib, mse, pf.sum(0) > 0

    def loss(self, model, idx, weight, extra, state):
        """Algorithm 1, lines 5-7: L = L_VIB + sum_m eta^m L_MSE^m on a batch, with this fit's
        eta (``state``). ``eta_update="code"`` updates eta here, from the moving average that
        includes this batch (the code's order); the projection's update comes before the batch
        (:class:`EtaSchedule`)."""
        vib, mse, have = self.losses(model, idx, extra["P"][idx], weight)
        eta, aux = state["eta"], {"mse": mse.detach(), "have": have}
        if self.regulate and self.eta_update == "code":         # the code: clamp at 0.1 and normalise (not Eq. 9)
            mal = torch.where(have, (1 - self.beta) * state["mal"] + self.beta * mse.detach(), state["mal"])
            lr = self.alpha1 * 1.5 ** (state["step"] // 500 + 1)
            w = (state["code_w"] - lr * relative_advantage(mal)).clamp(min=0.1)
            w = torch.where(state["step"] % self.K == 0, w / w.norm(), state["code_w"])
            eta = self.xi2 * w
            aux["code_w"] = w
        return vib + (eta * mse).sum(), aux

    # -- Algorithm 1 ------------------------------------------------------------------------------
    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        self.fit_seeds(data, [presence], [seed], cfg=cfg, device=device, val_presences=[val_presence], _into=[self])
        return self

    def batchable(self, data=None) -> bool:
        """Several fits train as one ensemble when no self-encoder keeps buffers (BatchNorm) and
        validation does not sample (``sample_at_eval``: its draws would differ from a fit alone)."""
        if self.sample_at_eval:
            return False
        if data is None:
            return self.backbone == "mlp"
        return ensemble_ready(data, self.d, self.backbone, self.sequence)

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None, _into: list | None = None) -> list["RedCore"]:
        """One fitted copy of this method per (training presence, seed) pair, trained together on
        the ensemble engine (:func:`mmlib.engine.fit_ensemble`; one fit is an ensemble of one):
        the networks' weights, Adam, the batch orders, the noise and eta's schedule of every
        member advance in one step loop. Each member equals its fit alone up to rounding."""
        from ..engine import Member, fit_ensemble
        cfg = cfg or TrainConfig()
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        if len(seeds) > 1 and not self.batchable(data):
            return fits_one_by_one(self, data, presences, seeds, cfg, device, vps)
        copies = _into or [copy.deepcopy(self) for _ in seeds]
        members = []
        for m, presence, seed, vp in zip(copies, presences, seeds, vps):
            st = fit_setup(m, data, presence, vp, seed, device)             # plumbing: data on the device
            m.labels, m.trace, m.val = st.y, [], st.val
            m.model = RedCoreNet({k: tuple(x.shape[1:]) for k, x in data.modalities.items()}, data.n_classes,
                                 m.d, m.hidden, m.sequence, n_blocks=m.n_blocks,
                                 zero_missing=m.xenc_input == "available", backbone=m.backbone).to(st.device)
            rows = st.train if m.empty_rows == "keep" else st.rows
            members.append(Member(m.model, rows, {"P": st.P, "val_P": st.val_P}, seed))
        lead = copies[0]
        schedule = EtaSchedule(lead, copies, [int(s) for s in seeds], st.train)

        def val_logits(model, extra):
            parts, joint = model({k: lead.X[k][lead.val] for k in lead.names}, extra["val_P"],
                                 {k: ln[lead.val] for k, ln in lead.L.items()}, sample=lead.sample_at_eval)
            return model.dec[-1](joint)

        histories = fit_ensemble(members, lead.loss, val_logits,
                                 lambda out: validation_scores("multiclass", out, lead.labels[lead.val]), cfg,
                                 desc=self.name, program=schedule)
        for m, hist in zip(copies, histories):
            m.history = hist
        schedule.write_traces()
        return copies

    def _log(self, step, epoch, ra, eta, mal):
        """One eta update in ``trace`` (Figure 5 reads it from the record)."""
        self.trace.append({"step": step, "epoch": epoch, **{f"ra_{m}": float(r) for m, r in zip(self.names, ra)},
                           **{f"eta_{m}": float(e) for m, e in zip(self.names, eta)},
                           **{f"mal_{m}": float(v) for m, v in zip(self.names, mal)}})

    # -- prediction ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, idx, present, what="predict", X=None):
        """The joint decoder's logits (or the joint code) of rows ``idx``; ``X``: the features to
        read (default: the training data's, on the device), e.g. a corrupted test copy."""
        self.model.eval()
        X = self.X if X is None else X
        outs = []
        for s in range(0, len(idx), EVAL_CHUNK):
            b, p = idx[s:s + EVAL_CHUNK], present[s:s + EVAL_CHUNK]
            parts, joint = self.model({m: X[m][b.to(X[m].device)].to(self.device) for m in self.names}, p,
                                      {m: ln[b] for m, ln in self.L.items()}, sample=self.sample_at_eval)
            outs.append(self.model.dec[-1](joint) if what == "predict" else joint)
        return torch.cat(outs)

    def predict(self, data, split, presence=None):
        idx = data.splits[split].to(self.device)
        return self._logits(idx, full_presence(data, split, presence).to(self.device), X=data.modalities).cpu()

    def embed(self, data, split, presence=None):
        idx = data.splits[split].to(self.device)
        return self._logits(idx, full_presence(data, split, presence).to(self.device), "embed", X=data.modalities).cpu()


def _redcore(name, **fixed):
    return lambda **kw: RedCore(name=name, **{**fixed, **kw})


METHODS = {
    "redcore": _redcore("redcore"),
    "redcore_core": _redcore("redcore_core", regulate=False),        # Table 2: "Core"
    "redcore_red": _redcore("redcore_red", unimodal_ce=False),       # Table 2: "Red"
}
