"""``gaussian``: a synthetic multimodal task whose best achievable accuracy is known.

Each sample has a class k (uniform over K) and M modalities. Stacked, the latent features
are Gaussian given the class,

    u | k ~ N(mu_k, Sigma),   u = [u_1; ...; u_M],  u_m in R^{d_m},

where ``informativeness[m]`` scales the spread of the class means of modality m (0: the
modality says nothing about the class) and ``correlation`` couples the noise of matching
coordinates across modalities (Sigma has unit diagonal and ``correlation`` between
coordinate i of modality m and coordinate i of modality m'). Optionally each modality is
observed through a fixed invertible warp, x_m = Q_m (u_m + a tanh(u_m)) with Q_m a
random rotation and a > -1 (strictly monotone, so invertible).

Because the warp is invertible and does not depend on the class, the Bayes posterior of
the observed x equals that of u. The Bayes-optimal prediction from a subset S of
modalities marginalizes the others exactly (a Gaussian's marginal keeps the mean and
covariance sub-blocks of S):

    p(k | x_S) ∝ pi_k N(u_S; mu_{k,S}, Sigma_{SS}).

:func:`oracle_predict` computes it for any presence matrix; no trained model can beat it
beyond sampling noise.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import MultimodalDataset, register


@dataclass
class GaussianSpec:
    """Parameters of the generator (everything the oracle needs is derived from them)."""
    n_classes: int = 4
    dims: tuple[int, ...] = (8, 8, 8)
    names: tuple[str, ...] = ("m0", "m1", "m2")
    informativeness: tuple[float, ...] = (1.0, 1.0, 1.0)
    correlation: float = 0.0
    warp: float = 0.0                       # a in u + a tanh(u); 0: no warp
    n: int = 3000
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0

    def check(self) -> None:
        M = len(self.dims)
        if len(self.names) != M or len(self.informativeness) != M:
            raise ValueError(f"dims, names and informativeness must have one entry per modality "
                             f"(got {len(self.dims)}, {len(self.names)}, {len(self.informativeness)})")
        if M > 1 and not -1.0 / (M - 1) < self.correlation < 1.0:
            raise ValueError(f"correlation must be in ({-1.0 / (M - 1):.3f}, 1) for {M} modalities "
                             f"(the covariance must stay positive definite), got {self.correlation}")
        if self.warp <= -1.0:
            raise ValueError(f"warp must be > -1 (u + a tanh u is then invertible), got {self.warp}")
        if any(i < 0 for i in self.informativeness):
            raise ValueError("informativeness must be >= 0")
        if self.n_classes < 2 or self.n < self.n_classes * 5:
            raise ValueError("need at least 2 classes and 5 samples per class")


PRESETS = {
    # three equally informative modalities (oracle: ~0.6 alone, ~0.87 with all three)
    "balanced": GaussianSpec(informativeness=(0.45, 0.45, 0.45), correlation=0.2),
    # one modality much stronger than the others: modality laziness (MLA)
    "dominant": GaussianSpec(informativeness=(0.9, 0.3, 0.3), correlation=0.2),
    # unequal modalities for imbalanced missing rates (RedCore), ordered as affect's and IEMOCAP's:
    # acoustic medium, visual weak, lexical strong (oracle alone: A ~0.52, V ~0.48, L ~0.73; all ~0.87)
    "imbalanced": GaussianSpec(informativeness=(0.4, 0.3, 0.6), correlation=0.3, names=("A", "V", "L")),
    # the balanced task seen through nonlinear warps and rotations: the oracle stays exact
    "warped": GaussianSpec(informativeness=(0.45, 0.45, 0.45), correlation=0.2, warp=2.0),
}


@dataclass
class GaussianOracle:
    """Means, covariance and warps of a generated task; computes Bayes posteriors."""
    spec: GaussianSpec
    means: np.ndarray                       # (K, D)
    cov: np.ndarray                         # (D, D)
    rotations: list = field(default_factory=list)   # one (d_m, d_m) orthogonal matrix per modality

    def slices(self) -> list[slice]:
        out, start = [], 0
        for d in self.spec.dims:
            out.append(slice(start, start + d))
            start += d
        return out

    def unwarp(self, m: int, x: np.ndarray) -> np.ndarray:
        """Invert x = Q (u + a tanh u): rotate back, then solve v = u + a tanh u by Newton."""
        v = x @ self.rotations[m] if self.rotations else x
        a = self.spec.warp
        if a == 0:
            return v
        u = v / (1 + max(a, 0))                                   # a start inside the bracket
        for _ in range(60):
            t = np.tanh(u)
            u = u - (u + a * t - v) / (1 + a * (1 - t ** 2))
        return u

    def log_posterior(self, X: dict[str, np.ndarray], presence: np.ndarray) -> np.ndarray:
        """log p(k | present modalities) for every sample, (n, K). Rows are grouped by
        presence pattern; each group uses the sub-blocks of its present modalities."""
        names, sl = list(self.spec.names), self.slices()
        presence = np.asarray(presence, dtype=bool)
        n, K = presence.shape[0], self.spec.n_classes
        U = np.concatenate([self.unwarp(j, np.asarray(X[m], dtype=np.float64)) for j, m in enumerate(names)], 1)
        out = np.full((n, K), -np.log(K))
        for pat in np.unique(presence, axis=0):
            rows = np.flatnonzero((presence == pat).all(1))
            if not pat.any():
                continue                                          # nothing observed: the prior
            cols = np.concatenate([np.arange(sl[j].start, sl[j].stop) for j in np.flatnonzero(pat)])
            S = self.cov[np.ix_(cols, cols)]
            L = np.linalg.cholesky(S)
            diff = U[rows][:, None, cols] - self.means[None, :, cols]          # (r, K, d)
            z = np.linalg.solve(L[None, None], diff[..., None])[..., 0]
            ll = -0.5 * (z ** 2).sum(-1)                                        # shared terms cancel
            out[rows] = ll - np.logaddexp.reduce(ll, axis=1, keepdims=True)
        return out


def generate(spec: GaussianSpec) -> tuple[MultimodalDataset, GaussianOracle]:
    """Draw a dataset and its oracle from ``spec`` (deterministic under ``spec.seed``)."""
    spec.check()
    rng = np.random.default_rng(spec.seed)
    K, D = spec.n_classes, sum(spec.dims)
    means = np.zeros((K, D))
    start = 0
    for d, s in zip(spec.dims, spec.informativeness):
        means[:, start:start + d] = rng.normal(0, s, (K, d))
        start += d
    cov = np.eye(D)
    starts = np.cumsum((0,) + tuple(spec.dims))
    for a in range(len(spec.dims)):
        for b in range(len(spec.dims)):
            if a != b:
                for i in range(min(spec.dims[a], spec.dims[b])):
                    cov[starts[a] + i, starts[b] + i] = spec.correlation
    rotations = []
    if spec.warp != 0:                       # own stream: the same latent draw with or without a warp
        rot_rng = np.random.default_rng([spec.seed, 1])
        rotations = [np.linalg.qr(rot_rng.normal(size=(d, d)))[0] for d in spec.dims]
    y = np.repeat(np.arange(K), int(np.ceil(spec.n / K)))[: spec.n]
    rng.shuffle(y)
    U = means[y] + rng.multivariate_normal(np.zeros(D), cov, size=spec.n, method="cholesky")
    oracle = GaussianOracle(spec, means, cov, rotations)
    X = {}
    for j, (m, sl) in enumerate(zip(spec.names, oracle.slices())):
        u = U[:, sl]
        if spec.warp != 0:
            u = (u + spec.warp * np.tanh(u)) @ rotations[j].T
        X[m] = torch.tensor(u, dtype=torch.float32)
    split = np.zeros(spec.n, dtype=int)
    for k in range(K):                                            # stratified split
        idx = rng.permutation(np.flatnonzero(y == k))
        n_tr, n_va = int(round(spec.split[0] * len(idx))), int(round(spec.split[1] * len(idx)))
        split[idx[n_tr:n_tr + n_va]], split[idx[n_tr + n_va:]] = 1, 2
    splits = {s: torch.from_numpy(np.flatnonzero(split == i)) for i, s in enumerate(("train", "val", "test"))}
    data = MultimodalDataset("gaussian", X, torch.from_numpy(y).long(), "multiclass",
                             [f"class {k}" for k in range(K)], splits,
                             {"spec": asdict(spec), "oracle": oracle})
    return data, oracle


def oracle_predict(data: MultimodalDataset, split: str, presence=None) -> torch.Tensor:
    """Bayes-optimal log-posteriors (n, K) for the rows of ``split`` given only the
    modalities marked present (default: all)."""
    oracle: GaussianOracle = data.info["oracle"]
    idx = data.splits[split].cpu()
    n = len(idx)
    presence = np.ones((n, len(data.modalities)), bool) if presence is None else np.asarray(presence, bool)
    X = {m: data.modalities[m][idx].cpu().numpy() for m in data.modality_names}
    return torch.from_numpy(oracle.log_posterior(X, presence))


def kl_to_oracle(data: MultimodalDataset, split: str, presence, logits: torch.Tensor) -> float:
    """KL(P || Q) in nats, the mean over the rows of ``split``: P the exact posterior given the
    modalities ``presence`` marks present, Q = softmax(``logits``), a method's predicted class
    distribution (0: the method *is* the Bayes posterior)."""
    log_p = oracle_predict(data, split, presence).float()
    log_q = torch.log_softmax(logits.detach().cpu().float(), 1)
    if log_q.shape != log_p.shape:
        raise ValueError(f"logits of shape {tuple(log_q.shape)} for an oracle posterior of shape {tuple(log_p.shape)}")
    return float((log_p.exp() * (log_p - log_q)).sum(1).mean())


def oracle_accuracy(data: MultimodalDataset, split: str = "test", presence=None) -> float:
    pred = oracle_predict(data, split, presence).argmax(1)
    return float((pred == data.y[data.splits[split]].cpu()).float().mean())


@register("gaussian")
def load_gaussian(root=None, preset: str = "balanced", **overrides) -> MultimodalDataset:
    """``load_dataset("gaussian", preset="dominant", n=5000, seed=1)``: a preset, with any
    :class:`GaussianSpec` field overridden."""
    if root is not None:
        raise ValueError("gaussian is generated, not read: pass no data root")
    if preset not in PRESETS:
        raise ValueError(f"unknown gaussian preset {preset!r}; presets: {sorted(PRESETS)}")
    fields = asdict(PRESETS[preset])
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(f"unknown GaussianSpec field(s) {sorted(unknown)}; fields: {sorted(fields)}")
    fields.update(overrides)
    for k in ("dims", "names", "informativeness", "split"):
        fields[k] = tuple(fields[k])
    return generate(GaussianSpec(**fields))[0]
