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
