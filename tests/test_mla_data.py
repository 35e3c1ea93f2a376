"""Readers for MLA's datasets in the authors' layouts and for precomputed feature arrays:
fixtures written in the exact layouts, broken variants with messages that name the problem."""
import numpy as np
import pytest
import torch

from mmlib.cli import main as cli
from mmlib.data import check_folder, load_dataset
from mmlib.data.checks import DataFolderError

CREMA = ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad"]


def _jpg(path, seed, size=(40, 30)):
    from PIL import Image
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_crema_d(root, n=(12, 6), frames=5, bins=16):
    """CREMA-D as MLA's code reads it: list files, class list, fbank .npy, 1-fps frame folders."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "stat_cre.txt").write_text("\n".join(CREMA) + "\n")
    for split, k in zip(("train", "test"), n):
        lines = []
        for i in range(k):
            clip = f"10{i:02d}_IEO_{split[:2].upper()}_XX"
            lines.append(f"{clip}.flv {CREMA[i % 6]}")
            a = root / "audio" / f"{split}_fbank" / f"{clip}.npy"
            a.parent.mkdir(parents=True, exist_ok=True)
            np.save(a, rng.normal(size=(40 + i, bins)).astype(np.float32))
            for f in range(frames):
                _jpg(root / "visual" / f"{split}_imgs" / "Image-01-FPS" / clip / f"frame_{f:05d}.jpg", i * 10 + f)
        (root / f"my_{split}_cre.txt").write_text("\n".join(lines) + "\n")


def write_food101(root, name="food", classes=("apple_pie", "pizza", "sushi"), n=(9, 6), tokens=24):
    """UPMC-Food-101 / MVSA as MLA's code reads them: "<id>.jpg <label>" lists, images, BERT token ids."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"stat_{name}.txt").write_text("\n".join(classes) + "\n")
    for split, k in zip(("train", "test"), n):
        lines = []
        for i in range(k):
            sid = f"{classes[i % len(classes)]}_{split}_{i}"
            lines.append(f"{sid}.jpg {classes[i % len(classes)]}")
            _jpg(root / "visual" / f"{split}_imgs" / f"{sid}.jpg", 100 + i)
            t = root / "text_token" / f"{split}_token"
            t.mkdir(parents=True, exist_ok=True)
            ids = rng.integers(1000, 30000, tokens)
            pm = np.zeros(tokens, dtype=np.int64)
            pm[tokens // 2 + i % 4:] = 1
            np.save(t / f"{sid}_token.npy", ids)
            np.save(t / f"{sid}_pm.npy", pm)
        (root / f"my_{split}_{name}.txt").write_text("\n".join(lines) + "\n")


def write_features(root, n=(20, 6, 8), classes=3, seq=True):
    rng = np.random.default_rng(2)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(f"c{k}" for k in range(classes)) + "\n")
    for split, k in zip(("train", "val", "test"), n):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "labels.npy", np.arange(k) % classes)
        np.save(d / "clip_image.npy", rng.normal(size=(k, 12)).astype(np.float32))
        if seq:
            np.save(d / "wav2vec.npy", rng.normal(size=(k, 7, 5)).astype(np.float32))
            np.save(d / "wav2vec_lengths.npy", 1 + np.arange(k) % 7)


def test_crema_d_layout(tmp_path):
    write_crema_d(tmp_path / "cre")
    assert check_folder("crema_d", tmp_path / "cre") == []
    d = load_dataset("crema_d", tmp_path / "cre")
    assert d.modality_names == ["audio", "visual"] and d.class_names == sorted(CREMA)
    assert tuple(d.modalities["audio"].shape) == (18, 64, 16) and tuple(d.modalities["visual"].shape) == (18, 3 * 32 * 32)
    assert len(d.splits["test"]) == 6 and len(d.splits["val"]) == 1 and len(d.splits["train"]) == 11
    # labels follow the sorted class list, as the code's self.classes.index(label)
    assert int(d.y[d.splits["test"][0]]) == sorted(CREMA).index(CREMA[0])
    assert float(d.modalities["visual"].max()) <= 1.0 and torch.isfinite(d.modalities["audio"]).all()


def test_kinetics_sounds_layout(tmp_path):
    """Kinetics-Sounds: the same audio-video layout under kinsound/, ".mp4" lists, and a class file
    whose useful lines are "name > ... > ..." (the code keeps the name of those lines only)."""
    write_crema_d(tmp_path / "tmp")
    root = tmp_path / "ks"
    (root / "kinsound").mkdir(parents=True)
    for sub in ("audio", "visual"):
        (tmp_path / "tmp" / sub).rename(root / "kinsound" / sub)
    (root / "stat_ks.txt").write_text("# header\n" + "".join(f"{c} > x > y\n" for c in CREMA))
    for split in ("train", "test"):
        text = (tmp_path / "tmp" / f"my_{split}_cre.txt").read_text().replace(".flv ", ".mp4 ")
        (root / f"my_{split}_ks.txt").write_text(text)
    assert check_folder("kinetics_sounds", root) == []
    d = load_dataset("kinetics_sounds", root)
    assert d.class_names == sorted(CREMA) and len(d) == 18


def test_food101_and_mvsa_layouts(tmp_path):
    write_food101(tmp_path / "food")
    d = load_dataset("food101", tmp_path / "food", text_bins=64)
    assert d.modality_names == ["image", "text"] and tuple(d.modalities["text"].shape) == (15, 64)
    assert tuple(d.modalities["image"].shape) == (15, 32 * 32)
    # the bag of tokens counts only non-padding positions
    assert float(torch.expm1(d.modalities["text"][0]).sum()) == pytest.approx(12.0)
    write_food101(tmp_path / "mvsa", name="mvsa", classes=("negative", "neutral", "positive"))
    assert load_dataset("mvsa", tmp_path / "mvsa").class_names == ["negative", "neutral", "positive"]


