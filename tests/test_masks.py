import pytest
import torch

from mmlib import masks

MODS = ["image", "audio"]
AVL = ["A", "V", "L"]


def test_keep_fraction_exact_count_and_other_modalities_complete():
    p = masks.keep_fraction(1000, MODS, {"audio": 0.1}, seed=0)
    assert p.shape == (1000, 2) and p.dtype == torch.bool
    assert int(p[:, 1].sum()) == 100
    assert bool(p[:, 0].all())


@pytest.mark.parametrize("n,rate", [(999, 0.37), (10, 0.05), (3000, 0.95)])
def test_keep_fraction_uses_int_n_times_eta(n, rate):
    assert int(masks.keep_fraction(n, MODS, {"audio": rate}, seed=3)[:, 1].sum()) == int(n * rate)


def test_independent_exact_counts_per_modality_and_different_rates():
    rates = {"A": 0.2, "V": 0.5, "L": 0.8}
    p = masks.independent(1001, AVL, rates, seed=1)
    for j, m in enumerate(AVL):
        assert int((~p[:, j]).sum()) == int(1001 * rates[m])
    # independence: some rows lose every modality, as in the authors' code, and describe counts them
    d = masks.describe(p, AVL)
    assert d["empty"] == int((~p.any(1)).sum()) > 0
    assert sum(d["combinations"].values()) == 1001


def test_random_drop_keeps_at_least_one_and_rate_is_close():
    p = masks.random_drop(5000, AVL, 0.5, seed=2)
    assert bool(p.any(1).all())
    # each entry dropped w.p. 0.5, minus the restored ones (1/8 of rows lose all, 1 of 3 restored)
    expected_missing = 0.5 - (0.5 ** 3) / 3
    assert abs(float((~p).float().mean()) - expected_missing) < 0.02


def test_random_drop_p1_keeps_exactly_one():
    p = masks.random_drop(200, AVL, 1.0, seed=0)
    assert bool((p.sum(1) == 1).all())


@pytest.mark.parametrize("fn,kw", [
    (masks.keep_fraction, {"keep": {"audio": 0.3}}),
    (masks.independent, {"rates": {"A": 0.3, "V": 0.6}}),
    (masks.random_drop, {"p": 0.4}),
])
def test_deterministic_under_seed_and_seed_matters(fn, kw):
    mods = MODS if fn is masks.keep_fraction else AVL
    a, b, c = fn(500, mods, **kw, seed=7), fn(500, mods, **kw, seed=7), fn(500, mods, **kw, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_test_patterns_every_nonempty_subset():
    pats = masks.test_patterns(AVL)
    assert len(pats) == 7 and len(set(pats)) == 7
    assert ("A",) in pats and ("A", "V", "L") in pats and () not in pats


def test_pattern_and_from_spec():
    p = masks.from_spec({"kind": "pattern", "present": ["image"]}, 4, MODS, seed=0)
    assert p.tolist() == [[True, False]] * 4
    assert bool(masks.from_spec({"kind": "full"}, 3, MODS, 0).all())


@pytest.mark.parametrize("call,match", [
    (lambda: masks.keep_fraction(10, MODS, {"audio": 1.5}, 0), r"in \[0, 1\]"),
    (lambda: masks.keep_fraction(10, MODS, {"audio": -0.1}, 0), r"in \[0, 1\]"),
    (lambda: masks.independent(10, AVL, {"A": 1, "V": 1, "L": 1}, 0), "every modality"),
    (lambda: masks.keep_fraction(10, ["audio"], {"audio": 0.0}, 0), "every modality"),
    (lambda: masks.independent(10, AVL, {"X": 0.5}, 0), "unknown modality 'X'"),
    (lambda: masks.random_drop(10, AVL, 2.0, 0), "drop probability"),
    (lambda: masks.pattern(10, MODS, []), "at least one"),
    (lambda: masks.from_spec({"kind": "bogus"}, 10, MODS, 0), "unknown missing-pattern kind"),
])
def test_impossible_specs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
