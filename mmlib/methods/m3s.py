"""M3S: missing modality meets meta sampling (Chi, Yang, Zhu, Wang and Wang, AACL-IJCNLP 2022).

No code was published: every choice the paper leaves open is an option below, and the
chapter names and measures the ones that can move the numbers.

Setting. Every sample has every modality, but a contiguous span *inside* each modality is
zeroed. The harness draws those spans once per seed (``experiment.corrupted``): the fixed
corruption of each training sample (ORIG's), and the validation and test corruptions that
every setting and base model shares at that seed (paired comparisons).

The transform T(X; F) (section 3.2): for each sample and modality m, r_m ~ U(band),
k_m = floor(T_m r_m), lambda_m ~ U{0, ..., T_m - k_m}, and the positions
[lambda_m, lambda_m + k_m) are zeroed. T_m is the time axis of a sequence (inside its true
length) and the feature axis of a vector (:func:`mmlib.masks.span`).

M3S is an add-on to a base model's loss l. Three settings (section 4.4):
- ``"orig"``: the base model trained on the fixed corruption, as it would be without M3S.
- ``"spl_trn"``: T redrawn every epoch for every training sample; a plain step on each batch.
- ``"m3s"``: Algorithm 1. Draw two batches and pass each through T: X~1 (support: as many
  rows, drawn at random) and X~2 (query: the epoch's batch). Eq. 1, K times:
  theta_{n+1} = theta_n - alpha grad l(f(X~1; theta_n), Y1); theta* = theta_K.
  Eq. 2: theta <- theta - beta grad_{theta*} l(f(X~2; theta*), Y2).

How it is computed. The fixed corruption and T are masks over the inputs (data, not code):
the base reads the clean features through a member's masks (``extra["keep:<m>"]``). Every
epoch each fit draws, from its own streams, a query copy and a support copy of T for every
training sample and the support rows of every batch (:class:`Transform`), so a chapter's
seeds train as one ensemble on the engine (:func:`mmlib.engine.fit_ensemble`), each seed with
its own corruption. Eq. 1's gradient is ``torch.func.grad`` of the base's loss; with the first
order, theta* = theta - alpha * stop_gradient(grad), whose gradient with respect to theta is
the gradient at theta* (Eq. 2 as printed).

Options (the paper is silent on each):
- ``inner_steps`` K (1) and ``inner_lr`` alpha (2e-4, the paper's value for MMIN); the outer
  step beta is the budget's Adam learning rate (the paper uses Adam for every base).
- ``second_order`` (False): Eq. 2 as printed takes the gradient at theta* and applies it to
  theta (first-order MAML); True differentiates through Eq. 1.
- ``augment_on``: ``"masked"`` (default) draws T's spans on top of the sample's fixed
  corruption, so training never sees what ORIG hides (section 5.5: "with large input
  missing rates we can only get augmented data with missing rates restricted to a smaller
  range"); ``"complete"`` draws them on the clean features, which over the epochs shows the
  model everything the fixed corruption hides: an information advantage, measured.
- ``aug_band``: T's band (None: the corruption's own).
- ``compute_matched``: ORIG and SPL-TRN take K + 1 plain steps per query batch (the further
  K on random rows), as many gradient evaluations as M3S (by default every setting takes one
  update per query batch).

With ``inner_lr = 0``, theta* = theta and M3S is SPL-TRN on the query batch (the chapter's
control: what the meta step itself adds).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from .. import masks, metrics
from ..data import MultimodalDataset
from ..engine import Program
from ..train import Call, TrainConfig, stream_seed
from . import Method, decide, make_method

SETTINGS = ("orig", "spl_trn", "m3s")


@dataclass(eq=False)
class M3S(Method):
    """A base method (``base``, ``base_kwargs``) trained in one of the three settings."""
    reads_data_at_predict = True      # predict() reads the data it is given (a corrupted test copy)
    data_per_member = True            # fit_seeds() takes each seed's corrupted copy
    name: str = "m3s"
    base: str = "zp_concat"
    base_kwargs: dict = field(default_factory=dict)
    setting: str = "m3s"
    inner_steps: int = 1
    inner_lr: float = 2e-4
    second_order: bool = False
    augment_on: str = "masked"
    aug_band: list | None = None
    compute_matched: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.setting not in SETTINGS:
            raise ValueError(f"unknown M3S setting {self.setting!r}; use one of {SETTINGS}")
        if self.augment_on not in ("masked", "complete"):
            raise ValueError(f"unknown augment_on={self.augment_on!r}; use 'masked' or 'complete'")
        if self.inner_steps < 1 or self.inner_lr < 0:
            raise ValueError("inner_steps must be >= 1 and inner_lr >= 0")

    # -- training --------------------------------------------------------------------------------
    def batchable(self, data=None) -> bool:
        """Several seeds train as one ensemble (:meth:`fit_seeds`) when the base's fits do."""
        return make_method(self.base, **self.base_kwargs).batchable(data)

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        self.fit_seeds(data, [presence], [seed], cfg=cfg, device=device, val_presences=[val_presence], _into=[self])
        return self

    def fit_seeds(self, data, presences: list, seeds: list[int], *, cfg=None, device=None,
                  val_presences: list | None = None, _into: list | None = None) -> list["M3S"]:
        """One fitted copy per (presence, seed) pair, trained as one ensemble
        (:func:`mmlib.engine.fit_ensemble`) when the base's fits can be. ``data``: the fit data, or one
        per member (each seed's corruption, :func:`mmlib.experiment.corrupted`)."""
        from ..engine import fit_ensemble
        cfg = cfg or TrainConfig()
        datas = list(data) if isinstance(data, (list, tuple)) else [data] * len(seeds)
        vps = [None] * len(seeds) if val_presences is None else list(val_presences)
        copies = _into or [copy.deepcopy(self) for _ in seeds]
        for d in datas:
            if self.setting != "orig" and "spans" not in d.info and self.aug_band is None:
                raise ValueError(f"{self.name} ({self.setting}) redraws spans inside the modalities: run it on a "
                                 "span-corrupted dataset (experiment.run(..., corruption=...)), or give aug_band "
                                 "(the band of the spans it draws on data without a fixed corruption)")
        base = make_method(self.base, **self.base_kwargs)
        if len(seeds) > 1 and not base.batchable(datas[0]):          # (MISA's fits train alone)
            return [c.fit_seeds([d], [P], [s], cfg=cfg, device=device, val_presences=[vp], _into=[c])[0]
                    for c, d, P, s, vp in zip(copies, datas, presences, seeds, vps)]
        clean, fixed = _clean(datas[0]), [_fixed_spans(d) for d in datas]
        parts = base.members(clean, presences, seeds, cfg=cfg, device=device, val_presences=vps, keeps=fixed)
        program = Transform(self, clean, parts.members, seeds, datas[0].info.get("spans"))
        for mem in parts.members:                   # what the first epoch replaces (T's masks, the support rows)
            mem.extra.update(program.blank(mem.extra))
        y_val = clean.y[clean.splits["val"]]

        def report(out):                            # the validation metrics of every epoch (the curves)
            return metrics.report(clean.task, y_val, decide(clean.task, out.cpu()))
        loss = self.step_loss(parts.loss, list(clean.modalities), program)
        histories = fit_ensemble(parts.members, loss, parts.val_logits, parts.val_score, cfg, desc=self.name,
                                 program=program, steps_per_batch=program.R, val_report=report)
        for c, b, hist in zip(copies, parts.copies, histories):
            c.base_method, c.history = b, hist
            c.used, c.required, c.device = b.used, b.required, b.device
        return copies

    def step_loss(self, base_loss, names: list[str], program: "Transform"):
        """The loss of one step, ``loss(model, idx, weight, extra, state) -> (loss, {})``, on the query
        rows ``idx`` (the order's batch) with row weights ``weight``, from the base's loss
        ``base_loss(model, rows, weight, extra)``; ``extra``: the member's tensors with T's copies."""
        def keyed(extra, which):                    # the member's tensors with its inputs read through ``which``
            return {**extra, **{f"keep:{m}": extra[f"{which}:{m}"] for m in names}}

        def loss(model, idx, weight, extra, state):
            if self.setting == "m3s":
                def at(params, rows, e):            # the base's loss with the network's weights ``params``
                    return functional_call(Call(model, base_loss), {"model." + k: v for k, v in params.items()},
                                           (rows, weight, e))
                fast, support, e_s = dict(model.named_parameters()), extra["support"][idx, 0], keyed(extra, "s")
                for _ in range(self.inner_steps):                           # Eq. 1 (meta-train) on X~1
                    g = torch.func.grad(at)(fast, support, e_s)
                    # first order: theta* as a point (its gradient is applied to theta); second: through Eq. 1
                    fast = {k: v - self.inner_lr * (g[k] if self.second_order else g[k].detach())
                            for k, v in fast.items()}
                return at(fast, idx, keyed(extra, "q")), {}                # Eq. 2 (meta-update) on X~2
            if program.sub == 0:                                            # ORIG / SPL-TRN: a plain step
                return base_loss(model, idx, weight, keyed(extra, "q")), {}
            # compute-matched: the further plain steps on random rows
            return base_loss(model, extra["support"][idx, program.sub - 1], weight, keyed(extra, "s")), {}
        return loss

    def code_modules(self) -> list[str]:
        """M3S's files and its base method's (it trains the base's network with the base's loss)."""
        return sorted(set(super().code_modules()) | set(make_method(self.base, **self.base_kwargs).code_modules()))

    # -- prediction: the base's, on the data it is given -----------------------------------------
    def predict(self, data, split, presence=None):
        return self.base_method.predict(data, split, presence)

    def embed(self, data, split, presence=None):
        return self.base_method.embed(data, split, presence)


