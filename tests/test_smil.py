import pytest
import torch

from mmlib import masks
from mmlib.experiment import evaluate
from mmlib.methods import make_method
from mmlib.methods.generative import MVAENet
from mmlib.methods.smil import Aux, MainNet, SMILModel, kl_normal
from mmlib.train import TrainConfig

D_X, D_Y, H, K, C = 6, 5, 4, 3, 3


def _model(variant="paper", **kw):
    torch.manual_seed(0)
    priors = torch.randn(K, D_Y)
    main = MainNet((8,), D_X, D_Y, H, C, backbone="auto", dropout=0.0)
    aux = Aux(priors, D_X, D_Y, H, variant=variant, **kw)
    for lin in [aux.w_mu] if hasattr(aux, "w_mu") else []:
        torch.nn.init.normal_(lin.weight)                       # responsive from the start
    return SMILModel(main, aux)


def test_reconstruction_priors_and_regularized_features_have_the_right_shapes():
    m = _model()
    hx = torch.randn(7, D_X)
    y_hat, kl = m.aux.reconstruct(hx, sample=False)
    assert y_hat.shape == (7, D_Y) and kl.shape == (7,)
    # Eq. 2: x2_hat = <omega, M> / K, omega = the weights' mean at evaluation
    omega = m.aux.w_mu(hx)
    assert torch.allclose(y_hat, omega @ m.aux.priors / K, atol=1e-6)
    # the reconstruction responds to the x1 feature, and sampling perturbs it
    assert not torch.allclose(y_hat[0], m.aux.reconstruct(hx[:1] + 1, sample=False)[0][0])
    torch.manual_seed(1)
    assert not torch.allclose(y_hat, m.aux.reconstruct(hx, sample=True)[0])
    # Eq. 3: h o softplus(r), r = mu(h_prev) at evaluation
    h0 = torch.randn(7, D_X + D_Y)
    h, kl_r = m.aux.regularize(0, h0, h0, sample=False)
    assert h.shape == h0.shape and kl_r.shape == (7,)
    assert torch.allclose(h, h0 * torch.nn.functional.softplus(m.aux.r_mu[0](h0)))
    h1 = torch.randn(7, H)
    assert m.aux.regularize(1, h0, h1, sample=False)[0].shape == (7, H)


def test_code_variant_reconstructs_inside_the_priors_hull():
    m = _model("code")
    y_hat, kl = m.aux.reconstruct(torch.randn(50, D_X), sample=True)
    assert torch.all(kl == 0)
    # sum_k w_k M_k / sum_k w_k with w > 0: convex weights, so each coordinate is between
    # the priors' smallest and largest
    lo, hi = m.aux.priors.min(0).values, m.aux.priors.max(0).values
    assert torch.all(y_hat >= lo - 1e-5) and torch.all(y_hat <= hi + 1e-5)
    h0 = torch.randn(4, D_X + D_Y)
    h, _ = m.aux.regularize(0, h0[:, :D_X], h0, sample=False)       # additive: h + softplus(mu), from x1 only
    assert torch.all(h > h0)


def test_eq3_starts_at_the_identity():
    """h o Softplus(mu) = h before training (reg_init='identity'), not with PyTorch's init."""
    h0 = torch.randn(6, D_X + D_Y)
    h, _ = _model().aux.regularize(0, h0, h0, sample=False)
    assert torch.allclose(h, h0, atol=1e-6)
    h, _ = _model(reg_init="default").aux.regularize(0, h0, h0, sample=False)
    assert not torch.allclose(h, h0, atol=1e-2)


def test_kl_is_zero_where_it_must_be():
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    assert torch.allclose(kl_normal(mu, logvar), torch.zeros(3))
    assert torch.allclose(kl_normal(mu + 1, logvar, prior_mu=1.0), torch.zeros(3))
    assert torch.all(kl_normal(mu + 0.5, logvar) > 0)
    # Eq. 7 as printed: the KL of the whole vector, the per-unit mean times the width
    assert torch.allclose(kl_normal(mu + 0.5, logvar - 1, units="sum"), 4 * kl_normal(mu + 0.5, logvar - 1))
    x, yf = torch.randn(5, 8), torch.randn(5, D_Y)
    every = torch.ones(5, dtype=torch.bool)
    for kw in [{"noise": "none"}, {"noise": "fixed", "kmeans": False}, {"regularize": False, "kmeans": False}]:
        m = _model(**kw)
        assert float(m(x, yf, ~every, sample=True)[2].detach()) == 0.0, kw
    # omega's KL only counts the rows whose x2 is reconstructed
    m = _model(regularize=False)
    assert float(m(x, yf, every, sample=True)[2].detach()) == 0.0
    assert float(m(x, yf, ~every, sample=True)[2].detach()) > 0.0


