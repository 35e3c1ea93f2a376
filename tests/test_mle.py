import math

import pytest
import torch

from mmlib import masks
from mmlib.experiment import evaluate
from mmlib.methods import make_method
from mmlib.methods.mle import MLENet, log_q_z_given_x, log_q_z_given_xy, soft_hgr_loss
from mmlib.train import TrainConfig


def _net(phi, k=3, C=4):
    torch.manual_seed(0)
    return MLENet((5,), (6,), C, phi=phi, k=k, backbone="auto")


@pytest.mark.parametrize("phi,d", [("add", 3), ("concat", 6), ("outer", 9)])
def test_each_phi_has_the_right_shapes(phi, d):
    net = _net(phi)
    fx, gy = torch.randn(7, 3), torch.randn(7, 3)
    assert net.fuse(fx, gy).shape == (7, d) and net.H.shape == (4, d)
    s = net.pair_scores(fx, gy)
    assert s.shape == (7, 4)
    # pair scores are phi(f, g)^T h(z), computed directly
    assert torch.allclose(s, net.fuse(fx, gy) @ net.H.T, atol=1e-5)
    # cross scores at j = b are the pair scores
    s3 = net.cross_scores(fx, gy)
    assert s3.shape == (7, 7, 4)
    assert torch.allclose(torch.diagonal(s3, dim1=0, dim2=1).T, s, atol=1e-5)


@pytest.mark.parametrize("phi", ["add", "concat", "outer"])
def test_eq4_and_eq5_against_a_direct_computation(phi):
    net = _net(phi)
    fx, gY = torch.randn(2, 3), torch.randn(5, 3)                  # 2 x's, 5 complete y's
    rz = torch.tensor([0.1, 0.2, 0.3, 0.4])
    ry = torch.tensor([0.1, 0.1, 0.2, 0.25, 0.35])
    s3 = net.cross_scores(fx, gY).detach()
    q5 = log_q_z_given_x(s3, rz.log(), ry.log()).exp()
    q4 = log_q_z_given_xy(net.pair_scores(fx, gY[:2]), rz.log()).exp()
    assert torch.allclose(q5.sum(1), torch.ones(2)) and torch.allclose(q4.sum(1), torch.ones(2))
    for b in range(2):
        # Eq. 5 by its definition: R_Z(z) sum_y' R_Y(y') e^s / normalizer
        num = torch.tensor([rz[z] * sum(ry[j] * math.exp(float(s3[b, j, z])) for j in range(5)) for z in range(4)])
        assert torch.allclose(q5[b], num / num.sum(), atol=1e-5)
        # ... which is the mixture of Eq. 4 posteriors weighted by R_Y(y') times the evidence of y'
        post = torch.stack([log_q_z_given_xy(s3[b, j][None], rz.log()).exp()[0] for j in range(5)])
        evid = torch.stack([(rz * s3[b, j].exp()).sum() for j in range(5)])
        w = ry * evid / (ry * evid).sum()
        assert torch.allclose(q5[b], (w[:, None] * post).sum(0), atol=1e-5)
    # the network's Eq. 5 (factored over y' for an additive phi) is the same value
    assert torch.allclose(net.log_q_z_given_x(fx, gY, rz.log(), ry.log()).detach(), q5.log(), atol=1e-5)
    # a single complete sample: Eq. 5 is Eq. 4 at that y
    one = log_q_z_given_x(net.cross_scores(fx, gY[:1]), rz.log(), torch.zeros(1))
    at_y = log_q_z_given_xy(net.pair_scores(fx, gY[:1].expand(2, 3)), rz.log())
    assert torch.allclose(one, at_y, atol=1e-5)


def test_addition_makes_y_a_per_class_shift():
    net = _net("add")
    fx, gY = torch.randn(3, 3), torch.randn(6, 3)
    rz = torch.full((4,), 0.25).log()
    q5 = log_q_z_given_x(net.cross_scores(fx, gY), rz, torch.full((6,), -math.log(6)))
    m = ((gY @ net.H.T).logsumexp(0) - math.log(6))                 # m_z of the chapter's exercise 1
    direct = torch.log_softmax(fx @ net.H.T + rz + m, 1)
    assert torch.allclose(q5, direct, atol=1e-5)


def test_soft_hgr_rewards_correlated_features():
    torch.manual_seed(0)
    u = torch.randn(256, 4)
    assert soft_hgr_loss(u, u * 0.1) < soft_hgr_loss(u, torch.randn(256, 4) * 0.1)


def test_weighted_soft_hgr_is_the_loss_of_the_rows_it_weights():
    torch.manual_seed(0)
    u, v = torch.randn(40, 4), torch.randn(40, 4)
    keep = torch.rand(40) < 0.4
    assert torch.allclose(soft_hgr_loss(u, v, keep.float()), soft_hgr_loss(u[keep], v[keep]), atol=1e-6)
    assert float(soft_hgr_loss(u, v, torch.zeros(40))) == 0.0                       # an empty sample: nothing
    wide_u, wide_v = torch.randn(12, 64), torch.randn(12, 64)          # fewer rows than features: the Gram form
    c = wide_u - wide_u.mean(0), wide_v - wide_v.mean(0)
    by_def = -((c[0] * c[1]).sum(1).mean() - 0.5 * ((c[0].T @ c[0] / 11) * (c[1].T @ c[1] / 11)).sum())
    assert torch.allclose(soft_hgr_loss(wide_u, wide_v), by_def, atol=1e-5)


