"""MLE: maximum likelihood estimation for multimodal learning with missing modality.

Fei Ma, Xiangxiang Xu, Shao-Lun Huang, Lin Zhang (2021), arXiv:2108.10513. No official
code exists; this file implements the paper's text, top to bottom.

Setting (Sec. 2.1). Two modalities: ``x`` is always observed, ``y`` is missing in part of
the training set; ``z`` is the class. The equations below keep the paper's letters; in the
code's options the two modalities are ``x1`` (the paper's x) and ``x2`` (the paper's y),
since ``y`` is the label everywhere else in the book. The training set splits into the modality-complete
set D_XYZ (n_c samples) and the modality-missing set D_XZ (n_m samples).

The model (Sec. 2.2, Fig. 2-3). Feature networks f(x), g(y) (k-dimensional), a label
feature network h(z) (a linear layer on the one-hot label) and a fusion phi(f, g):
addition f + g (k), concatenation [f; g] (2k) or outer product vec(f g^T) (k^2); h has
phi's dimension. The joint distribution is a generalized softmax (Eq. 3)

    Q_XYZ(x, y, z) ∝ R_X(x) R_Y(y) R_Z(z) exp(phi(f(x), g(y))^T h(z)),

with R_* the empirical distributions, which gives the two conditionals used in the loss:

    Q_{Z|XY}(z|x,y) = R_Z(z) e^{s(x,y,z)} / sum_z' R_Z(z') e^{s(x,y,z')}                       (Eq. 4)
    Q_{Z|X}(z|x)   = R_Z(z) sum_y' R_Y(y') e^{s(x,y',z)} / sum_z' R_Z(z') sum_y' R_Y(y') e^{s(x,y',z')}  (Eq. 5)

where s(x, y, z) = phi(f(x), g(y))^T h(z) and y' runs over the y of the complete set
(R_Y puts mass 1/n_c on each). The loss is the negative log-likelihood (Eq. 2)

    L = - sum_{D_XYZ} log Q_{Z|XY}(z|x,y) - sum_{D_XZ} log Q_{Z|X}(z|x),

trained end to end. We average it over each batch.

The sum over y' (Eq. 5). ``support="all"`` (default) recomputes g on *every* complete
training sample at every step (with gradients), which is Eq. 5 exactly; ``"batch"``
uses only the complete samples of the current batch (cheaper, noisier; a batch with none
contributes no Eq. 5 term); ``"all_detached"`` uses every complete sample but treats
g(y') as a constant in Eq. 5, so the modality-missing samples train f and h but do not
pull on g (the book's variant: the chapter measures why). For phi = addition or concatenation the score separates,
s = a(x, z) + c(y', z), so Eq. 5 reduces to a softmax of a(x, z) + log R_Z(z) +
log mean_j exp c(y'_j, z): the missing modality only shifts each class by a constant.
Only the outer product lets y' interact with x.

Prediction. On complete test data, Eq. 4 (as in the paper). For test samples missing y,
Eq. 5 with the training complete set as the support (the paper's "future work").

Baselines of the paper, in the same structure (Sec. 3.3): ``incomplete="discard"`` (the
lower bound: Eq. 4 on D_XYZ only), ``incomplete="zero"`` (zero padding: g(y) := 0 for
missing y, Eq. 4 for every sample; with the outer product this makes incomplete samples
useless, so the paper, and this code, refuse it), :class:`HGR` (soft-HGR maximal
correlation features) and :class:`AEImpute` (AE1, and AE2 with self-training).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MLP, make_encoder, noise_stream
from ..engine import Program
from ..train import Adam, DropoutStream, TrainConfig, fit, get_device, seed_everything, stream_seed
from . import Method
from .common import full_presence, two_roles, two_rows

PHIS = ("add", "concat", "outer")


class MLENet(nn.Module):
    """f(x), g(y), h(z) and the fusion phi of Fig. 3."""

    def __init__(self, x_shape, y_shape, n_classes: int, phi: str = "add", k: int = 32, backbone: str = "cnn"):
        super().__init__()
        if phi not in PHIS:
            raise ValueError(f"unknown phi {phi!r}; use one of {PHIS}")
        self.phi, self.k = phi, k
        self.f = make_encoder(x_shape, k, backbone)
        self.g = make_encoder(y_shape, k, backbone)
        d = {"add": k, "concat": 2 * k, "outer": k * k}[phi]
        self.h = nn.Linear(n_classes, d, bias=False)        # h(z) = W onehot(z): H[z] = W[:, z]

    @property
    def H(self) -> torch.Tensor:                            # (C, d): row z is h(z)
        return self.h.weight.T

    def fuse(self, fx, gy):
        """phi(f, g) (Fig. 3)."""
        if self.phi == "add":
            return fx + gy
        if self.phi == "concat":
            return torch.cat([fx, gy], 1)
        return torch.einsum("bp,bq->bpq", fx, gy).flatten(1)   # vec(f g^T)

    def pair_scores(self, fx, gy):
        """s[b, z] = phi(f(x_b), g(y_b))^T h(z): the exponent of Eq. 4."""
        if self.phi == "outer":                              # f^T M_z g without forming vec(f g^T)
            M = self.H.reshape(-1, self.k, self.k)
            return torch.einsum("bp,zpq,bq->bz", fx, M, gy)
        return self.fuse(fx, gy) @ self.H.T

    def cross_scores(self, fx, gY):
        """s[b, j, z] = phi(f(x_b), g(y'_j))^T h(z) for every pair: the exponent of Eq. 5."""
        H, k = self.H, self.k
        if self.phi == "add":
            return (fx @ H.T)[:, None, :] + (gY @ H.T)[None, :, :]
        if self.phi == "concat":
            return (fx @ H[:, :k].T)[:, None, :] + (gY @ H[:, k:].T)[None, :, :]
        return torch.einsum("bp,zpq,jq->bjz", fx, H.reshape(-1, k, k), gY)

    def log_q_z_given_x(self, fx, gY, log_rz, log_ry):
        """Eq. 5, log Q_{Z|X}(z | x), for the rows ``fx`` (B, d) over the y' of ``gY`` (J, d) with
        log weights ``log_ry`` (J,). With an additive phi (addition, concatenation) the exponent
        splits, s[b, j, z] = a[b, z] + c[j, z], so the sum over y' factors out of the rows:
        log sum_j R_Y(y'_j) e^{s[b, j, z]} = a[b, z] + log sum_j R_Y(y'_j) e^{c[j, z]}, computed in
        O((B + J) C) instead of forming the (B, J, C) scores (:func:`log_q_z_given_x`, the same
        value to rounding; the outer product does not split)."""
        if self.phi == "outer":
            return log_q_z_given_x(self.cross_scores(fx, gY), log_rz, log_ry)
        H, k = self.H, self.k
        hx, hy = (H, H) if self.phi == "add" else (H[:, :k], H[:, k:])
        num = fx @ hx.T + log_rz + (gY @ hy.T + log_ry[:, None]).logsumexp(0)
        return num - num.logsumexp(1, keepdim=True)


def log_q_z_given_xy(s: torch.Tensor, log_rz: torch.Tensor) -> torch.Tensor:
    """Eq. 4: log Q_{Z|XY}(z | x, y) from scores s (B, C) and log R_Z (C,)."""
    a = s + log_rz
    return a - a.logsumexp(1, keepdim=True)


def log_q_z_given_x(s3: torch.Tensor, log_rz: torch.Tensor, log_ry: torch.Tensor) -> torch.Tensor:
    """Eq. 5: log Q_{Z|X}(z | x) from cross scores s3 (B, J, C), log R_Z (C,) and the
    log weights log R_Y(y'_j) (J,) of the complete set's y."""
    a = s3 + log_rz[None, None, :] + log_ry[None, :, None]
    num = a.logsumexp(1)                                     # log sum_j R_Y(y'_j) R_Z(z) e^{s}
    return num - num.logsumexp(1, keepdim=True)


@dataclass(eq=False)
class _TwoModality(Method):
    """Shared set-up: which modality is x1 (always present: the paper's x) and which is x2
    (incomplete: the paper's y). In this file ``X`` holds x1 and ``X2`` holds x2; the
    label (the paper's z) is ``labels``."""
    x1: str | None = field(default=None, kw_only=True)     # keyword-only: after each subclass's fields
    x2: str | None = field(default=None, kw_only=True)

    def _setup(self, data, presence, seed, cfg, device, val_presence=None):
        self.cfg = cfg or TrainConfig()
        self.device = get_device(device)
        seed_everything(seed)
        presence = full_presence(data, "train", presence)
        self.x1, self.x2, ix, iy = two_roles(data, presence, self.x1, self.x2, self.name)
        self.ix, self.iy, self.required = ix, iy, [self.x1]
        dev = self.device
        train = data.splits["train"].to(dev)
        self.X = data.modalities[self.x1].to(dev)
        self.X2 = data.modalities[self.x2].to(dev)
        self.labels = data.y.to(dev)
        self.has_x2 = torch.zeros(len(data), dtype=torch.bool, device=dev)
        self.has_x2[train] = presence[:, iy].to(dev)
        self.train_idx = train
        self.complete = train[self.has_x2[train]]
        self.n_classes = data.n_classes
        counts = torch.bincount(self.labels[train], minlength=data.n_classes).float()
        self.log_rz = torch.log(counts / counts.sum()).clamp(min=-30)     # R_Z: all training labels
        self.val = data.splits["val"].to(dev)
        # selection: the validation rows as they are (a masked split, or every row with x2)
        self.has_x2[self.val] = full_presence(data, "val", val_presence)[:, iy].to(dev)
        return data

    def _val_accuracy(self, model) -> float:
        """Model selection: accuracy on the validation split, each row with what it has
        (Eq. 4 where x2 is present, Eq. 5 or the method's rule where not)."""
        has = self.has_x2[self.val]
        return float((self._scores(model, self.val, has).argmax(1) == self.labels[self.val]).float().mean())

    def predict(self, data, split, presence=None):
        """log Q(z | ...) per row of ``split``; ``_scores`` is each subclass's rule."""
        idx, has_x2 = self._rows(data, split, presence)
        return self._scores(self.model, idx, has_x2).cpu()

    def _rows(self, data, split, presence):
        return two_rows(data, split, presence, self.ix, self.iy, self.name, self.device)


@dataclass(eq=False)
class MLE(_TwoModality):
    """The paper's method (``incomplete="marginalize"``) and its two same-structure
    baselines, lower bound (``"discard"``) and zero padding (``"zero"``). ``support``: the
    y' of Eq. 5 (see the module's docstring)."""
    name: str = "mle"
    phi: str = "add"
    incomplete: str = "marginalize"
    support: str = "all"
    k: int = 32
    backbone: str = "cnn"

    def __post_init__(self):
        super().__post_init__()
        if self.phi not in PHIS:
            raise ValueError(f"unknown phi {self.phi!r}; use one of {PHIS}")
        if self.incomplete not in ("marginalize", "zero", "discard"):
            raise ValueError(f"unknown incomplete={self.incomplete!r}; use marginalize, zero or discard")
        if self.incomplete == "zero" and self.phi == "outer":
            raise ValueError("zero padding with the outer product: vec(f g^T) = 0 when g = 0, so the "
                             "modality-missing samples would carry no information (the paper leaves it out)")
        if self.support not in ("all", "batch", "all_detached"):
            raise ValueError(f"unknown support={self.support!r}; use 'all', 'batch' or 'all_detached'")

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        data = self._setup(data, presence, seed, cfg, device, val_presence)
        self.model = MLENet(tuple(self.X.shape[1:]), tuple(self.X2.shape[1:]), self.n_classes,
                            self.phi, self.k, self.backbone).to(self.device)
        n_c = len(self.complete)
        if n_c == 0 and self.incomplete != "zero":
            raise ValueError(f"{self.name}: no training sample has {self.x2!r}; Eq. 4/5 need some")
        if self.batchable():    # the same loss without data-dependent shapes, on the ensemble engine alone
            self._train_together([self], [seed])
            return self
        rows = self.complete if self.incomplete == "discard" else self.train_idx
        with noise_stream(DropoutStream(seed)):            # the seed's own dropout masks
            self.model, self.history = fit(self.model, self.loss, rows, self._val_accuracy, self.cfg, seed=seed,
                                           desc=self.name)
        return self

    def loss(self, model, idx):
        """Eq. 2 on the batch ``idx``: -log Q_{Z|XY} (Eq. 4) on its complete rows, -log Q_{Z|X}
        (Eq. 5) or zero padding on the others, averaged over the batch."""
        comp = self.has_x2[idx]
        fx = model.f(self.X[idx])
        z = self.labels[idx]
        nll = 0.0 * fx.sum()                                    # (stays in the graph if no term applies)
        if comp.any():                                          # D_XYZ: -log Q_{Z|XY} (Eq. 4)
            s = model.pair_scores(fx[comp], model.g(self.X2[idx[comp]]))
            nll = nll - log_q_z_given_xy(s, self.log_rz).gather(1, z[comp, None]).sum()
        miss = ~comp
        if miss.any() and self.incomplete == "zero":            # ZP: g(y) := 0
            s = model.pair_scores(fx[miss], fx.new_zeros(int(miss.sum()), self.k))
            nll = nll - log_q_z_given_xy(s, self.log_rz).gather(1, z[miss, None]).sum()
        elif miss.any() and self.incomplete == "marginalize":   # D_XZ: -log Q_{Z|X} (Eq. 5)
            support = idx[comp] if self.support == "batch" else self.complete
            if len(support):
                gY = model.g(self.X2[support])
                if self.support == "all_detached":                # y' as constants: Eq. 5 trains f and h only
                    gY = gY.detach()
                log_ry = torch.full((len(support),), -math.log(len(support)), device=fx.device)
                lq = model.log_q_z_given_x(fx[miss], gY, self.log_rz, log_ry)
                nll = nll - lq.gather(1, z[miss, None]).sum()
        return nll / len(idx)

    # ---------------------------------------------------------------------- seeds as a batch (plumbing)
    def masked_loss(self, model, idx, has_x2, complete, weight=None):
        """:meth:`loss` without data-dependent shapes, so that fits can train as one ensemble
        (``vmap``): every row of the batch goes through both terms, each weighted by whether the
        row has y (a missing y is zeroed before g, so it never enters the network). The same
        value and gradients as :meth:`loss` (a test checks it); only for encoders without
        BatchNorm, whose statistics would see the zeroed rows. ``weight`` (B,): the ensemble
        engine's padding rows get 0."""
        w = torch.ones(idx.shape[0], device=idx.device) if weight is None else weight
        comp = has_x2[idx] & (w > 0)
        w_c = comp.to(self.X.dtype)
        fx, z = model.f(self.X[idx]), self.labels[idx][:, None]
        yb = self.X2[idx] * w_c.reshape(-1, *([1] * (self.X2.dim() - 1)))
        gy = model.g(yb)
        nll = -(log_q_z_given_xy(model.pair_scores(fx, gy), self.log_rz).gather(1, z).squeeze(1) * w_c).sum()
        if self.incomplete == "zero":
            s = model.pair_scores(fx, torch.zeros_like(gy))
            nll = nll - (log_q_z_given_xy(s, self.log_rz).gather(1, z).squeeze(1) * (1 - w_c) * w).sum()
        elif self.incomplete == "marginalize":
            if self.support == "batch":                  # the batch's complete rows; -1e4 ~ weight 0
                n_c = comp.sum()
                log_ry = torch.where(comp, -torch.log(n_c.clamp(min=1).to(fx.dtype)), torch.full_like(w_c, -1e4))
                w_m = (1 - w_c) * w * (n_c > 0).to(fx.dtype)
            else:
                gy = model.g(self.X2[complete])
                if self.support == "all_detached":
                    gy = gy.detach()
                log_ry = torch.full((complete.shape[0],), -math.log(complete.shape[0]), device=fx.device)
                w_m = (1 - w_c) * w
            lq = model.log_q_z_given_x(fx, gy, self.log_rz, log_ry)
            nll = nll - (lq.gather(1, z).squeeze(1) * w_m).sum()
        return nll / w.sum().clamp(min=1)

    def batchable(self, data=None) -> bool:
        return self.backbone == "mlp"

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None) -> list["MLE"]:
        """One fitted copy per (training presence, seed) pair, trained on the ensemble engine
        (:func:`mmlib.engine.fit_ensemble`), one ensemble per size of the complete set: Eq. 5's
        y' run through g in training mode, so each complete row draws dropout noise, and a member
        padded to a longer set would draw noise its own fit does not. ``val_presences``: each
        member's masked validation split (None: every modality)."""
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        if not self.batchable():
            return [copy.deepcopy(self).fit(data, P, seed=s, cfg=cfg, device=device, val_presence=vp)
                    for P, s, vp in zip(presences, seeds, vps)]
        copies = []
        for presence, seed, vp in zip(presences, seeds, vps):
            m = copy.deepcopy(self)
            m._setup(data, presence, seed, cfg, device, vp)
            m.model = MLENet(tuple(m.X.shape[1:]), tuple(m.X2.shape[1:]), m.n_classes, m.phi, m.k,
                             m.backbone).to(m.device)
            if len(m.complete) == 0 and m.incomplete != "zero":
                raise ValueError(f"{m.name}: no training sample has {m.x2!r}; Eq. 4/5 need some")
            copies.append(m)
        groups: dict[int, list[int]] = {}
        for k, m in enumerate(copies):
            groups.setdefault(len(m.complete), []).append(k)
        for ks in groups.values():
            self._train_together([copies[k] for k in ks], [seeds[k] for k in ks])
        return copies

    def _train_together(self, copies: list["MLE"], seeds: list[int]) -> None:
        """Train set-up copies (``_setup`` done, ``model`` built; complete sets of one size) as one
        ensemble."""
        from ..engine import Member, fit_ensemble
        members = [Member(m.model, m.complete if m.incomplete == "discard" else m.train_idx,
                          {"has_x2": m.has_x2, "complete": m.complete}, seed) for m, seed in zip(copies, seeds)]
        first = copies[0]
        val = first.val

        def loss_fn(model, idx, weight, e):
            return first.masked_loss(model, idx, e["has_x2"], e["complete"], weight)

        def val_logits(model, e):
            """:meth:`_scores` on the validation rows without data-dependent shapes: Eq. 4 on x2
            (zeroed where hidden, so never read) and the missing-x2 rule, picked per row."""
            out = []
            for v in val.split(512):
                has = e["has_x2"][v]
                fx = model.f(first.X[v])
                x2 = first.X2[v] * has.to(first.X2.dtype).reshape(-1, *([1] * (first.X2.dim() - 1)))
                with_x2 = log_q_z_given_xy(model.pair_scores(fx, model.g(x2)), first.log_rz)
                if first.incomplete == "zero":
                    without = log_q_z_given_xy(model.pair_scores(fx, torch.zeros_like(model.g(x2))), first.log_rz)
                else:
                    comp = e["complete"]
                    log_ry = torch.full((comp.shape[0],), -math.log(comp.shape[0]), device=fx.device)
                    without = model.log_q_z_given_x(fx, model.g(first.X2[comp]), first.log_rz, log_ry)
                out.append(torch.where(has[:, None], with_x2, without))
            return torch.cat(out)

        def val_score(out):                              # (K, n_val, C) -> (K,)
            return (out.argmax(-1) == first.labels[val]).float().mean(-1)
        histories = fit_ensemble(members, loss_fn, val_logits, val_score, first.cfg, desc=self.name)
        for m, hist in zip(copies, histories):
            m.history = hist

    @torch.no_grad()
    def _support(self, model):
        """g over every complete training sample and log R_Y: the y' of Eq. 5."""
        gY = torch.cat([model.g(self.X2[c]) for c in self.complete.split(1024)])
        return gY, torch.full((len(gY),), -math.log(max(len(gY), 1)), device=gY.device)

    @torch.no_grad()
    def _scores(self, model, idx, has_x2):
        """log Q(z | ...) for rows idx: Eq. 4 where y is present, Eq. 5 (or g = 0 for ZP) where not."""
        model.eval()
        out = torch.empty(len(idx), self.n_classes, device=self.device)
        support = None
        for s0 in range(0, len(idx), 512):
            b, hy = idx[s0:s0 + 512], has_x2[s0:s0 + 512]
            fx = model.f(self.X[b])
            o = torch.empty(len(b), self.n_classes, device=self.device)
            if hy.any():
                o[hy] = log_q_z_given_xy(model.pair_scores(fx[hy], model.g(self.X2[b[hy]])), self.log_rz)
            if (~hy).any():
                if self.incomplete == "zero":
                    g0 = fx.new_zeros(int((~hy).sum()), self.k)
                    o[~hy] = log_q_z_given_xy(model.pair_scores(fx[~hy], g0), self.log_rz)
                else:
                    if support is None:
                        support = self._support(model)
                    o[~hy] = model.log_q_z_given_x(fx[~hy], support[0], self.log_rz, support[1])
            out[s0:s0 + 512] = o
        return out

    @torch.no_grad()
    def embed(self, data, split, presence=None):
        """phi(f(x), g(y)); for a missing y, g is replaced by the mean g of the complete set
        (zero for zero padding)."""
        idx, has_x2 = self._rows(data, split, presence)
        m = self.model.eval()
        fx = torch.cat([m.f(self.X[c]) for c in idx.split(1024)])
        gy = torch.cat([m.g(self.X2[c]) for c in idx.split(1024)])
        fill = torch.zeros(self.k, device=self.device) if self.incomplete == "zero" else self._support(m)[0].mean(0)
        gy[~has_x2] = fill
        return m.fuse(fx, gy).cpu()


# ---------------------------------------------------------------------------------- HGR
def soft_hgr_loss(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Minus the soft-HGR objective E[u^T v] - 1/2 tr(cov(u) cov(v)) on centred features
    (Wang et al., 2019): its maximizers approximate the HGR maximal correlation functions.
    ``w`` (rows,): 1 for a row of the sample, 0 for a row outside it (the value of the sample's
    rows alone; an empty sample gives 0)."""
    w = torch.ones(u.shape[0], device=u.device) if w is None else w
    s = w.sum()
    u = (u - (w[:, None] * u).sum(0) / s.clamp(min=1)) * w[:, None]         # centred; rows outside: 0
    v = (v - (w[:, None] * v).sum(0) / s.clamp(min=1)) * w[:, None]
    n = (s - 1).clamp(min=1)
    if u.shape[0] < u.shape[1]:       # fewer rows than features (phi = outer): tr(U'U V'V) = ||U V'||^2, cheaper
        trace = ((u @ v.T) ** 2).sum() / n ** 2
    else:
        trace = ((u.T @ u) * (v.T @ v)).sum() / n ** 2
    return -((u * v).sum() / s.clamp(min=1) - 0.5 * trace)


@dataclass(eq=False)
class HGR(_TwoModality):
    """HGR maximal correlation baseline (Sec. 3.3): soft-HGR between phi(f(x), g(y)) and
    h(z) on D_XYZ, and between f(x) and a second label feature h2(z) on D_XZ. Prediction
    P(z | .) ∝ R_Z(z) (1 + u^T h(z)) with centred features (clipped at a small positive).

    A batch with fewer than 16 complete rows is topped up with 32 complete training rows drawn
    at random (covariances need a few samples: the fit's stream ``hgr:top-up`` draws 32 for
    every step, read only when needed); the D_XZ term needs at least two rows. With MLP
    encoders every row goes through the networks with a weight (0 or 1) instead of being
    selected, so several fits train as one ensemble (:mod:`mmlib.engine`); BatchNorm encoders
    (the CNNs) see only each term's rows."""

    name: str = "hgr"
    phi: str = "add"
    k: int = 32
    backbone: str = "cnn"
    TOP_UP = 32

    def batchable(self, data=None) -> bool:
        return self.backbone == "mlp"

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        self.fit_seeds(data, [presence], [seed], cfg=cfg, device=device, val_presences=[val_presence], _into=[self])
        return self

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None, _into: list | None = None) -> list["HGR"]:
        """One fitted copy per (training presence, seed) pair on the ensemble engine
        (:func:`mmlib.engine.fit_ensemble`; a fit alone: the plain loop)."""
        from ..engine import Member, fit_ensemble
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        copies = _into or [copy.deepcopy(self) for _ in seeds]
        if len(seeds) > 1 and not self.batchable(data):
            return [c.fit_seeds(data, [P], [s], cfg=cfg, device=device, val_presences=[vp], _into=[c])[0]
                    for c, P, s, vp in zip(copies, presences, seeds, vps)]
        members = []
        for m, presence, seed, vp in zip(copies, presences, seeds, vps):
            m._setup(data, presence, seed, cfg, device, vp)
            net = MLENet(tuple(m.X.shape[1:]), tuple(m.X2.shape[1:]), m.n_classes, m.phi, m.k, m.backbone)
            net.h2 = nn.Linear(m.n_classes, m.k, bias=False)
            m.model = net.to(m.device)
            if len(m.complete) < 2:
                raise ValueError(f"{m.name}: needs at least two complete training samples")
            members.append(Member(m.model, m.train_idx, {"has_x2": m.has_x2}, seed))
        n_c = max(len(m.complete) for m in copies)          # each member's complete rows, padded to one length
        for m, mem in zip(copies, members):
            pad = n_c - len(m.complete)
            mem.extra["complete"] = torch.cat([m.complete, m.complete[:1].repeat(pad)])
            mem.extra["complete_w"] = torch.cat([torch.ones(len(m.complete)), torch.zeros(pad)]).to(m.device)
        first = copies[0]

        def val_score(out):                                                  # (K, n_val, C) -> (K,)
            return (out.argmax(-1) == first.labels[first.val]).float().mean(-1)
        histories = fit_ensemble(members, lambda model, idx, w, e, st: (first.loss(model, idx, w, e, st), {}),
                                 lambda model, e: first._scores(model, first.val, e["has_x2"][first.val], e["complete"],
                                                                e["complete_w"]),
                                 val_score, first.cfg, desc=self.name, program=_TopUp(copies, seeds))
        for m, hist in zip(copies, histories):
            m.history = hist
        return copies

    def loss(self, model, idx, weight, e, st):
        """The two soft-HGR terms on the batch ``idx`` (``weight``: 0 marks the engine's padding):
        D_XYZ on its complete rows (with the step's top-up rows ``st["top_up"]`` when it has fewer
        than 16), D_XZ on its other rows (when it has at least two)."""
        w = torch.ones(idx.shape[0], device=idx.device) if weight is None else weight
        w_c = (e["has_x2"][idx] & (w > 0)).to(self.X.dtype)                 # the batch's complete rows
        w_m = (1 - w_c) * w                                                  # and the others
        n_up = st["top_up"].shape[0]              # (the top-up rows first: the engine's rule for added rows)
        rows = torch.cat([st["top_up"], idx])
        w_xyz = torch.cat([(w_c.sum() < 16).to(w_c.dtype).expand(n_up), w_c])
        z = F.one_hot(self.labels[rows], self.n_classes).to(self.X.dtype)
        if not self.batchable():                # BatchNorm encoders: each term's rows only (their statistics)
            c, mi = w_xyz > 0, torch.zeros_like(w_xyz, dtype=torch.bool)
            mi[n_up:] = w_m > 0
            loss = soft_hgr_loss(model.fuse(model.f(self.X[rows[c]]), model.g(self.X2[rows[c]])), model.h(z[c]))
            if int(mi.sum()) > 1:
                loss = loss + soft_hgr_loss(model.f(self.X[rows[mi]]), model.h2(z[mi]))
            return loss
        fx = model.f(self.X[rows])
        x2 = self.X2[rows] * w_xyz.reshape(-1, *([1] * (self.X2.dim() - 1)))     # a missing y never enters g
        loss = soft_hgr_loss(model.fuse(fx, model.g(x2)), model.h(z), w_xyz)                   # D_XYZ
        return loss + (w_m.sum() > 1).to(fx.dtype) * soft_hgr_loss(fx[n_up:], model.h2(z[n_up:]), w_m)   # D_XZ

    def _scores(self, model, idx, has, complete, complete_w=None):
        """log P(z | .) of the rows ``idx``, with x2 where ``has``; features centred by the training
        rows' means (phi(f, g) by the complete training rows': ``complete``, with weights
        ``complete_w``, 0 for padding)."""
        eye = torch.eye(self.n_classes, device=self.device)
        rz = self.log_rz.exp()
        w = torch.ones(complete.shape[0], device=self.device) if complete_w is None else complete_w

        def f_g(rows, keep):                     # f(x) and phi(f(x), g(y)), y zeroed where not kept
            fx = torch.cat([model.f(self.X[c]) for c in rows.split(1024)])
            x2 = self.X2[rows] * keep.to(self.X.dtype).reshape(-1, *([1] * (self.X2.dim() - 1)))
            return fx, model.fuse(fx, torch.cat([model.g(c) for c in x2.split(1024)]))
        fx_tr = torch.cat([model.f(self.X[c]) for c in self.train_idx.split(1024)])
        _, u_tr = f_g(complete, w > 0)
        u_c = (u_tr * w[:, None]).sum(0) / w.sum().clamp(min=1)
        H, H2 = model.h(eye), model.h2(eye)                         # (C, d), (C, k)
        Hc, H2c = H - rz @ H, H2 - rz @ H2                           # centred under R_Z
        fx, u = f_g(idx, has)
        with_x2 = self.log_rz + torch.log((1 + (u - u_c) @ Hc.T).clamp(min=1e-6))
        without = self.log_rz + torch.log((1 + (fx - fx_tr.mean(0)) @ H2c.T).clamp(min=1e-6))
        return torch.where(has[:, None], with_x2, without)

    @torch.no_grad()
    def predict(self, data, split, presence=None):
        idx, has = self._rows(data, split, presence)
        return self._scores(self.model.eval(), idx, has, self.complete).cpu()

    @torch.no_grad()
    def embed(self, data, split, presence=None):
        idx, _ = self._rows(data, split, presence)
        return self.model.eval().f(self.X[idx]).cpu()


class _TopUp(Program):
    """HGR's top-up rows: for every step of the epoch, 32 complete training rows of the member,
    drawn at random from its stream ``hgr:top-up`` at the epoch's start and handed to the loss
    as its state ``top_up``, one step's at a time."""

    def __init__(self, copies: list[HGR], seeds: list[int]):
        self.complete = [m.complete for m in copies]
        self.gens = [torch.Generator().manual_seed(stream_seed(s, "hgr:top-up")) for s in seeds]
        self.steps = [-(-len(m.train_idx) // m.cfg.batch_size) for m in copies]
        self.n = copies[0].TOP_UP

    def init(self, members) -> dict:
        return {"top_up": torch.stack([c[:1].repeat(self.n) for c in self.complete])}

    def epoch(self, extra, alive, epoch):
        T = max(self.steps[i] for i in alive)
        draws = []
        for i in alive:
            c = self.complete[i]
            pick = torch.randint(len(c), (self.steps[i], self.n), generator=self.gens[i]).to(c.device)
            draws.append(torch.cat([c[pick], c[:1].repeat(T - self.steps[i], self.n)]))
        self.draws, self.t = torch.stack(draws), 0
        return extra

    def before(self, state, active, alive, epoch):
        state["top_up"].copy_(self.draws[:, self.t])
        self.t += 1


@dataclass(eq=False)
class AEImpute(_TwoModality):
    """Autoencoder imputation (Sec. 3.3). An MLP x -> y is trained on D_XYZ; its output
    imputes the missing y; the same f, g, h, phi network is then trained with Eq. 4 on
    every sample. AE1 trains the autoencoder first, for ``cfg.epochs`` epochs. AE2
    (``self_training=True``) trains it one epoch before each classifier epoch, on D_XYZ
    plus D_XZ with its previous imputation as the target (self-training). A test sample
    missing y is imputed the same way."""

    name: str = "ae1"
    phi: str = "add"
    self_training: bool = False
    k: int = 32
    backbone: str = "cnn"

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        data = self._setup(data, presence, seed, cfg, device, val_presence)
        dx, dy = self.X[0].numel(), self.X2[0].numel()
        self.ae = MLP(dx, [256, 64, 256], dy).to(self.device)      # x -> bottleneck -> y
        opt = Adam(self.ae.parameters(), lr=self.cfg.lr)
        gen = torch.Generator().manual_seed(stream_seed(seed, "mle:ae-imputation"))
        self.X2imp = self.X2.clone()
        missing = self.train_idx[~self.has_x2[self.train_idx]]

        def ae_epoch(pairs_x, pairs_y):
            self.ae.train()
            for b in torch.randperm(len(pairs_x), generator=gen).to(self.device).split(self.cfg.batch_size):
                loss = F.mse_loss(self.ae(self.X[pairs_x[b]]), pairs_y[b].flatten(1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        @torch.no_grad()
        def impute():
            self.ae.eval()
            for c in missing.split(1024):
                self.X2imp[c] = self.ae(self.X[c]).reshape(-1, *self.X2.shape[1:])

        if not self.self_training:                                  # AE1: autoencoder first
            for _ in range(self.cfg.epochs):
                ae_epoch(self.complete, self.X2[self.complete])
            impute()
            epoch_start = None
        else:                                                       # AE2: one AE epoch per epoch
            def epoch_start(epoch):
                if epoch == 0:
                    ae_epoch(self.complete, self.X2[self.complete])
                else:
                    rows = torch.cat([self.complete, missing])
                    ae_epoch(rows, self.X2imp[rows])                 # previous imputation as target
                impute()

        self.model = MLENet(tuple(self.X.shape[1:]), tuple(self.X2.shape[1:]), self.n_classes,
                            self.phi, self.k, self.backbone).to(self.device)

        def loss_fn(model, idx):                                    # Eq. 4 on imputed data
            s = model.pair_scores(model.f(self.X[idx]), model.g(self.X2imp[idx]))
            return -log_q_z_given_xy(s, self.log_rz).gather(1, self.labels[idx, None]).mean()

        self.model, self.history = fit(self.model, loss_fn, self.train_idx, self._val_accuracy, self.cfg, seed=seed,
                                       desc=self.name, epoch_start=epoch_start)
        return self

    @torch.no_grad()
    def _scores(self, model, idx, has_x2):
        model.eval()
        self.ae.eval()
        y = self.X2[idx].clone()
        if (~has_x2).any():
            y[~has_x2] = self.ae(self.X[idx[~has_x2]]).reshape(-1, *self.X2.shape[1:])
        return torch.cat([log_q_z_given_xy(model.pair_scores(model.f(self.X[b]), model.g(y[s:s + 1024])),
                                           self.log_rz)
                          for s, b in zip(range(0, len(idx), 1024), idx.split(1024))])

    @torch.no_grad()
    def embed(self, data, split, presence=None):
        idx, _ = self._rows(data, split, presence)
        return self.model.eval().f(self.X[idx]).cpu()


METHODS = {
    "mle": lambda **kw: MLE("mle", incomplete="marginalize", **kw),
    "mle_lb": lambda **kw: MLE("mle_lb", incomplete="discard", **kw),
    "mle_zp": lambda **kw: MLE("mle_zp", incomplete="zero", **kw),
    "hgr": lambda **kw: HGR("hgr", **kw),
    "ae1": lambda **kw: AEImpute("ae1", self_training=False, **kw),
    "ae2": lambda **kw: AEImpute("ae2", self_training=True, **kw),
}
