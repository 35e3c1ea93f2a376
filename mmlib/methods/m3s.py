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
- ``"spl_trn"``: T redrawn for every batch; a plain step on it.
- ``"m3s"``: Algorithm 1. Draw two batches and pass each through T: X~1 (support) and
  X~2 (query). Eq. 1, K times: theta_{n+1} = theta_n - alpha grad l(f(X~1; theta_n), Y1);
  theta* = theta_K. Eq. 2: theta <- theta - beta grad_{theta*} l(f(X~2; theta*), Y2).

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
- ``compute_matched``: ORIG and SPL-TRN take K + 1 plain steps per query batch, as many
  gradient evaluations as M3S (by default every setting takes one update per query batch).

With ``inner_lr = 0``, theta* = theta and M3S is SPL-TRN on the query batch (the chapter's
control: what the meta step itself adds).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from .. import masks, metrics
from ..models import noise_stream
from ..train import Checkpoint, DropoutStream, TrainConfig, Call, adam, batches, stream_seed
from . import Method, decide, make_method

SETTINGS = ("orig", "spl_trn", "m3s")


@dataclass(eq=False)
class M3S(Method):
    """A base method (``base``, ``base_kwargs``) trained in one of the three settings."""
    reads_data_at_predict = True      # predict() reads the data it is given (a corrupted test copy)
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

    # -- T(X; F), redrawn for every batch ------------------------------------------------------
    def _transform(self, data, gen: torch.Generator):
        """The transform the base applies to its training batches (``prepare(augment=...)``): fresh spans (section 3.2) on the
        batch's inputs ("masked": on top of the fixed corruption; "complete": on the clean
        features instead)."""
        spans = data.info.get("spans") or {"band": self.aug_band, "axis": "time"}    # no fixed corruption
        band = tuple(self.aug_band or spans["band"])
        shapes = {m: tuple(x.shape[1:]) for m, x in data.modalities.items()}
        clean = data.info.get("clean") if self.augment_on == "complete" else None
        lengths = data.lengths

        def augment(idx, xs):
            rows = {"train": torch.arange(len(idx))}
            ln = {m: ln[idx.cpu()] for m, ln in lengths.items()}
            fresh = masks.span_masks(shapes, len(idx), rows, {"train": band}, int(torch.randint(2**31 - 1, (1,), generator=gen)),
                                     ln, spans["axis"])
            out = {}
            for m, x in xs.items():
                src = x if clean is None else clean[m][idx.cpu()].to(x.device)
                out[m] = masks.apply_spans(src, fresh[m])
            return out
        return augment

    # -- training --------------------------------------------------------------------------------
    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        cfg = cfg or TrainConfig()
        if self.setting != "orig" and "spans" not in data.info and self.aug_band is None:
            raise ValueError(f"{self.name} ({self.setting}) redraws spans inside the modalities: run it on a "
                             "span-corrupted dataset (experiment.run(..., corruption=...)), or give aug_band "
                             "(the band of the spans it draws on data without a fixed corruption)")
        base = make_method(self.base, **self.base_kwargs)
        self.base_method = base
        augment = None if self.setting == "orig" else \
            self._transform(data, torch.Generator().manual_seed(stream_seed(seed, "m3s:spans")))
        model, loss_fn, rows, val_score = base.prepare(data, presence, seed=seed, cfg=cfg, device=device,
                                                       val_presence=val_presence, augment=augment)
        self.used, self.required, self.device = base.used, base.required, base.device

        call = Call(model, loss_fn)                         # the loss as a function of the parameters
        names = {k: "model." + k for k, _ in model.named_parameters()}

        def loss_at(params, idx):
            return functional_call(call, {names[k]: v for k, v in params.items()}, (idx,))

        opt = adam(model.parameters(), cfg)
        keeper, self.history = Checkpoint(cfg.patience, cfg.min_epochs), []
        query_order = torch.Generator().manual_seed(seed)            # the batches, as train.fit orders them
        support_order = torch.Generator().manual_seed(stream_seed(seed, "m3s:support-batches"))   # X1 of Alg. 1
        y_val = data.y[data.splits["val"]]
        plain_steps = self.inner_steps + 1 if (self.compute_matched and self.setting != "m3s") else 1
        with noise_stream(DropoutStream(seed)):
            for epoch in range(cfg.epochs):
                t0 = time.perf_counter()
                model.train()
                total, count = 0.0, 0
                for idx2 in batches(rows, cfg.batch_size, query_order):
                    if self.setting == "m3s":
                        idx1 = rows[torch.randint(len(rows), (len(idx2),), generator=support_order).to(rows.device)]
                        loss = self.meta_step(model, loss_at, opt, idx1, idx2)
                    else:
                        for k in range(plain_steps):              # ORIG / SPL-TRN: plain steps (Adam)
                            idx = idx2 if k == 0 else rows[torch.randint(len(rows), (len(idx2),),
                                                                         generator=support_order).to(rows.device)]
                            loss = loss_fn(model, idx)
                            opt.zero_grad(set_to_none=True)
                            loss.backward()
                            opt.step()
                    total += float(loss.detach()) * len(idx2)
                    count += len(idx2)
                model.eval()
                with torch.no_grad():
                    score = float(val_score(model))
                    val_m = metrics.report(data.task, y_val, decide(data.task, base.predict(data, "val")))
                self.history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_score": score,
                                     "val_metrics": val_m, "seconds": time.perf_counter() - t0})
                if keeper.update(epoch, score, lambda: copy.deepcopy(model.state_dict())):
                    break
        keeper.restore(model)
        base.model = model
        return self

    def meta_step(self, model, loss_at, opt, idx1, idx2) -> torch.Tensor:
        """One iteration of Algorithm 1 on the support rows ``idx1`` and query rows ``idx2``
        (both through T inside the base's loss). Returns the query loss at theta*."""
        theta = dict(model.named_parameters())
        fast = theta
        for _ in range(self.inner_steps):                                   # Eq. 1 (meta-train)
            grads = torch.autograd.grad(loss_at(fast, idx1), list(fast.values()), create_graph=self.second_order,
                                        allow_unused=True)
            fast = {k: v - self.inner_lr * (g if g is not None else torch.zeros_like(v))
                    for (k, v), g in zip(fast.items(), grads)}
            if not self.second_order:                                       # theta* as a point, not a function
                fast = {k: v.detach().requires_grad_() for k, v in fast.items()}
        query = loss_at(fast, idx2)                                         # Eq. 2 (meta-update)
        opt.zero_grad(set_to_none=True)
        if self.second_order:
            query.backward()                                                # through Eq. 1 to theta
        else:                                                               # grad at theta*, applied to theta
            grads = torch.autograd.grad(query, list(fast.values()), allow_unused=True)
            for p, g in zip(theta.values(), grads):
                p.grad = None if g is None else g.detach()
        opt.step()
        return query

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
