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
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MLP, encode, make_encoder
from ..train import Checkpoint, TrainConfig, adam, batches
from . import Method
from .common import EVAL_CHUNK, fit_setup, full_presence, validation_score


# --------------------------------------------------------------------------- Eq. 9's projection
def project_gamma1(v: torch.Tensor, xi1: float, xi2: float) -> torch.Tensor:
    """The point of Gamma1 = {eta >= xi1, ||eta||_2 = xi2} nearest to v (Eq. 9, p = 2).

    On the sphere ||eta - v||^2 = xi2^2 - 2 v.eta + ||v||^2, so the projection maximises
    v.eta over Gamma1. Its KKT conditions give eta_i = max(xi1, c v_i) with c > 0 set by
    bisection so that ||eta|| = xi2, when some v_i > 0; when every v_i <= 0 the maximiser
    puts every coordinate at xi1 except the largest v_i's, which takes the rest of the norm.
    Gamma1 is the single point xi1 * 1 when xi1 sqrt(M) = xi2, and empty when it is larger.
    Computed in float64; returned in ``v``'s dtype."""
    M, dtype = v.numel(), v.dtype
    if math.isclose(xi1 * math.sqrt(M), xi2, rel_tol=1e-12):
        return torch.full_like(v, xi1)                     # Gamma1 is the single point xi1 * 1
    if xi1 * math.sqrt(M) > xi2:
        raise ValueError(f"Gamma1 is empty: xi1 * sqrt(M) = {xi1 * math.sqrt(M):.4g} > xi2 = {xi2}")
    v = v.double()
    if bool((v <= 0).all()):
        eta = torch.full_like(v, xi1)
        eta[int(v.argmax())] = math.sqrt(xi2 ** 2 - (M - 1) * xi1 ** 2)
        return eta.to(dtype)

    def norm(c):
        return float(torch.clamp(c * v, min=xi1).norm())
    lo, hi = 0.0, 1.0
    while norm(hi) < xi2:
        hi *= 2.0
    for _ in range(100):                                   # norm(c) is increasing in c
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if norm(mid) < xi2 else (lo, mid)
    return torch.clamp(hi * v, min=xi1).to(dtype)          # computed in float64, returned in v's dtype


