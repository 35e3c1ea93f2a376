import pytest
import torch

from mmlib import masks

MODS = ["image", "audio"]
AVL = ["A", "V", "L"]


def test_one_modality_missing_leaves_the_others_complete():
    p = masks.independent(1000, MODS, {"audio": 0.9}, seed=0)     # SMIL's 100 % image + 10 % audio
    assert p.shape == (1000, 2) and p.dtype == torch.bool
    assert int(p[:, 1].sum()) == 100
    assert bool(p[:, 0].all())


@pytest.mark.parametrize("n,rate", [(999, 0.63), (10, 0.95), (3000, 0.05)])
def test_a_missing_rate_hides_int_n_times_rate_samples(n, rate):
    assert int((~masks.independent(n, MODS, {"audio": rate}, seed=3)[:, 1]).sum()) == int(n * rate)


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
    (masks.independent, {"rates": {"A": 0.3, "V": 0.6}}),
    (masks.random_drop, {"rate": 0.4}),
])
def test_deterministic_under_seed_and_seed_matters(fn, kw):
    mods = AVL
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
    (lambda: masks.independent(10, MODS, {"audio": -0.5}, 0), r"in \[0, 1\]"),
    (lambda: masks.independent(10, AVL, {"A": 1, "V": 1, "L": 1}, 0), "every modality"),
    (lambda: masks.independent(10, ["audio"], {"audio": 1.0}, 0), "every modality"),
    (lambda: masks.independent(10, AVL, {"X": 0.5}, 0), "unknown modality 'X'"),
    (lambda: masks.random_drop(10, AVL, 2.0, 0), "missing rate"),
    (lambda: masks.pattern(10, MODS, []), "at least one"),
    (lambda: masks.from_spec({"kind": "bogus"}, 10, MODS, 0), "unknown missing-pattern kind"),
    (lambda: masks.from_spec({"kind": "keep_fraction", "keep": {"audio": 0.1}}, 10, MODS, 0),
     "spelled with missing rates"),                             # one name per pattern: SMIL's is independent
])
def test_impossible_specs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- cpm and span
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.6, 0.7])
def test_cpm_exact_rate_and_no_empty_rows(rate):
    names = ["A", "V", "L"]
    p = masks.cpm(3318, names, rate, seed=0)
    d = masks.describe(p, names)
    assert d["empty"] == 0
    expected = min(rate, 2 / 3)                 # at rate >= 1 - 1/M every row keeps exactly one
    assert abs(d["overall_missing_rate"] - expected) < 1 / (3318 * 3) + 1e-12
    one = int((p.sum(1) == 1).sum()) / 3318
    # CPM-Nets' random_mask at N = 3,318: share of one-modality rows 3, 9, 21, 35, 56, 82, 100 %
    # for rates 0.1 ... 0.7; with the extra entries kept with probability q, it is (1 - q)^2
    q = (3 * (1 - expected) - 1) / 2
    assert one == pytest.approx((1 - q) ** 2, abs=0.03)
    assert torch.equal(p, masks.cpm(3318, names, rate, seed=0))
    assert not torch.equal(p, masks.cpm(3318, names, rate, seed=1))


def test_cpm_from_spec_and_errors():
    p = masks.from_spec({"kind": "cpm", "rate": 0.7}, 100, ["A", "V", "L"], seed=3)
    assert (p.sum(1) == 1).all()
    with pytest.raises(ValueError, match="needs the key 'rate'"):
        masks.from_spec({"kind": "cpm", "p": 0.5}, 10, ["A", "V"], seed=0)
    with pytest.raises(ValueError, match="missing rate must be in"):
        masks.cpm(10, ["A", "V"], 1.5, seed=0)


def test_span_hides_one_contiguous_span_inside_the_true_length():
    lengths = torch.tensor([50, 20, 7, 1, 0] * 40)
    kept = masks.span(200, 50, (0.4, 0.6), seed=0, lengths=lengths)
    assert kept.shape == (200, 50) and kept.dtype == torch.bool
    for i in range(200):
        T = int(lengths[i])
        hidden = torch.nonzero(~kept[i]).flatten()
        k = len(hidden)
        assert int(0.4 * T) <= k <= int(0.6 * T)                  # k = floor(T r), r in the band
        if k:
            assert hidden.max() - hidden.min() + 1 == k            # contiguous
            assert hidden.max() < T                                 # never on padding
    d = masks.describe_span(kept, lengths)
    assert d["untouched"] == 80                                     # lengths 1 and 0 lose nothing
    long = masks.describe_span(kept[lengths == 50], lengths[lengths == 50])
    assert 0.4 <= long["hidden_fraction"]["min"] and long["hidden_fraction"]["max"] <= 0.6


def test_span_fixed_per_seed_or_redrawn_by_a_generator():
    a = masks.span(64, 30, (0.2, 0.4), seed=5)
    assert torch.equal(a, masks.span(64, 30, (0.2, 0.4), seed=5))
    g = torch.Generator().manual_seed(5)
    first, second = masks.span(64, 30, (0.2, 0.4), g), masks.span(64, 30, (0.2, 0.4), g)
    assert torch.equal(first, a) and not torch.equal(first, second)
    with pytest.raises(ValueError, match="band"):
        masks.span(4, 10, (0.6, 0.4), seed=0)
    with pytest.raises(ValueError, match="lengths"):
        masks.span(4, 10, (0.2, 0.4), seed=0, lengths=torch.tensor([11, 1, 1, 1]))


def test_a_spec_that_is_not_a_dict_is_refused_with_the_allowed_kinds():
    with pytest.raises(ValueError, match=r"a dict with a 'kind'.*e\.g\. \{'kind': 'full'\}, got str 'full'"):
        masks.from_spec("full", 4, ["a", "b"], 0)
    with pytest.raises(ValueError, match="got list"):
        masks.from_spec(["full"], 4, ["a", "b"], 0)
