"""Missing-modality patterns as explicit, seeded presence matrices.

A *presence matrix* is a boolean tensor of shape ``(n_samples, n_modalities)``:
``presence[i, m]`` is True when sample ``i`` has modality ``m``. Missingness is data, not a
code path: build it once from a spec and a seed, store it with the run, show it in the book.

Patterns (each paper of the book uses one):

(a, b) :func:`independent` -- each modality ``m`` is missing in exactly ``int(n * rate_m)``
    samples, drawn independently per modality. SMIL's "100% image + eta% audio" is one
    modality missing at rate 1 - eta (the others complete); RedCore's, every modality at a
    rate of its own, so a sample may lose all its modalities, as in the authors' code
    (:func:`describe` counts such rows).
(c) :func:`random_drop` -- MLA / CPM-Nets: every entry is dropped with probability ``p``;
    a sample that would lose everything keeps one modality chosen at random.
(d) :func:`cpm` -- CPM-Nets' ``random_mask`` as MLA's code uses it: an overall missing
    rate over all (sample, modality) entries, at least one modality kept per sample; at
    rate >= 1 - 1/M every sample keeps exactly one.
(e) :func:`test_patterns` -- every non-empty subset of the modalities, for evaluation.

Missing *inside* a modality (M3S) is a feature mask rather than a presence matrix:
:func:`span` zeroes a contiguous span of each sample's time (or feature) axis,
:func:`describe_span` counts what it hid, and :func:`span_masks` draws one fixed mask per
row and modality for a whole dataset (each split from its own seeded stream).

Specs are plain dicts (they go into run records and papermill parameters), built into a
matrix by :func:`from_spec`. Impossible specs raise ``ValueError`` naming the problem.
"""
from __future__ import annotations

from itertools import combinations

