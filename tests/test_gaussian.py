import numpy as np
import pytest
import torch
from scipy.stats import norm

from mmlib import masks
from mmlib.data import load_dataset
from mmlib.data.gaussian import GaussianSpec, generate, oracle_accuracy, oracle_predict
from mmlib.experiment import evaluate
from mmlib.methods import make_method
from mmlib.train import TrainConfig


def test_shapes_splits_labels_and_determinism():
    a = load_dataset("gaussian", preset="imbalanced", n=600, seed=3)
    b = load_dataset("gaussian", preset="imbalanced", n=600, seed=3)
    c = load_dataset("gaussian", preset="imbalanced", n=600, seed=4)
    assert a.modality_names == ["A", "V", "L"] and a.modalities["A"].shape == (600, 8)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 360, "val": 120, "test": 120}
    assert len(torch.unique(torch.cat(list(a.splits.values())))) == 600
    assert set(a.y.tolist()) == {0, 1, 2, 3}
    assert all(torch.equal(a.modalities[m], b.modalities[m]) for m in a.modality_names)
    assert not torch.equal(a.modalities["A"], c.modalities["A"])


def test_oracle_equals_the_analytic_answer_in_1d():
    # two classes, one 1-D modality, means +-mu, unit variance: the Bayes rule is the sign,
    # and its accuracy is Phi(mu); check the posterior itself against the formula too
    d, oracle = generate(GaussianSpec(n_classes=2, dims=(1,), names=("x",), informativeness=(1.0,), n=20000, seed=0))
    mu = oracle.means[:, 0]
    x = d.modalities["x"][d.splits["test"]].numpy()[:, 0].astype(float)
    logp = oracle_predict(d, "test").numpy()
    lik = np.stack([norm.pdf(x, mu[k], 1) for k in range(2)], 1)
    assert np.allclose(np.exp(logp), lik / lik.sum(1, keepdims=True), atol=1e-6)
    expected = norm.cdf(abs(mu[0] - mu[1]) / 2)
    assert oracle_accuracy(d, "test") == pytest.approx(expected, abs=0.015)


def test_warp_does_not_change_the_oracle_posterior():
    plain, o1 = generate(GaussianSpec(n=400, seed=5))
    warped, o2 = generate(GaussianSpec(n=400, seed=5, warp=2.0))
    assert not torch.allclose(plain.modalities["m0"], warped.modalities["m0"])
    # same latent draw -> the same posteriors after inverting the warp
    assert torch.allclose(oracle_predict(plain, "test"), oracle_predict(warped, "test"), atol=1e-4)


def test_informativeness_moves_unimodal_oracle_accuracy():
    d = load_dataset("gaussian", preset="dominant")
    n, names = len(d.splits["test"]), d.modality_names
    acc = {m: oracle_accuracy(d, "test", masks.pattern(n, names, [m]).numpy()) for m in names}
    assert acc["m0"] > acc["m1"] + 0.2 and acc["m0"] > acc["m2"] + 0.2
    weak = load_dataset("gaussian", preset="balanced", informativeness=(0.1, 0.45, 0.45))
    strong = load_dataset("gaussian", preset="balanced", informativeness=(1.0, 0.45, 0.45))
    p = masks.pattern(len(weak.splits["test"]), names, ["m0"]).numpy()
    assert oracle_accuracy(weak, "test", p) + 0.2 < oracle_accuracy(strong, "test", p)


def test_imbalanced_preset_is_ordered_like_affect():
    # RedCore's chapter uses it as the exact ceiling of affect's setting: L strongest, then A, then V
    d = load_dataset("gaussian", preset="imbalanced")
    n, names = len(d.splits["test"]), d.modality_names
    acc = {m: oracle_accuracy(d, "test", masks.pattern(n, names, [m]).numpy()) for m in names}
    assert acc["L"] > acc["A"] + 0.1 and acc["A"] > acc["V"] > 0.25 + 0.1, acc


def test_the_oracle_beats_a_trained_model_within_noise():
    d = load_dataset("gaussian", preset="warped", n=3000)
    n = len(d.splits["train"])
    P = masks.random_drop(n, d.modality_names, 0.3, seed=0)
    m = make_method("late_fusion").fit(d, P, seed=0, cfg=TrainConfig(epochs=15, patience=5), device="cpu")
    res = evaluate(m, d, "test")
    nt = len(d.splits["test"])
    se = 0.5 / np.sqrt(nt)                                          # binomial s.e. bound
    for pat, r in res.items():
        oracle = oracle_accuracy(d, "test", masks.pattern(nt, d.modality_names, pat.split("+")).numpy())
        assert r["accuracy"] <= oracle + 3 * se, pat


def test_bad_specs_are_named():
    with pytest.raises(ValueError, match="correlation must be in"):
        generate(GaussianSpec(correlation=-0.9))
    with pytest.raises(ValueError, match="unknown gaussian preset"):
        load_dataset("gaussian", preset="huge")
    with pytest.raises(ValueError, match="unknown GaussianSpec field"):
        load_dataset("gaussian", informativness=(1, 1, 1))
    with pytest.raises(ValueError, match="one entry per modality"):
        generate(GaussianSpec(dims=(2, 2)))


def test_every_gaussian_record_holds_its_kl_to_the_exact_posterior(tmp_path):
    """The oracle KL a chapter's verdict rests on is in the fit's record (per test pattern, the
    masked test split too), equal to the KL computed from the fitted model; a record written
    before it was recorded is refitted, not read."""
    import json
    from mmlib.data.gaussian import kl_to_oracle
    from mmlib.experiment import run
    from mmlib.results import record_path
    d = load_dataset("gaussian", preset="balanced", n=600, dims=(4, 4), names=("x", "y"), informativeness=(0.5, 0.5))
    spec = {"kind": "independent", "rates": {"y": 0.5}}
    rec, m = run(d, "zp_concat", spec, 0, TrainConfig(epochs=2, patience=None), records_dir=tmp_path,
                 test_missing=spec)
    assert set(rec["metrics"]) == {"x", "y", "x+y", "masked"}
    assert all(ms["kl_oracle"] >= 0 for ms in rec["metrics"].values())
    P = masks.pattern(len(d.splits["test"]), d.modality_names, ["x"])
    assert rec["metrics"]["x"]["kl_oracle"] == pytest.approx(kl_to_oracle(d, "test", P, m.predict(d, "test", P)))
    again, fitted = run(d, "zp_concat", spec, 0, TrainConfig(epochs=2, patience=None), records_dir=tmp_path,
                        test_missing=spec)
    assert fitted is None                                   # read back
    path = record_path(tmp_path, rec["identity"])
    old = json.loads(path.read_text())
    for ms in old["metrics"].values():
        ms.pop("kl_oracle")
    path.write_text(json.dumps(old))
    again, fitted = run(d, "zp_concat", spec, 0, TrainConfig(epochs=2, patience=None), records_dir=tmp_path,
                        test_missing=spec)
    assert fitted is not None and "kl_oracle" in again["metrics"]["x"]      # refitted: the old record lacked it
