"""The ensemble engine (mmlib/engine.py): members equal their single fits, never read each
other's numbers, and a single fit draws what the book's plain training loop draws."""
import pytest
import torch

from mmlib import masks
from mmlib.data import load_dataset
from mmlib.engine import Member, fit_ensemble
from mmlib.methods import make_method
from mmlib.models import MultimodalNet, PooledEncoder, noise_stream
from mmlib.train import DropoutStream, TrainConfig, fit


@pytest.fixture(scope="module")
def affect():
    return load_dataset("affect", task="emotion").with_train_subset(500)


@pytest.fixture(scope="module")
def affect_regression():
    return load_dataset("affect")


def _spec(rates):
    return {"kind": "independent", "rates": dict(zip(["acoustic", "visual", "lexical"], rates))}


@pytest.mark.parametrize("name", ["zp_concat", "zp_sum", "late_fusion", "lower_bound", "sum_linear", "film",
                                  "qmf", "ogm_ge"])
def test_members_equal_their_single_fits_across_settings_and_seeds(affect, name):
    """Members of one ensemble (two settings x two seeds, so four different row counts and masked
    validation splits) against the same fits one by one: the same epochs, the same best epoch,
    validation curves and predictions equal to rounding."""
    n, nv = len(affect.splits["train"]), len(affect.splits["val"])
    cfg = TrainConfig(epochs=6, batch_size=64, patience=2)
    rates = ([0.5, 0.2, 0.0], [0.3, 0.6, 0.0]) if name == "lower_bound" else ([0.7, 0.6, 0.5], [0.5, 0.8, 0.6])
    pairs = [(r, s) for r in rates for s in (0, 1)]
    Ps = [masks.from_spec(_spec(r), n, affect.modality_names, s) for r, s in pairs]
    VPs = [masks.from_spec(_spec(r), nv, affect.modality_names, s + 99) for r, s in pairs]
    kw = {"backbone": "mlp"}
    together = make_method(name, **kw).fit_seeds(affect, Ps, [s for _, s in pairs], cfg=cfg, device="cpu",
                                                 val_presences=VPs)
    assert len({int(P.any(1).sum()) for P in Ps}) > 1 or name == "lower_bound"
    for (r, s), P, VP, b in zip(pairs, Ps, VPs, together):
        a = make_method(name, **kw).fit(affect, P, seed=s, cfg=cfg, device="cpu", val_presence=VP)
        assert len(a.history) == len(b.history)
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-5)
        best = [max(range(len(x.history)), key=lambda i: x.history[i]["val_score"]) for x in (a, b)]
        assert best[0] == best[1]
        assert torch.allclose(a.predict(affect, "test"), b.predict(affect, "test"), atol=1e-4)


@pytest.mark.parametrize("kw", [{}, {"regulate": False}, {"unimodal_ce": False}, {"kl": "code"},
                                {"eta_update": "code"}, {"mask_follows": "batch_position", "empty_rows": "keep"},
                                {"xenc_input": "code"}])
def test_redcore_members_equal_their_single_fits(affect, kw):
    """RedCore's ensemble (its eta schedule, moving averages and projection held per member as
    tensors; the VIB's noise from each member's stream) against the same fits one by one: the
    same best epoch, validation curves, eta and its trace, and predictions, equal to rounding."""
    n, nv = len(affect.splits["train"]), len(affect.splits["val"])
    cfg = TrainConfig(epochs=5, batch_size=64, patience=2)
    pairs = [(r, s) for r in ([0.8, 0.2, 0.5], [0.5, 0.5, 0.8]) for s in (0, 1)]
    Ps = [masks.from_spec(_spec(r), n, affect.modality_names, s) for r, s in pairs]
    VPs = [masks.from_spec(_spec(r), nv, affect.modality_names, s + 99) for r, s in pairs]
    together = make_method("redcore", **kw).fit_seeds(affect, Ps, [s for _, s in pairs], cfg=cfg, device="cpu",
                                                      val_presences=VPs)
    for (r, s), P, VP, b in zip(pairs, Ps, VPs, together):
        a = make_method("redcore", **kw).fit(affect, P, seed=s, cfg=cfg, device="cpu", val_presence=VP)
        assert b.history[0]["batched"] == 4 and len(a.history) == len(b.history)
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-5)
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-4)
        for ha, hb in zip(a.history, b.history):
            assert ha["eta"] == pytest.approx(hb["eta"], abs=1e-5)
        assert len(a.trace) == len(b.trace) > 0
        for ta, tb in zip(a.trace, b.trace):
            assert ta["step"] == tb["step"] and ta == pytest.approx(tb, abs=1e-4)
        assert torch.allclose(a.predict(affect, "test"), b.predict(affect, "test"), atol=1e-4)


