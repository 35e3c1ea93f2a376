"""Every real-format reader on a tiny folder written here in the exact real schema (same file
names, keys, dtypes and per-sample dimensions), and on broken copies of it: each problem
must be named (file, key, shape or values) by both the loader and ``mmbook data check``."""
import pickle
import shutil

import numpy as np
import pytest
import torch

from mmlib.cli import main as cli
from mmlib.data import check_folder, load_dataset
from mmlib.data.checks import DataFolderError

h5py = pytest.importorskip("h5py")
rng = np.random.default_rng(0)


# ----------------------------------------------------------------------------- writers
def write_avmnist(root, n_train=24, n_test=6):
    (root / "image").mkdir(parents=True)
    (root / "audio").mkdir()
    for s, n in (("train", n_train), ("test", n_test)):
        np.save(root / f"image/{s}_data.npy", rng.integers(0, 256, (n, 784)).astype(np.uint8))
        np.save(root / f"audio/{s}_data.npy", rng.integers(0, 256, (n, 112, 112)).astype(np.uint8))
        np.save(root / f"{s}_labels.npy", np.arange(n) % 10)


def write_avmnist_smil(root, n_img=4, n_rec=(2, 3)):
    from PIL import Image
    from scipy.io import wavfile
    for s, per in (("train", n_img), ("test", n_img)):
        for d in range(10):
            folder = root / "mnist" / s / str(d)
            folder.mkdir(parents=True)
            for i in range(per):
                Image.fromarray(rng.integers(0, 256, (28, 28)).astype(np.uint8)).save(folder / f"{i:05d}.png")
            sdir = root / "sound" / s / str(d)
            sdir.mkdir(parents=True)
            idx = range(n_rec[0]) if s == "test" else range(15, 15 + n_rec[1])   # index < 15: test sounds
            for spk in ("jackson", "theo"):
                for k in idx:
                    t = np.arange(4000) / 8000
                    w = (0.3 * np.sin(2 * np.pi * (200 + 50 * d) * t) * 32767).astype(np.int16)
                    wavfile.write(sdir / f"{d}_{spk}_{k}.wav", 8000, w)


def write_mosi_mfn(root, sizes=(8, 4, 5)):
    root.mkdir(parents=True, exist_ok=True)
    for s, n in zip(("train", "valid", "test"), sizes):
        with h5py.File(root / f"X_{s}.h5", "w") as f:
            f["data"] = rng.normal(size=(n, 20, 325)).astype(np.float32)
        with h5py.File(root / f"y_{s}.h5", "w") as f:
            f["data"] = rng.uniform(-3, 3, (n, 1)).astype(np.float32)


def write_mmsa(root, name="mosi", aligned=False, sizes=(6, 3, 4)):
    from mmlib.data.mosi import MMSA, _mmsa_file
    root.mkdir(parents=True, exist_ok=True)
    dt, da, dv = MMSA[name]["dims"]
    la, lv = (50, 50) if aligned else (60, 45)
    data = {}
    for s, n in zip(("train", "valid", "test"), sizes):
        audio = rng.normal(size=(n, la, da)).astype(np.float32)
        audio[0, -1, 0] = -np.inf                                  # MMSA's padding artefact, set to 0 on load
        data[s] = {"raw_text": ["a b"] * n, "text": rng.normal(size=(n, 50, dt)).astype(np.float32),
                   "text_bert": np.zeros((n, 3, 50)), "audio": audio,
                   "vision": rng.normal(size=(n, lv, dv)).astype(np.float32), "id": [f"v{i}" for i in range(n)],
                   "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
                   "classification_labels": np.zeros(n), "annotations": ["Neutral"] * n}
        if not aligned:
            data[s]["audio_lengths"] = [la - 5] * n
            data[s]["vision_lengths"] = [lv - 3] * n
    with open(root / _mmsa_file(name, aligned), "wb") as f:
        pickle.dump(data, f)