def _meta_setup(avdigits, **kw):
    from mmlib.methods.smil import SMIL
    small = avdigits.with_train_subset(200)
    P = masks.independent(200, small.modality_names, {"audio": 0.8}, seed=0)
    m = SMIL(backbone="mlp", **kw).fit(small, P, seed=0, cfg=TrainConfig(epochs=1, patience=None), device="cpu")
    train = small.splits["train"]
    has = P[:, 1]
    return m, train[~has][:16], train[has][:16]


def test_inner_update_adapts_theta_only_and_orders_differ(avdigits):
    grads = {}
    for first_order in (False, True):
        m, idx_m, idx_f = _meta_setup(avdigits, first_order=first_order, kl_weight=0.0, inner_lr=0.5,
                                      outer_dm=False)                # Algorithm 1 as printed
        model = m.model.train()
        torch.manual_seed(0)
        model.zero_grad()
        m.meta_loss(model, idx_m, idx_f).backward()
        grads[first_order] = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                              for n, p in model.named_parameters()}
    # the reconstruction network reaches the outer loss of Eq. 7 only through theta' (the
    # inner step on D^m): second order gives it a gradient, first order none
    assert grads[False]["aux.w_mu.weight"].abs().sum() > 0
    assert grads[True]["aux.w_mu.weight"].abs().sum() == 0
    assert not torch.allclose(grads[False]["main.fc2.weight"], grads[True]["main.fc2.weight"])
    # with D^m's term in the meta-update (the default) it is trained directly as well
    m, idx_m, idx_f = _meta_setup(avdigits, first_order=True, kl_weight=0.0)
    m.model.train().zero_grad()
    m.meta_loss(m.model, idx_m, idx_f).backward()
    assert m.model.aux.w_mu.weight.grad.abs().sum() > 0
    # the inner update theta' = theta - alpha grad changes theta and nothing else
    m, idx_m, _ = _meta_setup(avdigits)
    theta = m.model.theta()
    assert set(theta) == {n.removeprefix("main.") for n, _ in m.model.named_parameters() if n.startswith("main.")}
    assert not any(n.startswith("enc_y") for n in theta)


def test_smil_trains_above_chance_and_refuses_bad_input(avdigits):
    small = avdigits.with_train_subset(300)
    P = masks.independent(300, small.modality_names, {"audio": 0.8}, seed=0)
    m = make_method("smil", backbone="mlp").fit(small, P, seed=0, cfg=TrainConfig(epochs=4, patience=None),
                                                device="cpu")
    res = evaluate(m, small, "test")
    assert set(res) == {"image", "image+audio"}
    assert res["image"]["accuracy"] > 0.3 and res["image+audio"]["accuracy"] > 0.3   # chance: 0.1
    with pytest.raises(ValueError, match="unknown SMIL variant"):
        make_method("smil", variant="github")
    with pytest.raises(ValueError, match="unknown noise"):
        make_method("smil", noise="uniform")
    P2 = masks.independent(300, small.modality_names, {"image": 0.3, "audio": 0.3}, seed=0)
    with pytest.raises(ValueError, match="no modality is present in every training sample"):
        make_method("smil").fit(small, P2, cfg=TrainConfig(epochs=1), device="cpu")


def test_generative_baselines_impute_and_classify(avdigits):
    small = avdigits.with_train_subset(300)
    P = masks.independent(300, small.modality_names, {"audio": 0.7}, seed=0)
    # 6 epochs on 300 samples left GAN imputation at 15 % (chance 10 %) with this torch and
    # numpy, a coin flip of a test; 12 epochs put every method above 40 %
    cfg = TrainConfig(epochs=12, patience=None)
    for name in ["ae_impute", "gan_impute", "mvae"]:
        m = make_method(name).fit(small, P, seed=0, cfg=cfg, device="cpu")
        res = evaluate(m, small, "test")
        assert "image" in res and "image+audio" in res
        assert res["image+audio"]["accuracy"] > 0.25, name
        if name != "mvae":
            assert m.targets == ["audio"] and m.sources == ["image"]
            assert m.val_mse["audio"] < 1.5                   # standardized MFCCs: variance about 1


