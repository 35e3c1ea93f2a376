"""M3S (Algorithm 1) around a base model's loss: the transform, the three settings, Eq. 1-2."""
import pytest
import torch
from torch.func import functional_call

from mmlib.data import load_dataset
from mmlib.experiment import corrupted, run
from mmlib.methods import make_method
from mmlib.train import TrainConfig, Call, adam

CORR = {"band": [0.4, 0.6], "test": {"40-60%": [0.4, 0.6]}}


@pytest.fixture(scope="module")
def fit_data():
    d = load_dataset("affect", task="emotion")
    return corrupted(d, CORR, seed=0)[0]


def _prepared(fit_data, setting="m3s", **kw):
    m = make_method("m3s", base="zp_concat", base_kwargs={"backbone": "mlp"}, setting=setting, **kw)
    base = make_method("zp_concat", backbone="mlp")
    aug = m._transform(fit_data, torch.Generator().manual_seed(0))
    model, loss_fn, rows, _ = base.prepare(fit_data, None, seed=0)
    return m, base, aug, model, loss_fn, rows


def test_the_transform_redraws_spans_and_never_reveals_the_fixed_corruption(fit_data):
    m, base, aug, *_ = _prepared(fit_data)
    idx = fit_data.splits["train"][:64]
    xs = {k: x[idx] for k, x in fit_data.modalities.items()}
    a, b = aug(idx, xs), aug(idx, xs)
    assert any(not torch.equal(a[k], b[k]) for k in xs)                       # a fresh draw per batch
    for k in xs:                                                              # "masked": zeros stay zeros
        assert ((xs[k] == 0) <= (a[k] == 0)).all()
        assert (a[k] == 0).float().mean() > (xs[k] == 0).float().mean()        # and new spans are added
    complete = make_method("m3s", augment_on="complete")._transform(fit_data, torch.Generator().manual_seed(0))
    c = complete(idx, xs)
    clean = fit_data.info["clean"]["acoustic"][idx]
    revealed = (xs["acoustic"] == 0) & (c["acoustic"] != 0)
    assert revealed.any() and torch.equal(c["acoustic"][revealed], clean[revealed])   # the clean values


def _grads(model, fn):
    model.zero_grad(set_to_none=True)
    fn().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_meta_step_with_alpha_zero_is_the_plain_step_on_the_query_batch_and_orders_differ(fit_data):
    m, base, aug, model, loss_fn, rows = _prepared(fit_data, inner_lr=0.0)
    model.eval()                                                              # no dropout: deterministic
    call = Call(model, loss_fn)
    names = {k: "model." + k for k, _ in model.named_parameters()}

    def loss_at(params, idx):
        return functional_call(call, {names[k]: v for k, v in params.items()}, (idx,))

    idx1, idx2 = rows[:32], rows[32:64]
    plain = _grads(model, lambda: loss_fn(model, idx2))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)                         # keep the weights: read .grad
    m.meta_step(model, loss_at, opt, idx1, idx2)
    meta = {k: p.grad for k, p in model.named_parameters()}
    assert all(torch.allclose(plain[k], meta[k], atol=1e-7) for k in plain)
    firsts = {}
    for so in (False, True):                                                  # alpha > 0: the orders differ
        m2 = make_method("m3s", inner_lr=0.5, second_order=so)
        m2.meta_step(model, loss_at, opt, idx1, idx2)
        firsts[so] = {k: p.grad.clone() for k, p in model.named_parameters()}
    assert not all(torch.allclose(firsts[False][k], plain[k]) for k in plain)  # theta* != theta
    assert not all(torch.allclose(firsts[False][k], firsts[True][k]) for k in plain)


def test_the_three_settings_run_and_orig_needs_no_spans():
    d = load_dataset("affect", task="emotion")
    cfg = TrainConfig(epochs=2, patience=None, batch_size=128)
    for name in ["m3s_orig", "m3s_spl_trn", "m3s"]:
        rec, m = run(d, name, {"kind": "full"}, 0, cfg, "cpu", corruption=CORR, patterns=[tuple(d.modality_names)],
                     method_kwargs={"base": "mmin_lite" if name == "m3s" else "zp_concat",
                                    "base_kwargs": {} if name == "m3s" else {"backbone": "mlp"}})
        assert list(rec["metrics"]) == ["acoustic+visual+lexical@40-60%"]
        assert len(rec["history"]) == 2 and "uar" in rec["history"][0]["val_metrics"]
    with pytest.raises(ValueError, match="span-corrupted dataset"):
        make_method("m3s").fit(d, None, cfg=cfg, device="cpu")
    with pytest.raises(ValueError, match="unknown M3S setting"):
        make_method("m3s", setting="maml")


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", [("iemocap", {"fold": 1}), ("mosi", {"task": "regression"})])
def test_chapter_runs_on_the_real_formats(tmp_path, name, opts):
    """`mmbook run 04_m3s --data-root ROOT -p dataset=...` on files in the MMIN (IEMOCAP) and MMSA
    (MOSI) layouts: every setting is trained and tested on the band's corruption."""
    import papermill as pm
    from test_real_data import write_mmin, write_mmsa

    from mmlib import results, sweep
    root = tmp_path / name
    if name == "mosi":
        write_mmsa(root, name="mosi", sizes=(40, 16, 16))
    else:
        write_mmin(root, fold=1, sizes=(48, 16, 16))
    pm.execute_notebook(str(sweep.ROOT / "notebooks/04_m3s.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        parameters={"dataset": name, "data_root": str(root), "data_options": opts, "page": False,
                                    "profile": "quick", "seeds": [0], "results_dir": str(tmp_path / "records")},
                        cwd=str(sweep.ROOT), progress_bar=False)
    df = results.load_records(tmp_path / "records", "*.json")
    assert set(df["dataset"]) == {name} and {"m3s", "m3s_orig", "m3s_spl_trn"} <= set(df["method"])
    assert df["test"].str.endswith("@40-60%").any() and df["test"].str.endswith("@60-80%").any()


def test_misa_lite_losses_and_a_fit_that_learns():
    from mmlib.methods.misa import cmd, diff_loss
    x = torch.randn(200, 8)
    assert float(cmd(x, x)) == 0.0 and float(cmd(x, x + 1.0)) > 1.0                 # the mean moment moves
    a = torch.tensor([[1.0, 0], [1, 0], [-1, 0], [-1, 0]])           # centred, unit 0, signs + + - -
    b = torch.tensor([[0.0, 1], [0, -1], [0, 1], [0, -1]])           # unit 1, signs + - + -: orthogonal over samples
    assert float(diff_loss(a, b)) < 1e-10 and float(diff_loss(a, a)) > 0.1
    d = load_dataset("affect", task="regression")
    rec, m = run(d, "misa_lite", {"kind": "full"}, 0, TrainConfig(epochs=8, patience=None, batch_size=128), "cpu",
                 patterns=[tuple(d.modality_names)])
    assert rec["metrics"]["acoustic+visual+lexical"]["corr"] > 0.4
    rec, _ = run(d, "m3s", {"kind": "full"}, 0, TrainConfig(epochs=2, patience=None, batch_size=128), "cpu",
                 corruption=CORR, patterns=[tuple(d.modality_names)], method_kwargs={"base": "misa_lite"})
    assert "acoustic+visual+lexical@40-60%" in rec["metrics"]