def write_mmin(root, fold=1, sizes=(6, 3, 3)):
    from mmlib.data.mmin import FEATURES
    names = {s: [f"Ses0{fold}_{s}_{i:03d}" for i in range(n)] for s, n in zip(("trn", "val", "tst"), sizes)}
    for rel, dim in FEATURES.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / rel, "w") as f:
            for s in names:
                for k, u in enumerate(names[s]):
                    f[u] = rng.normal(size=(3 + k % 4, dim)).astype(np.float32)
    with h5py.File(root / "A/comparE_mean_std.h5", "w") as f:
        f[f"{fold}/mean"] = np.full(130, 0.5, dtype=np.float32)
        f[f"{fold}/std"] = np.full(130, 2.0, dtype=np.float32)
    (root / f"target/{fold}").mkdir(parents=True)
    for s, us in names.items():
        np.save(root / f"target/{fold}/{s}_label.npy", np.eye(4)[np.arange(len(us)) % 4])
        np.save(root / f"target/{fold}/{s}_int2name.npy", np.array([[u.encode()] for u in us]))


def write_mmimdb(root, n=12):
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "multimodal_imdb.hdf5", "w") as f:
        f["features"] = rng.normal(size=(n, 300)).astype(np.float32)
        f["vgg_features"] = rng.normal(size=(n, 4096)).astype(np.float32)
        f["genres"] = (rng.random((n, 23)) < 0.2).astype(np.int8)
        f["imdb_ids"] = np.array([f"tt{i:07d}".encode() for i in range(n)])


# ------------------------------------------------------------------------------- tests
def _fails(name, root, match, **kw):
    with pytest.raises(DataFolderError, match=match):
        load_dataset(name, root, **kw)
    problems = check_folder(name, root, **kw)
    assert problems and any(__import__("re").search(match, p) for p in problems), problems


def test_avmnist_multibench(tmp_path):
    write_avmnist(tmp_path / "ok")
    d = load_dataset("avmnist", tmp_path / "ok")
    assert d.modalities["image"].shape == (30, 28, 28) and d.modalities["audio"].shape == (30, 112, 112)
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [22, 2, 6]     # last twelfth for validation
    assert float(d.modalities["image"].max()) <= 1.0 and d.y.tolist()[:3] == [0, 1, 2]
    assert check_folder("avmnist", tmp_path / "ok") == []
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ok", bad)
    (bad / "audio/test_data.npy").unlink()
    np.save(bad / "image/train_data.npy", np.zeros((24, 783), np.uint8))
    _fails("avmnist", bad, r"audio/test_data.npy: missing file")
    _fails("avmnist", bad, r"image/train_data.npy: shape \(24, 783\), expected \(24, 784\)")
    nan = tmp_path / "nan"
    shutil.copytree(tmp_path / "ok", nan)
    a = np.zeros((24, 112, 112), np.float32)
    a[3, 4, 5] = np.nan
    np.save(nan / "audio/train_data.npy", a)
    _fails("avmnist", nan, r"audio/train_data.npy: contains NaN")


def test_avmnist_smil_layout_and_mfcc(tmp_path):
    write_avmnist_smil(tmp_path / "ok")
    d = load_dataset("avmnist_smil", tmp_path / "ok", val_per_class=1)
    # train: min(4 images, 6 train recordings) pairs per digit, the last one held out; test: min(4, 4)
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [30, 10, 40]
    assert d.modalities["image"].shape == (80, 28, 28) and d.modalities["audio"].shape == (80, 20, 20)
    assert torch.isfinite(d.modalities["audio"]).all()
    # a 0.5 s clip at 8 kHz, decimated by 3: 1334 samples -> 1 + 1334 // 512 = 3 frames, the rest zero padding
    assert (d.modalities["audio"][:, :, 3:] == 0).all() and (d.modalities["audio"][:, :, :3] != 0).any()
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ok", bad)
    shutil.rmtree(bad / "sound/test/7")
    _fails("avmnist_smil", bad, r"sound/test/7/: no recordings")
    from PIL import Image
    odd = tmp_path / "odd"
    shutil.copytree(tmp_path / "ok", odd)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(odd / "mnist/train/3/00000.png")
    (odd / "sound/train/5/5_theo_15.wav").write_bytes(b"not a wav file")
    (odd / "sound/train/5/5_jackson_15.wav").write_bytes(b"not a wav file")
    _fails("avmnist_smil", odd, r"mnist/train/3/00000.png: size \(32, 32\), expected \(28, 28\)")
    _fails("avmnist_smil", odd, r"sound/train/5/5_jackson_15.wav: not a readable WAV")
    with pytest.raises(DataFolderError, match="5_theo_15.wav: not a readable WAV"):    # loading reads every file
        load_dataset("avmnist_smil", odd)


