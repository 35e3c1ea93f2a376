"""The balancing family: the fusions MLA (Zhang et al., CVPR 2024) compares against in its Table 1.

- ``sum_linear`` -- a linear head per modality, the logits summed, one cross-entropy.
- ``concat_linear`` -- one linear layer on the concatenated features; modality m's read-out is
  its weight slice plus 1/M of the bias (the authors' code reads unimodal accuracy so).
- ``film`` -- FiLM: the conditioning modality's features give (gamma, beta) that modulate the
  others' features before a linear classifier.
- ``bigated`` -- bilinear gated fusion: sigmoid(fc_x(h_cond)) gates fc_y of the others.
- ``ogm_ge`` -- on-the-fly gradient modulation with generalisation enhancement (Peng et al.,
  CVPR 2022) on ``concat_linear``: per batch, the dominant modality's encoder gradient is
  scaled by k = 1 - tanh(alpha * rho), and Gaussian noise of each gradient's std is added to
  every modality's encoder gradients (as OGM-GE's own code does, not to the dominant one's only).
- ``qmf`` -- quality-aware multimodal fusion (Zhang et al., ICML 2023): energy-confidence
  weighted late fusion, cross-entropy on the fused and on every modality's logits, and a
  ranking regulariser that asks each modality to be less confident on samples whose loss
  history is higher.

Every method here is a :class:`~mmlib.methods.baselines.FusionBaseline` (the book's encoders,
one fit loop, validation selection, seeds batched where the method allows it); the fusion
heads live in :mod:`mmlib.models`. One read-out for every unimodal column: a modality that
is absent at test time has a zero feature vector (``h_m = 0``), so the linear fusions drop its
term and the per-modality ones (QMF, late fusion, MLA) its logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import noise_stream
from ..train import DropoutStream, TrainConfig, fit
from .baselines import FusionBaseline
from .common import task_loss


@dataclass(eq=False)
class BalanceBaseline(FusionBaseline):
    """A linear fusion of the balancing literature on the book's encoders. ``condition``: the
    modality that conditions FiLM and BiGated (None: the dataset's last modality, which is
    audio on ``avdigits`` and lexical on ``affect``, the paper's choices)."""
    condition: str | None = None

    def _head_options(self, data) -> dict:
        if self.fusion not in ("film", "bigated"):
            return {}
        cond = self.condition or self.used[-1]
        if cond not in self.used:
            raise ValueError(f"{self.name}: condition={cond!r} is not one of the modalities used {self.used}")
        return {"cond": self.used.index(cond)}


class _OwnLoss(BalanceBaseline):
    """A balancing method whose loss needs more than the fused logits (per-batch state, gradient
    hooks): one seed at a time, with the network, data and validation score from ``_setup``."""

    def batchable(self, data=None) -> bool:
        return False

    def _pieces(self, data, presence, seed, device, val_presence):
        extra, rows, _, val_logits, val_score = self._setup(data, presence, seed, device, val_presence)
        X, L, y = self._tensors
        return extra["P"], rows, (lambda m_: val_score(val_logits(m_, extra))), X, L, y


# ----------------------------------------------------------------------------- OGM-GE
@dataclass(eq=False)
class OGMGE(_OwnLoss):
    """OGM-GE on ``concat_linear``. For each batch (GeWu-Lab/OGM-GE, ``train_epoch``):

        s_m = sum_i softmax(read-out_m(x_i))_{y_i},   rho_m = s_m / sum_{m' != m} s_{m'}
        k_m = 1 - tanh(alpha * rho_m) if rho_m > 1 else 1

    then every encoder weight's gradient of modality m becomes g * k_m + N(0, std(g)) (GE),
    during epochs [0, ``modulation_ends``). Differences kept, named: the code scales only the
    4-D (convolution) gradients, a no-op for the book's MLP encoders, so every encoder weight is
    scaled; with three modalities the code slows audio whenever neither video nor text has
    rho > 1 (even when audio's rho < 1), the book only a modality with rho_m > 1; the noise
    comes from the seed's own generator."""
    name: str = "ogm_ge"
    fusion: str = "concat_linear"
    alpha: float = 0.3                 # the MLA code's default (OGM-GE's paper uses 0.8 on CREMA-D)
    modulation_ends: int = 50          # of the code's 100 epochs

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        cfg = cfg or TrainConfig()
        P, rows, score, X, L, y = self._pieces(data, presence, seed, device, val_presence)
        model, names = self.model, self.used
        state = {"k": torch.ones(len(names)), "on": True}
        noise = torch.Generator().manual_seed(int(seed) + 104729)
        self.coefficients = []                         # per batch: k_m (for the chapter's figure)

        def modulate(j):
            def hook(g):
                if not state["on"]:
                    return g
                std = float(g.std()) if g.numel() > 1 else 0.0
                eps = torch.randn(g.shape, generator=noise).to(g.device) * (std + 1e-8)
                return g * float(state["k"][j]) + eps
            return hook
        for j, m in enumerate(names):
            for p in model.encoders[m].parameters():
                if p.dim() > 1:                           # weights (not biases), as the code's conv kernels
                    p.register_hook(modulate(j))

        def loss_fn(model, idx):
            xs, p, ls = {m: X[m][idx] for m in names}, P[idx], {m: ln[idx] for m, ln in L.items()}
            feats = model.features(xs, p, ls)
            logits, _ = model.fusion(feats, p)
            with torch.no_grad():                          # the modulation coefficients of this batch
                uni = model.fusion.unimodal_logits(feats).softmax(-1)                # (B, M, C)
                s = uni.gather(2, y[idx].view(-1, 1, 1).expand(-1, len(names), 1)).squeeze(2).sum(0).cpu()
                others = s.sum() - s
                rho = s / others.clamp(min=1e-12)
                state["k"] = torch.where(rho > 1, 1 - torch.tanh(self.alpha * rho), torch.ones_like(rho))
                self.coefficients.append(state["k"].tolist())
            return task_loss(self.task, logits, y[idx])

        def epoch_start(epoch):
            state["on"] = epoch < self.modulation_ends

        with noise_stream(DropoutStream(seed)):
            self.model, self.history = fit(model, loss_fn, rows, score, cfg, seed=seed, desc=self.name,
                                           epoch_start=epoch_start)
        return self


# ----------------------------------------------------------------------------- QMF
@dataclass(eq=False)
class QMF(_OwnLoss):
    """QMF (QingyangZhang/QMF, as MLA's code runs it on two modalities):

        fused = sum_m c_m f_m,  c_m = logsumexp(f_m) / 10 (detached)
        L = CE(fused) + sum_m CE(f_m) + 0.1 * sum_m L_rank^m

    L_rank^m pairs each sample with the next one in the batch (``torch.roll``): the sample
    whose cumulative loss history (per modality, min-max normalised) is higher should have the
    lower confidence, by a margin of the two histories' difference (MarginRankingLoss). With
    missing modalities each CE_m and L_rank^m reads the rows that have m, and the fused logits
    the present modalities. Kept differences: the three-modality code drops CE(fused) and
    weighs L_rank by 1; the book uses the two-modality form everywhere."""
    name: str = "qmf"
    fusion: str = "qmf"
    rank_weight: float = 0.1

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        cfg = cfg or TrainConfig()
        P, rows, score, X, L, y = self._pieces(data, presence, seed, device, val_presence)
        names, dev = self.used, self.device
        history = torch.zeros(len(data), len(names), device=dev)      # cumulative loss per sample and modality
        train_rows = data.splits["train"].to(dev)

        def rank_loss(conf, idx, j, has):
            h = history[train_rows, j]
            lo, hi = h.min(), h.max()
            norm = (history[idx, j] - lo) / (hi - lo).clamp(min=1e-12)
            nxt = torch.roll(torch.arange(len(idx), device=dev), -1)
            target = torch.sign(norm - norm[nxt])                        # +1: this sample's history is worse
            margin = (norm - norm[nxt]).abs()
            # the more-lossy sample of a pair should be the less confident: max(0, t (c1 - c2) - margin)
            per = torch.relu(target * (conf - conf[nxt]) - margin)
            pair = (has & has[nxt]).to(per.dtype)
            return (per * pair).sum() / pair.sum().clamp(min=1)

        def loss_fn(model, idx):
            xs, p, ls = {m: X[m][idx] for m in names}, P[idx], {m: ln[idx] for m, ln in L.items()}
            feats = model.features(xs, p, ls)
            uni = model.fusion.unimodal_logits(feats)                     # (B, M, C)
            conf_all = torch.logsumexp(uni, -1) / 10
            fused = (uni * (conf_all.detach() * p).unsqueeze(-1)).sum(1)
            loss = F.cross_entropy(fused, y[idx])
            for j in range(len(names)):
                has = p[:, j]
                per = F.cross_entropy(uni[:, j], y[idx], reduction="none")
                loss = loss + (per * has).sum() / has.sum().clamp(min=1)
                with torch.no_grad():
                    history[idx[has], j] += per.detach()[has]
                loss = loss + self.rank_weight * rank_loss(conf_all[:, j], idx, j, has)
            return loss

        with noise_stream(DropoutStream(seed)):
            self.model, self.history = fit(self.model, loss_fn, rows, score, cfg, seed=seed, desc=self.name)
        return self


METHODS = {
    "sum_linear": lambda **kw: BalanceBaseline("sum_linear", fusion="sum_linear", **kw),
    "concat_linear": lambda **kw: BalanceBaseline("concat_linear", fusion="concat_linear", **kw),
    "film": lambda **kw: BalanceBaseline("film", fusion="film", **kw),
    "bigated": lambda **kw: BalanceBaseline("bigated", fusion="bigated", **kw),
    "ogm_ge": lambda **kw: OGMGE(**kw),
    "qmf": lambda **kw: QMF(**kw),
}
