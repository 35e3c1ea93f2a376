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

from ..engine import Program
from .baselines import FusionBaseline
from .common import read_inputs, task_loss, weighted_mean


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


# ----------------------------------------------------------------------------- OGM-GE
class Modulation(Program):
    """OGM-GE's state for every fit of an ensemble: this batch's coefficients k (K, M), computed after
    the forward (:meth:`after`), and the gradient modulation before Adam (:meth:`adjust`): every
    encoder weight's gradient of modality m becomes g * k_m + N(0, std(g)) per member, the noise
    drawn for the member's whole epoch at its start from its own generator (steps in order, the
    weights in the model's order in each step)."""
    plain_loop = False              # (the modulation runs between backward and Adam)

    def __init__(self, method: "OGMGE", model, names: list[str], seeds: list[int], batch_size: int):
        self.m, self.names, self.B = method, names, batch_size
        self.targets = [(f"model.{n}", names.index(n.split(".")[1])) for n, p in model.named_parameters()
                        if n.startswith("encoders.") and p.dim() > 1]     # weights (not biases), as the code's
        self.sizes = [model.get_parameter(n[len("model."):]).numel() for n, _ in self.targets]
        self.gens = [torch.Generator().manual_seed(int(s) + 104729) for s in seeds]
        self.log, self.on, self.t = [], True, 0

    def init(self, members):
        self.rows = [len(mem.rows) for mem in members]
        return {"k": torch.ones(len(members), len(self.names), device=members[0].rows.device)}

    def epoch(self, extra, alive, epoch):
        self.on = epoch < self.m.modulation_ends
        if self.on:
            T = [-(-self.rows[i] // self.B) for i in alive]
            dev = extra["P"].device
            self.eps = torch.zeros(len(alive), max(T), sum(self.sizes))
            for r, i in enumerate(alive):
                self.eps[r, :T[r]].normal_(generator=self.gens[i])
            self.eps = self.eps.to(dev)
        self.alive = list(alive)
        return extra

    def at(self, t, j):
        self.t = t

    def after(self, state, aux, active, alive, epoch):
        s = aux["s"]                                                     # (K, M)
        rho = s / (s.sum(1, keepdim=True) - s).clamp(min=1e-12)
        k = torch.where(rho > 1, 1 - torch.tanh(self.m.alpha * rho), torch.ones_like(rho))
        state["k"] = torch.where(active[:, None], k, state["k"])
        self.log.append((self.alive, state["k"].clone(), active.clone()))

    def adjust(self, state, grads, params, active):
        if not self.on:
            return
        off, eps = 0, self.eps[:, self.t]
        for (name, j), n in zip(self.targets, self.sizes):
            g = grads[name]                                              # (K, out, in)
            std = g.reshape(len(g), -1).std(1)
            e = eps[:, off:off + n].view(g.shape)
            g.copy_(g * state["k"][:, j, None, None] + e * (std + 1e-8)[:, None, None])
            off += n

    def write(self, copies):
        """Each fit's k per batch into its ``coefficients`` (the chapter's figure)."""
        for c in copies:
            c.coefficients = []
        for alive, k, active in self.log:
            for r, (row, on) in enumerate(zip(k.tolist(), active.tolist())):
                if on:
                    copies[alive[r]].coefficients.append(row)


@dataclass(eq=False)
class OGMGE(BalanceBaseline):
    """OGM-GE on ``concat_linear``. For each batch (GeWu-Lab/OGM-GE, ``train_epoch``):

        s_m = sum_i softmax(read-out_m(x_i))_{y_i},   rho_m = s_m / sum_{m' != m} s_{m'}
        k_m = 1 - tanh(alpha * rho_m) if rho_m > 1 else 1

    then every encoder weight's gradient of modality m becomes g * k_m + N(0, std(g)) (GE),
    during epochs [0, ``modulation_ends``). Differences kept, named: the code scales only the
    4-D (convolution) gradients, a no-op for the book's MLP encoders, so every encoder weight is
    scaled; with three modalities the code slows audio whenever neither video nor text has
    rho > 1 (even when audio's rho < 1), the book only a modality with rho_m > 1; the noise
    comes from the seed's own generator. The modulation is the engine's :class:`Modulation`
    (seeds train as one ensemble)."""
    name: str = "ogm_ge"
    fusion: str = "concat_linear"
    alpha: float = 0.3                 # the MLA code's default (OGM-GE's paper uses 0.8 on CREMA-D)
    modulation_ends: int = 50          # of the code's 100 epochs

    def _engine(self, parts, cfg):
        lead = parts.copies[0]
        (X, L, y), names, task = lead._tensors, lead.used, lead.task

        def loss_fn(model, idx, weight, e, st):
            w = torch.ones(len(idx), device=idx.device) if weight is None else weight
            xs, p, ls = read_inputs(X, idx, e, names), e["P"][idx], {m: ln[idx] for m, ln in L.items()}
            feats = model.features(xs, p, ls)
            logits, _ = model.fusion(feats, p)
            with torch.no_grad():                          # the modulation coefficients' scores of this batch
                uni = model.fusion.unimodal_logits(feats).softmax(-1)                # (B, M, C)
                s = (uni.gather(2, y[idx].view(-1, 1, 1).expand(-1, len(names), 1)).squeeze(2) * w[:, None]).sum(0)
            return task_loss(task, logits, y[idx], weight=w), {"s": s}
        return loss_fn, Modulation(self, lead.model, names, [m.seed for m in parts.members], cfg.batch_size)

    def _engine_finish(self, parts, program) -> None:
        program.write(parts.copies)


# ----------------------------------------------------------------------------- QMF
class LossHistory(Program):
    """QMF's state for every fit of an ensemble: each sample's cumulative loss per modality,
    (K, len(data), M), read by the ranking term and added to after each step."""

    def __init__(self, n: int, M: int):
        self.n, self.M = n, M

    def init(self, members):
        return {"history": torch.zeros(len(members), self.n, self.M, device=members[0].rows.device)}

    def after(self, state, aux, active, alive, epoch):
        idx = aux["idx"].unsqueeze(-1).expand(-1, -1, self.M)
        state["history"].scatter_add_(1, idx, aux["per"])               # a row with weight 0 adds 0


@dataclass(eq=False)
class QMF(BalanceBaseline):
    """QMF (QingyangZhang/QMF, as MLA's code runs it on two modalities):

        fused = sum_m c_m f_m,  c_m = logsumexp(f_m) / 10 (detached)
        L = CE(fused) + sum_m CE(f_m) + 0.1 * sum_m L_rank^m

    L_rank^m pairs each sample with the next one in the batch (``torch.roll``): the sample
    whose cumulative loss history (per modality, min-max normalised) is higher should have the
    lower confidence, by a margin of the two histories' difference (MarginRankingLoss). With
    missing modalities each CE_m and L_rank^m reads the rows that have m, and the fused logits
    the present modalities. Kept differences: the three-modality code drops CE(fused) and
    weighs L_rank by 1; the book uses the two-modality form everywhere. The loss history is
    the engine's state (:class:`LossHistory`), so seeds train as one ensemble."""
    name: str = "qmf"
    fusion: str = "qmf"
    rank_weight: float = 0.1

    def _engine(self, parts, cfg):
        lead = parts.copies[0]
        (X, L, y), train, names = lead._tensors, lead._train, lead.used

        def rank_loss(conf, idx, nxt, has, hist):
            """The pairs (row, next row) the ranking term compares, ``hist`` the history after this batch."""
            h = hist[train]
            lo, hi = h.min(), h.max()
            norm = (hist[idx] - lo) / (hi - lo).clamp(min=1e-12)
            target = torch.sign(norm - norm[nxt])                        # +1: this sample's history is worse
            margin = (norm - norm[nxt]).abs()
            # the more-lossy sample of a pair should be the less confident: max(0, t (c1 - c2) - margin)
            per = torch.relu(target * (conf - conf[nxt]) - margin)
            pair = has * has[nxt]
            return (per * pair).sum() / pair.sum().clamp(min=1)

        def loss_fn(model, idx, weight, e, st):
            w = torch.ones(len(idx), device=idx.device) if weight is None else weight
            xs, p, ls = read_inputs(X, idx, e, names), e["P"][idx], {m: ln[idx] for m, ln in L.items()}
            feats = model.features(xs, p, ls)
            uni = model.fusion.unimodal_logits(feats)                     # (B, M, C)
            conf_all = torch.logsumexp(uni, -1) / 10
            fused = (uni * (conf_all.detach() * p).unsqueeze(-1)).sum(1)
            loss = weighted_mean(F.cross_entropy(fused, y[idx], reduction="none"), w)
            # the batch's rows in a ring (torch.roll over the real rows, before the padding)
            nxt = torch.remainder(torch.arange(1, len(idx) + 1, device=idx.device), w.sum().clamp(min=1).long())
            added = []
            for j in range(len(names)):
                has = p[:, j].to(w.dtype) * w
                per = F.cross_entropy(uni[:, j], y[idx], reduction="none")
                loss = loss + (per * has).sum() / has.sum().clamp(min=1)
                added.append(per.detach() * has)
                hist = st["history"][:, j].index_add(0, idx, added[-1])   # with this batch's losses, as the loop
                loss = loss + self.rank_weight * rank_loss(conf_all[:, j], idx, nxt, has, hist)
            return loss, {"idx": idx, "per": torch.stack(added, 1)}
        return loss_fn, LossHistory(len(lead._tensors[2]), len(names))


METHODS = {
    "sum_linear": lambda **kw: BalanceBaseline("sum_linear", fusion="sum_linear", **kw),
    "concat_linear": lambda **kw: BalanceBaseline("concat_linear", fusion="concat_linear", **kw),
    "film": lambda **kw: BalanceBaseline("film", fusion="film", **kw),
    "bigated": lambda **kw: BalanceBaseline("bigated", fusion="bigated", **kw),
    "ogm_ge": lambda **kw: OGMGE(**kw),
    "qmf": lambda **kw: QMF(**kw),
}