def test_smil_mfcc_matches_librosa():
    librosa = pytest.importorskip("librosa")
    from mmlib.data.avmnist import mel_filters, smil_mfcc
    w = np.random.default_rng(1).normal(size=8000).astype(np.float32) * 0.1
    assert np.allclose(mel_filters(8000), librosa.filters.mel(sr=8000, n_fft=2048), atol=1e-6)
    ref = librosa.feature.mfcc(y=w[::3], sr=8000)
    ours = smil_mfcc(w[::3])
    assert np.allclose(ours[:, :ref.shape[1]], ref, rtol=1e-3, atol=1e-2)


def test_mosi_mfn(tmp_path):
    write_mosi_mfn(tmp_path / "ok")
    d = load_dataset("mosi_mfn", tmp_path / "ok")
    assert {m: tuple(x.shape[1:]) for m, x in d.modalities.items()} == {"text": (20, 300), "audio": (20, 5),
                                                                         "visual": (20, 20)}
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [8, 4, 5]
    assert d.task == "multiclass" and d.class_names == ["negative", "non-negative"]
    r = load_dataset("mosi_mfn", tmp_path / "ok", task="regression")
    assert torch.equal(d.y, (r.y >= 0).long())
    seven = load_dataset("mosi_mfn", tmp_path / "ok", task="7class")
    assert torch.equal(seven.y, (r.y.clamp(-3, 3).round() + 3).long())
    with pytest.raises(ValueError, match="unknown task"):
        load_dataset("mosi_mfn", tmp_path / "ok", task="5class")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ok", bad)
    with h5py.File(bad / "X_valid.h5", "w") as f:
        f["features"] = np.zeros((4, 20, 325), np.float32)
    with h5py.File(bad / "X_test.h5", "w") as f:
        f["data"] = np.zeros((5, 20, 300), np.float32)
    _fails("mosi_mfn", bad, r"X_valid.h5: key 'data' is missing")
    (bad / "y_test.h5").unlink()
    with h5py.File(bad / "X_train.h5", "a") as f:
        f["data"][2, 3, 4] = np.nan
    _fails("mosi_mfn", bad, r"y_test.h5: missing file")
    _fails("mosi_mfn", bad, r"X_train.h5\['data'\]: contains NaN")
    _fails("mosi_mfn", bad, r"X_test.h5\['data'\]: shape \(5, 20, 300\), expected \(N, N, 325\)")


@pytest.mark.parametrize("name,aligned", [("mosi", False), ("mosi", True), ("mosei", False), ("sims", False)])
def test_mmsa_pickles(tmp_path, name, aligned):
    write_mmsa(tmp_path / "ok", name, aligned)
    d = load_dataset(name, tmp_path / "ok", aligned=aligned)
    from mmlib.data.mosi import MMSA
    dims = MMSA[name]["dims"]
    assert [d.modalities[m].shape[2] for m in ("text", "audio", "visual")] == list(dims)
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [6, 3, 4]
    assert torch.isfinite(d.modalities["audio"]).all() and float(d.modalities["audio"][0, -1, 0]) == 0.0
    assert d.task == "regression" and set(d.lengths) == {"text", "audio", "visual"}
    assert int(d.lengths["audio"][0]) == (50 if aligned else 55) and int(d.lengths["visual"][0]) == (50 if aligned else 42)
    assert check_folder(name, tmp_path / "ok", aligned=aligned) == []


def test_mmsa_three_classes(tmp_path):
    """RedCore's MOSEI task: MMSA's classification_labels when present, else the sign of the score."""
    write_mmsa(tmp_path / "ok", "mosei")
    d = load_dataset("mosei", tmp_path / "ok", task="3class")
    assert d.task == "multiclass" and d.class_names == ["negative", "neutral", "positive"]
    assert (d.y == 0).all()                                       # the pickle's classification_labels (zeros)
    from mmlib.data.mosi import _labels
    y, _, _ = _labels(np.array([-1.2, 0.0, 2.0]), "3class")
    assert y.tolist() == [0, 1, 2]


