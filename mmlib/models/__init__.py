"""Encoders and fusion heads (MultiBench's split: unimodal encoders, then a fusion).

Encoders map one modality to a feature vector; :func:`make_encoder` picks one from the
shape of a sample. A :class:`MultimodalNet` holds one encoder per modality and a fusion
head, and takes a presence matrix: a missing modality's *input* is replaced by zeros
(zero padding) before its encoder; late fusion averages the logits of present modalities.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- dropout streams
# Where dropout draws its masks: None (the default) -> torch's global generator, exactly as
# nn.Dropout; otherwise an object with ``draw(shape, device)`` returning uniform noise. The
# training loops set a seeded stream per fit (mmlib.train.dropout_stream), so a model trained
# alone and the same model trained as one member of a batch of seeds draw the same masks.
_NOISE: contextvars.ContextVar = contextvars.ContextVar("dropout_noise", default=None)


class Dropout(nn.Module):
    """``nn.Dropout``, with its masks taken from the current dropout stream when one is set
    (``u >= p`` for uniform noise ``u``, scaled by 1 / (1 - p))."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        stream = _NOISE.get()
        if stream is None:
            return F.dropout(x, self.p, True)
        u = stream.draw(tuple(x.shape), x.device)
        return x * (u >= self.p).to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def uniform_noise(shape: tuple, device) -> torch.Tensor:
    """Uniform noise in [0, 1) of ``shape`` (e.g. a random choice of what to hide in a batch):
    from the current noise stream when one is set, else ``torch.rand``."""
    stream = _NOISE.get()
    return torch.rand(shape, device=device) if stream is None else stream.draw(tuple(shape), device)


