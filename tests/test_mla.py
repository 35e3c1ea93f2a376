"""MLA (alternating unimodal learning, HGM, dynamic fusion) and the balancing baselines."""
import pytest
import torch

from mmlib import masks
from mmlib.data import load_dataset
from mmlib.experiment import modality_gap, run, run_grid, masked_test_presence
from mmlib.methods import make_method
from mmlib.methods.mla import dynamic_fusion, rls_update, rls_update_code
from mmlib.models import ConcatLinear
from mmlib.train import TrainConfig

CFG = TrainConfig(epochs=2, patience=None)


@pytest.fixture(scope="module")
def dominant():
    return load_dataset("gaussian", preset="dominant", n=1200)


def test_hgm_step_annihilates_the_mean_feature_and_the_projected_update_is_orthogonal_to_it():
    g = torch.Generator().manual_seed(0)
    P0 = torch.eye(16, dtype=torch.float64)
    hbar = torch.rand(16, generator=g, dtype=torch.float64) + 0.5
    P = rls_update(P0, hbar, alpha=1e-4)
    assert (P @ hbar).norm() < 1e-3 * hbar.norm()                      # P_t hbar ~ 0 for small alpha
    assert torch.allclose(P, P.T, atol=1e-10)                           # RLS keeps P symmetric
    grad = torch.randn(5, 16, generator=g, dtype=torch.float64)         # a head-weight gradient (C x s)
    assert ((grad @ P) @ hbar).abs().max() < 1e-3 * (grad @ hbar).abs().max()   # the update leaves g(hbar) alone
    # a second mean feature: both stay protected (the projector accumulates)
    h2 = torch.rand(16, generator=g, dtype=torch.float64)
    P2 = rls_update(P, h2, alpha=1e-4)
    assert (P2 @ hbar).norm() < 1e-3 * hbar.norm() and (P2 @ h2).norm() < 1e-3 * h2.norm()
    # the authors' GSPlugin version: Frobenius norm 1 after each update, a different matrix
    Pc = rls_update_code(P0, hbar, alpha=0.1)
    assert abs(float(torch.linalg.norm(Pc)) - 1.0) < 1e-9 and not torch.allclose(Pc / Pc.norm(), P / P.norm())


def test_dynamic_fusion_weights_sum_to_one_favour_the_confident_modality_and_skip_absent_ones():
    confident = torch.tensor([[8.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.3, 0.2, 0.1]])
    logits = torch.stack([torch.cat([confident, unsure]), torch.cat([unsure, confident])], 1)   # (2, M=2, C=3)
    present = torch.ones(2, 2, dtype=torch.bool)
    fused, w = dynamic_fusion(logits, present, "sample")
    assert torch.allclose(w.sum(1), torch.ones(2))
    assert w[0, 0] > 0.5 > w[0, 1] and w[1, 1] > 0.5 > w[1, 0]          # the lower-entropy modality weighs more
    assert torch.allclose(fused, (w.unsqueeze(-1) * logits).sum(1))
    only = torch.tensor([[True, False], [True, False]])
    fused2, w2 = dynamic_fusion(logits, only, "sample")
    assert torch.equal(w2[:, 1], torch.zeros(2)) and torch.allclose(fused2, logits[:, 0])
    _, w3 = dynamic_fusion(logits, present, "off")
    assert torch.allclose(w3, torch.full((2, 2), 0.5))
    _, wb = dynamic_fusion(logits, present, "batch")                      # the code: one weight per batch
    assert torch.allclose(wb[0], wb[1]) and torch.allclose(wb.sum(1), torch.ones(2))