def test_an_imputation_generator_trains_to_a_validation_plateau(avdigits):
    """The generator stops when its validation error has not improved for ``patience`` epochs
    (the book's rule for every network), keeping its best epoch."""
    small = avdigits.with_train_subset(300)
    P = masks.independent(300, small.modality_names, {"audio": 0.7}, seed=0)
    m = make_method("ae_impute", backbone="mlp").fit(small, P, seed=0, cfg=TrainConfig(epochs=60, patience=2),
                                                     device="cpu")
    assert 3 <= m.generator_epochs["audio"] < 60
    long = make_method("ae_impute", backbone="mlp").fit(small, P, seed=0, cfg=TrainConfig(epochs=8, patience=None),
                                                        device="cpu")
    assert long.generator_epochs["audio"] == 8


def test_mvae_product_of_experts():
    torch.manual_seed(0)
    net = MVAENet({"a": (3,), "b": (4,)}, z_dim=2, backbone="mlp").eval()     # no dropout
    xs = {"a": torch.randn(5, 3), "b": torch.randn(5, 4)}
    mu, logvar = net.posterior(xs, torch.zeros(5, 2, dtype=torch.bool))
    assert torch.allclose(mu, torch.zeros(5, 2)) and torch.allclose(logvar, torch.zeros(5, 2))   # the prior
    mu, logvar = net.posterior(xs, torch.tensor([[True, False]] * 5))
    ma, la = net.mu["a"](net.enc["a"](xs["a"])), net.logvar["a"](net.enc["a"](xs["a"])).clamp(-8, 8)
    prec = 1 + 1 / la.exp()                                        # prior expert + expert a
    assert torch.allclose(mu, (ma / la.exp()) / prec, atol=1e-5) and torch.allclose(logvar, -prec.log(), atol=1e-5)


def _masked_val(data, frac_missing=0.5, seed=3):
    n = len(data.splits["val"])
    return masks.independent(n, data.modality_names, {"audio": frac_missing}, seed=seed)


@pytest.mark.parametrize("name", ["smil", "ae_impute", "mle", "hgr", "zp_concat"])
def test_masked_validation_never_reads_a_hidden_validation_modality(avdigits, name):
    """Selecting on a masked validation split: scrambling the audio of the validation rows
    marked missing changes nothing, and SMIL's epoch score is the masked split's."""
    small = avdigits.with_train_subset(200)
    P = masks.independent(200, small.modality_names, {"audio": 0.8}, seed=0)
    VP = _masked_val(small)
    cfg = TrainConfig(epochs=2, patience=None)
    kw = {"backbone": "mlp", "cond": ["image"]} if name == "ae_impute" else {"backbone": "mlp"}
    a = make_method(name, **kw).fit(small, P, seed=0, cfg=cfg, device="cpu", val_presence=VP)
    hidden = small.splits["val"][~VP[:, 1]]
    audio = small.modalities["audio"].clone()
    audio[hidden] = torch.randn_like(audio[hidden]) * 50
    scrambled = type(small)(small.name, {**small.modalities, "audio": audio}, small.y, small.task, small.class_names,
                            small.splits, small.info, small.lengths)
    b = make_method(name, **kw).fit(scrambled, P, seed=0, cfg=cfg, device="cpu", val_presence=VP)
    if name == "smil":
        assert all("val_masked" in h and h["val_score"] == h["val_masked"] for h in a.history)
    assert [h["val_score"] for h in a.history] == [h["val_score"] for h in b.history]
    if name in ("mle", "zp_concat"):                  # the batched fits too (hidden rows zeroed, never read)
        a, b = (make_method(name, **kw).fit_seeds(d, [P, P], [0, 1], cfg=cfg, device="cpu", val_presences=[VP, VP])[0]
                for d in (small, scrambled))
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-6)


