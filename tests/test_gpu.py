"""The ensemble engine on CUDA (``make test-gpu``; skipped without a GPU): every method that
trains on the engine fits a small ensemble for two epochs on ``cuda`` and on the CPU, from the
same seeds and masks, and the two agree to rounding."""
import pytest
import torch

from mmlib import masks
from mmlib.methods import make_method
from mmlib.train import TrainConfig

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ENGINE_METHODS = ["zp_concat", "zp_sum", "late_fusion", "lower_bound", "upper_bound", "sum_linear",
                  "concat_linear", "film", "bigated", "qmf", "ogm_ge"]


def _agree(cpu: list, gpu: list, outputs) -> None:
    """The CPU's and CUDA's fits: the same validation curves and outputs (``outputs(fit, k)``) to rounding."""
    for k, (a, b) in enumerate(zip(cpu, gpu)):
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=2e-3)
        assert torch.allclose(outputs(a, k), outputs(b, k), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ENGINE_METHODS)
def test_an_ensemble_on_cuda_equals_the_cpu(avdigits, name):
    small = avdigits.with_train_subset(300)
    Ps = [masks.independent(300, small.modality_names, {"audio": 0.7}, seed=s) for s in range(3)]
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    cpu = make_method(name, backbone="mlp").fit_seeds(small, Ps, [0, 1, 2], cfg=cfg, device="cpu")
    gpu = make_method(name, backbone="mlp").fit_seeds(small, Ps, [0, 1, 2], cfg=cfg, device="cuda")
    _agree(cpu, gpu, lambda m, k: m.predict(small, "test"))


@pytest.mark.parametrize("name", ["redcore", "mmin_lite", "cra", "mla", "mla_code"])
def test_every_modality_ensembles_on_cuda_equal_the_cpu(name):
    """RedCore's ensemble (eta's schedule per member, the VIB's noise from each member's CPU
    stream), MMIN's (teachers, then students), CRA's and MLA's (Algorithm 1's schedule, HGM's P per
    member) on CUDA against the CPU."""
    from mmlib.data import load_dataset
    d = load_dataset("affect", task="emotion").with_train_subset(300)
    spec = {"kind": "independent", "rates": {"acoustic": 0.8, "visual": 0.2, "lexical": 0.5}}
    Ps = [masks.from_spec(spec, 300, d.modality_names, s) for s in range(3)]
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    cpu = make_method(name).fit_seeds(d, Ps, [0, 1, 2], cfg=cfg, device="cpu")
    gpu = make_method(name).fit_seeds(d, Ps, [0, 1, 2], cfg=cfg, device="cuda")
    for a, b in zip(cpu, gpu):
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=2e-3)
        if name == "redcore":
            assert a.history[-1]["eta"] == pytest.approx(b.history[-1]["eta"], abs=1e-3)
        assert torch.allclose(a.predict(d, "test"), b.predict(d, "test"), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ["mle", "hgr"])
def test_two_modality_ensembles_on_cuda_equal_the_cpu(avdigits, name):
    """MLE's (Eq. 5 over each member's complete set) and HGR's (top-up rows as each member's state)."""
    small = avdigits.with_train_subset(300)
    Ps = [masks.independent(300, small.modality_names, {"audio": 0.8}, seed=s) for s in range(3)]
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    cpu = make_method(name, backbone="mlp").fit_seeds(small, Ps, [0, 1, 2], cfg=cfg, device="cpu")
    gpu = make_method(name, backbone="mlp").fit_seeds(small, Ps, [0, 1, 2], cfg=cfg, device="cuda")
    _agree(cpu, gpu, lambda m, k: m.predict(small, "test").exp())           # probabilities


@pytest.mark.parametrize("base", ["zp_concat", "mmin_lite"])
def test_m3s_ensembles_on_cuda_equal_the_cpu(base):
    """M3S's (each seed's own corruption, T's masks drawn on the CPU) on CUDA against the CPU."""
    from mmlib.data import load_dataset
    from mmlib.experiment import corrupted
    d = load_dataset("affect", task="emotion").with_train_subset(300)
    corr = {"band": [0.4, 0.6], "axis": "time", "test": {"40-60%": [0.4, 0.6]}}
    datas = [corrupted(d, corr, s)[0] for s in range(3)]
    kw = {"base": base, "base_kwargs": {"backbone": "mlp"} if base == "zp_concat" else {}}
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    cpu = make_method("m3s", **kw).fit_seeds(datas, [None] * 3, [0, 1, 2], cfg=cfg, device="cpu")
    gpu = make_method("m3s", **kw).fit_seeds(datas, [None] * 3, [0, 1, 2], cfg=cfg, device="cuda")
    _agree(cpu, gpu, lambda m, k: m.predict(datas[k], "test"))


@pytest.mark.parametrize("name", ["smil", "smil_code"])
def test_smil_ensembles_on_cuda_equal_the_cpu(avdigits, name):
    """SMIL's meta-learning (each member's D^f batches, priors and x2 features) on CUDA against the CPU."""
    small = avdigits.with_train_subset(300)
    Ps = [masks.independent(300, small.modality_names, {"audio": 0.8}, seed=s) for s in range(3)]
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    cpu = make_method(name, backbone="mlp").fit_seeds(small, Ps, [0, 1, 2], cfg=cfg, device="cpu")
    gpu = make_method(name, backbone="mlp").fit_seeds(small, Ps, [0, 1, 2], cfg=cfg, device="cuda")
    _agree(cpu, gpu, lambda m, k: m.predict(small, "test"))
