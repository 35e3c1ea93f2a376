"""RedCore (mmlib/methods/redcore.py) and the MMIN / CRA baselines (mmlib/methods/mmin.py)."""
import itertools
import math

import numpy as np
import pytest
import torch

from mmlib import masks
from mmlib.data import load_dataset
from mmlib.experiment import evaluate, run, run_grid
from mmlib.methods import make_method
from mmlib.methods.redcore import project_gamma1, relative_advantage
from mmlib.train import TrainConfig

XI1, XI2 = 0.015, 0.15


@pytest.fixture(scope="module")
def affect():
    d = load_dataset("affect", task="emotion")
    return d.with_train_subset(300)


def brute_force_projection(v, xi1, xi2, steps=200):
    """The nearest point of {eta >= xi1, ||eta|| = xi2} (M = 3), by a grid on the sphere."""
    best, best_d = None, math.inf
    for i, j in itertools.product(range(steps + 1), repeat=2):
        th, ph = (math.pi / 2) * i / steps, (math.pi / 2) * j / steps
        eta = torch.tensor([math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)]) * xi2
        if (eta >= xi1 - 1e-9).all():
            dist = float((eta - v).norm())
            if dist < best_d:
                best, best_d = eta, dist
    return best, best_d


@pytest.mark.parametrize("v", [[0.2, 0.05, -0.1], [0.1, 0.1, 0.1], [-0.3, -0.1, -0.2], [0.01, 0.5, 0.02],
                               [0.087, 0.087, 0.087]])
def test_projection_lands_in_gamma1_and_is_the_nearest_point(v):
    v = torch.tensor(v)
    eta = project_gamma1(v, XI1, XI2)
    assert (eta >= XI1 - 1e-6).all() and abs(float(eta.norm()) - XI2) < 1e-5          # in Gamma1
    _, d_brute = brute_force_projection(v, XI1, XI2)
    assert float((eta - v).norm()) <= d_brute + 1e-4                                     # no grid point is nearer


def test_projection_of_many_rows_at_once_equals_a_bisection_row_by_row():
    """The closed form over rows (the ensemble's members) against the KKT form solved by a
    plain bisection, one row at a time, in float64."""
    def bisection(v, xi1, xi2):
        if bool((v <= 0).all()):
            eta = torch.full_like(v, xi1)
            eta[int(v.argmax())] = math.sqrt(xi2 ** 2 - (len(v) - 1) * xi1 ** 2)
            return eta
        lo, hi = 0.0, 1.0
        while float(torch.clamp(hi * v, min=xi1).norm()) < xi2:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float(torch.clamp(mid * v, min=xi1).norm()) < xi2 else (lo, mid)
        return torch.clamp(hi * v, min=xi1)
    g = torch.Generator().manual_seed(0)
    for M in (2, 3, 5):
        V = torch.randn(300, M, generator=g, dtype=torch.float64) * 0.1
        V[:20] = -V[:20].abs()                                          # every coordinate <= 0
        eta = project_gamma1(V, XI1, XI2)
        ref = torch.stack([bisection(v, XI1, XI2) for v in V])
        assert torch.allclose(eta, ref, atol=1e-12, rtol=0)


def test_projection_rejects_an_empty_set():
    with pytest.raises(ValueError, match="Gamma1 is empty"):
        project_gamma1(torch.ones(3), 0.1, 0.15)


def test_projection_of_a_single_point_set_and_keeps_the_dtype():
    one = project_gamma1(torch.tensor([0.3, -0.2, 0.1]), 0.05, 0.05 * math.sqrt(3))   # xi2 = sqrt(M) xi1
    assert torch.allclose(one, torch.full((3,), 0.05))
    for dtype in (torch.float32, torch.float64):
        eta = project_gamma1(torch.tensor([0.2, 0.05, -0.1], dtype=dtype), XI1, XI2)
        assert eta.dtype == dtype
    eta = project_gamma1(torch.tensor([0.2, 0.05, -0.1], dtype=torch.float64), XI1, XI2)
    assert abs(float(eta.norm()) - XI2) < 1e-14                      # exact inside, float64 kept