def test_broken_layouts_name_the_problem(tmp_path):
    root = tmp_path / "cre"
    write_crema_d(root)
    clip = "1001_IEO_TR_XX"
    (root / "audio" / "train_fbank" / f"{clip}.npy").unlink()
    probs = check_folder("crema_d", root)
    assert any("1 listed sample(s) without their files" in p and f"{clip}.npy" in p for p in probs)
    with pytest.raises(DataFolderError, match="missing_files='drop'"):
        load_dataset("crema_d", root)
    d = load_dataset("crema_d", root, missing_files="drop")               # the code's behaviour, counted
    assert d.info["dropped"] == {"train": 1, "test": 0} and len(d) == 17
    with open(root / "my_test_cre.txt", "a") as f:
        f.write("1099_XXX_XX_XX.flv Surprise\n")
    assert any("label 'Surprise' is not in stat_cre.txt" in p for p in check_folder("crema_d", root, missing_files="drop"))
    (root / "stat_cre.txt").unlink()
    assert "stat_cre.txt: missing file" in check_folder("crema_d", root)
    food = tmp_path / "food"
    write_food101(food)
    first = (food / "my_train_food.txt").read_text().split(".jpg")[0]           # the check reads the first sample
    (food / "text_token" / "train_token" / f"{first}_token.npy").write_bytes(b"not an array")
    probs = check_folder("food101", food)
    assert any(p.startswith(f"text_token/train_token/{first}_token.npy: not a readable .npy file (") for p in probs)
    with pytest.raises(DataFolderError, match="not a readable .npy file"):
        load_dataset("food101", food)


def test_precomputed_features(tmp_path):
    write_features(tmp_path / "f")
    assert check_folder("features", tmp_path / "f") == []
    d = load_dataset("features", tmp_path / "f")
    assert d.modality_names == ["clip_image", "wav2vec"] and d.class_names == ["c0", "c1", "c2"]
    assert tuple(d.modalities["wav2vec"].shape) == (34, 7, 5) and d.lengths["wav2vec"].max() == 7
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [20, 6, 8]
    d2 = load_dataset("features", tmp_path / "f", modalities=["wav2vec", "clip_image"])
    assert d2.modality_names == ["wav2vec", "clip_image"]
    import shutil
    shutil.rmtree(tmp_path / "f" / "val")                                  # no val/: a seeded 10 % of train
    d3 = load_dataset("features", tmp_path / "f")
    assert len(d3.splits["val"]) == 2 and len(d3.splits["train"]) == 18


def test_broken_features_name_file_and_cause(tmp_path):
    root = tmp_path / "f"
    write_features(root)
    np.save(root / "test" / "labels.npy", np.array([0, 1, 5, 0, 1, 2, 0, 1]))
    (root / "val" / "clip_image.npy").write_bytes(b"garbage")
    np.save(root / "train" / "wav2vec_lengths.npy", np.full(20, 9))
    probs = check_folder("features", root)
    assert any("test/labels.npy: class ids 0..5 outside 0..2" in p for p in probs)
    assert any(p.startswith("val/clip_image.npy: not a readable .npy file (") for p in probs)
    assert any("train/wav2vec_lengths.npy: lengths must be in 1..7" in p for p in probs)
    with pytest.raises(DataFolderError, match="3 problem"):
        load_dataset("features", root)
    assert any("modalities=['audio']" in p for p in check_folder("features", root, modalities=["audio"]))


def test_data_check_command_on_the_new_readers(tmp_path, capsys):
    write_crema_d(tmp_path / "cre")
    assert cli(["data", "check", "crema_d", str(tmp_path / "cre")]) == 0
    assert "looks right" in capsys.readouterr().out
    assert cli(["data", "check", "kinetics_sounds", str(tmp_path / "cre")]) == 1
    assert "stat_ks.txt: missing file" in capsys.readouterr().out


@pytest.mark.parametrize("name,writer", [("crema_d", write_crema_d), ("food101", write_food101),
                                         ("features", write_features)])
def test_mla_and_its_baselines_run_on_each_reader(tmp_path, name, writer):
    from mmlib.experiment import run
    from mmlib.train import TrainConfig
    writer(tmp_path / name)
    data = load_dataset(name, tmp_path / name)
    cfg = TrainConfig(epochs=1, patience=None, batch_size=8)
    full = "+".join(data.modality_names)
    for method in ["mla", "concat_linear", "qmf", "ogm_ge"]:
        rec, _ = run(data, method, {"kind": "cpm", "rate": 0.3}, 0, cfg, "cpu",
                     method_kwargs={} if method == "mla" else {"backbone": "mlp"})
        assert np.isfinite(rec["metrics"][full]["accuracy"]), method


def test_a_fusion_on_one_modality_says_it_needs_two(tmp_path):
    from mmlib.models import BiGatedFusion, FiLMFusion
    write_features(tmp_path / "f", seq=False)
    d = load_dataset("features", tmp_path / "f")
    with pytest.raises(ValueError, match=r"this chapter fuses.*at least 2 modalities; 'features' has 1"):
        d.need_modalities(2, "this chapter fuses")
    for fusion in (BiGatedFusion, FiLMFusion):
        with pytest.raises(ValueError, match="needs at least two modalities, the data gives 1"):
            fusion([8], 3)