@pytest.mark.parametrize("name,kw", [("mmin_lite", {}), ("mmin_lite", {"pdt": False}), ("cra", {})])
def test_mmin_and_cra_members_equal_their_single_fits(affect, name, kw):
    """MMIN (its teachers trained as one ensemble, then the students reading each member's own
    frozen teacher) and CRA against the same fits one by one."""
    n, nv = len(affect.splits["train"]), len(affect.splits["val"])
    cfg = TrainConfig(epochs=4, batch_size=64, patience=2)
    pairs = [(r, s) for r in ([0.8, 0.2, 0.5], [0.5, 0.5, 0.8]) for s in (0, 1)]
    Ps = [masks.from_spec(_spec(r), n, affect.modality_names, s) for r, s in pairs]
    VPs = [masks.from_spec(_spec(r), nv, affect.modality_names, s + 99) for r, s in pairs]
    together = make_method(name, **kw).fit_seeds(affect, Ps, [s for _, s in pairs], cfg=cfg, device="cpu",
                                                 val_presences=VPs)
    for (r, s), P, VP, b in zip(pairs, Ps, VPs, together):
        a = make_method(name, **kw).fit(affect, P, seed=s, cfg=cfg, device="cpu", val_presence=VP)
        assert b.history[0]["batched"] == 4 and len(a.history) == len(b.history)
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-5)
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-4)
        assert torch.allclose(a.predict(affect, "test"), b.predict(affect, "test"), atol=1e-4)


def test_a_member_does_not_depend_on_the_others(affect_regression):
    """The same member in ensembles of different sizes and company gives the same numbers."""
    affect = affect_regression
    n = len(affect.splits["train"])
    cfg = TrainConfig(epochs=3, batch_size=64, patience=None)
    P = [masks.from_spec(_spec([0.5, 0.5, 0.5]), n, affect.modality_names, s) for s in range(4)]
    two = make_method("zp_concat", backbone="mlp").fit_seeds(affect, P[:2], [0, 1], cfg=cfg, device="cpu")
    four = make_method("zp_concat", backbone="mlp").fit_seeds(affect, P[::-1], [3, 2, 1, 0], cfg=cfg, device="cpu")
    for a, b in [(two[0], four[3]), (two[1], four[2])]:
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], abs=1e-6)
        assert torch.allclose(a.predict(affect, "test"), b.predict(affect, "test"), atol=1e-5)


def test_a_single_fit_on_the_engine_draws_what_the_plain_loop_draws(avdigits):
    """One member on the engine against :func:`mmlib.train.fit` (torch's Adam, its own batches and
    the seed's dropout stream): the same batches and dropout masks, so the same curve to rounding."""
    small = avdigits.with_train_subset(300)             # 300 rows: a short last batch every epoch
    P = masks.independent(300, small.modality_names, {"audio": 0.6}, seed=3)
    cfg = TrainConfig(epochs=3, batch_size=64, patience=None)
    m = make_method("zp_concat", backbone="mlp")
    Pfull, rows, loss_fn, val_logits, val_score = m._setup(small, P, 3, "cpu")
    with noise_stream(DropoutStream(3)):
        _, plain = fit(m.model, lambda model, idx: loss_fn(model, idx, None, Pfull), rows,
                       lambda model: float(val_score(val_logits(model, Pfull).unsqueeze(0))[0]), cfg, seed=3)
    engine = make_method("zp_concat", backbone="mlp").fit(small, P, seed=3, cfg=cfg, device="cpu").history
    assert [h["train_loss"] for h in plain] == pytest.approx([h["train_loss"] for h in engine], abs=1e-5)
    assert [h["val_score"] for h in plain] == pytest.approx([h["val_score"] for h in engine], abs=1e-6)