def test_residual_autoencoder_is_mmins():
    """MMIN's ResidualAE / RedCore's ResidualXE: a linear latent (it can be negative), each
    block reads the input plus every earlier block's output, and the result is
    transition(x_B + out_B), so the output depends on the input through the transition."""
    from mmlib.methods.redcore import ResidualAE
    torch.manual_seed(0)
    ae = ResidualAE(12, (8, 4), n_blocks=3, out_dim=5)
    x = torch.randn(64, 12)
    y, latents = ae(x)
    assert y.shape == (64, 5) and [h.shape for h in latents] == [(64, 4)] * 3
    assert all((h < 0).any() for h in latents)                      # no activation on the latent
    x_in, out = x, torch.zeros_like(x)                              # the structure, written out
    for b, blk in enumerate(ae.blocks):
        x_in = x_in + out
        assert torch.equal(blk["enc"](x_in), latents[b])
        out = blk["dec"](latents[b])
    assert torch.allclose(ae.transition(x_in + out), y)
    with torch.no_grad():                                           # the last decoder alone is not the output
        ae.transition[2].weight.zero_()
        ae.transition[2].bias.fill_(0.5)
    assert torch.equal(ae(x)[0], torch.full((64, 5), 0.5))


def test_red_keeps_every_kl_and_drops_only_the_unimodal_likelihoods(affect, monkeypatch):
    """Table 2's Red: without the unimodal decoders' cross-entropies the loss pays the same
    KLs as RedCore's, m = 1..M+1; only the unimodal label likelihoods go."""
    from mmlib.methods import redcore as rc
    n = len(affect.splits["train"])
    P = masks.independent(n, affect.modality_names, {"acoustic": 0.5, "visual": 0.3, "lexical": 0.6}, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=64, patience=None)
    m = make_method("redcore").fit(affect, P, seed=0, cfg=cfg, device="cpu")
    idx, pres = affect.splits["train"][:64], torch.as_tensor(P)[:64]
    kl = rc.kl_standard_normal

    def vib(unimodal_ce, with_kl):
        m.unimodal_ce = unimodal_ce
        monkeypatch.setattr(rc, "kl_standard_normal", kl if with_kl else lambda mu, logvar: 0 * mu.sum(1))
        torch.manual_seed(1)                                        # the same reparameterisation noise
        with torch.no_grad():
            return float(m.losses(m.model, idx, pres)[0])
    for kind in ("paper", "as_printed"):
        m.kl = kind
        red_kl, core_kl = vib(False, True) - vib(False, False), vib(True, True) - vib(True, False)
        assert red_kl > 0 and math.isclose(red_kl, core_kl, rel_tol=1e-5), (kind, red_kl, core_kl)
    m.kl = "paper"
    assert vib(True, True) > vib(False, True)                      # Red drops the unimodal likelihoods


def test_relative_advantage_sums_to_zero_and_favours_the_smaller_loss():
    ra = relative_advantage(torch.tensor([1.0, 2.0, 6.0]))
    assert abs(float(ra.sum())) < 1e-6                                      # Eq. 8
    assert ra[0] > 0 > ra[2]                                                # smallest imputation loss: strong