def test_dynamic_fusion_says_when_a_weight_is_not_a_number():
    """The code's batch entropy underflows (p = 0, 0 * log 0 = NaN) on very confident logits: the
    fused logits are NaN with a warning, never a silent weight of 0; an empty row votes 0."""
    logits = torch.tensor([[[200.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]])   # (2, M=2, C=2)
    present = torch.ones(2, 2, dtype=torch.bool)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        fused, w = dynamic_fusion(logits, present, "batch")
    assert torch.isnan(fused).all()
    empty = torch.tensor([[True, True], [False, False]])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused, w = dynamic_fusion(logits, empty, "sample")
    assert torch.equal(w[1], torch.zeros(2)) and torch.equal(fused[1], torch.zeros(2))


@pytest.mark.parametrize("path", ["engine", "loop"])
def test_alternation_by_iteration_changes_only_the_current_modality_encoder(dominant, monkeypatch, path):
    """Eq. 1 on both paths: every optimiser step moves exactly one encoder, modality t mod M."""
    from mmlib.methods.mla import Alternation
    from mmlib.train import Adam
    m = make_method("mla")
    changed, snap = [], {}

    def look(now):                                 # after every optimiser step: which encoders moved
        if snap:
            changed.append({k for k in now if any(not torch.equal(a, b) for a, b in zip(now[k], snap[k]))})
        snap.clear()
        snap.update(now)
    if path == "loop":
        step = Adam.step

        def step_then_look(opt):
            step(opt)
            look({k: [p.detach().clone() for p in e.parameters()] for k, e in m.model.encoders.items()})
        monkeypatch.setattr(Adam, "step", step_then_look)
        m.fit_loop(dominant, None, seed=0, cfg=TrainConfig(epochs=1, patience=None, batch_size=256), device="cpu")
    else:
        updated = Alternation.updated

        def updated_then_look(self, state, params, active):
            updated(self, state, params, active)
            look({k: [v.clone() for n, v in params.items() if n.startswith(f"model.encoders.{k}.")]
                  for k in dominant.modality_names})
        monkeypatch.setattr(Alternation, "updated", updated_then_look)
        m.fit(dominant, None, seed=0, cfg=TrainConfig(epochs=1, patience=None, batch_size=256), device="cpu")
    M = len(dominant.modality_names)
    assert changed and all(len(c) == 1 for c in changed)                # one encoder per iteration
    names = [next(iter(c)) for c in changed]
    order = dominant.modality_names
    assert all(order.index(b) == (order.index(a) + 1) % M for a, b in zip(names, names[1:]))   # Eq. 1: t mod M


def test_rls_updates_of_a_stack_equal_each_member_alone():
    """Eq. 3 and the code's update on (K, d, d) stacks: each member's P as its update alone."""
    torch.manual_seed(0)
    P, h = torch.randn(3, 8, 8), torch.randn(3, 8)
    P = P @ P.transpose(1, 2) + torch.eye(8)
    alphas = torch.tensor([0.1, 0.05, 0.02])
    paper, code = rls_update(P, h, 0.1), rls_update_code(P, h, alphas)
    for k in range(3):
        assert torch.allclose(paper[k], rls_update(P[k], h[k], 0.1), atol=1e-5)
        assert torch.allclose(code[k], rls_update_code(P[k], h[k], float(alphas[k])), atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"project": "gradient"}, {"h_mean": "batch"}, {"hgm": "off", "df": "off"},
                                {"alternation": "within_batch"}, {"df": "batch"},
                                {"alternation": "within_batch", "missing_train": "zeros", "hgm": "off", "df": "batch"}])