def test_smil_controls_and_the_code_variants_x2_encoder(avdigits):
    small = avdigits.with_train_subset(200)
    P = masks.independent(200, small.modality_names, {"audio": 0.8}, seed=0)
    cfg = TrainConfig(epochs=2, patience=None)
    warm = make_method("smil_warm_only", backbone="mlp").fit(small, P, seed=0, cfg=cfg, device="cpu")
    assert len(warm.history) == 1 and warm.model.enc2 is None          # scored once, no meta-learning
    assert make_method("smil_no_inner").inner_lr == 0.0
    code = make_method("smil_code", backbone="mlp").fit(small, P, seed=0, cfg=cfg, device="cpu")
    with torch.no_grad():                                              # fine-tuned: no longer the frozen features
        now = code._x2_features(code.model.enc2, small.splits["train"])
    assert not torch.allclose(now, code.X2feat[small.splits["train"]], atol=1e-4)
    assert any(n.startswith("enc2.") for n, _ in code.model.named_parameters())
    assert not any(n.startswith("enc2") for n in code.model.theta())  # not adapted by the inner step


def test_code_variant_evaluates_complete_rows_without_the_regularizer(avdigits):
    """The authors' evaluation with both modalities (``mode='two'``) has no regularizer: the code
    variant's logits of a row with x2 are the plain pass's; rows without x2 keep Eq. 3. The paper
    variant evaluates every row through Eq. 3, as its meta-test trains D^f."""
    small = avdigits.with_train_subset(200)
    P = masks.independent(200, small.modality_names, {"audio": 0.8}, seed=0)
    cfg = TrainConfig(epochs=1, patience=None)
    val = small.splits["val"]
    has = torch.arange(len(val)) % 2 == 0                              # half the rows have the audio
    for name in ("smil_code", "smil"):
        m = make_method(name, backbone="mlp").fit(small, P, seed=0, cfg=cfg, device="cpu")
        out = m._forward(m.model, val, has)[0]
        with torch.no_grad():
            m.model.eval()
            x2f = m.X2feat[val] if m.model.enc2 is None else m._x2_features(m.model.enc2, val)
            plain = m.model(m.X[val], x2f, has, regularize=False)[0]
            reg = m.model(m.X[val], x2f, has)[0]
        assert torch.allclose(out[~has], reg[~has])                    # missing x2: Eq. 3 at its mean
        if name == "smil_code":
            assert torch.allclose(out[has], plain[has])
        else:
            assert torch.allclose(out[has], reg[has]) and not torch.allclose(reg[has], plain[has])


def test_smils_record_holds_its_warm_starts_budgets_and_histories(avdigits, tmp_path):
    """The warm starts SMIL trains before Algorithm 1 are in its record (each stage's rows, seed,
    budget and per-epoch history; the K-means priors), shared by the variants at one setting (one key)."""
    from mmlib.experiment import run
    small = avdigits.with_train_subset(200)
    spec = {"kind": "independent", "rates": {"audio": 0.8}}
    cfg = TrainConfig(epochs=3, patience=None)
    rec, _ = run(small, "smil", spec, 0, cfg, "cpu", records_dir=tmp_path, method_kwargs={"backbone": "mlp"})
    ws = rec["warm_starts"]
    assert set(ws["stages"]) == {"smil:x2-encoder", "smil:x1-encoder", "smil:priors", "smil:fusion"}
    x1 = ws["stages"]["smil:x1-encoder"]
    assert x1["rows"] == 200 and x1["epochs_run"] == len(x1["history"]) == 3 and x1["train_config"]["epochs"] == 3
    assert ws["stages"]["smil:x2-encoder"]["rows"] == 40 and ws["stages"]["smil:priors"]["rows"] == 40
    assert ws["epochs"] == 9
    other, _ = run(small, "smil_no_reg", spec, 0, cfg, "cpu", records_dir=tmp_path, method_kwargs={"backbone": "mlp"})
    assert other["warm_starts"]["key"] == ws["key"]           # the same warm starts, named by one key
    # kept as a fit of their own beside the records, where the second variant found them; a variant that
    # fits them itself (no store: nothing kept) gets the same numbers
    from mmlib.methods.smil import warm_path
    assert warm_path(tmp_path / "shared", ws["key"]).is_file()
    assert other["warm_starts"]["stages"]["smil:fusion"]["history"] == ws["stages"]["smil:fusion"]["history"]
    alone, _ = run(small, "smil_no_reg", spec, 0, cfg, "cpu", method_kwargs={"backbone": "mlp"})
    assert alone["metrics"] == other["metrics"] and not (tmp_path / "records").exists()