@pytest.mark.parametrize("name,kw", [("redcore", {}), ("mmin_lite", {"pdt": False})])
def test_fit_never_reads_a_missing_modality(affect, name, kw):
    """IDT: changing the features of the training samples' missing modalities changes
    nothing in the fitted model (RedCore, and MMIN trained with pdt=False)."""
    n = len(affect.splits["train"])
    P = masks.independent(n, affect.modality_names, {"acoustic": 0.5, "visual": 0.3, "lexical": 0.6}, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    a = make_method(name, **kw).fit(affect, P, seed=0, cfg=cfg, device="cpu")
    other = affect.with_train_subset(n)                                  # a copy with noise where missing
    other.modalities = {m: x.clone() for m, x in affect.modalities.items()}
    tr = affect.splits["train"]
    for j, m in enumerate(affect.modality_names):
        miss = tr[~P[:, j]]
        other.modalities[m][miss] = torch.randn_like(other.modalities[m][miss]) * 5
    b = make_method(name, **kw).fit(other, P, seed=0, cfg=cfg, device="cpu")
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k


def test_core_keeps_eta_fixed_and_red_regulates_it(affect):
    n = len(affect.splits["train"])
    P = masks.independent(n, affect.modality_names, {"acoustic": 0.8, "visual": 0.2, "lexical": 0.5}, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=64, patience=None)
    core = make_method("redcore_core").fit(affect, P, seed=0, cfg=cfg, device="cpu")
    etas = {tuple(h["eta"]) for h in core.history}
    assert len(etas) == 1 and max(abs(e - XI2 / math.sqrt(3)) for e in etas.pop()) < 1e-7
    assert core.trace and {t["eta_lexical"] for t in core.trace} == {core.history[0]["eta"][2]}   # RA logged, eta kept
    red = make_method("redcore").fit(affect, P, seed=0, cfg=cfg, device="cpu")
    assert red.trace and any(max(abs(e - XI2 / math.sqrt(3)) for e in h["eta"]) > 1e-3 for h in red.history)
    for t in red.trace:                                                    # every update is in Gamma1
        eta = torch.tensor([t[f"eta_{m}"] for m in affect.modality_names])
        assert (eta >= XI1 - 1e-6).all() and abs(float(eta.norm()) - XI2) < 1e-5
        assert abs(sum(t[f"ra_{m}"] for m in affect.modality_names)) < 1e-5


def test_imputation_loss_counts_only_present_rows(affect):
    m = make_method("redcore")
    n = len(affect.splits["train"])
    P = masks.independent(n, affect.modality_names, {"acoustic": 0.5, "visual": 0.5, "lexical": 0.5}, seed=2)
    m.fit(affect, P, seed=0, cfg=TrainConfig(epochs=1, patience=None), device="cpu")
    idx = affect.splits["train"][:32]
    present = P[:32].clone()
    present[:, 0] = False                                                  # no row of the batch has acoustic
    torch.manual_seed(0)
    _, mse, have = m.losses(m.model, idx, present)
    assert float(mse[0].detach()) == 0.0 and float(mse[1:].detach().min()) > 0
    assert have.tolist() == [False, True, True]


def test_code_variants_run_and_the_batch_position_mask_moves(affect):
    n = len(affect.splits["train"])
    P = masks.independent(n, affect.modality_names, {"acoustic": 0.2, "visual": 0.5, "lexical": 0.8}, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=64, patience=None)
    for kw in [{"kl": "as_printed"}, {"kl": "code"}, {"eta_update": "code"}, {"sample_at_eval": True}, {"xenc_input": "code"},
               {"mask_follows": "batch_position"}, {"empty_rows": "keep"}]:
        m = make_method("redcore", **kw).fit(affect, P, seed=0, cfg=cfg, device="cpu")
        assert torch.isfinite(m.predict(affect, "test")).all(), kw
    with pytest.raises(ValueError, match="unknown kl"):
        make_method("redcore", kl="half")


@pytest.mark.parametrize("name", ["mmin_lite", "cra", "amae_lite", "redcore"])
def test_three_modality_methods_predict_every_pattern_and_select_on_a_masked_validation_split(affect, tmp_path, name):
    spec = {"kind": "independent", "rates": {"acoustic": 0.5, "visual": 0.5, "lexical": 0.2}}
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    rec, m = run(affect, name, spec, 0, cfg, "cpu", records_dir=tmp_path, val_missing=spec)
    assert len(rec["metrics"]) == 7 and rec["identity"]["val_missing"] == spec
    assert set(rec["pooled_metrics"]) >= {"accuracy", "f1_weighted"}
    mean7 = sum(v["accuracy"] for v in rec["metrics"].values()) / 7
    assert abs(rec["pooled_metrics"]["accuracy"] - mean7) < 1e-6          # pooled accuracy = mean over patterns
    assert m.val_P.float().mean() < 1.0 if hasattr(m, "val_P") else True


def test_masked_validation_is_refused_by_a_method_that_cannot_use_it(affect):
    from dataclasses import dataclass

    from mmlib.methods import Method

    @dataclass(eq=False)
    class Plain(Method):                      # a method whose fit() knows nothing of a validation mask
        name: str = "plain"
        masked_validation = False             # ... says so

        def fit(self, data, presence, *, seed=0, cfg=None, device=None):
            return self

    spec = {"kind": "independent", "rates": {"acoustic": 0.5}}
    with pytest.raises(ValueError, match="cannot select on a masked validation split"):
        run(affect, Plain(), spec, 0, TrainConfig(epochs=1), "cpu", val_missing=spec)
    rec, _ = run(affect, "mvae", spec, 0, TrainConfig(epochs=1, patience=None), "cpu", val_missing=spec)
    assert rec["identity"]["val_missing"] == spec and len(rec["metrics"]) == 7


def test_run_grid_adds_pooled_rows(affect, tmp_path):
    spec = {"kind": "independent", "rates": {"acoustic": 0.5, "visual": 0.5, "lexical": 0.2}}
    df, _ = run_grid(affect, ["zp_concat"], {"s": spec}, [0, 1], TrainConfig(epochs=1, patience=None), "cpu",
                     store=tmp_path, validation="masked", pooled=True)
    assert set(df["test"]) == {"pooled"} | {"+".join(p) for p in masks.test_patterns(affect.modality_names)}


def test_batch_position_mask_moves_to_other_samples(affect, monkeypatch):
    """The code's mask follows the batch position: a sample's presence changes between epochs;
    the book's (IDT) mask stays with the sample."""
    from mmlib.methods.redcore import RedCore
    n = len(affect.splits["train"])
    P = masks.independent(n, affect.modality_names, {"acoustic": 0.5, "visual": 0.5, "lexical": 0.5}, seed=0)
    row_of = {int(i): k for k, i in enumerate(affect.splits["train"])}
    seen = []
    original = RedCore.losses

    def spy(self, model, idx, present, weight=None):
        seen.append((idx.clone(), present.clone()))
        return original(self, model, idx, present, weight)
    monkeypatch.setattr(RedCore, "losses", spy)
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    for follows, moved in [("sample", False), ("batch_position", True)]:
        seen.clear()
        make_method("redcore", mask_follows=follows, empty_rows="keep").fit(affect, P, seed=0, cfg=cfg, device="cpu")
        differs = any(not torch.equal(p, P[[row_of[int(i)] for i in idx]]) for idx, p in seen)
        assert differs == moved, follows


def test_redcore_beats_chance_on_gaussian():
    d = load_dataset("gaussian", preset="imbalanced", n=1500, seed=0)
    n = len(d.splits["train"])
    P = masks.independent(n, d.modality_names, {m: 0.3 for m in d.modality_names}, seed=0)
    m = make_method("redcore").fit(d, P, seed=0, cfg=TrainConfig(epochs=15, patience=None), device="cpu")
    acc = evaluate(m, d, "test")["+".join(d.modality_names)]["accuracy"]
    assert acc > 1.0 / d.n_classes + 0.2, acc


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", [("iemocap", {"fold": 1}), ("mosei", {"task": "3class"})])   # msp_improv: the iemocap reader
def test_chapter_runs_on_the_real_formats(tmp_path, name, opts):
    """`mmbook run 03_redcore --data-root ROOT -p dataset=...` on files in each real layout the
    chapter names: every test pattern is scored, with the modalities in the paper's order."""
    import pickle

    import papermill as pm
    from test_real_data import write_mmin, write_mmsa

    from mmlib import results, sweep
    root = tmp_path / name
    if name == "mosei":
        write_mmsa(root, name="mosei", sizes=(40, 16, 16))
        from mmlib.data.mosi import _mmsa_file
        f = root / _mmsa_file("mosei", False)
        raw = pickle.loads(f.read_bytes())
        for s in raw.values():                                  # MMSA's three classes, all present
            s["classification_labels"] = np.arange(len(s["id"])) % 3
        f.write_bytes(pickle.dumps(raw))
    else:
        write_mmin(root, fold=1, sizes=(48, 16, 16))
    pm.execute_notebook(str(sweep.ROOT / "notebooks/03_redcore.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        parameters={"dataset": name, "data_root": str(root), "data_options": opts, "page": False,
                                    "profile": "quick", "seeds": [0], "results_dir": str(tmp_path / "records"),
                                    "missing_rates": [0.5, 0.2, 0.5]}, cwd=str(sweep.ROOT), progress_bar=False)
    df = results.load_records(tmp_path / "records", "*.json")
    assert set(df["dataset"]) == {name} and {"redcore", "mmin_lite", "zp_concat"} <= set(df["method"])
    full = "audio+visual+text" if name == "mosei" else "acoustic+visual+lexical"     # A, V, L in the paper's order
    assert len(set(df["test"])) == 7 and full in set(df["test"])
    assert df["accuracy"].notna().all()