def test_hgr_weighted_loss_equals_the_loss_of_each_terms_rows(small):
    """The ensemble's loss (every row through the networks, weighted) and the BatchNorm encoders'
    (each term's rows selected) are the same function of the weights, top-up rows and all."""
    P = masks.independent(300, small.modality_names, {"audio": 0.85}, seed=0)
    m = make_method("hgr", backbone="mlp").fit(small, P, seed=0, cfg=TrainConfig(epochs=1, patience=None),
                                               device="cpu")
    model = m.model.eval()                                                  # no dropout: deterministic
    e = {"has_x2": m.has_x2}
    for idx in (m.train_idx[:64], m.complete[:20].repeat(2)):              # a top-up batch, and one without
        st = {"top_up": m.complete[torch.randperm(len(m.complete))[:32] % len(m.complete)]}
        w = torch.ones(len(idx))
        w[-3:] = 0                                                          # the engine's padding rows
        weighted = m.loss(model, idx, w, e, st)
        m.backbone = "cnn"                                                  # the selection path, same network
        selected = m.loss(model, idx, w, e, st)
        m.backbone = "mlp"
        assert torch.allclose(weighted, selected, atol=1e-5)


@pytest.fixture(scope="module")
def small(avdigits):
    return avdigits.with_train_subset(300)


def test_loss_decreases_and_mle_learns(small):
    P = masks.independent(300, small.modality_names, {"audio": 0.8}, seed=0)
    m = make_method("mle", phi="outer", backbone="mlp").fit(small, P, seed=0, cfg=TrainConfig(epochs=6, patience=None),
                                                           device="cpu")
    losses = [h["train_loss"] for h in m.history]
    assert losses[-1] < losses[0] * 0.8
    res = evaluate(m, small, "test")
    assert set(res) == {"image", "image+audio"}                     # x = image is required
    assert res["image+audio"]["accuracy"] > 0.3 and res["image"]["accuracy"] > 0.3


def test_baselines_run_and_refuse_what_the_paper_refuses(small):
    P = masks.independent(300, small.modality_names, {"image": 0.7}, seed=1)
    cfg = TrainConfig(epochs=1, patience=None)
    for name in ["mle_lb", "mle_zp", "hgr", "ae1", "ae2"]:
        m = make_method(name, phi="add", backbone="mlp").fit(small, P, seed=0, cfg=cfg, device="cpu")
        assert m.x1 == "audio" and m.x2 == "image"                    # inferred from the presence matrix
        out = m.predict(small, "test", masks.pattern(1000, small.modality_names, ["audio"]))
        assert out.shape == (1000, 10) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="outer product"):
        make_method("mle_zp", phi="outer")
    with pytest.raises(ValueError, match="unknown phi"):
        make_method("mle", phi="product")
    m = make_method("mle", backbone="mlp").fit(small, P, seed=0, cfg=cfg, device="cpu")
    with pytest.raises(ValueError, match="x1='audio' present"):
        m.predict(small, "test", masks.pattern(1000, small.modality_names, ["image"]))
    P2 = masks.independent(300, small.modality_names, {"image": 0.3, "audio": 0.3}, seed=0)
    with pytest.raises(ValueError, match="no modality is present in every training sample"):
        make_method("mle").fit(small, P2, cfg=cfg, device="cpu")


@pytest.mark.parametrize("name,kw", [("mle", {"phi": "add"}), ("mle", {"phi": "outer"}),
                                     ("mle", {"phi": "add", "support": "batch"}),
                                     ("mle", {"phi": "add", "support": "all_detached"}),
                                     ("mle_zp", {"phi": "concat"}), ("mle_lb", {"phi": "add"})])
def test_masked_loss_equals_the_readable_loss(small, name, kw):
    """The batched (vmap-able) loss is Eq. 2 as `loss` writes it: same value, same gradients."""
    P = masks.independent(300, small.modality_names, {"audio": 0.8}, seed=0)
    m = make_method(name, backbone="mlp", **kw).fit(small, P, seed=0, cfg=TrainConfig(epochs=1), device="cpu")
    m.model.eval()                                        # no dropout: both see the same network
    for idx in [m.train_idx[:64], m.complete[:5], m.train_idx[~m.has_x2[m.train_idx]][:7]]:
        a = m.loss(m.model, idx)
        ga = torch.autograd.grad(a, list(m.model.parameters()), allow_unused=True)
        b = m.masked_loss(m.model, idx, m.has_x2, m.complete)
        gb = torch.autograd.grad(b, list(m.model.parameters()), allow_unused=True)
        assert torch.allclose(a, b, atol=1e-5)
        for x, y in zip(ga, gb):
            assert (x is None and (y is None or float(y.abs().max()) == 0)) or torch.allclose(x, y, atol=1e-5)


def test_mle_seeds_as_a_batch_equal_their_own_fits(small):
    cfg = TrainConfig(epochs=3, patience=1)
    seeds = [0, 1, 2]
    Ps = [masks.independent(300, small.modality_names, {"audio": 0.8}, seed=s) for s in seeds]
    nv = len(small.splits["val"])
    VPs = [masks.independent(nv, small.modality_names, {"audio": 0.8}, seed=s + 50) for s in seeds]
    for name, kw, vps in [("mle", {"phi": "outer"}, None), ("mle", {"phi": "add", "support": "batch"}, None),
                          ("mle", {"phi": "add"}, VPs), ("mle_zp", {"phi": "concat"}, VPs)]:
        seq = [make_method(name, backbone="mlp", **kw).fit(small, P, seed=s, cfg=cfg, device="cpu",
                                                           val_presence=None if vps is None else vps[k])
               for k, (P, s) in enumerate(zip(Ps, seeds))]
        bat = make_method(name, backbone="mlp", **kw).fit_seeds(small, Ps, seeds, cfg=cfg, device="cpu",
                                                               val_presences=vps)
        for a, b in zip(seq, bat):
            assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-6)
            assert torch.allclose(a.predict(small, "test"), b.predict(small, "test"), atol=1e-4)