def test_stopped_members_leave_and_keep_their_best_epoch(avdigits):
    """With patience, members stop at different epochs; each keeps its best validation epoch."""
    small = avdigits.with_train_subset(300)
    Ps = [masks.independent(300, small.modality_names, {"audio": 0.7}, seed=s) for s in range(4)]
    cfg = TrainConfig(epochs=12, batch_size=64, patience=1, lr=3e-3)
    fits = make_method("zp_concat", backbone="mlp").fit_seeds(small, Ps, [0, 1, 2, 3], cfg=cfg, device="cpu")
    lengths = [len(f.history) for f in fits]
    assert min(lengths) < 12
    for f in fits:
        scores = [h["val_score"] for h in f.history]
        best = max(range(len(scores)), key=scores.__getitem__)
        assert len(scores) == 12 or len(scores) - 1 - best >= 1          # stopped on a plateau
        y = small.y[small.splits["val"]]
        acc = float((f.predict(small, "val").argmax(1) == y).float().mean())
        assert acc == pytest.approx(scores[best], abs=1e-6)                # the best epoch's weights


def test_the_engine_refuses_what_it_cannot_train():
    torch.manual_seed(0)
    a = MultimodalNet(["x"], {"x": (4,)}, 2, backbone="mlp")
    b = MultimodalNet(["x"], {"x": (4,)}, 2, hidden=32, backbone="mlp")
    bn = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2))
    rows = torch.arange(8)
    cfg = TrainConfig(epochs=1)
    loss = lambda model, idx, w, e: model.fusion.out.bias.sum()   # noqa: E731
    with pytest.raises(ValueError, match="same architecture"):
        fit_ensemble([Member(a, rows, rows, 0), Member(b, rows, rows, 1)], loss, None, None, cfg)
    with pytest.raises(ValueError, match="BatchNorm"):
        fit_ensemble([Member(bn, rows, rows, 0), Member(bn, rows, rows, 1)], loss, None, None, cfg)
    with pytest.raises(ValueError, match="no training rows"):
        fit_ensemble([Member(a, rows[:0], rows, 0)], loss, None, None, cfg)


def test_pooled_statistics_once_per_dataset_equal_pooling_every_batch():
    """The pooled encoder on statistics computed once (zeroed where the modality is missing) gives
    what it gives on the zeroed raw sequences, with and without true lengths."""
    torch.manual_seed(0)
    net = MultimodalNet(["s", "v"], {"s": (7, 3), "v": (5,)}, 2, backbone="mlp").eval()
    X = {"s": torch.randn(10, 7, 3), "v": torch.randn(10, 5)}
    L = {"s": torch.tensor([7, 3, 1, 5, 7, 2, 6, 4, 7, 7])}
    p = torch.rand(10, 2) > 0.4
    Xt, Lt = net.transform_inputs(X, L)
    assert Xt["s"].shape == (10, 6) and "s" not in Lt and torch.equal(Xt["v"], X["v"])
    assert torch.allclose(net(X, p, L), net(Xt, p, Lt), atol=1e-6)
    assert torch.allclose(net(X, p), net(net.transform_inputs(X, {})[0], p), atol=1e-6)
    assert isinstance(net.encoders["s"], PooledEncoder)


@pytest.mark.parametrize("name, kw", [("mle", {}), ("mle", {"support": "batch"}), ("mle_zp", {}), ("mle_lb", {}),
                                      ("mle", {"phi": "outer"}), ("hgr", {}), ("hgr", {"phi": "concat"})])
def test_mle_members_equal_their_single_fits(avdigits, name, kw):
    """MLE's fits at two audio rates and two seeds (two sizes of complete set: one ensemble each)
    against the same fits one by one."""
    small = avdigits.with_train_subset(300)
    cfg = TrainConfig(epochs=4, batch_size=64, patience=2)
    pairs = [(keep, s) for keep in (0.2, 0.5) for s in (0, 1)]
    Ps = [masks.independent(300, small.modality_names, {"audio": round(1 - keep, 6)}, seed=s) for keep, s in pairs]
    together = make_method(name, backbone="mlp", **kw).fit_seeds(small, Ps, [s for _, s in pairs], cfg=cfg,
                                                                    device="cpu")
    for (keep, s), P, b in zip(pairs, Ps, together):
        a = make_method(name, backbone="mlp", **kw).fit(small, P, seed=s, cfg=cfg, device="cpu")
        assert len(a.history) == len(b.history)
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-5)
        # probabilities (HGR's log of a clipped score amplifies rounding where it nears the clip)
        assert torch.allclose(a.predict(small, "test").exp(), b.predict(small, "test").exp(), atol=1e-4)