def _m3s(setting):
    def make(**kw):
        s = kw.pop("setting", setting)
        return M3S(name="m3s" if s == "m3s" else f"m3s_{s}", setting=s, **kw)
    return make


METHODS = {"m3s": _m3s("m3s"), "m3s_orig": _m3s("orig"), "m3s_spl_trn": _m3s("spl_trn")}


def _clean(data: MultimodalDataset) -> MultimodalDataset:
    """The data without its fixed corruption (the members read it through their own masks)."""
    if "clean" not in data.info:
        return data
    return MultimodalDataset(data.name, data.info["clean"], data.y, data.task, data.class_names, data.splits,
                             {k: v for k, v in data.info.items() if k not in ("clean", "spans")}, data.lengths)


def _fixed_spans(data: MultimodalDataset) -> dict:
    """A fit data's fixed corruption as masks over every row (all kept without one)."""
    if "spans" in data.info:
        return data.info["spans"]["masks"]
    shapes = {m: tuple(x.shape[1:]) for m, x in data.modalities.items()}
    return masks.span_masks(shapes, len(data), {}, {}, 0)


class Transform(Program):
    """T(X; F) for every member, redrawn every epoch (section 3.2): for each training row, the
    spans of its query copy (``q:<m>``) and of its support copy (``s:<m>``), and its support rows
    (``support``: X~1 of Algorithm 1, and the compute-matched settings' further batches), drawn
    from the member's own streams. ORIG's copies are the fixed corruption. The members step
    together, so which of a batch's steps runs (:attr:`sub`) is one number."""

    def __init__(self, m3s: M3S, data: MultimodalDataset, members, seeds, spans: dict | None):
        self.m3s, self.steps = m3s, 0
        # compute-matched: K + 1 plain steps on every batch, as many gradients as M3S's
        self.R = m3s.inner_steps + 1 if (m3s.compute_matched and m3s.setting != "m3s") else 1
        self.names, self.n = list(data.modalities), len(data)
        self.shapes = {m: tuple(x.shape[1:]) for m, x in data.modalities.items()}
        spans = spans or {}                         # the fixed corruption's band and axis (none: aug_band's)
        self.band = tuple(m3s.aug_band or spans.get("band") or (0.0, 0.0))
        self.axis = spans.get("axis", "time")
        self.train, self.lengths = data.splits["train"], data.lengths
        self.rows = [mem.rows for mem in members]
        self.span_gens = [torch.Generator().manual_seed(stream_seed(s, "m3s:spans")) for s in seeds]
        self.support_gens = [torch.Generator().manual_seed(stream_seed(s, "m3s:support-batches")) for s in seeds]
        self.fixed = [{m: mem.extra[f"keep:{m}"] for m in self.names} for mem in members]
        self.n_support = max(1, m3s.inner_steps)

    def blank(self, extra) -> dict:
        """A member's T tensors before the first epoch (their shapes)."""
        dev = extra["P"].device
        return {**{f"{w}:{m}": extra[f"keep:{m}"].clone() for w in "qs" for m in self.names},
                "support": torch.zeros(self.n, self.n_support, dtype=torch.long, device=dev)}

    def _copy(self, i, gen) -> dict:
        """One copy of every row: the fixed corruption, with fresh spans on the training rows (SPL-TRN,
        M3S) on top of it ("masked") or instead of it ("complete")."""
        fixed = self.fixed[i]
        if self.m3s.setting == "orig":
            return fixed
        fresh = masks.span_masks(self.shapes, self.n, {"train": self.train}, {"train": self.band}, gen,
                                 self.lengths, self.axis)
        out = {}
        for m in self.names:
            f = fresh[m].to(fixed[m].device)
            if self.m3s.augment_on == "complete":       # the clean features under the fresh spans
                t = fixed[m].clone()
                t[self.train.to(t.device)] = f[self.train.to(t.device)]
                out[m] = t
            else:
                out[m] = fixed[m] & f
        return out

    def epoch(self, extra, alive, epoch):
        q, s, sup = [], [], []
        for i in alive:
            q.append(self._copy(i, self.span_gens[i]))
            s.append(self._copy(i, self.span_gens[i]))
            rows = self.rows[i]
            pick = torch.randint(len(rows), (self.n, self.n_support), generator=self.support_gens[i])
            sup.append(rows[pick.to(rows.device)])
        out = dict(extra)
        for w, copies in (("q", q), ("s", s)):
            for m in self.names:
                out[f"{w}:{m}"] = torch.stack([c[m] for c in copies])
        out["support"] = torch.stack(sup)
        self.live = len(alive)
        return out

    @property
    def sub(self) -> int:
        """Which of the batch's steps runs (0: the query batch's)."""
        return (self.steps - 1) % self.R

    def before(self, state, active, alive, epoch):
        self.steps += 1

    def history(self, state):
        return [{} for _ in range(self.live)]
