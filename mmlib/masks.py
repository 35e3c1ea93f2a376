"""Missing-modality patterns as explicit, seeded presence matrices.

A *presence matrix* is a boolean tensor of shape ``(n_samples, n_modalities)``:
``presence[i, m]`` is True when sample ``i`` has modality ``m``. Missingness is data, not a
code path: build it once from a spec and a seed, store it with the run, show it in the book.

Patterns (each paper of the book uses one):

(a) :func:`keep_fraction` -- SMIL's "100% image + eta% audio": modality ``m`` is present
    in exactly ``int(n * eta)`` samples, the other modalities everywhere.
(b) :func:`independent` -- RedCore: each modality is missing in exactly ``int(n * rate_m)``
    samples, drawn independently per modality (rates may differ). A sample may lose all
    its modalities, as in the authors' code; :func:`describe` counts such rows.
(c) :func:`random_drop` -- MLA / CPM-Nets: every entry is dropped with probability ``p``;
    a sample that would lose everything keeps one modality chosen at random.
(d) :func:`test_patterns` -- every non-empty subset of the modalities, for evaluation.

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


def keep_fraction(n: int, modalities: list[str], keep: dict[str, float], seed: int) -> torch.Tensor:
    """(a) Modality ``m`` present in exactly ``int(n * keep[m])`` random samples; modalities
    not named in ``keep`` are present everywhere. SMIL's ``eta`` is ``keep["audio"]``."""
    _check_modalities(modalities, keep)
    g = _generator(seed)
    p = full(n, modalities)
    for m, eta in keep.items():
        eta = _check_rate(f"keep fraction of {m!r}", eta)
        k = int(n * eta)
        col = torch.zeros(n, dtype=torch.bool)
        col[torch.randperm(n, generator=g)[:k]] = True
        p[:, modalities.index(m)] = col
    if (~p.any(1)).all() and n > 0:
        raise ValueError(f"keep={keep} removes every modality from every sample")
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


def random_drop(n: int, modalities: list[str], p: float, seed: int) -> torch.Tensor:
    """(c) Each (sample, modality) entry is dropped with probability ``p``; a sample left
    with nothing gets one modality back, chosen uniformly (at least one is always kept)."""
    p = _check_rate("drop probability p", p)
    if len(modalities) < 1:
        raise ValueError("need at least one modality")
    g = _generator(seed)
    keep = torch.rand(n, len(modalities), generator=g) >= p
    empty = torch.nonzero(~keep.any(1)).flatten()
    back = torch.randint(len(modalities), (len(empty),), generator=g)
    keep[empty, back] = True
    return keep


def test_patterns(modalities: list[str]) -> list[tuple[str, ...]]:
    """(d) Every non-empty subset of ``modalities``, smallest first, e.g. for two:
    ``[("image",), ("audio",), ("image", "audio")]``."""
    return [c for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]


KINDS = {"full", "keep_fraction", "independent", "random_drop", "pattern"}


def from_spec(spec: dict, n: int, modalities: list[str], seed: int) -> torch.Tensor:
    """Build a presence matrix from a spec dict, e.g.

    ``{"kind": "keep_fraction", "keep": {"audio": 0.1}}``,
    ``{"kind": "independent", "rates": {"A": 0.2, "V": 0.5, "L": 0.8}}``,
    ``{"kind": "random_drop", "p": 0.3}``, ``{"kind": "pattern", "present": ["image"]}``,
    ``{"kind": "full"}``.
    """
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown missing-pattern kind {kind!r}; use one of {sorted(KINDS)}")
    if kind == "full":
        return full(n, modalities)
    if kind == "keep_fraction":
        return keep_fraction(n, modalities, spec["keep"], seed)
    if kind == "independent":
        return independent(n, modalities, spec["rates"], seed)
    if kind == "random_drop":
        return random_drop(n, modalities, spec["p"], seed)
    return pattern(n, modalities, spec["present"])


def describe(presence: torch.Tensor, modalities: list[str]) -> dict:
    """Counts a reader can check: per-modality present fraction, complete and empty rows,
    and how many samples show each combination of modalities."""
    presence = presence.bool().cpu()
    combos: dict[str, int] = {}
    for row, count in zip(*torch.unique(presence, dim=0, return_counts=True)):
        key = "+".join(m for m, b in zip(modalities, row.tolist()) if b) or "(none)"
        combos[key] = int(count)
    return {
        "n": int(presence.shape[0]),
        "present_fraction": {m: float(presence[:, j].float().mean()) for j, m in enumerate(modalities)},
        "complete": int(presence.all(1).sum()),
        "empty": int((~presence.any(1)).sum()),
        "combinations": combos,
    }