def test_mmsa_broken(tmp_path):
    write_mmsa(tmp_path / "nan", "mosi")
    path = tmp_path / "nan/unaligned_50.pkl"
    data = pickle.loads(path.read_bytes())
    data["test"]["vision"][1, 2, 3] = np.nan
    del data["valid"]["text"]
    data["train"]["audio"] = data["train"]["audio"][:, :, :4]
    path.write_bytes(pickle.dumps(data))
    _fails("mosi", tmp_path / "nan", r"\['test'\]\['vision'\]: contains NaN")
    _fails("mosi", tmp_path / "nan", r"\['valid'\]: key 'text' is missing")
    _fails("mosi", tmp_path / "nan", r"\['train'\]\['audio'\]: shape \(6, 60, 4\), expected \(6, N, 5\)")
    _fails("mosi", tmp_path / "empty", r"unaligned_50.pkl: missing file")
    with pytest.raises(ValueError, match="unaligned only"):
        load_dataset("sims", tmp_path / "nan", aligned=True)


def test_mmin_iemocap(tmp_path):
    write_mmin(tmp_path / "ok", fold=2)
    d = load_dataset("iemocap", tmp_path / "ok", fold=2)
    assert {m: x.shape[2] for m, x in d.modalities.items()} == {"acoustic": 130, "visual": 342, "lexical": 1024}
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert d.class_names == ["neutral", "happy", "angry", "sad"] and d.y.tolist()[:5] == [0, 1, 2, 3, 0]
    assert d.lengths["acoustic"].tolist()[:5] == [3, 4, 5, 6, 3]
    T = d.modalities["acoustic"].shape[1]
    assert T == 6 and (d.modalities["acoustic"][0, 3:] == 0).all()          # zero padding after the length
    with h5py.File(tmp_path / "ok/A/comparE.h5", "r") as f:                  # normalised with the fold's mean/std
        raw = f["Ses02_trn_000"][()]
    assert np.allclose(d.modalities["acoustic"][0, :3].numpy(), (raw - 0.5) / 2.0, atol=1e-5)
    short = load_dataset("iemocap", tmp_path / "ok", fold=2, max_len=4)
    assert short.modalities["visual"].shape[1] == 4 and int(short.lengths["visual"].max()) == 4
    _fails("iemocap", tmp_path / "ok", r"target/1/trn_label.npy: missing file", fold=1)
    _fails("iemocap", tmp_path / "ok", r"fold 11: iemocap has folds 1..10", fold=11)
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ok", bad)
    with h5py.File(bad / "V/denseface.h5", "a") as f:
        del f["Ses02_tst_001"]
        del f["Ses02_trn_002"]
        f["Ses02_trn_002"] = np.zeros((4, 300), np.float32)
    with h5py.File(bad / "L/bert_large.h5", "a") as f:
        f["Ses02_val_000"][0, 0] = np.nan
    _fails("iemocap", bad, r"V/denseface.h5: 1 utterance\(s\) of tst are missing", fold=2)
    _fails("iemocap", bad, r"V/denseface.h5\['Ses02_trn_002'\]: shape \(4, 300\), expected \(N, 342\)", fold=2)
    _fails("iemocap", bad, r"L/bert_large.h5\['Ses02_val_000'\]: contains NaN", fold=2)
    (bad / "A/comparE_mean_std.h5").unlink()
    _fails("iemocap", bad, r"A/comparE_mean_std.h5: missing file", fold=2)


