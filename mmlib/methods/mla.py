"""MLA: multimodal learning with alternating unimodal adaptation (Zhang, Yoon, Bansal and Yao, CVPR 2024).

The idea in three parts, each a function below, in the order of the paper's Algorithm 1:

1. **Alternating unimodal learning** (Eq. 1-2). Iteration t trains one modality,
   m_t = t mod M, on the samples that have it (D_{m_t}): its encoder h_m and a head g that
   every modality *shares*,

       L_t = E_{(x, y) ~ D_{m_t}} l(g(h_{m_t}(x; theta_{m_t}); phi), y).          (2)

   No modality's gradient ever meets another's in one step, so a strong modality cannot
   starve a weak one ("modality laziness"); the shared head carries what the modalities have
   in common.
2. **Head gradient modification, HGM** (Eq. 3-4). So that learning modality m_t does not
   erase what g learnt from the others, the head's update is projected by a recursive least
   squares matrix P (orthogonal weight modification, Zeng et al. 2019):

       P_t = P_{t-1} - q_t hbar^T P_{t-1},   q_t = P_{t-1} hbar / (alpha + hbar^T P_{t-1} hbar)   (3)
       phi_t = phi_{t-1} - gamma * (grad if t = 0 else P_t grad)                                  (4)

   with hbar the mean encoder output of modality m_t over D_{m_t} and P_0 = I. (The paper
   prints P_t in q_t's numerator, a typo: q_t must use P_{t-1}, as RLS and OWM do.)
3. **Test-time dynamic fusion, DF** (Eq. 5-7). Each present modality predicts through the
   shared head; the predictions are weighted by the softmax of minus their entropies,

       yhat_r = sum_m lambda_{m,r} f_m(x_{m,r}),   e_{m,r} = -p^T log p,   lambda_{., r} = softmax(-e_{., r})

   so a confident modality speaks louder, sample by sample.

How the book reads what the paper leaves open (each an option; the paper's reading is the
default, the authors' code's behaviour an alternative, both measured in the chapter):

- ``hgm``: "paper" (Eq. 3-4) / "code" (the released ``GSPlugin`` *as it would run if its
  name check matched*: alpha_t = 0.1^(batch/len + 1), hbar the batch mean, the denominator an
  element-wise d x d matrix, P divided by its Frobenius norm after each update, the very
  first update skipped) / "off". The released code's HGM never fires (its parameter-name
  check fails): "released" behaviour is "off".
- ``alpha`` (Eq. 3): not given in the paper; 0.1, the largest value the code's schedule takes.
- ``h_mean``: "dataset" (hbar over D_m, as printed; recomputed at each epoch's start, with the
  encoders in eval mode) / "batch" (the code).
- ``project``: the book trains every method with Adam; Adam rescales each coordinate, which
  would undo a projection of the *gradient*, so by default the head's *update* is projected
  ("update": phi <- phi + (Adam step) P, the paper's "parameter update direction orthogonal"
  to hbar); "gradient" projects the gradient and lets Adam rescale it (Eq. 4 literally).
- ``alternation``: "iteration" (the paper: iteration t draws its own batch from D_{m_t};
  an epoch goes round the modalities until each has seen its samples once) / "within_batch"
  (the code: one forward of every encoder on a batch, then for each modality in turn its
  loss, backward, HGM and an optimiser step).
- ``df``: "sample" (Eq. 6-7) / "batch" (the code: the softmax over the *batch* dimension and
  the entropy summed over batch x classes: one weight per modality per batch of 64, absent
  modalities included with zeroed inputs) / "off" (the mean of the present modalities' logits).
- ``missing_train``: "skip" (the paper's D_m: a modality's steps read the samples that have
  it) / "zeros" (the code: every step reads every sample, missing inputs zeroed).

Training runs on the ensemble engine (:func:`mmlib.engine.fit_ensemble`): a chapter's fits of one
configuration are the members of one step loop, :class:`Alternation` their Algorithm 1 (streams,
Adam step counts per encoder and head, P and hbar per member). :meth:`MLA.fit_loop` is the same
algorithm as one plain loop, fit by fit: the reference the members are tested against, and the
path of encoders with BatchNorm.

Model selection: the best epoch by the validation split's fused accuracy (the validation split
masked like training where the chapter says so). The code keeps the best *test* epoch.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import Program
from ..models import MultimodalNet, encode, make_encoder, noise_stream
from ..train import Checkpoint, DropoutStream, TrainConfig, adam, batches
from . import Method
from .common import EVAL_CHUNK, ensemble_ready, fit_setup, full_presence, validation_scores, weighted_mean

HGM = ("paper", "code", "off")
DF = ("sample", "batch", "off")


class MLANet(nn.Module):
    """One encoder per modality (the book's encoders) and one linear head g shared by all."""

    def __init__(self, shapes: dict, n_classes: int, d: int, backbone: str, sequence: str):
        super().__init__()
        self.names = list(shapes)
        self.encoders = nn.ModuleDict({m: make_encoder(s, d, backbone, sequence) for m, s in shapes.items()})
        self.head = nn.Linear(d, n_classes)

    def features(self, m: str, x: torch.Tensor, lengths=None) -> torch.Tensor:
        return encode(self.encoders[m], x, lengths)

    def unimodal_logits(self, xs: dict, present: torch.Tensor, lengths: dict) -> torch.Tensor:
        """f_m = g(h_m(x_m)) for every modality, (B, M, C); absent inputs are zeroed."""
        out = []
        for j, m in enumerate(self.names):
            x = xs[m] * present[:, j].to(xs[m].dtype).reshape(-1, *([1] * (xs[m].dim() - 1)))
            out.append(self.head(self.features(m, x, lengths.get(m))))
        return torch.stack(out, 1)

    transform_inputs = MultimodalNet.transform_inputs     # pooled sequence statistics, once per dataset


# ----------------------------------------------------------------------------- Eq. 3: the RLS projector
def rls_update(P: torch.Tensor, hbar: torch.Tensor, alpha) -> torch.Tensor:
    """Eq. 3 with q_t = P_{t-1} hbar / (alpha + hbar^T P_{t-1} hbar): P_t = P_{t-1} - q_t hbar^T P_{t-1}.
    P_t hbar = alpha / (alpha + hbar^T P hbar) * P_{t-1} hbar: for small alpha, P_t nearly
    annihilates hbar, so a head update right-multiplied by P_t leaves g(hbar) unchanged.
    (P: (d, d), hbar: (d,); or a stack of them, (K, d, d) and (K, d), alpha a number or (K,).)"""
    k = _mv(P, hbar)                                        # P_{t-1} hbar
    den = alpha + (hbar * k).sum(-1)                        # alpha + hbar^T P_{t-1} hbar
    return P - _outer(k, _mv(P.transpose(-1, -2), hbar)) / _col(den)


def rls_update_code(P: torch.Tensor, hbar: torch.Tensor, alpha) -> torch.Tensor:
    """The authors' ``GSPlugin.before_update``, as it would run: k = P r^T; the denominator
    ``alpha + torch.mm(k, r)`` is a d x d matrix (an outer product), so P - k k^T is divided
    element by element; then P is divided by its Frobenius norm. (Stacks as :func:`rls_update`.)"""
    k = _mv(P, hbar)
    P = P - _outer(k, k) / (_col(torch.as_tensor(alpha, dtype=P.dtype, device=P.device)) + _outer(k, hbar))
    return P / torch.linalg.norm(P, dim=(-2, -1), keepdim=True)


def _mv(P, v):
    return (P @ v.unsqueeze(-1)).squeeze(-1)


def _outer(a, b):
    return a.unsqueeze(-1) * b.unsqueeze(-2)


def _col(x):
    """A number, or one per member (K,) -> (K, 1, 1), to divide a stack of matrices."""
    return x[..., None, None] if torch.is_tensor(x) and x.dim() else x


# ----------------------------------------------------------------------------- Eq. 5-7: dynamic fusion
def dynamic_fusion(logits: torch.Tensor, present: torch.Tensor, mode: str = "sample",
                   check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse the unimodal logits (B, M, C) of the present modalities (B, M); returns the fused
    logits (B, C) and the weights lambda (B, M), which sum to 1 over the present modalities.

    "sample": lambda_{m,r} = softmax_m(-e_{m,r}), e the entropy of softmax(f_m) (Eq. 6-7);
    "off": equal weights; "batch": the authors' code (see the module's docstring). ``check=False``:
    no warning on non-finite weights (a test of values, which a fit of the ensemble engine cannot make)."""
    present = present.to(logits.device)
    if mode == "sample":
        logp = logits.log_softmax(-1)
        e = -(logp.exp() * logp).sum(-1)                                        # Eq. 6, (B, M)
        w = torch.softmax((-e).masked_fill(~present, float("-inf")), dim=1)    # Eq. 7 (max-shifted = softmax)
    elif mode == "off":
        w = present.to(logits.dtype) / present.sum(1, keepdim=True).clamp(min=1)
    elif mode == "batch":
        ws = []
        for s in range(0, len(logits), 64):                 # the code's test batches (64, unshuffled)
            chunk = logits[s:s + 64]
            p = chunk.softmax(0)                            # softmax over the batch, as coded
            e = -(p * p.log()).sum((0, 2))                  # one entropy per modality
            ws.append(torch.softmax(-e, 0).expand(len(chunk), -1))
        w = torch.cat(ws)
    else:
        raise ValueError(f"unknown dynamic fusion {mode!r}; use one of {DF}")
    empty = ~present.any(1, keepdim=True)
    w = torch.where(empty, torch.zeros_like(w), w)          # a row with nothing present: no vote
    bad = ~torch.isfinite(w).all(1) if check else None
    if check and bool(bad.any()):                                     # e.g. "batch": a softmax over the batch underflows
        warnings.warn(f"dynamic fusion ({mode!r}): {int(bad.sum())} of {len(w)} rows have non-finite "
                      "weights (an entropy of probabilities that underflowed to 0); their fused logits are "
                      "NaN, not silently set to 0", RuntimeWarning, stacklevel=2)
    return (w.unsqueeze(-1) * logits).sum(1), w


# ----------------------------------------------------------------------------- Algorithm 1 on the engine
class Alternation(Program):
    """Algorithm 1 for every fit of an ensemble at once (rows: the live fits). The members step in
    lockstep over the positions (batch b, modality j), so the modality a step trains is one number
    (:meth:`at`); a member whose stream of modality j has no batch b sits the step out. Per member:
    its streams D_j drawn from its own order generator in modality order (:meth:`schedule`), its
    Adam step counts per encoder and for the head (``groups``), and its HGM state: P (K, d, d),
    hbar (K, M, d) and its step count t, updated around Adam (:meth:`adjust`, :meth:`updated`) as
    the plain loop's ``step_head`` does."""
    plain_loop = False

    def __init__(self, mla: "MLA", X: dict, L: dict, y: torch.Tensor, train: torch.Tensor, batch_size: int):
        self.m, self.X, self.L, self.y, self.B = mla, X, L, y, batch_size
        self.names = list(mla.names)
        self.groups = tuple(f"encoders.{m}" for m in self.names) + ("head",)
        self.t = self.j = 0

    def _streams(self, e, rows):
        """A member's D_j: the rows that have modality j ("skip") or every row with something ("zeros")."""
        return [rows[e["P"][rows, j]] if self.m.missing_train == "skip" else rows for j in range(len(self.names))]

    def init(self, members):
        K, M, d, dev = len(members), len(self.names), self.m.feat_dim, members[0].rows.device
        self.D = [self._streams(mem.extra, mem.rows) for mem in members]
        self.rows = [mem.rows for mem in members]
        self.P_of = [mem.extra["P"] for mem in members]
        # each member's D_j padded to one length (hbar over the dataset: a weighted mean)
        n = [max(len(D[j]) for D in self.D) for j in range(M)]
        self.Dpad = [torch.stack([torch.cat([D[j], D[j][:1].expand(n[j] - len(D[j]))]) if len(D[j]) else
                                  torch.zeros(n[j], dtype=torch.long, device=dev) for D in self.D]) for j in range(M)]
        self.Dw = [torch.stack([(torch.arange(n[j], device=dev) < len(D[j])).float() for D in self.D]) for j in range(M)]
        return {"P": torch.eye(d, device=dev).repeat(K, 1, 1), "t": torch.zeros(K, dtype=torch.long, device=dev),
                "hbar": torch.zeros(K, M, d, device=dev), "batch_hbar": torch.zeros(K, d, device=dev)}

    def schedule(self, alive, orders, B, epoch):
        M, dev = len(self.names), self.rows[0].device
        pos = []                    # per member: [(rows of step (b, j), b, batches of the stream)] per j
        for i, gen in zip(alive, orders):
            if self.m.alternation == "iteration":                      # Eq. 1: m_t = t mod M, one stream each
                perms = [D[torch.randperm(len(D), generator=gen).to(dev)] for D in self.D[i]]
                pos.append([list(p.split(B)) for p in perms])
            else:                                                      # the code: every modality on each batch
                bs = self.rows[i][torch.randperm(len(self.rows[i]), generator=gen).to(dev)].split(B)
                pos.append([[b if self.m.missing_train == "zeros" else b[self.P_of[i][b, j]] for b in bs]
                            for j in range(M)])
        T = max(len(st) for p in pos for st in p)
        idx = torch.zeros(len(alive), T, M, B, dtype=torch.long, device=dev)
        w = torch.zeros(len(alive), T, M, B, device=dev)
        self.alpha_code = torch.zeros(len(alive), T, M, device=dev)   # the code's alpha_t = 0.1^(b/len + 1)
        for r, p in enumerate(pos):
            for j, st in enumerate(p):
                for b, rows in enumerate(st):
                    idx[r, b, j, :len(rows)] = rows
                    w[r, b, j, :len(rows)] = 1.0
                if self.m.hgm == "code" and st:
                    self.alpha_code[r, :len(st), j] = (0.1 ** (torch.arange(len(st), dtype=torch.float64) / len(st) + 1)).to(dev)
        return idx, w

    def at(self, t, j):
        self.t, self.j = t, j

    def loss(self, model, idx, w, e, st):
        """Eq. 2 on modality j = :attr:`j`: one encoder and the shared head; ``aux``: the batch's mean
        feature (the code's hbar)."""
        j, m = self.j, self.names[self.j]
        x = self.X[m][idx]
        if self.m.missing_train == "zeros":
            x = x * e["P"][idx, j].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        h = model.features(m, x, self.L[m][idx] if m in self.L else None)
        loss = weighted_mean(F.cross_entropy(model.head(h), self.y[idx], reduction="none"), w)       # Eq. 2
        return loss, {"batch_hbar": (h.detach() * w[:, None]).sum(0) / w.sum().clamp(min=1)}

    def begin(self, state, run, alive, epoch):
        if self.m.hgm == "paper" and self.m.h_mean == "dataset":       # hbar over D_m, encoders in eval mode
            for j, mod in enumerate(self.names):
                def mean_feature(model, idx, wt, mod=mod):
                    return (model.features(mod, self.X[mod][idx], self.L[mod][idx] if mod in self.L else None)
                            * wt[:, None]).sum(0) / wt.sum().clamp(min=1)
                state["hbar"][:, j] = run(mean_feature, self.Dpad[j][alive], self.Dw[j][alive])

    def after(self, state, aux, active, alive, epoch):
        state["batch_hbar"] = aux["batch_hbar"]

    def adjust(self, state, grads, params, active):
        """Eq. 3-4 before Adam (the plain loop's ``step_head``): P_t per member, the gradient projected."""
        m, self.W0 = self.m, None
        if m.hgm == "off":
            return
        on = active & (state["t"] > 0)                                 # the first step of a fit: no HGM
        if m.hgm == "paper":
            hb = state["hbar"][:, self.j] if m.h_mean == "dataset" else state["batch_hbar"]
            P = rls_update(state["P"], hb, m.alpha)
        else:
            P = rls_update_code(state["P"], state["batch_hbar"], self.alpha_code[:, self.t, self.j])
        state["P"] = P = torch.where(on[:, None, None], P, state["P"])
        G, W = grads["model.head.weight"], params["model.head.weight"]
        if m.project == "gradient" or m.hgm == "code":                 # Eq. 4: the gradient projected
            G.copy_(torch.where(on[:, None, None], G @ P.transpose(-1, -2), G))
        elif m.hgm == "paper":                                         # the update projected, after Adam
            self.W0 = (W.clone(), on)

    def updated(self, state, params, active):
        if self.W0 is not None:                                        # W0 + (W - W0) P
            (W0, on), W = self.W0, params["model.head.weight"]
            W.copy_(torch.where(on[:, None, None], W0 + (W - W0) @ state["P"], W))
        state["t"] = state["t"] + active.long()


@dataclass(eq=False)
class MLA(Method):
    reads_data_at_predict = True      # predict() reads the data it is given (e.g. a corrupted test copy)
    embeds_modalities = True          # embed_modality(): the modality gap in the record
    name: str = "mla"
    hgm: str = "paper"
    alpha: float = 0.1
    h_mean: str = "dataset"
    project: str = "update"
    alternation: str = "iteration"
    df: str = "sample"
    missing_train: str = "skip"
    feat_dim: int = 64
    backbone: str = "mlp"
    sequence: str = "pooled"

    def _check(self):
        for opt, val, allowed in [("hgm", self.hgm, HGM), ("df", self.df, DF),
                                  ("h_mean", self.h_mean, ("dataset", "batch")),
                                  ("project", self.project, ("update", "gradient")),
                                  ("alternation", self.alternation, ("iteration", "within_batch")),
                                  ("missing_train", self.missing_train, ("skip", "zeros"))]:
            if val not in allowed:
                raise ValueError(f"{self.name}: {opt}={val!r}; use one of {allowed}")

    # ------------------------------------------------------------------------- training (Algorithm 1)
    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        self.fit_seeds(data, [presence], [seed], cfg=cfg, device=device, val_presences=[val_presence], _into=[self])
        return self

    def batchable(self, data=None) -> bool:
        """Fits train on the ensemble engine when no encoder keeps buffers (the CNNs' BatchNorm does)."""
        if self.sequence != "pooled":
            return False
        if data is None:
            return self.backbone == "mlp"
        return ensemble_ready(data, self.feat_dim, self.backbone, self.sequence)

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None, _into: list | None = None) -> list["MLA"]:
        """One fitted copy per (training presence, seed) pair, trained together on the ensemble engine
        (:func:`mmlib.engine.fit_ensemble`; a fit alone too): Algorithm 1 as :class:`Alternation`'s
        schedule and hooks, each member's Adam step counts per encoder and head, its P and hbar its
        own. Each member equals :meth:`fit_loop` at its seed up to rounding; BatchNorm encoders train
        there."""
        from ..engine import Member, fit_ensemble
        self._check()
        cfg = cfg or TrainConfig()
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        copies = _into or [copy.deepcopy(self) for _ in seeds]
        if not self.batchable(data):
            return [c.fit_loop(data, P, seed=s_, cfg=cfg, device=device, val_presence=vp)
                    for c, P, s_, vp in zip(copies, presences, seeds, vps)]
        members = []
        for c, presence, seed, vp in zip(copies, presences, seeds, vps):
            s = fit_setup(c, data, presence, vp, seed, device)
            shapes = {m: tuple(x.shape[1:]) for m, x in data.modalities.items()}
            c.model = MLANet(shapes, data.n_classes, c.feat_dim, c.backbone, c.sequence).to(s.device)
            c.history = []
            members.append(Member(c.model, s.rows, {"P": s.P, "val_P": s.val_P}, seed))
        lead = copies[0]
        X, L = lead.model.transform_inputs(lead.X, lead.L)      # the pooled statistics, once per dataset
        program = Alternation(lead, X, L, s.y, s.train, cfg.batch_size)
        val = s.val
        Xv, Lv = {m: X[m][val] for m in lead.names}, {m: ln[val] for m, ln in L.items()}

        def val_logits(model, e):
            return dynamic_fusion(model.unimodal_logits(Xv, e["val_P"], Lv), e["val_P"], self.df, check=False)[0]
        histories = fit_ensemble(members, program.loss, val_logits,
                                 lambda out: validation_scores("multiclass", out, s.y[val]), cfg, desc=self.name,
                                 program=program, steps_per_batch=len(lead.names))
        for c, hist in zip(copies, histories):
            c.history = hist
        return copies

    def fit_loop(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        """Algorithm 1 as a plain loop, one fit: any encoder (BatchNorm too); what a member of
        :meth:`fit_seeds` gets, to rounding (tests compare them)."""
        self._check()
        cfg = cfg or TrainConfig()
        s = fit_setup(self, data, presence, val_presence, seed, device)
        X, L, names, M = self.X, self.L, self.names, len(self.names)
        shapes = {m: tuple(x.shape[1:]) for m, x in data.modalities.items()}
        self.model = net = MLANet(shapes, data.n_classes, self.feat_dim, self.backbone, self.sequence).to(s.device)
        opt = adam(net.parameters(), cfg)
        gen = torch.Generator().manual_seed(seed)
        W = net.head.weight
        P = torch.eye(self.feat_dim, device=s.device)
        t, self.history = 0, []
        # D_m: the rows that have modality m ("skip"), or every row with something ("zeros")
        D = [s.rows[s.P[s.rows, j]] if self.missing_train == "skip" else s.rows for j in range(M)]

        def hbar_dataset():
            net.eval()
            with torch.no_grad():
                out = [torch.cat([net.features(m, X[m][c], L[m][c] if m in L else None)
                                  for c in D[j].split(EVAL_CHUNK)]).mean(0) for j, m in enumerate(names)]
            net.train()
            return out

        def step_head(j, h, batch_pos, n_batches):
            """Eq. 3-4 on the head, after backward and around the optimiser step."""
            nonlocal t, P
            active = self.hgm != "off" and t > 0 and W.grad is not None
            if active:
                if self.hgm == "paper":
                    hb = hbars[j] if self.h_mean == "dataset" else h.detach().mean(0)
                    P = rls_update(P, hb, self.alpha)
                else:                                                            # the code's GSPlugin
                    hb = h.detach().mean(0)
                    P = rls_update_code(P, hb, 0.1 ** (batch_pos / n_batches + 1))
                if self.project == "gradient" or self.hgm == "code":
                    W.grad = W.grad @ P.T
            W0 = W.detach().clone() if active and self.project == "update" and self.hgm == "paper" else None
            opt.step()
            if W0 is not None:                                  # the update, projected: W0 + (W - W0) P
                with torch.no_grad():
                    W.copy_(W0 + (W - W0) @ P)
            t += 1

        def one_modality(j, idx, batch_pos, n_batches):
            m = names[j]
            x = X[m][idx]
            if self.missing_train == "zeros":
                x = x * s.P[idx, j].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
            h = net.features(m, x, L[m][idx] if m in L else None)
            loss = F.cross_entropy(net.head(h), s.y[idx])                       # Eq. 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            step_head(j, h, batch_pos, n_batches)
            return float(loss.detach()) * len(idx), len(idx)

        keeper = Checkpoint(cfg.patience, cfg.min_epochs)
        with noise_stream(DropoutStream(seed)):
            for epoch in range(cfg.epochs):
                t0 = time.perf_counter()
                net.train()
                hbars = hbar_dataset() if self.hgm == "paper" and self.h_mean == "dataset" else None
                losses = []
                if self.alternation == "iteration":                            # Eq. 1: m_t = t mod M
                    streams = [list(batches(D[j], cfg.batch_size, gen)) for j in range(M)]
                    n = max(len(b) for b in streams)
                    for b in range(n):
                        for j in range(M):
                            if b < len(streams[j]):
                                losses.append(one_modality(j, streams[j][b], b, len(streams[j])))
                else:                                                           # the code: all modalities per batch
                    bs = list(batches(s.rows, cfg.batch_size, gen))
                    for b, idx in enumerate(bs):
                        for j in range(M):
                            rows = idx if self.missing_train == "zeros" else idx[s.P[idx, j]]
                            if len(rows):
                                losses.append(one_modality(j, rows, b, len(bs)))
                score = self._val_score(s)
                self.history.append({"epoch": epoch, "train_loss": sum(a for a, _ in losses) / max(sum(n for _, n in losses), 1),
                                     "val_score": score, "seconds": time.perf_counter() - t0})
                if keeper.update(epoch, score, lambda: copy.deepcopy(net.state_dict())):
                    break
        keeper.restore(net)
        return self

    def _val_score(self, s) -> float:
        logits = self._unimodal(s.val, s.val_P)
        fused, _ = dynamic_fusion(logits, s.val_P, self.df)
        return float((fused.argmax(1) == s.y[s.val]).float().mean())

    # ------------------------------------------------------------------------- inference (Eq. 5-7)
    def _unimodal(self, idx: torch.Tensor, present: torch.Tensor, X: dict | None = None) -> torch.Tensor:
        """Each present modality's logits through the shared head; ``X``: the features to read
        (default: the fitted tensors; predict passes the data it is given, e.g. a corrupted copy)."""
        X = self.X if X is None else X
        self.model.eval()
        with torch.no_grad():
            return torch.cat([self.model.unimodal_logits({m: X[m][c.to(X[m].device)].to(self.device)
                                                          for m in self.names}, present[k],
                                                         {m: ln[c] for m, ln in self.L.items()})
                              for c, k in zip(idx.split(EVAL_CHUNK),
                                              torch.arange(len(idx), device=idx.device).split(EVAL_CHUNK))])

    def _rows(self, data, split, presence):
        idx = data.splits[split].to(self.device)
        return idx, full_presence(data, split, presence).to(self.device)

    def predict(self, data, split, presence=None):
        idx, p = self._rows(data, split, presence)
        return dynamic_fusion(self._unimodal(idx, p, data.modalities), p, self.df)[0].cpu()

    def fusion_weights(self, data, split, presence=None) -> torch.Tensor:
        """DF's lambda (n x M) on a split: which modality each prediction listened to."""
        idx, p = self._rows(data, split, presence)
        return dynamic_fusion(self._unimodal(idx, p), p, self.df)[1].cpu()

    def embed_modality(self, data, split, modality: str) -> torch.Tensor:
        """h_m of every row of a split (the modality gap of Figure 3 reads these)."""
        idx = data.splits[split].to(self.device)
        self.model.eval()
        with torch.no_grad():
            return torch.cat([self.model.features(modality, self.X[modality][c],
                                                  self.L[modality][c] if modality in self.L else None)
                              for c in idx.split(EVAL_CHUNK)]).cpu()

    def embed(self, data, split, presence=None):
        return torch.cat([self.embed_modality(data, split, m) for m in self.names], 1)


METHODS = {
    "mla": lambda **kw: MLA(**kw),
    # the released code's training and fusion (HGM never fires, batch DF, alternation inside a batch,
    # missing inputs zeroed); the book still selects on validation
    "mla_code": lambda **kw: MLA("mla_code", **{"hgm": "off", "df": "batch", "alternation": "within_batch",
                                                "missing_train": "zeros", **kw}),
}
