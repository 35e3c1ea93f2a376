import numpy as np
import pytest
import torch

from mmlib.data import MultimodalDataset, load_dataset


def test_avdigits_shapes_splits_and_balance(avdigits):
    d = avdigits
    assert d.modality_names == ["image", "audio"]
    assert d.modalities["image"].shape == (5000, 28, 28)
    assert d.modalities["audio"].shape == (5000, 20, 20)
    assert d.task == "multiclass" and d.n_classes == 10
    sizes = {s: len(i) for s, i in d.splits.items()}
    assert sizes == {"train": 3000, "val": 1000, "test": 1000}
    all_idx = torch.cat(list(d.splits.values()))
    assert len(torch.unique(all_idx)) == 5000                      # disjoint and covering
    for s, idx in d.splits.items():                                # stratified
        assert torch.bincount(d.y[idx], minlength=10).tolist() == [sizes[s] // 10] * 10
    assert 0 <= float(d.modalities["image"].min()) and float(d.modalities["image"].max()) <= 1
    assert torch.isfinite(d.modalities["audio"]).all()


def test_avdigits_audio_pairs_stay_in_their_split():
    z = np.load("data/avdigits/avdigits.npz")
    assert (z["audio_label"][z["pair"]] == z["label"]).all()       # same class
    assert (z["audio_split"][z["pair"]] == z["split"]).all()       # no test clip in training


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(FileNotFoundError, match="avdigits.npz"):
        load_dataset("avdigits", root=tmp_path)
    np.savez(tmp_path / "avdigits.npz", image=np.zeros((4, 28, 27)), audio=np.zeros((4, 20, 20)),
             label=np.zeros(4), split=np.zeros(4), pair=np.zeros(4))
    with pytest.raises(ValueError, match="'image' has per-sample shape"):
        load_dataset("avdigits", root=tmp_path)


def test_dataset_validation():
    x = {"a": torch.zeros(4, 2)}
    y = torch.zeros(4, dtype=torch.long)
    ok = {"train": torch.tensor([0, 1]), "val": torch.tensor([2]), "test": torch.tensor([3])}
    MultimodalDataset("t", x, y, "multiclass", ["0"], ok)
    with pytest.raises(ValueError, match="overlaps"):
        MultimodalDataset("t", x, y, "multiclass", ["0"], {**ok, "test": torch.tensor([1])})
    with pytest.raises(ValueError, match="3 samples but there are 4 labels"):
        MultimodalDataset("t", {"a": torch.zeros(3, 2)}, y, "multiclass", ["0"], ok)
    with pytest.raises(ValueError, match="task must be one of"):
        MultimodalDataset("t", x, y, "ranking", ["0"], ok)


@pytest.mark.parametrize("task", ["regression", "emotion"])
def test_affect_shapes_splits_and_labels(task):
    d = load_dataset("affect", task=task)
    assert d.modality_names == ["acoustic", "visual", "lexical"]
    assert d.modalities["acoustic"].shape[1:] == (50, 14) and d.modalities["visual"].shape[1:] == (30, 17)
    assert d.modalities["lexical"].shape[1:] == (384,)
    assert len(torch.unique(torch.cat(list(d.splits.values())))) == len(d) == 2400
    assert all(torch.isfinite(x).all() for x in d.modalities.values())
    if task == "regression":
        assert d.task == "regression" and float(d.y.min()) >= -3 and float(d.y.max()) <= 3
        assert torch.allclose(d.y * 3, (d.y * 3).round(), atol=1e-4)       # MOSI's 1/3 steps
    else:
        assert d.class_names == ["neutral", "happy", "sad", "angry"]
        for idx in d.splits.values():                                       # every class in every split
            assert set(d.y[idx].tolist()) == {0, 1, 2, 3}


def test_affect_labels_follow_the_latent_state_and_voices_do_not_cross_splits():
    import sys
    sys.path.insert(0, "data/affect")
    from build_affect import emotion_of
    z = np.load("data/affect/affect.npz")
    assert (emotion_of(z["valence"], z["arousal"]) == z["emotion"]).all()
    assert np.allclose(z["score"], np.clip(np.round(z["valence"] * 3) / 3, -3, 3))
    variant = np.array([v.split("+")[1] for v in z["voice"]])
    pools = [set(variant[z["split"] == s]) for s in range(3)]
    assert not (pools[0] & pools[1]) and not (pools[0] & pools[2]) and not (pools[1] & pools[2])


def test_affect_bad_input(tmp_path):
    with pytest.raises(ValueError, match="task must be"):
        load_dataset("affect", task="ranking")
    with pytest.raises(FileNotFoundError, match="affect.npz"):
        load_dataset("affect", root=tmp_path)
    np.savez(tmp_path / "affect.npz", lexical=np.zeros((4, 300)), acoustic=np.zeros((4, 50, 14)),
             visual=np.zeros((4, 30, 17)))
    with pytest.raises(ValueError, match="'lexical' has per-sample shape"):
        load_dataset("affect", root=tmp_path)


def test_affect_simulated_visual_is_deterministic_and_informative():
    import sys
    sys.path.insert(0, "data/affect")
    from build_affect import visual_features
    v, a = np.linspace(-3, 3, 2000), np.tile([-0.8, 0.8], 1000)
    x1 = visual_features(v, a, np.random.default_rng(0))
    assert np.array_equal(x1, visual_features(v, a, np.random.default_rng(0)))
    assert not np.array_equal(x1, visual_features(v, a, np.random.default_rng(1)))
    smile = x1[:, :, 0].mean(1)                                   # AU12 follows positive valence
    assert np.corrcoef(np.clip(v, 0, None), smile)[0, 1] > 0.3
    assert abs(np.corrcoef(v, x1[:, :, 10].mean(1))[0, 1]) < 0.1   # a distractor unit does not


def test_affect_every_modality_carries_emotion_above_the_floor():
    """A linear probe (logistic regression on each modality's mean and std over frames, its
    strength chosen on validation) beats the majority class on the test split for every
    modality, in the order of the real corpora: lexical > acoustic > visual."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    z = np.load("data/affect/affect.npz")
    y, split = z["emotion"], z["split"]
    floor = np.bincount(y[split == 2]).max() / (split == 2).sum()
    acc = {}
    for m in ["lexical", "acoustic", "visual"]:
        x = z[m].astype(np.float32)
        x = np.concatenate([x.mean(1), x.std(1)], 1) if x.ndim == 3 else x
        sc = StandardScaler().fit(x[split == 0])
        fits = [LogisticRegression(max_iter=3000, C=c).fit(sc.transform(x[split == 0]), y[split == 0])
                for c in [0.001, 0.01, 0.1, 1.0]]
        best = max(fits, key=lambda f: (f.predict(sc.transform(x[split == 1])) == y[split == 1]).mean())
        acc[m] = (best.predict(sc.transform(x[split == 2])) == y[split == 2]).mean()
    assert acc["lexical"] > acc["acoustic"] > acc["visual"] > floor + 0.03, (acc, floor)


def test_affect_sentences_are_fit_for_a_classroom():
    import sys
    sys.path.insert(0, "data/affect")
    from build_affect import BLOCKED_ROOTS
    words = " ".join(np.load("data/affect/affect.npz")["text"]).split()
    assert not [w for w in words if any(r in w for r in BLOCKED_ROOTS)]
