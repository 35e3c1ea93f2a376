"""Missing inside modalities (M3S): fixed span masks per split, corrupted copies of the data,
and runs tested on several corruptions."""
import pytest
import torch

from mmlib import masks
from mmlib.data import load_dataset
from mmlib.experiment import corrupted, run
from mmlib.train import TrainConfig


@pytest.fixture(scope="module")
def affect():
    return load_dataset("affect", task="emotion")


def test_span_masks_hide_one_contiguous_span_per_row_inside_its_split(affect):
    shapes = {m: tuple(x.shape[1:]) for m, x in affect.modalities.items()}
    k = masks.span_masks(shapes, len(affect), affect.splits, {"train": (0.4, 0.6)}, seed=0)
    tr, te = affect.splits["train"], affect.splits["test"]
    for m, kept in k.items():
        rows = kept.reshape(len(affect), -1)
        assert rows[te].all()                                         # the test split untouched
        width = rows.shape[1]
        hidden = (~rows[tr]).sum(1)
        assert ((hidden >= int(0.4 * width)) & (hidden <= int(0.6 * width))).all(), m
        d = torch.diff((~rows[tr]).int(), dim=1)                       # one run of zeros: at most one start
        assert ((d == 1).sum(1) <= 1).all() and ((d == -1).sum(1) <= 1).all()
    assert k["acoustic"].shape == (len(affect), 50, 1) and k["lexical"].shape == (len(affect), 384)
    again = masks.span_masks(shapes, len(affect), affect.splits, {"train": (0.4, 0.6), "val": (0.2, 0.4)}, seed=0)
    assert torch.equal(again["visual"][tr], k["visual"][tr])           # a split's spans ignore the others'
    other = masks.span_masks(shapes, len(affect), affect.splits, {"train": (0.4, 0.6)}, seed=1)
    assert not torch.equal(other["visual"], k["visual"])


def test_corrupted_copies_zero_the_spans_and_keep_the_clean_features(affect):
    fit, tests = corrupted(affect, {"band": [0.4, 0.6], "test": {"40-60%": [0.4, 0.6], "60-80%": [0.6, 0.8]}}, seed=3)
    tr, te = affect.splits["train"], affect.splits["test"]
    a = affect.modalities["acoustic"]
    assert torch.equal(fit.info["clean"]["acoustic"], a)
    zero_steps = (fit.modalities["acoustic"][tr] == 0).all(-1).float().mean()
    assert 0.35 < float(zero_steps) < 0.65 and torch.equal(fit.modalities["acoustic"][te], a[te])
    z = {lbl: float((d.modalities["lexical"][te] == 0).float().mean()) for lbl, d in tests.items()}
    assert 0.35 < z["40-60%"] < 0.65 and 0.55 < z["60-80%"] < 0.85
    with pytest.raises(ValueError, match="a corruption needs"):
        corrupted(affect, {"band": [0.4, 0.6]}, seed=0)


@pytest.mark.parametrize("name", ["zp_concat", "mmin_lite"])
def test_a_run_is_tested_on_each_corruption_and_reads_the_corrupted_copy(affect, name):
    cfg = TrainConfig(epochs=1, patience=None, batch_size=128)
    corr = {"band": [0.4, 0.6], "test": {"none": [0.0, 0.0], "all": [1.0, 1.0]}}
    rec, m = run(affect, name, {"kind": "full"}, 0, cfg, "cpu", corruption=corr,
                 method_kwargs={"backbone": "mlp"} if name == "zp_concat" else {})
    full = "+".join(affect.modality_names)
    assert {f"{full}@none", f"{full}@all"} <= set(rec["metrics"]) and rec["identity"]["corruption"] == corr
    _, tests = corrupted(affect, corr, 0)
    # everything hidden: every row gets the same logits (the model reads the copy it is given)
    hidden = m.predict(tests["all"], "test")
    assert torch.allclose(hidden, hidden[:1].expand_as(hidden), atol=1e-6)
    assert float(m.predict(tests["none"], "test").std(0).max()) > 1e-4      # the clean copy: rows differ
    with pytest.raises(ValueError, match="cannot be tested on a corrupted copy"):
        run(affect, "mvae", {"kind": "full"}, 0, cfg, "cpu", corruption=corr)