def test_members_equal_their_loop_fits(kw):
    """MLA's ensemble (two settings x two seeds: four row counts, masked validation splits) against
    Algorithm 1's plain loop fit by fit: the same epochs and validation curve, the same train loss
    and predictions to rounding."""
    d = load_dataset("affect", task="emotion").with_train_subset(500)
    n, nv, names = len(d.splits["train"]), len(d.splits["val"]), d.modality_names
    cfg = TrainConfig(epochs=4, batch_size=64, patience=2)
    pairs = [(r, s) for r in (0.3, 0.6) for s in (0, 1)]
    Ps = [masks.from_spec({"kind": "cpm", "rate": r}, n, names, s) for r, s in pairs]
    VPs = [masks.from_spec({"kind": "cpm", "rate": r}, nv, names, s + 99) for r, s in pairs]
    together = make_method("mla", **kw).fit_seeds(d, Ps, [s for _, s in pairs], cfg=cfg, device="cpu",
                                                  val_presences=VPs)
    for (r, s), P, VP, b in zip(pairs, Ps, VPs, together):
        a = make_method("mla", **kw).fit_loop(d, P, seed=s, cfg=cfg, device="cpu", val_presence=VP)
        assert b.history[0]["batched"] == 4 and len(a.history) == len(b.history)
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-5)
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-5)
        assert torch.allclose(a.predict(d, "test"), b.predict(d, "test"), atol=1e-4)


def test_the_codes_hgm_on_the_engine_follows_the_loop_as_far_as_its_rounding_allows():
    """The released GSPlugin divides element by element by alpha + k hbar^T, whose entries come near 0:
    a change of 1e-7 in hbar's rounding moves the logits by ~0.07 within four epochs (measured), so
    its members equal their loop fits only in the first epoch; later the curves stay close."""
    d = load_dataset("affect", task="emotion").with_train_subset(500)
    n, nv, names = len(d.splits["train"]), len(d.splits["val"]), d.modality_names
    cfg = TrainConfig(epochs=3, batch_size=64, patience=None)
    Ps = [masks.from_spec({"kind": "cpm", "rate": 0.5}, n, names, s) for s in (0, 1)]
    VPs = [masks.from_spec({"kind": "cpm", "rate": 0.5}, nv, names, s + 99) for s in (0, 1)]
    together = make_method("mla", hgm="code").fit_seeds(d, Ps, [0, 1], cfg=cfg, device="cpu", val_presences=VPs)
    for s, b in zip((0, 1), together):
        a = make_method("mla", hgm="code").fit_loop(d, Ps[s], seed=s, cfg=cfg, device="cpu", val_presence=VPs[s])
        assert a.history[0]["val_score"] == pytest.approx(b.history[0]["val_score"], abs=1e-5)
        assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=0.03)


def test_concat_linear_slices_sum_to_the_fused_logits():
    torch.manual_seed(0)
    head = ConcatLinear([4, 6, 5], 3)
    feats = [torch.randn(7, 4), torch.randn(7, 6), torch.randn(7, 5)]
    full, _ = head(feats, torch.ones(7, 3, dtype=torch.bool))
    assert torch.allclose(head.unimodal_logits(feats).sum(1), full, atol=1e-6)
    assert torch.allclose(full, head.out(torch.cat(feats, 1)), atol=1e-6)
    one, _ = head(feats, torch.tensor([[False, True, False]] * 7))
    assert torch.allclose(one, head.unimodal_logits(feats)[:, 1])       # the declared unimodal read-out


def test_ogm_ge_never_slows_the_weaker_modality(avdigits, dominant):
    for d in (avdigits, dominant):
        m = make_method("ogm_ge", backbone="mlp")
        m.fit(d, None, seed=0, cfg=TrainConfig(epochs=2, patience=None, batch_size=256), device="cpu")
        k = torch.tensor(m.coefficients)                                 # (batches, M)
        assert (k <= 1).all() and (k > 0).all()
        assert ((k < 1).sum(1) <= 1).all()                               # at most the dominant one is slowed
        assert (k == 1).any(1).all()                                     # the weaker modality keeps its gradient
        if len(d.modality_names) == 2:                                   # (with three, rho_m > 1 needs s_m > the
            assert (k < 1).any()                                         # others' sum: rare) modulation does happen