def relative_advantage(mal: torch.Tensor) -> torch.Tensor:
    """Eq. 4-5: RA^m = (Lbar - L^m) / Lbar with Lbar the mean over modalities."""
    mean = mal.mean()
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
            zbar = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
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
    def losses(self, model: RedCoreNet, idx: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L_VIB (Eq. 3, the ``kl`` reading) and the vector of L_MSE^m for the rows ``idx``
        with presence ``present`` (B x M)."""
        xs = {m: self.X[m][idx] for m in self.names}
        ls = {m: ln[idx] for m, ln in self.L.items()}
        y = self.labels[idx]
        parts, joint = model(xs, present, ls, sample=True)
        pf = present.to(joint.dtype)
        kls = torch.stack([kl_standard_normal(parts[m]["mu"], parts[m]["logvar"]) for m in self.names], 1) * pf
        ce = [F.cross_entropy(model.dec[j](parts[m]["z"]), y) for j, m in enumerate(self.names)]
        ce_joint = F.cross_entropy(model.dec[-1](joint), y)
        kl_m = kls.mean(0)                                           # per modality, over the batch
        kl_joint = kls.sum(1).mean()                                 # the concatenated Gaussian's KL
        ce_m = torch.stack(ce) if self.unimodal_ce else torch.zeros(len(self.names), device=joint.device)
        if self.kl == "paper":                                       # sum_m [-log q + gamma KL]
            vib = ce_m.sum() + ce_joint + self.gamma * (kl_m.sum() + kl_joint)
        elif self.kl == "as_printed":                                # sum_m [KL - gamma log q]
            vib = kl_m.sum() + kl_joint + self.gamma * (ce_m.sum() + ce_joint)
        else:                                                        # the released code
            vib = ce_joint + ce_m.sum() + 0.0016 * kl_m.sum()
        sq = torch.stack([((parts[m]["zbar"] - parts[m]["zhat"]) ** 2).sum(1) for m in self.names], 1)
        mse = (sq * pf).sum(0) / pf.sum(0).clamp(min=1)              # L_MSE^m over the rows that have m
        return vib, mse

    # -- Algorithm 1 ------------------------------------------------------------------------------
    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        cfg = cfg or TrainConfig()
        s = fit_setup(self, data, presence, val_presence, seed, device)          # plumbing: data on the device
        dev, P, train, val, val_P, self.labels = s.device, s.P, s.train, s.val, s.val_P, s.y
        presence, M = P[train], len(self.names)
        rows = train if self.empty_rows == "keep" else s.rows
        self.model = model = RedCoreNet({m: tuple(x.shape[1:]) for m, x in data.modalities.items()}, data.n_classes,
                                        self.d, self.hidden, self.sequence, n_blocks=self.n_blocks,
                                        zero_missing=self.xenc_input == "available", backbone=self.backbone).to(dev)

        opt = adam(model.parameters(), cfg)
        keeper, order, shuffle = Checkpoint(cfg.patience, cfg.min_epochs), torch.Generator().manual_seed(seed), \
            torch.Generator().manual_seed(seed + 1)
        eta = torch.full((M,), self.xi2 / math.sqrt(M))             # eta_0: equal (see the docstring)
        code_w = torch.ones(M)                                       # the code's weights (eta_update="code")
        mal, step, self.history, self.trace = None, 0, [], []
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            Pe = P
            if self.mask_follows == "batch_position":                # the code: the mask moves to other samples
                Pe = P.clone()
                Pe[train] = presence[torch.randperm(len(train), generator=shuffle).to(dev)]
            model.train()
            total = 0.0
            for idx in batches(rows, cfg.batch_size, order):
                if self.eta_update == "projection" and step % self.K == 0 and mal is not None:
                    ra = relative_advantage(mal)                                    # Algorithm 1, line 3: Eqs. 10, 4, 5
                    if self.regulate:                                               # (Core: RA is logged, eta kept)
                        eta = project_gamma1(eta - self.alpha1 * ra, self.xi1, self.xi2)   # line 4: Eq. 9
                    self._log(step, epoch, ra, eta, mal)
                vib, mse = self.losses(model, idx, Pe[idx])                # lines 5-7: a step on theta
                with torch.no_grad():                                      # Eq. 10 (the rows that have m)
                    have, m_now = Pe[idx].any(0).cpu(), mse.detach().cpu()
                    if mal is None and self.eta_update == "projection":
                        mal = m_now.clone()                                # starts at the first value
                    else:                                                  # (the code starts at 0)
                        mal = torch.zeros_like(m_now) if mal is None else mal
                        mal = torch.where(have, (1 - self.beta) * mal + self.beta * m_now, mal)
                if self.regulate and self.eta_update == "code" and step % self.K == 0:
                    ra = relative_advantage(mal)                           # the code: this batch's average, then
                    lr = self.alpha1 * 1.5 ** (step // 500 + 1)            # clamp at 0.1 and normalise (not Eq. 9)
                    code_w = (code_w - lr * ra).clamp(min=0.1)
                    code_w = code_w / code_w.norm()
                    eta = self.xi2 * code_w
                    self._log(step, epoch, ra, eta, mal)
                loss = vib + (eta.to(dev) * mse).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                total += float(loss.detach()) * len(idx)
            score = self._val_score(val, val_P)                             # plumbing from here on
            self.history.append({"epoch": epoch, "train_loss": total / max(len(rows), 1), "val_score": score,
                                 "eta": [float(e) for e in eta], "seconds": time.perf_counter() - t0})
            if keeper.update(epoch, score, lambda: copy.deepcopy(model.state_dict())):
                break
        keeper.restore(model)
        return self

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

    def _val_score(self, val, val_P) -> float:
        return validation_score("multiclass", self._logits(val, val_P), self.labels[val])

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