def normal_like(x: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (a VIB's or VAE's reparameterisation): from the
    current noise stream when one is set (the normal quantiles of its uniform draws, so a fit
    alone and the same fit as a member of an ensemble draw the same noise), else
    ``torch.randn_like``."""
    stream = _NOISE.get()
    if stream is None:
        return torch.randn_like(x)
    u = stream.draw(tuple(x.shape), x.device).clamp(1e-7, 1 - 1e-7)
    return torch.special.ndtri(u).to(x.dtype)


@contextlib.contextmanager
def noise_stream(stream):
    """Use ``stream`` for every :class:`Dropout` (and :func:`normal_like`) inside the block."""
    token = _NOISE.set(stream)
    try:
        yield stream
    finally:
        _NOISE.reset(token)



class _MaxPool2x2(torch.autograd.Function):
    """2 x 2 max pooling, stride 2, as the maximum of the four strided phases of the input.
    The backward routes each gradient to the first maximum of its window in row-major
    order, as aten's max_pool2d does, so values and gradients are bit-identical to
    ``F.max_pool2d(x, 2)`` (a test checks it); on a CPU it avoids aten's index bookkeeping."""

    generate_vmap_rule = True            # usable under torch.func (SMIL's grad, vmap over seeds)

    @staticmethod
    def forward(x):
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        a, b = x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2]
        c, d = x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]
        return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        h, w = out.shape[-2] * 2, out.shape[-1] * 2
        grad = torch.zeros_like(x)
        taken = torch.zeros_like(out, dtype=torch.bool)
        for di, dj in ((0, 0), (0, 1), (1, 0), (1, 1)):        # the first maximum wins, as aten
            hit = (x[..., di:h:2, dj:w:2] == out) & ~taken
            grad[..., di:h:2, dj:w:2] = g * hit
            taken |= hit
        return grad


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` computed by :class:`_MaxPool2x2` (the same numbers, faster)."""

    def forward(self, x):
        return _MaxPool2x2.apply(x)


class MLP(nn.Module):
    """Fully connected layers with ReLU and dropout; flattens its input."""

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], out_dim: int, dropout: float = 0.0):
        super().__init__()
        layers, d = [nn.Flatten()], in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x):
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5-style CNN for 28 x 28 images (SMIL's image encoder): two 5x5 conv layers
    with max pooling, then a linear layer to ``out_dim``."""

    def __init__(self, out_dim: int = 64, dropout: float = 0.25, width: int = 1):
        super().__init__()
        c1, c2 = 6 * width, 16 * width
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), MaxPool2x2(),      # c1 x 14 x 14
            nn.Conv2d(c1, c2, 5), nn.ReLU(), MaxPool2x2(),                # c2 x 5 x 5
            nn.Flatten(), Dropout(dropout))
        self.fc = nn.Sequential(nn.Linear(c2 * 25, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x):
        return self.fc(self.conv(x.reshape(-1, 1, 28, 28)))


class MFCCNet(nn.Module):
    """Small CNN for 20 x 20 MFCC 'images' (SMIL's modified LeNet for audio)."""

    def __init__(self, out_dim: int = 64, dropout: float = 0.25, width: int = 1):
        super().__init__()
        c1, c2 = 16 * width, 32 * width
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), MaxPool2x2(),  # c1 x 10 x 10
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), MaxPool2x2(),  # c2 x 5 x 5
            nn.Flatten(), Dropout(dropout))
        self.fc = nn.Sequential(nn.Linear(c2 * 25, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x):
        return self.fc(self.conv(x.reshape(-1, 1, 20, 20)))


class PooledEncoder(nn.Module):
    """Mean and standard deviation of a (batch, time, features) sequence over its valid
    frames (``lengths``; default: all), concatenated, then an MLP. The CPU default for
    sequences: it sees the same frames as an LSTM at a fraction of the cost, and ignores
    the frames' order (the papers' LSTMs are the ``sequence="lstm"`` choice)."""

    takes_lengths = True

    def __init__(self, in_dim: int, hidden: int = 64, out_dim: int = 64, dropout: float = 0.1):
        super().__init__()
        self.mlp = MLP(2 * in_dim, [hidden], out_dim, dropout=dropout)
        self.out_dim = out_dim

    @staticmethod
    def pool(x, lengths=None):
        """The parameter-free part: per sequence, the mean and variance of its valid frames,
        concatenated (B, 2 * features). Zeroing a sequence zeroes its statistics, so a missing
        modality's statistics are the statistics of its zeroed input."""
        if lengths is None:                  # two passes of means: 7x faster than Tensor.var on a CPU
            mean = x.mean(1)
            var = ((x - mean.unsqueeze(1)) ** 2).mean(1)
        else:
            valid = (torch.arange(x.shape[1], device=x.device).unsqueeze(0)
                     < lengths.to(x.device).unsqueeze(1)).to(x.dtype).unsqueeze(-1)      # (B, T, 1)
            count = valid.sum(1).clamp(min=1)
            mean = (x * valid).sum(1) / count
            var = (((x - mean.unsqueeze(1)) ** 2) * valid).sum(1) / count
        return torch.cat([mean, var], dim=1)

    def forward(self, x, lengths=None):
        """``x``: a (batch, time, features) sequence, or its :meth:`pool` statistics (batch, 2 *
        features), computed once per dataset by :meth:`MultimodalNet.transform_inputs`."""
        stats = self.pool(x, lengths) if x.dim() == 3 else x
        mean, var = stats.chunk(2, dim=1)
        return torch.relu(self.mlp(torch.cat([mean, (var + 1e-6).sqrt()], dim=1)))


class LSTMEncoder(nn.Module):
    """One-layer LSTM over a (batch, time, features) sequence; returns the last valid
    hidden state (``lengths`` gives each sequence's true length; default: all steps)."""

    def __init__(self, in_dim: int, hidden: int = 64, out_dim: int = 64):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, out_dim)
        self.out_dim = out_dim

    takes_lengths = True

    def forward(self, x, lengths=None):
        out, _ = self.lstm(x)
        if lengths is None:
            last = out[:, -1]
        else:
            idx = (lengths.clamp(min=1) - 1).to(out.device)
            last = out[torch.arange(len(out), device=out.device), idx]
        return torch.relu(self.fc(last))


def encode(encoder: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Run an encoder; a sequence encoder also gets the true lengths of zero-padded
    sequences (real datasets keep them in ``MultimodalDataset.lengths``)."""
    if lengths is not None and getattr(encoder, "takes_lengths", False):
        return encoder(x, lengths)
    return encoder(x)


BACKBONES = ("auto", "mlp", "cnn", "cnn_x2")
SEQUENCE_ENCODERS = ("pooled", "lstm")


def make_encoder(sample_shape: tuple[int, ...], out_dim: int = 64, backbone: str = "auto",
                 sequence: str = "pooled") -> nn.Module:
    """An encoder suited to one sample's shape: 28x28 -> LeNet5, 20x20 -> MFCCNet,
    (time, features) -> ``sequence`` (``"pooled"``: :class:`PooledEncoder`, the CPU
    default; ``"lstm"``: :class:`LSTMEncoder`), vector -> MLP. ``backbone`` sets the
    capacity for images and MFCCs: ``"mlp"`` (one hidden layer on the flattened input),
    ``"cnn"`` (= ``"auto"``) or ``"cnn_x2"`` (the CNN with twice the channels)."""
    shape = tuple(sample_shape)
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; use one of {BACKBONES}")
    if sequence not in SEQUENCE_ENCODERS:
        raise ValueError(f"unknown sequence encoder {sequence!r}; use one of {SEQUENCE_ENCODERS}")
    grid = shape in {(28, 28), (1, 28, 28), (784,), (20, 20), (1, 20, 20)}
    if grid and backbone == "mlp":
        n = 1
        for d in shape:
            n *= d
        enc = nn.Sequential(MLP(n, [128], out_dim, dropout=0.25), nn.ReLU())
        enc.out_dim = out_dim
        return enc
    width = 2 if backbone == "cnn_x2" else 1
    if shape in {(28, 28), (1, 28, 28), (784,)}:
        return LeNet5(out_dim, width=width)
    if shape in {(20, 20), (1, 20, 20)}:
        return MFCCNet(out_dim, width=width)
    if len(shape) == 2:
        return (PooledEncoder if sequence == "pooled" else LSTMEncoder)(shape[1], out_dim, out_dim)
    if len(shape) == 1:
        return MLP(shape[0], [max(out_dim, 64)], out_dim, dropout=0.1)
    raise ValueError(f"no default encoder for samples of shape {shape}")


# ----------------------------------------------------------------------------- fusion heads
class ConcatFusion(nn.Module):
    """Concatenate the modality features, then an MLP to the outputs."""

    def __init__(self, in_dims: list[int], n_out: int, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(sum(in_dims), hidden), nn.ReLU(), Dropout(dropout))
        self.out = nn.Linear(hidden, n_out)

    def forward(self, feats: list[torch.Tensor], presence: torch.Tensor):
        h = self.hidden(torch.cat(feats, dim=1))
        return self.out(h), h


class SumFusion(nn.Module):
    """Project each modality to a common size and add them, then a linear output."""

    def __init__(self, in_dims: list[int], n_out: int, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, hidden) for d in in_dims)
        self.drop = Dropout(dropout)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, feats, presence):
        h = self.drop(torch.relu(sum(p(f) for p, f in zip(self.proj, feats))))
        return self.out(h), h


class LateFusion(nn.Module):
    """One classifier per modality; the prediction is the mean of the logits of the
    modalities present in each sample (a missing modality casts no vote)."""

    def __init__(self, in_dims: list[int], n_out: int, dropout: float = 0.3):
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(Dropout(dropout), nn.Linear(d, n_out)) for d in in_dims)

    def unimodal_logits(self, feats):
        return torch.stack([h(f) for h, f in zip(self.heads, feats)], dim=1)   # (B, M, C)

    def forward(self, feats, presence):
        logits = self.unimodal_logits(feats)
        w = presence.float().unsqueeze(-1)
        fused = (logits * w).sum(1) / w.sum(1).clamp(min=1)
        return fused, torch.cat(feats, dim=1)


# --- the linear fusions of the balancing literature (MLA's Table 1). Each one reads the features of
# the *present* modalities only: an absent modality's feature vector is zero (h_m = 0), the read-out
# every method of the MLA chapter declares for its unimodal columns.
def _present(feats, presence):
    return [f * presence[:, j:j + 1].to(f.dtype) for j, f in enumerate(feats)]


class SumLinear(nn.Module):
    """MLA's "Sum": one linear layer per modality, the logits summed."""

    def __init__(self, in_dims: list[int], n_out: int, **_):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(d, n_out) for d in in_dims)

    def unimodal_logits(self, feats):
        return torch.stack([h(f) for h, f in zip(self.heads, feats)], dim=1)       # (B, M, C)

    def forward(self, feats, presence):
        logits = (self.unimodal_logits(feats) * presence.to(feats[0].dtype).unsqueeze(-1)).sum(1)
        return logits, torch.cat(_present(feats, presence), 1)


class ConcatLinear(nn.Module):
    """MLA's "Concat": one linear layer on [h_1; ...; h_M]. Modality m's read-out is its slice
    of the weight and 1/M of the bias, W[:, slice_m] h_m + b / M (as the authors' code reads
    unimodal accuracy); the fused logits are the sum of the present modalities' read-outs
    (all present: exactly W [h_1; ...; h_M] + b)."""

    def __init__(self, in_dims: list[int], n_out: int, **_):
        super().__init__()
        self.dims = list(in_dims)
        self.out = nn.Linear(sum(in_dims), n_out)

    def unimodal_logits(self, feats):
        W, b, M, s = self.out.weight, self.out.bias, len(feats), 0
        outs = []
        for f in feats:
            outs.append(f @ W[:, s:s + f.shape[1]].T + b / M)
            s += f.shape[1]
        return torch.stack(outs, dim=1)

    def forward(self, feats, presence):
        logits = (self.unimodal_logits(feats) * presence.to(feats[0].dtype).unsqueeze(-1)).sum(1)
        return logits, torch.cat(_present(feats, presence), 1)


def _condition(in_dims: list[int], cond: int, who: str) -> tuple[int, int]:
    """The conditioning modality's index and the common feature width (FiLM, BiGated)."""
    if len(in_dims) < 2:
        raise ValueError(f"{who} conditions one modality's features on another's: it needs at least two "
                         f"modalities, the data gives {len(in_dims)}")
    cond = cond % len(in_dims)
    if any(x != in_dims[cond] for x in in_dims):
        raise ValueError(f"{who} needs features of one width per modality, got {in_dims}")
    return cond, in_dims[cond]


class FiLMFusion(nn.Module):
    """FiLM (Perez et al. 2018) as MLA's appendix runs it: a linear "condition encoder" on the
    conditioning modality's features gives (gamma, beta), twice its width; the other
    modalities' features (summed, when there are several) are modulated, gamma * h + beta,
    and a linear layer classifies."""

    def __init__(self, in_dims: list[int], n_out: int, cond: int = -1, **_):
        super().__init__()
        self.cond, d = _condition(in_dims, cond, "FiLM")
        self.film = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, n_out)

    def forward(self, feats, presence):
        feats = _present(feats, presence)
        gamma, beta = self.film(feats[self.cond]).chunk(2, dim=1)
        other = sum(f for j, f in enumerate(feats) if j != self.cond)
        h = gamma * other + beta
        return self.out(h), h


class BiGatedFusion(nn.Module):
    """Bilinear gated fusion (Kiela et al. 2018) as MLA's appendix runs it: the gate is
    sigmoid(fc_x(h_cond)), it multiplies fc_y of the other modalities' (summed) features,
    and a linear layer classifies."""

    def __init__(self, in_dims: list[int], n_out: int, cond: int = -1, **_):
        super().__init__()
        self.cond, d = _condition(in_dims, cond, "BiGated")
        self.fc_x, self.fc_y, self.out = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, n_out)

    def forward(self, feats, presence):
        feats = _present(feats, presence)
        other = sum(f for j, f in enumerate(feats) if j != self.cond)
        h = torch.sigmoid(self.fc_x(feats[self.cond])) * self.fc_y(other)
        return self.out(h), h


class QMFFusion(SumLinear):
    """QMF (Zhang et al. 2023): a linear head per modality (as Sum); the fused logits weigh each
    present modality's logits by its energy confidence c_m = logsumexp(logits_m) / 10, held
    constant (detached), as the QMF code does."""

    def confidence(self, logits):
        return (torch.logsumexp(logits, dim=-1) / 10).detach()                     # (B, M)

    def forward(self, feats, presence):
        logits = self.unimodal_logits(feats)
        w = self.confidence(logits) * presence.to(logits.dtype)
        return (logits * w.unsqueeze(-1)).sum(1), torch.cat(_present(feats, presence), 1)


FUSIONS = {"concat": ConcatFusion, "sum": SumFusion, "late": LateFusion, "sum_linear": SumLinear,
           "concat_linear": ConcatLinear, "film": FiLMFusion, "bigated": BiGatedFusion, "qmf": QMFFusion}


class MultimodalNet(nn.Module):
    """One encoder per modality plus a fusion head.

    ``forward(xs, presence, lengths=None)`` takes ``xs = {modality: batch tensor}``, a
    boolean ``presence`` of shape (batch, n_modalities) in the order of ``modalities`` and,
    for zero-padded sequences, ``lengths = {modality: (batch,) lengths}``; missing inputs
    are zeroed before encoding. Returns logits; ``embed`` returns the fused
    representation (used for t-SNE figures).
    """

    def __init__(self, modalities: list[str], sample_shapes: dict[str, tuple], n_out: int,
                 fusion: str = "concat", feat_dim: int = 64, hidden: int = 64, backbone: str = "cnn",
                 sequence: str = "pooled", head_options: dict | None = None):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; use one of {sorted(FUSIONS)}")
        self.modalities = list(modalities)
        self.encoders = nn.ModuleDict({m: make_encoder(sample_shapes[m], feat_dim, backbone, sequence)
                                       for m in modalities})
        dims = [self.encoders[m].out_dim for m in modalities]
        self.fusion = (LateFusion(dims, n_out) if fusion == "late"
                       else FUSIONS[fusion](dims, n_out, hidden=hidden, **(head_options or {})))

    def features(self, xs: dict, presence: torch.Tensor, lengths: dict | None = None) -> list[torch.Tensor]:
        feats = []
        for j, m in enumerate(self.modalities):
            x = xs[m]
            keep = presence[:, j].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
            feats.append(encode(self.encoders[m], x * keep, (lengths or {}).get(m)))
        return feats

    def forward(self, xs: dict, presence: torch.Tensor, lengths: dict | None = None) -> torch.Tensor:
        return self.fusion(self.features(xs, presence, lengths), presence)[0]

    def transform_inputs(self, X: dict, L: dict) -> tuple[dict, dict]:
        """The parameter-free input transforms, applied to whole data tensors once instead of to
        every batch: a pooled sequence encoder's statistics (:meth:`PooledEncoder.pool`). Returns
        the inputs the network reads and the lengths still needed (the same outputs as on the raw
        inputs: zeroing a missing modality commutes with the transform)."""
        X, L = dict(X), dict(L)
        for m, enc in self.encoders.items():
            if isinstance(enc, PooledEncoder) and m in X and X[m].dim() == 3:
                X[m] = torch.cat([enc.pool(X[m][s:s + 1024], None if m not in L else L[m][s:s + 1024])
                                  for s in range(0, len(X[m]), 1024)])
                L.pop(m, None)
        return X, L

    def embed(self, xs: dict, presence: torch.Tensor, lengths: dict | None = None) -> torch.Tensor:
        return self.fusion(self.features(xs, presence, lengths), presence)[1]