def test_ogm_ge_modulation_scales_each_members_encoder_gradients_and_adds_their_own_noise():
    """OGM-GE's step on the engine, by hand: each member's encoder weight gradients of modality m
    times its k_m, plus its epoch's noise times the gradient's std; biases and the head untouched."""
    from mmlib.engine import Member
    from mmlib.methods.balance import Modulation
    from mmlib.models import MultimodalNet
    torch.manual_seed(0)
    net = MultimodalNet(["a", "b"], {"a": (5,), "b": (3,)}, 4, "concat_linear", 8, 8, "mlp", "pooled")
    mod = Modulation(make_method("ogm_ge"), net, ["a", "b"], [0, 1], batch_size=4)
    members = [Member(net, torch.arange(6), {"P": torch.ones(6, 2, dtype=torch.bool)}, s) for s in (0, 1)]
    state = mod.init(members)
    mod.epoch({"P": torch.ones(2, 6, 2, dtype=torch.bool)}, [0, 1], 0)
    mod.at(1, 0)
    state["k"] = torch.tensor([[0.5, 1.0], [1.0, 0.25]])
    grads = {f"model.{n}": torch.randn(2, *p.shape) for n, p in net.named_parameters()}
    before = {n: g.clone() for n, g in grads.items()}
    mod.adjust(state, grads, {}, torch.ones(2, dtype=torch.bool))
    off = 0
    for (name, j), size in zip(mod.targets, mod.sizes):
        for r in range(2):
            g = before[name][r]
            eps = mod.eps[r, 1, off:off + size].view(g.shape)
            assert torch.allclose(grads[name][r], g * state["k"][r, j] + eps * (g.std() + 1e-8), atol=1e-6)
        off += size
    untouched = [n for n in grads if n not in dict(mod.targets)]
    assert untouched and all(torch.equal(grads[n], before[n]) for n in untouched)
    assert {n.split(".")[2] for n, _ in mod.targets} == {"a", "b"}


@pytest.mark.parametrize("name", ["qmf", "ogm_ge"])
def test_a_padded_batch_gives_the_loss_of_its_rows(name):
    """QMF's and OGM-GE's engine losses on a short batch padded with zero weights equal the loss of its
    real rows alone (QMF's ranking ring closes over the real rows; its history the same after the step)."""
    from mmlib.engine import Member, Parts
    d = load_dataset("affect", task="emotion").with_train_subset(200)
    P = masks.from_spec({"kind": "cpm", "rate": 0.4}, len(d.splits["train"]), d.modality_names, 0)
    m = make_method(name)
    extra, rows, loss_fn, val_logits, val_score = m._setup(d, P, 0, "cpu")
    loss, program = m._engine(Parts([m], [Member(m.model, rows, extra, 0)], loss_fn, val_logits, val_score),
                              TrainConfig())
    state = {k: v[0] for k, v in program.init([Member(m.model, rows, extra, 0)]).items()}
    if name == "qmf":
        state["history"] = torch.rand_like(state["history"])
    m.model.eval()
    idx = rows[:10]
    alone, aux_a = loss(m.model, idx, None, extra, state)
    padded = torch.cat([idx, idx[:1].expand(6)])
    w = torch.cat([torch.ones(10), torch.zeros(6)])
    pad, aux_p = loss(m.model, padded, w, extra, state)
    assert float(pad.detach()) == pytest.approx(float(alone.detach()), abs=1e-6)
    for k in aux_a:
        if k != "idx":
            assert torch.allclose(aux_p[k][:10] if aux_p[k].dim() > 1 else aux_p[k], aux_a[k], atol=1e-6)


def test_every_balancing_method_fits_and_reports_each_modality(dominant):
    for name in ["sum_linear", "concat_linear", "film", "bigated", "ogm_ge", "qmf", "mla", "mla_code"]:
        kw = {} if name.startswith("mla") else {"backbone": "mlp"}
        rec, m = run(dominant, name, {"kind": "full"}, 0, CFG, "cpu", method_kwargs=kw)
        assert {"m0", "m1", "m2", "m0+m1+m2"} <= set(rec["metrics"]), name
        assert rec["metrics"]["m0+m1+m2"]["accuracy"] > 0.4, name         # chance is 0.25
        assert set(rec["modality_gap"]) == {"m0|m1", "m0|m2", "m1|m2"}, name