import torch


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_rate(name: str, rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {rate}")
    return rate


def _check_modalities(modalities, names) -> None:
    unknown = [m for m in names if m not in modalities]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; the dataset has {list(modalities)}")


def full(n: int, modalities: list[str]) -> torch.Tensor:
    """Every modality present in every sample."""
    return torch.ones(n, len(modalities), dtype=torch.bool)


def pattern(n: int, modalities: list[str], present) -> torch.Tensor:
    """The same subset ``present`` (names) in every sample, e.g. ``["image"]``."""
    present = [present] if isinstance(present, str) else list(present)
    _check_modalities(modalities, present)
    if not present:
        raise ValueError("a test pattern must keep at least one modality")
    p = torch.zeros(n, len(modalities), dtype=torch.bool)
    for m in present:
        p[:, modalities.index(m)] = True
    return p


def independent(n: int, modalities: list[str], rates: dict[str, float], seed: int) -> torch.Tensor:
    """(b) Modality ``m`` missing in exactly ``int(n * rates[m])`` samples, drawn
    independently per modality (RedCore). Rows with no modality at all can occur."""
    _check_modalities(modalities, rates)
    rates = {m: _check_rate(f"missing rate of {m!r}", r) for m, r in rates.items()}
    if n > 0 and len(rates) == len(modalities) and all(r == 1.0 for r in rates.values()):
        raise ValueError(f"rates={rates} remove every modality from every sample")
    g = _generator(seed)
    p = full(n, modalities)
    for m in modalities:                          # fixed order: the same seed, the same matrix
        k = int(n * rates.get(m, 0.0))
        p[torch.randperm(n, generator=g)[:k], modalities.index(m)] = False
    return p


def random_drop(n: int, modalities: list[str], rate: float, seed: int) -> torch.Tensor:
    """(c) Each (sample, modality) entry is dropped with probability ``rate``; a sample left
    with nothing gets one modality back, chosen uniformly (at least one is always kept)."""
    p = _check_rate("missing rate (each entry's drop probability)", rate)
    if len(modalities) < 1:
        raise ValueError("need at least one modality")
    g = _generator(seed)
    keep = torch.rand(n, len(modalities), generator=g) >= p
    empty = torch.nonzero(~keep.any(1)).flatten()
    back = torch.randint(len(modalities), (len(empty),), generator=g)
    keep[empty, back] = True
    return keep


def cpm(n: int, modalities: list[str], rate: float, seed: int) -> torch.Tensor:
    """(d) CPM-Nets' random mask with an exact overall rate: each sample first keeps one
    modality drawn uniformly; then exactly ``round(n * M * (1 - rate)) - n`` of the other
    entries are kept, drawn uniformly without replacement. No row is empty; at
    ``rate >= 1 - 1/M`` every sample keeps exactly one modality (effective rate 1 - 1/M).

    CPM-Nets draws the extra entries with a per-entry probability and retries until the
    overall rate is within 0.005 of the target; this draws the exact count instead (same
    distribution of rows, no retry loop)."""
    rate = _check_rate("missing rate", rate)
    m = len(modalities)
    if m < 1:
        raise ValueError("need at least one modality")
    g = _generator(seed)
    keep = torch.zeros(n, m, dtype=torch.bool)
    keep[torch.arange(n), torch.randint(m, (n,), generator=g)] = True
    extra = max(0, min(round(n * m * (1.0 - rate)) - n, n * (m - 1)))
    free = torch.nonzero(~keep.flatten()).flatten()
    keep.view(-1)[free[torch.randperm(len(free), generator=g)[:extra]]] = True
    return keep


def test_patterns(modalities: list[str]) -> list[tuple[str, ...]]:
    """(e) Every non-empty subset of ``modalities``, smallest first, e.g. for two:
    ``[("image",), ("audio",), ("image", "audio")]``."""
    return [c for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]


KINDS = {"full", "independent", "random_drop", "cpm", "pattern"}


def from_spec(spec: dict, n: int, modalities: list[str], seed: int) -> torch.Tensor:
    """Build a presence matrix from a spec dict, e.g.

    ``{"kind": "independent", "rates": {"A": 0.2, "V": 0.5, "L": 0.8}}``,
    ``{"kind": "random_drop", "rate": 0.3}``, ``{"kind": "cpm", "rate": 0.5}``,
    ``{"kind": "pattern", "present": ["image"]}``,
    ``{"kind": "full"}``.
    """
    if not isinstance(spec, dict):
        hint = f", e.g. {{'kind': {spec!r}}}" if isinstance(spec, str) else ""
        raise ValueError(f"a missing-pattern spec is a dict with a 'kind' (one of {sorted(KINDS)}){hint}, "
                         f"got {type(spec).__name__} {spec!r}")
    kind = spec.get("kind")
    if kind == "keep_fraction":             # one name per pattern: the kept fraction is spelled as a rate
        raise ValueError(f"missing-pattern kind 'keep_fraction' is spelled with missing rates: "
                         f"{{'kind': 'independent', 'rates': {{m: 1 - keep}}}} (got {spec})")
    need = {"independent": "rates", "random_drop": "rate", "cpm": "rate",
            "pattern": "present"}.get(kind)
    if kind in KINDS and need and need not in spec:
        raise ValueError(f"missing-pattern spec {spec} of kind {kind!r} needs the key {need!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown missing-pattern kind {kind!r}; use one of {sorted(KINDS)}")
    if kind == "full":
        return full(n, modalities)
    if kind == "independent":
        return independent(n, modalities, spec["rates"], seed)
    if kind == "random_drop":
        return random_drop(n, modalities, spec["rate"], seed)
    if kind == "cpm":
        return cpm(n, modalities, spec["rate"], seed)
    return pattern(n, modalities, spec["present"])


def describe(presence: torch.Tensor, modalities: list[str]) -> dict:
    """Counts a reader can check: per-modality present fraction and missing rate, the
    overall missing rate (over all entries), complete and empty rows, and how many samples
    show each combination of modalities."""
    presence = presence.bool().cpu()
    combos: dict[str, int] = {}
    for row, count in zip(*torch.unique(presence, dim=0, return_counts=True)):
        key = "+".join(m for m, b in zip(modalities, row.tolist()) if b) or "(none)"
        combos[key] = int(count)
    return {
        "n": int(presence.shape[0]),
        "present_fraction": {m: float(presence[:, j].float().mean()) for j, m in enumerate(modalities)},
        "missing_rate": {m: float(1 - presence[:, j].float().mean()) for j, m in enumerate(modalities)},
        "overall_missing_rate": float(1 - presence.float().mean()) if presence.numel() else 0.0,
        "complete": int(presence.all(1).sum()),
        "empty": int((~presence.any(1)).sum()),
        "combinations": combos,
    }


def span(n: int, length: int, band: tuple[float, float], seed: int | torch.Generator,
         lengths: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """A feature mask (M3S, section 3.2): for each of ``n`` samples, a contiguous span of
    ``k = floor(T * r)`` positions is hidden, with ``r`` uniform in ``band`` and the start
    uniform over the ``T - k + 1`` valid positions. ``T`` is the sample's true length
    (``lengths``; default ``length``), so spans never fall on padding.

    Returns a boolean (n, length) tensor, True where the position is kept. Pass a seed for
    a mask fixed per seed, or a ``torch.Generator`` to redraw it at every call (the
    generator's state advances, so a run stays reproducible)."""
    lo, hi = (float(b) for b in band)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"span band must satisfy 0 <= low <= high <= 1, got {band}")
    if length < 1:
        raise ValueError(f"span length must be >= 1, got {length}")
    g = seed if isinstance(seed, torch.Generator) else _generator(seed)
    T = torch.full((n,), length, dtype=torch.long) if lengths is None else lengths.detach().cpu().long()
    if T.shape != (n,) or bool((T < 0).any()) or bool((T > length).any()):
        raise ValueError(f"lengths must be a ({n},) tensor with values in [0, {length}]")
    r = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    k = torch.floor(T.double() * r).long()
    start = torch.floor(torch.rand(n, generator=g, dtype=torch.float64) * (T - k + 1).double()).long()
    pos = torch.arange(length).unsqueeze(0)
    hidden = (pos >= start.unsqueeze(1)) & (pos < (start + k).unsqueeze(1))
    return (~hidden).to(device) if device is not None else ~hidden


def describe_span(kept: torch.Tensor, lengths: torch.Tensor | None = None) -> dict:
    """What a span mask hides: the hidden fraction of each sample's valid positions
    (mean, min, max) and how many samples lose nothing."""
    kept = kept.bool().cpu()
    n, length = kept.shape
    T = torch.full((n,), length) if lengths is None else lengths.cpu().long()
    valid = torch.arange(length).unsqueeze(0) < T.unsqueeze(1)
    frac = ((~kept) & valid).sum(1).double() / T.clamp(min=1).double()
    return {"n": n, "hidden_fraction": {"mean": float(frac.mean()) if n else 0.0,
                                        "min": float(frac.min()) if n else 0.0,
                                        "max": float(frac.max()) if n else 0.0},
            "untouched": int((frac == 0).sum())}


SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def span_masks(shapes: dict[str, tuple], n: int, rows: dict[str, torch.Tensor], bands: dict[str, tuple | None],
               seed: int | torch.Generator, lengths: dict[str, torch.Tensor] | None = None, axis: str = "time",
               stream: int = 0) -> dict[str, torch.Tensor]:
    """Fixed span masks (:func:`span`) for the rows of each split, per modality: True where
    a value is kept. A sequence modality (shape ``(T, d)``) loses a span of time steps
    inside its true length (``axis="time"``; ``"feature"``: a span of its ``d`` features, at
    every step), a vector modality (shape ``(d,)``) a span of its features. ``bands[split]``
    is the split's ``(low, high)`` range of hidden fractions (None: untouched). Each
    (split, modality) draws from its own stream of ``seed`` (and ``stream``, so that a second
    test corruption is a fresh draw), so a split's masks do not depend on the others. A
    ``torch.Generator`` as ``seed`` draws every (split, modality) from it instead, in turn (masks
    redrawn at every call, e.g. M3S's T every epoch).

    Returns ``{modality: bool mask}`` over all ``n`` rows of the dataset, shaped to
    broadcast against the features: ``(n, T, 1)`` (time spans), ``(n, 1, d)`` (feature spans of
    a sequence) or ``(n, d)`` (a vector)."""
    import numpy as np
    if axis not in ("time", "feature"):
        raise ValueError(f"span axis must be 'time' or 'feature', got {axis!r}")
    unknown = set(bands) - set(SPLIT_STREAM)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)} in the span bands; use {sorted(SPLIT_STREAM)}")
    lengths = lengths or {}
    out = {}
    for j, (m, shape) in enumerate(shapes.items()):
        seq = len(shape) == 2 and axis == "time"
        width = shape[0] if seq else shape[-1]
        kept = torch.ones(n, width, dtype=torch.bool)
        for split, band in bands.items():
            if band is None or split not in rows or len(rows[split]) == 0:
                continue
            idx = rows[split].cpu()
            state = seed if isinstance(seed, torch.Generator) else \
                int(np.random.SeedSequence([seed, 20_000 + stream, SPLIT_STREAM[split], j]).generate_state(1)[0])
            ln = lengths[m].cpu()[idx] if (seq and m in lengths) else None
            kept[idx] = span(len(idx), width, tuple(band), state, ln)
        out[m] = kept[:, :, None] if seq else (kept[:, None, :] if len(shape) == 2 else kept)
    return out


def apply_spans(x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Zero what a span mask of :func:`span_masks` hides (it broadcasts against ``x``)."""
    return x * kept.to(device=x.device, dtype=x.dtype)