def test_mmimdb(tmp_path):
    write_mmimdb(tmp_path / "ok")
    d = load_dataset("mmimdb", tmp_path / "ok", split_at=(6, 9))
    assert d.task == "multilabel" and d.y.shape == (12, 23) and len(d.class_names) == 23
    assert d.modalities["text"].shape == (12, 300) and d.modalities["image"].shape == (12, 4096)
    assert [len(d.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    _fails("mmimdb", tmp_path / "ok", r"12 movies cannot be split at 15552 and 18160")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ok", bad)
    with h5py.File(bad / "multimodal_imdb.hdf5", "a") as f:
        del f["vgg_features"]
        f["vgg_features"] = np.zeros((12, 2048), np.float32)
        del f["genres"]
    _fails("mmimdb", bad, r"key 'genres' is missing", split_at=(6, 9))
    _fails("mmimdb", bad, r"\['vgg_features'\]: shape \(12, 2048\), expected \(N, 4096\)", split_at=(6, 9))
    nan = tmp_path / "nan"
    shutil.copytree(tmp_path / "ok", nan)
    with h5py.File(nan / "multimodal_imdb.hdf5", "a") as f:
        f["features"][5, 7] = np.nan
    _fails("mmimdb", nan, r"\['features'\]: contains NaN", split_at=(6, 9))
    _fails("mmimdb", tmp_path / "none", r"multimodal_imdb.hdf5: missing file")


def test_data_check_command(tmp_path, capsys):
    write_mmin(tmp_path / "iemocap", fold=1)
    assert cli(["data", "check", "iemocap", str(tmp_path / "iemocap")]) == 0
    assert "looks right" in capsys.readouterr().out
    assert cli(["data", "check", "iemocap", str(tmp_path / "iemocap"), "-o", "fold=3"]) == 1
    assert "target/3/trn_label.npy: missing file" in capsys.readouterr().out
    assert cli(["data", "check", "avmnist", str(tmp_path / "nowhere")]) == 1
    assert "no such folder" in capsys.readouterr().out
    assert cli(["data", "check", "avdigits", str(tmp_path)]) == 2
    assert "embedded" in capsys.readouterr().err
    assert cli(["data", "check", "imagenet", str(tmp_path)]) == 2
    with pytest.raises(ValueError, match="give the folder"):
        load_dataset("mosi_mfn", None)


@pytest.mark.parametrize("name,writer,kw", [
    ("avmnist", write_avmnist, {}), ("mosi_mfn", write_mosi_mfn, {}), ("mosi", write_mmsa, {}),
    ("iemocap", write_mmin, {}), ("mmimdb", write_mmimdb, {"split_at": (6, 9)})])
def test_methods_run_unchanged_on_every_reader(tmp_path, name, writer, kw):
    """The same harness runs on a real-format dataset: a baseline, and SMIL on two modalities."""
    from mmlib.experiment import run
    from mmlib.train import TrainConfig
    writer(tmp_path / name)
    data = load_dataset(name, tmp_path / name, **kw)
    cfg = TrainConfig(epochs=1, patience=None, batch_size=8)
    rec, _ = run(data, "zp_concat", {"kind": "independent", "rates": {data.modality_names[-1]: 0.5}}, 0, cfg, "cpu")
    full = "+".join(data.modality_names)
    assert full in rec["metrics"] and all(np.isfinite(v) for v in rec["metrics"][full].values())
    rec, _ = run(data, "mvae", {"kind": "full"}, 0, cfg, "cpu")
    assert all(np.isfinite(v) for v in rec["metrics"][full].values())
    if data.task != "regression":
        two = data.select(data.modality_names[:2])
        rec, _ = run(two, "smil", {"kind": "independent", "rates": {two.modality_names[1]: 0.5}}, 0, cfg, "cpu",
                     method_kwargs={"backbone": "mlp"})
        assert set(rec["metrics"]) == {two.modality_names[0], "+".join(two.modality_names)}


def test_sequence_lengths_reach_the_encoders(tmp_path):
    """A zero-padded sequence gives the same features as the unpadded one when its length
    is passed; without the length, the LSTM reads the padding."""
    from mmlib.models import MultimodalNet
    torch.manual_seed(0)
    net = MultimodalNet(["a"], {"a": (7, 3)}, 2).eval()
    x = torch.randn(1, 4, 3)
    padded = torch.cat([x, torch.zeros(1, 3, 3)], 1)
    present = torch.ones(1, 1, dtype=torch.bool)
    with torch.no_grad():
        short = MultimodalNet(["a"], {"a": (4, 3)}, 2).eval()
        short.load_state_dict(net.state_dict())
        ref = short({"a": x}, present)
        assert torch.allclose(net({"a": padded}, present, {"a": torch.tensor([4])}), ref, atol=1e-6)
        assert not torch.allclose(net({"a": padded}, present), ref, atol=1e-4)