def test_mla_beats_chance_clearly_and_hgm_changes_the_fit(dominant):
    cfg = TrainConfig(epochs=8, patience=None)
    a, _ = run(dominant, "mla", {"kind": "full"}, 0, cfg, "cpu")
    b, _ = run(dominant, "mla", {"kind": "full"}, 0, cfg, "cpu", method_kwargs={"hgm": "off"})
    assert a["metrics"]["m0+m1+m2"]["accuracy"] > 0.7
    assert a["metrics"]["m1"] != b["metrics"]["m1"] or a["metrics"]["m0"] != b["metrics"]["m0"]


def test_masked_test_split_is_the_same_for_every_method_and_cpm_keeps_a_modality(dominant):
    spec = {"kind": "cpm", "rate": 0.5}
    p0, p1 = masked_test_presence(dominant, spec, 0), masked_test_presence(dominant, spec, 0)
    assert torch.equal(p0, p1) and p0.any(1).all()
    assert abs(masks.describe(p0, dominant.modality_names)["overall_missing_rate"] - 0.5) < 0.02
    f, _ = run_grid(dominant, ["mla", ("late_fusion", {"backbone": "mlp"})], {"0.5": spec}, [0, 1], CFG, "cpu",
                    validation="masked", test="masked")
    masked = f[f["test"] == "masked"]
    assert len(masked) == 4 and set(masked["method"]) == {"mla", "late_fusion"}      # every run, every seed
    rec, m = run(dominant, "mla", spec, 0, CFG, "cpu", test_missing=spec)
    pred = m.predict(dominant, "test", p0).argmax(1)
    y = dominant.y[dominant.splits["test"]]
    assert rec["metrics"]["masked"]["accuracy"] == pytest.approx(float((pred == y).float().mean()))


def test_modality_gap_is_zero_for_one_modality_and_positive_between_different_ones():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 8, generator=g)
    assert modality_gap(h, 3 * h) == pytest.approx(0.0, abs=1e-6)       # scale-free (L2-normalised)
    assert modality_gap(h.abs(), -h.abs()) > 1.0


def test_unknown_option_names_the_parameter(dominant):
    with pytest.raises(ValueError, match="hgm='sometimes'"):
        make_method("mla", hgm="sometimes").fit(dominant, None, seed=0, cfg=CFG, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["iemocap", "crema_d"])
def test_chapter_runs_on_the_real_layouts(tmp_path, name):
    """`mmbook run 05_mla --data-root ROOT -p dataset=...`: Table 1 and Table 2 on files in the MMIN
    IEMOCAP layout and in the MLA authors' CREMA-D layout (random contents: the plumbing, not the numbers)."""
    import papermill as pm
    from test_mla_data import write_crema_d
    from test_real_data import write_mmin

    from mmlib import report, results, sweep
    root = tmp_path / name
    if name == "iemocap":
        write_mmin(root, fold=1, sizes=(48, 16, 16))
        opts, full = {"fold": 1}, "acoustic+visual+lexical"
    else:
        write_crema_d(root, n=(40, 12))
        opts, full = {}, "audio+visual"
    pm.execute_notebook(str(sweep.ROOT / "notebooks/05_mla.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        parameters={"dataset": name, "data_root": str(root), "data_options": opts,
                                    "profile": "quick", "seeds": [0, 1], "results_dir": str(tmp_path / "records")},
                        cwd=str(sweep.ROOT), progress_bar=False)
    df = results.load_records(tmp_path / "records", "*.json")
    assert set(df["dataset"]) == {name} and {"mla", "qmf", "ogm_ge", "mmin_lite"} <= set(df["method"])
    assert "masked" in set(df["test"]) and full in set(df["test"])
    v = report.read_verdicts(report.verdicts_path(tmp_path / "records", "05_mla"))
    assert any(x.claim.startswith(f"(1) MLA has the best Multi accuracy ({name}") for x in v)
