import pytest
import torch

from mmlib import masks, results
from mmlib.experiment import evaluate, pack_presence, run, unpack_presence
from mmlib.methods import decide, make_method
from mmlib.models import MultimodalNet
from mmlib.train import TrainConfig, get_device

QUICK = TrainConfig(epochs=3, batch_size=128, patience=None)


def test_zero_padding_beats_chance_by_a_clear_margin(avdigits):
    n = len(avdigits.splits["train"])
    P = masks.independent(n, avdigits.modality_names, {"audio": 0.5}, seed=0)
    m = make_method("zp_concat").fit(avdigits, P, seed=0, cfg=QUICK, device="cpu")
    res = evaluate(m, avdigits, "test")
    assert set(res) == {"image", "audio", "image+audio"}
    assert res["image+audio"]["accuracy"] > 0.5            # chance is 0.1
    assert res["image+audio"]["accuracy"] > res["audio"]["accuracy"]
    # selection used validation: the history's best val score is what was kept
    assert len(m.history) == 3 and all("val_score" in h for h in m.history)


def test_runs_are_deterministic_on_cpu(avdigits):
    n = len(avdigits.splits["train"])
    P = masks.independent(n, avdigits.modality_names, {"audio": 0.8}, seed=1)
    cfg = TrainConfig(epochs=1, batch_size=256, patience=None)
    a = make_method("late_fusion").fit(avdigits, P, seed=5, cfg=cfg, device="cpu").predict(avdigits, "val")
    b = make_method("late_fusion").fit(avdigits, P, seed=5, cfg=cfg, device="cpu").predict(avdigits, "val")
    c = make_method("late_fusion").fit(avdigits, P, seed=6, cfg=cfg, device="cpu").predict(avdigits, "val")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_lower_bound_uses_only_the_always_present_modality(avdigits):
    n = len(avdigits.splits["train"])
    P = masks.independent(n, avdigits.modality_names, {"audio": 0.7}, seed=0)
    m = make_method("lower_bound").fit(avdigits, P, seed=0, cfg=TrainConfig(epochs=1, patience=None), device="cpu")
    assert m.used == ["image"]
    # its prediction cannot depend on the audio
    full = m.predict(avdigits, "test")
    img = m.predict(avdigits, "test", masks.pattern(1000, avdigits.modality_names, ["image"]))
    assert torch.equal(full, img)
    P2 = masks.independent(n, avdigits.modality_names, {"image": 0.1, "audio": 0.1}, seed=0)
    with pytest.raises(ValueError, match="no modality is present in every training sample"):
        make_method("lower_bound").fit(avdigits, P2, cfg=QUICK, device="cpu")


def test_zero_padding_really_zeroes_missing_inputs():
    torch.manual_seed(0)
    net = MultimodalNet(["a", "b"], {"a": (5,), "b": (3,)}, 2).eval()
    xs = {"a": torch.randn(4, 5), "b": torch.randn(4, 3)}
    p = torch.tensor([[1, 0]] * 4, dtype=torch.bool)
    out1 = net(xs, p)
    out2 = net({"a": xs["a"], "b": torch.randn(4, 3) * 100}, p)
    assert torch.allclose(out1, out2)
    assert not torch.allclose(out1, net(xs, torch.ones(4, 2, dtype=torch.bool)))