@pytest.mark.parametrize("name, masked", [("smil", True), ("smil", False), ("smil_code", True),
                                          ("smil_first_order", False), ("smil_no_kmeans", True),
                                          ("smil_deterministic", False), ("smil_no_inner", True)])
def test_smil_members_equal_their_single_fits(avdigits, name, masked):
    """Algorithm 1 for three fits as one ensemble (two audio rates, each fit's own D^f stream, priors
    and x2 features) against the same fits alone: the same epochs and validation curves, train loss
    and predictions to rounding."""
    small = avdigits.with_train_subset(300)
    n, nv = len(small.splits["train"]), len(small.splits["val"])
    cfg = TrainConfig(epochs=3, batch_size=64, patience=2)
    pairs = [(0.8, 0), (0.8, 1), (0.9, 2)]
    Ps = [masks.independent(n, small.modality_names, {"audio": r}, seed=s) for r, s in pairs]
    VPs = ([masks.independent(nv, small.modality_names, {"audio": r}, seed=s + 99) for r, s in pairs] if masked
           else [None] * 3)
    together = make_method(name, backbone="mlp").fit_seeds(small, Ps, [s for _, s in pairs], cfg=cfg, device="cpu",
                                                           val_presences=VPs)
    for (r, s), P, VP, b in zip(pairs, Ps, VPs, together):
        a = make_method(name, backbone="mlp").fit(small, P, seed=s, cfg=cfg, device="cpu", val_presence=VP)
        assert b.history[0]["batched"] == 3 and len(a.history) == len(b.history)
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-5)
        assert [h["val_x1"] for h in a.history] == pytest.approx([h["val_x1"] for h in b.history], abs=1e-5)
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-5)
        assert torch.allclose(a.predict(small, "test"), b.predict(small, "test"), atol=1e-4)


def test_smil_fixed_gaussian_members_follow_their_single_fits(avdigits):
    """With r ~ N(0, I) multiplying the features (Table 3's "w/ Fixed Gaussian"), rounding grows from
    1e-6 in the first epoch to 1e-4 of the train loss by the third (measured); the members keep their
    single fits' epochs and validation curves."""
    small = avdigits.with_train_subset(300)
    n = len(small.splits["train"])
    cfg = TrainConfig(epochs=3, batch_size=64, patience=None)
    Ps = [masks.independent(n, small.modality_names, {"audio": 0.8}, seed=s) for s in (0, 1)]
    together = make_method("smil_fixed_gaussian", backbone="mlp").fit_seeds(small, Ps, [0, 1], cfg=cfg, device="cpu")
    for s, b in zip((0, 1), together):
        a = make_method("smil_fixed_gaussian", backbone="mlp").fit(small, Ps[s], seed=s, cfg=cfg, device="cpu")
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=0.01)
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-3)


def test_warm_starts_kept_by_other_code_are_not_read(avdigits, tmp_path, monkeypatch):
    """The shared warm starts are named by their code's version too: a variant finds its setting's
    warm starts, and a change to SMIL's code fits them again instead of reading the old ones."""
    from mmlib.methods.smil import SMIL
    small = avdigits.with_train_subset(200)
    P = masks.independent(len(small.splits["train"]), small.modality_names, {"audio": 0.8}, seed=0)

    def fit(name):
        m = make_method(name, backbone="mlp")
        m.shared_dir = str(tmp_path)
        return m.fit(small, P, seed=0, cfg=TrainConfig(epochs=1, patience=None), device="cpu")
    first, second = fit("smil_warm_only"), fit("smil_no_reg")
    assert first.warm_starts["key"] == second.warm_starts["key"] and len(list(tmp_path.glob("smil-warm-*"))) == 1
    monkeypatch.setattr(SMIL, "code_version", lambda self: "other")
    assert fit("smil_warm_only").warm_starts["key"] != first.warm_starts["key"]
    assert len(list(tmp_path.glob("smil-warm-*"))) == 2
