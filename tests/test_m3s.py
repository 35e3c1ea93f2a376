"""M3S (Algorithm 1) around a base model's loss: the transform, the three settings, Eq. 1-2."""
import pytest
import torch
from torch.func import functional_call

from mmlib.data import load_dataset
from mmlib.experiment import corrupted, run
from mmlib.methods import make_method
from mmlib.methods.common import read_inputs
from mmlib.train import TrainConfig, Call

CORR = {"band": [0.4, 0.6], "test": {"40-60%": [0.4, 0.6]}}


@pytest.fixture(scope="module")
def fit_data():
    d = load_dataset("affect", task="emotion")
    return corrupted(d, CORR, seed=0)[0]


def _member(fit_data, setting="m3s", **kw):
    """One M3S member set up as fit_seeds sets it up, its first epoch's T drawn: (method, program,
    base parts, the member's tensors)."""
    from mmlib.engine import _stack, _take
    from mmlib.methods.m3s import Transform, _clean, _fixed_spans
    m = make_method("m3s", base="zp_concat", base_kwargs={"backbone": "mlp"}, setting=setting, **kw)
    clean = _clean(fit_data)
    parts = make_method("zp_concat", backbone="mlp").members(clean, [None], [0], keeps=[_fixed_spans(fit_data)])
    program = Transform(m, clean, parts.members, [0], fit_data.info["spans"])
    parts.members[0].extra.update(program.blank(parts.members[0].extra))
    extra = _take(program.epoch(_stack([parts.members[0].extra]), [0], 0), 0)
    return m, program, parts, extra


def test_the_transform_redraws_spans_every_epoch_and_never_reveals_the_fixed_corruption(fit_data):
    from mmlib.engine import _stack, _take
    m, program, parts, e = _member(fit_data)
    tr, val = fit_data.splits["train"], fit_data.splits["val"]
    fixed = fit_data.info["spans"]["masks"]
    again = _take(program.epoch(_stack([e]), [0], 1), 0)
    for k in fit_data.modalities:
        q, s = e[f"q:{k}"], e[f"s:{k}"]
        assert not torch.equal(q[tr], again[f"q:{k}"][tr]) and not torch.equal(q[tr], s[tr])   # fresh draws
        assert (q <= fixed[k]).all() and (s <= fixed[k]).all()             # "masked": what is hidden stays hidden
        assert q[tr].float().mean() < fixed[k][tr].float().mean()          # and new spans are added
        assert torch.equal(q[val], fixed[k][val])                          # validation: the fixed corruption
    rows = parts.members[0].rows
    assert torch.isin(e["support"][tr], rows).all()                        # support rows: training rows
    _, program_c, _, c = _member(fit_data, augment_on="complete")
    k = "acoustic"
    revealed = ~fixed[k][tr] & c[f"q:{k}"][tr]
    assert revealed.any()                                                  # the clean features under T's spans
    x = read_inputs(fit_data.info["clean"], tr, {**c, f"keep:{k}": c[f"q:{k}"]}, [k])[k]
    assert torch.equal(x[revealed.squeeze(-1)], fit_data.info["clean"][k][tr][revealed.squeeze(-1)])
    _, _, _, o = _member(fit_data, setting="orig")
    assert all(torch.equal(o[f"q:{k}"], fixed[k]) for k in fit_data.modalities)    # ORIG: the fixed corruption


def _grads(model, value):
    return dict(zip([k for k, _ in model.named_parameters()], torch.autograd.grad(value, list(model.parameters()))))


def test_the_meta_step_is_eq_1_and_2_and_with_alpha_zero_the_plain_step_on_the_query_batch(fit_data):
    m, program, parts, e = _member(fit_data, inner_lr=0.0)
    model, names = parts.members[0].model.eval(), list(fit_data.modalities)      # no dropout: deterministic
    program.steps = 1
    idx = parts.members[0].rows[:32]
    q = {**e, **{f"keep:{k}": e[f"q:{k}"] for k in names}}
    s = {**e, **{f"keep:{k}": e[f"s:{k}"] for k in names}}
    plain = _grads(model, parts.loss(model, idx, None, q))
    meta = _grads(model, m.step_loss(parts.loss, names, program)(model, idx, None, e, {})[0])
    assert all(torch.allclose(plain[k], meta[k], atol=1e-7) for k in plain)
    alpha, support = 0.5, e["support"][idx, 0]
    theta = dict(model.named_parameters())                                # Eq. 1 by hand, then Eq. 2's gradient
    g = torch.autograd.grad(parts.loss(model, support, None, s), list(theta.values()), create_graph=True)
    fast = {"model." + k: v - alpha * gi for (k, v), gi in zip(theta.items(), g)}
    by_hand = _grads(model, functional_call(Call(model, parts.loss), fast, (idx, None, q)))    # second order
    fast_fo = {k: v.detach().requires_grad_() for k, v in fast.items()}
    at_star = torch.autograd.grad(functional_call(Call(model, parts.loss), fast_fo, (idx, None, q)),
                                  list(fast_fo.values()))                                     # first order: at theta*
    assert not all(torch.allclose(a, by_hand[k]) for k, a in zip(theta, at_star))             # the orders differ
    for so, want in ((True, by_hand), (False, dict(zip(theta, at_star)))):
        got = _grads(model, make_method("m3s", inner_lr=alpha, second_order=so).step_loss(
            parts.loss, names, program)(model, idx, None, e, {})[0])
        assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
        assert not all(torch.allclose(got[k], plain[k]) for k in plain)     # theta* != theta


def test_members_equal_their_single_fits_with_their_own_corruption():
    d = load_dataset("affect", task="emotion")
    cfg = TrainConfig(epochs=3, patience=None, batch_size=128)
    datas = [corrupted(d, CORR, s)[0] for s in (0, 1)]
    for name, kw in [("m3s", {"base": "mmin_lite"}), ("m3s_spl_trn", {"compute_matched": True})]:
        kw = {"base": "zp_concat", "base_kwargs": {"backbone": "mlp"}, **kw}
        ens = make_method(name, **kw).fit_seeds(datas, [None, None], [0, 1], cfg=cfg, device="cpu")
        for s, (dd, e) in enumerate(zip(datas, ens)):
            one = make_method(name, **kw).fit(dd, None, seed=s, cfg=cfg, device="cpu")
            assert [h["val_score"] for h in one.history] == pytest.approx([h["val_score"] for h in e.history], abs=1e-3)
            assert [h["train_loss"] for h in one.history] == pytest.approx([h["train_loss"] for h in e.history], abs=1e-5)
            assert torch.allclose(one.predict(dd, "test"), e.predict(dd, "test"), atol=1e-4)
        assert ens[0].history[0]["batched"] == 2 and "uar" in ens[0].history[0]["val_metrics"]


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