def test_errors_name_the_problem(avdigits):
    with pytest.raises(ValueError, match="unknown method 'smiley'"):
        make_method("smiley")
    with pytest.raises(ValueError, match="unknown fusion"):
        MultimodalNet(["a"], {"a": (3,)}, 2, fusion="product")
    m = make_method("zp_sum")
    with pytest.raises(ValueError, match="presence for split 'train' must have shape"):
        m.fit(avdigits, torch.ones(10, 2, dtype=torch.bool), cfg=QUICK, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            get_device("cuda")


def test_presence_round_trip():
    p = masks.random_drop(1001, ["a", "b", "c"], 0.4, seed=0)
    assert torch.equal(unpack_presence(pack_presence(p)), p)


def test_run_writes_and_reuses_record(avdigits, tmp_path):
    spec = {"kind": "independent", "rates": {"audio": 0.9}}
    cfg = TrainConfig(epochs=1, batch_size=256, patience=None)
    rec, m = run(avdigits, "zp_sum", spec, 0, cfg, "cpu", records_dir=tmp_path, profile="test")
    assert m is not None and len(list(tmp_path.glob("*.json"))) == 1
    assert rec["presence_summary"]["present_fraction"]["audio"] == pytest.approx(0.1)
    assert torch.equal(unpack_presence(rec["presence"]),
                       masks.from_spec(spec, 3000, avdigits.modality_names, 0))
    prov = rec["provenance"]
    assert prov["cores"] >= 1 and prov["cpu"] and prov["ram_gib"] > 0 and prov["gpu"] is None
    assert prov["utc_start"] <= prov["utc_end"] and prov["peak_rss_mib"] > 0
    assert prov["parameters"] == sum(p.numel() for p in m.model.parameters())
    assert "git_commit" in prov and "git_dirty" in prov
    again, m2 = run(avdigits, "zp_sum", spec, 0, cfg, "cpu", records_dir=tmp_path, profile="test")
    assert m2 is None and again["metrics"] == rec["metrics"]
    assert decide("multiclass", torch.tensor([[0.1, 0.9]])).tolist() == [1]


def test_records_of_different_data_never_mix(tmp_path):
    from mmlib.data import load_dataset
    cfg = TrainConfig(epochs=1, batch_size=256, patience=None)
    a = load_dataset("gaussian", preset="balanced", n=300)
    b = load_dataset("gaussian", preset="dominant", n=300)
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() == load_dataset("gaussian", n=300).fingerprint()
    run(a, "late_fusion", {"kind": "full"}, 0, cfg, "cpu", records_dir=tmp_path)
    _, m = run(b, "late_fusion", {"kind": "full"}, 0, cfg, "cpu", records_dir=tmp_path)
    assert m is not None and len(list(tmp_path.glob("*.json"))) == 2     # not reused across presets


def test_store_keeps_one_fit_per_identity(avdigits, tmp_path):
    """The lower bound ignores the audio, so its fit at 50 % and 90 % audio missing is one
    record; zero padding uses the audio, so it gets one record per rate."""
    small = avdigits.with_train_subset(200)
    cfg = TrainConfig(epochs=1, batch_size=256, patience=None)
    specs = [{"kind": "independent", "rates": {"audio": r}} for r in (0.5, 0.9)]
    _, first = run(small, "lower_bound", specs[0], 0, cfg, "cpu", records_dir=tmp_path)
    rec, again = run(small, "lower_bound", specs[1], 0, cfg, "cpu", records_dir=tmp_path)
    assert first is not None and again is None                     # reused, not refitted
    assert rec["missing"] == specs[0]                              # the record says what it ran with
    for spec in specs:
        run(small, "zp_concat", spec, 0, cfg, "cpu", records_dir=tmp_path)
    assert len(list(tmp_path.glob("lower_bound-*.json"))) == 1
    assert len(list(tmp_path.glob("zp_concat-*.json"))) == 2
    df = results.load_records(tmp_path)
    assert set(df["missing.rates.audio"]) == {0.5, 0.9} and df["best_epoch"].notna().all()


def test_run_grid_names_runs_by_registry_key_and_counts_shared_fits(avdigits, tmp_path):
    """A run's method is its registry key, its variant the entry's options; plateau() counts
    runs and the distinct fits behind them (the lower bound: one per seed for two rates)."""
    from mmlib.experiment import plateau, run_grid
    small = avdigits.with_train_subset(200)
    cfg = TrainConfig(epochs=2, batch_size=256, patience=1)
    settings = {f"{r}": {"kind": "independent", "rates": {"audio": r}} for r in (0.5, 0.9)}
    df, _ = run_grid(small, ["lower_bound", ("unimodal", {"use": ["audio"], "backbone": "mlp"})], settings, [0, 1],
                     cfg, "cpu", store=tmp_path, batch=False)
    assert set(zip(df["method"], df["variant"])) == {("lower_bound", ""), ("unimodal", "use=audio")}
    assert set(df[df["method"] == "unimodal"]["config.use"]) == {"audio"}
    pl = plateau(df)
    assert pl.loc["Lower-Bound", "runs"] == 4 and pl.loc["Lower-Bound", "fits"] == 2
    assert pl.loc["audio only", "runs"] == 4 and pl.loc["audio only", "fits"] == 4   # it uses the audio mask
    from mmlib.experiment import plateau_table
    shown = plateau_table(df, order=["audio only", "Lower-Bound", "absent"], runs="rate x seed")
    assert list(shown.index) == ["audio only", "Lower-Bound"] and shown.columns[0] == "runs (rate x seed)"
    assert "epoch ceiling" in shown.columns and shown.loc["Lower-Bound", "distinct fits"] == 2


def test_batched_seeds_equal_sequential_fits(avdigits):
    """Seeds trained as one batch (vmap over stacked weights) give each seed what its own
    fit gives: the same validation curve, the same early stop, predictions equal to rounding."""
    small = avdigits.with_train_subset(400)
    n = len(small.splits["train"])
    cfg = TrainConfig(epochs=4, batch_size=64, patience=1)
    seeds = [0, 1, 2]
    nv = len(small.splits["val"])
    for name, masked in [("zp_concat", False), ("late_fusion", False), ("zp_concat", True)]:
        Ps = [masks.independent(n, small.modality_names, {"audio": 0.7}, seed=s) for s in seeds]
        # masked: each seed selects on its own masked validation split
        VPs = [masks.independent(nv, small.modality_names, {"audio": 0.7}, seed=s + 50) for s in seeds] if masked else None
        seq = [make_method(name, backbone="mlp").fit(small, P, seed=s, cfg=cfg, device="cpu",
                                                     val_presence=None if VPs is None else VPs[k])
               for k, (P, s) in enumerate(zip(Ps, seeds))]
        bat = make_method(name, backbone="mlp").fit_seeds(small, Ps, seeds, cfg=cfg, device="cpu", val_presences=VPs)
        for a, b in zip(seq, bat):
            assert [h["val_score"] for h in a.history] == pytest.approx([h["val_score"] for h in b.history], abs=1e-6)
            assert len(a.history) == len(b.history)
            pa, pb = a.predict(small, "test"), b.predict(small, "test")
            assert torch.allclose(pa, pb, atol=1e-4)
            assert torch.equal(pa.argmax(1), pb.argmax(1))
    assert not make_method("zp_concat", backbone="cnn").batchable()        # BatchNorm: one by one


def test_run_grid_batches_seeds_and_writes_the_same_records(avdigits, tmp_path):
    from mmlib.experiment import run_grid
    small = avdigits.with_train_subset(300)
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    settings = {"0.7": {"kind": "independent", "rates": {"audio": 0.7}}}
    methods = [("zp_concat", {"backbone": "mlp"})]
    a, _ = run_grid(small, methods, settings, [0, 1], cfg, "cpu", store=tmp_path / "a")
    b, _ = run_grid(small, methods, settings, [0, 1], cfg, "cpu", store=tmp_path / "b", batch=False)
    recs = [results.read_record(p) for p in sorted((tmp_path / "a").glob("*.json"))]
    assert [r["timings"]["batched_seeds"] for r in recs] == [2, 2]
    a, b = (f.sort_values(["seed", "test"])["accuracy"].to_numpy() for f in (a, b))
    assert a == pytest.approx(b, abs=2e-3)
    again, _ = run_grid(small, methods, settings, [0, 1], cfg, "cpu", store=tmp_path / "a")
    assert again["reused"].all()
    # a masked validation split: batched too, and the same records as one by one
    a, _ = run_grid(small, methods, settings, [0, 1], cfg, "cpu", store=tmp_path / "c", validation="masked")
    b, _ = run_grid(small, methods, settings, [0, 1], cfg, "cpu", store=tmp_path / "d", validation="masked", batch=False)
    assert [results.read_record(p)["timings"]["batched_seeds"] for p in sorted((tmp_path / "c").glob("*.json"))] == [2, 2]
    a, b = (f.sort_values(["seed", "test"])["accuracy"].to_numpy() for f in (a, b))
    assert a == pytest.approx(b, abs=2e-3)


def test_members_with_different_row_counts_train_as_one_ensemble(avdigits, tmp_path):
    """A random drop gives each seed its own count of usable rows, and two settings differ more:
    the run's (setting, seed) pairs still train as one ensemble (padded batches), and each
    record equals the fit of that member alone, to rounding."""
    from mmlib.experiment import run_grid
    small = avdigits.with_train_subset(200)
    cfg = TrainConfig(epochs=3, batch_size=64, patience=None)
    settings = {"drop": {"kind": "random_drop", "rate": 0.5}, "0.7": {"kind": "independent", "rates": {"audio": 0.7}}}
    df, _ = run_grid(small, [("zp_concat", {"backbone": "mlp"})], settings, [0, 1, 2], cfg, "cpu", store=tmp_path)
    assert sorted(df["seed"].unique()) == [0, 1, 2] and df["setting"].nunique() == 2
    recs = [results.read_record(p) for p in tmp_path.glob("*.json")]
    assert len(recs) == 6 and all(r["timings"]["batched_seeds"] == 6 for r in recs)
    single, _ = run_grid(small, [("zp_concat", {"backbone": "mlp"})], settings, [0, 1, 2], cfg, "cpu",
                         store=tmp_path / "single", batch=False)
    key = ["setting", "seed", "test"]
    a, b = df.sort_values(key).reset_index(drop=True), single.sort_values(key).reset_index(drop=True)
    assert (a[key] == b[key]).all().all()
    assert (a["best_epoch"] == b["best_epoch"]).all()
    assert (a["accuracy"] - b["accuracy"]).abs().max() <= 1e-3


def test_maxpool_by_phases_equals_aten_in_values_and_gradients():
    """The CNNs' 2x2 max pooling (the maximum of four strided phases) gives aten's values and
    routes gradients to the same (first) maximum, ties and odd sizes included, to second order."""
    import torch.nn.functional as F
    from torch.func import grad
    from mmlib.models import _MaxPool2x2
    torch.manual_seed(0)
    for shape in [(4, 6, 28, 28), (4, 16, 10, 10), (3, 2, 7, 9)]:
        x = torch.randn(shape)
        x[..., :2, :2] = 1.0                                        # a tie inside a window
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = F.max_pool2d(a, 2), _MaxPool2x2.apply(b)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
    w, x = torch.randn(6, 1, 5, 5), torch.randn(2, 1, 28, 28)

    def second(pool):
        def loss(w):
            return (pool(F.conv2d(x, w, padding=2)) ** 2).sum()
        return grad(lambda w: (grad(loss)(w) ** 2).sum())(w)
    assert torch.equal(second(lambda t: F.max_pool2d(t, 2)), second(_MaxPool2x2.apply))


def test_no_early_stop_before_min_epochs_and_old_identities_unchanged():
    from mmlib.train import Checkpoint
    k = Checkpoint(patience=2, min_epochs=6)
    stops = [k.update(e, 0.5 if e == 0 else 0.4, dict) for e in range(8)]
    assert stops == [False] * 5 + [True, True, True]            # patience fires at epoch 2, held until epoch 5
    assert "min_epochs" not in TrainConfig().to_dict() and TrainConfig(min_epochs=3).to_dict()["min_epochs"] == 3


def test_a_kept_model_is_fitted_on_its_own_and_the_other_seeds_as_a_batch(avdigits, tmp_path):
    """run_grid(keep=...) returns the first seed's model: that seed is fitted once, alone (its record is that
    fit's), and the other seeds as one batch."""
    from mmlib.experiment import run_grid
    small = avdigits.with_train_subset(300)
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    settings = {"0.7": {"kind": "independent", "rates": {"audio": 0.7}}}
    f, fitted = run_grid(small, [("zp_concat", {"backbone": "mlp"})], settings, [0, 1, 2], cfg, "cpu",
                         store=tmp_path, keep=[("zp_concat", "0.7")])
    assert ("zp_concat", "0.7") in fitted
    batched = {r["identity"]["seed"]: r["timings"]["batched_seeds"] for r in map(results.read_record, tmp_path.glob("*.json"))}
    assert batched == {0: 1, 1: 2, 2: 2}


def test_a_batch_with_a_record_missing_is_fitted_whole(avdigits, tmp_path):
    """Another grid run writing the same identities, or a killed run, can leave some of a
    batch's records: the missing ones are still fitted as members of the whole batch, never
    alone, so the store ends with the same records whatever the timing (batched and single
    fits agree only to rounding), and the records already there are not rewritten."""
    from mmlib.experiment import fit_seeds_batched
    small = avdigits.with_train_subset(300)
    cfg = TrainConfig(epochs=2, batch_size=64, patience=None)
    spec = {"kind": "independent", "rates": {"audio": 0.7}}
    kw = {"backbone": "mlp"}
    assert fit_seeds_batched(small, "zp_concat", kw, spec, [0, 1, 2], cfg, "cpu", tmp_path) == 3
    first = {p.name: results.read_record(p) for p in tmp_path.glob("*.json")}
    lost = next(n for n, r in first.items() if r["identity"]["seed"] == 1)
    (tmp_path / lost).unlink()
    kept_mtime = {n: (tmp_path / n).stat().st_mtime_ns for n in first if n != lost}
    assert fit_seeds_batched(small, "zp_concat", kw, spec, [0, 1, 2], cfg, "cpu", tmp_path) == 1
    again = results.read_record(tmp_path / lost)
    assert again["metrics"] == first[lost]["metrics"] and again["timings"]["batched_seeds"] == 3
    assert {n: (tmp_path / n).stat().st_mtime_ns for n in kept_mtime} == kept_mtime
    assert fit_seeds_batched(small, "zp_concat", kw, spec, [0, 1, 2], cfg, "cpu", tmp_path) == 0
    (tmp_path / lost).write_text("")              # a 0-byte record is no record: refitted with its batch, as lost
    with pytest.warns(UserWarning, match="not a readable record"):
        assert fit_seeds_batched(small, "zp_concat", kw, spec, [0, 1, 2], cfg, "cpu", tmp_path) == 1
    assert results.read_record(tmp_path / lost)["metrics"] == first[lost]["metrics"]


def test_a_kept_model_is_the_entry_the_table_shows(avdigits, tmp_path):
    """Figures select their models by the tables' identity: with several variants of one method in
    a grid, keep names the variant (its label), and a key alone is refused as ambiguous."""
    import pytest
    from mmlib.experiment import run_grid
    small = avdigits.with_train_subset(200)
    methods = [("unimodal", {"backbone": "mlp", "use": [u]}) for u in ("image", "audio")]
    spec = {"0.5": {"kind": "independent", "rates": {"audio": 0.5}}}
    cfg = TrainConfig(epochs=1, patience=None)
    with pytest.raises(ValueError, match="ambiguous.*use=audio"):
        run_grid(small, methods, spec, [0], cfg, "cpu", store=tmp_path, keep=[("unimodal", "0.5")])
    _, fitted = run_grid(small, methods, spec, [0], cfg, "cpu", store=tmp_path, keep=[("unimodal", "use=audio", "0.5")])
    assert list(fitted) == [("unimodal", "use=audio", "0.5")] and fitted[("unimodal", "use=audio", "0.5")].use == ["audio"]
