"""avMNIST from a user's folder, in the two layouts the papers use.

``avmnist`` -- MultiBench's arrays (``datasets/avmnist/get_data.py``)::

    ROOT/image/train_data.npy   (N, 784)       MNIST pixels 0-255
    ROOT/image/test_data.npy    (M, 784)
    ROOT/audio/train_data.npy   (N, 112, 112)  spectrograms 0-255
    ROOT/audio/test_data.npy    (M, 112, 112)
    ROOT/train_labels.npy       (N,)           digits 0-9
    ROOT/test_labels.npy        (M,)

  Both modalities are scaled by 1/255 as MultiBench does; validation is the tail of the
  training arrays from index 55,000 (MultiBench's split); a smaller file (a test
  fixture, a subset) keeps its last twelfth for validation.

``avmnist_smil`` -- SMIL's folders (mengmenm/SMIL, ``src/dataset/soundmnist.py`` and
``src/utils/wav2mfcc.py``)::

    ROOT/mnist/{train,test}/{digit}/*.png                          28 x 28 grey images
    ROOT/sound/{train,test}/{digit}/{digit}_{speaker}_{idx}.wav    FSDD recordings

  Audio: the recording at its own rate, every third sample (``wave[::3]``), 20 MFCCs
  computed as librosa's defaults at sr = 8000 (:func:`smil_mfcc`, a numpy port; the test
  suite compares it with librosa when librosa is installed), zero-padded or cut to 20
  frames: a 20 x 20 "image". Pairing per class, as SMIL: the first 105 training images of
  each digit with the training recordings (index >= 15), the last 45 test images with the
  test recordings (index < 15), both in sorted file order. SMIL has no validation split
  (it keeps the checkpoint with the best test accuracy); the book holds out the last
  ``val_per_class`` training pairs of each digit for validation.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from . import MultimodalDataset, register, register_check
from .checks import Checker, npy

DIGITS = [str(d) for d in range(10)]


# ------------------------------------------------------------------------- MultiBench
def _mb_check(root) -> Checker:
    c = Checker("avmnist", root)
    n = {}
    for split in ("train", "test"):
        lab = c.file(f"{split}_labels.npy")
        if lab is not None:
            a = npy(lab)
            if c.array(f"{split}_labels.npy", a, (None,), "int"):
                n[split] = len(a)
                if len(a) and (a.min() < 0 or a.max() > 9):
                    c.add(f"{split}_labels.npy: labels must be digits 0-9, found {a.min()}..{a.max()}")
        for mod, shape in (("image", (784,)), ("audio", (112, 112))):
            f = c.file(f"{mod}/{split}_data.npy")
            if f is not None:
                a = npy(f)
                c.array(f"{mod}/{split}_data.npy", a, (n.get(split),) + shape)
    return c


@register_check("avmnist")
def check_avmnist(root) -> list[str]:
    return _mb_check(root).problems


@register("avmnist")
def load_avmnist(root=None) -> MultimodalDataset:
    c = _mb_check(root)
    c.raise_if_any()
    r = c.root
    img = {s: np.load(r / f"image/{s}_data.npy") for s in ("train", "test")}
    aud = {s: np.load(r / f"audio/{s}_data.npy") for s in ("train", "test")}
    lab = {s: np.load(r / f"{s}_labels.npy") for s in ("train", "test")}
    n_tr, n_te = len(lab["train"]), len(lab["test"])
    val_start = 55000 if n_tr > 55000 else n_tr - max(1, n_tr // 12)
    image = torch.from_numpy(np.concatenate([img["train"], img["test"]]).astype(np.float32) / 255.0).reshape(-1, 28, 28)
    audio = torch.from_numpy(np.concatenate([aud["train"], aud["test"]]).astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate([lab["train"], lab["test"]]).astype(np.int64))
    splits = {"train": torch.arange(0, val_start), "val": torch.arange(val_start, n_tr),
              "test": torch.arange(n_tr, n_tr + n_te)}
    return MultimodalDataset("avmnist", {"image": image, "audio": audio}, y, "multiclass", DIGITS, splits,
                             {"source": "MultiBench avMNIST arrays", "root": str(root), "val_start": val_start})


# ------------------------------------------------------------------------------- SMIL
def _hz_to_mel(f):
    """Slaney's mel scale (librosa's default, htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filters(sr: float, n_fft: int = 2048, n_mels: int = 128) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels): Slaney scale and norm."""
    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    return w * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


def smil_mfcc(wave: np.ndarray, sr: float = 8000, n_mfcc: int = 20, frames: int = 20) -> np.ndarray:
    """SMIL's audio feature: librosa.feature.mfcc(y=wave, sr=8000) with librosa's defaults
    (n_fft 2048, hop 512, centred frames with zero padding, Hann window, 128 Slaney mel
    bands, power_to_db with top_db 80, orthonormal DCT-II), zero-padded or cut to
    ``frames`` columns. ``wave`` is the already decimated signal (``wave[::3]``)."""
    from scipy.fft import dct
    from scipy.signal import get_window
    n_fft, hop = 2048, 512
    y = np.pad(np.asarray(wave, dtype=np.float32), n_fft // 2, mode="constant")
    n = 1 + (len(y) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(y[idx] * get_window("hann", n_fft, fftbins=True), axis=1)) ** 2   # (frames, bins)
    S = mel_filters(sr, n_fft) @ spec.T                                                          # (128, frames)
    log_s = 10.0 * np.log10(np.maximum(1e-10, S))
    log_s = np.maximum(log_s, log_s.max() - 80.0)
    m = dct(log_s, axis=0, type=2, norm="ortho")[:n_mfcc]
    out = np.zeros((n_mfcc, frames), dtype=np.float32)
    out[:, :min(frames, m.shape[1])] = m[:, :frames]
    return out


def read_wav(path: Path) -> np.ndarray:
    """Mono float samples in [-1, 1] at the file's own rate (as librosa.load(sr=None))."""
    from scipy.io import wavfile
    _, w = wavfile.read(path)
    if w.dtype.kind in "iu":
        w = w.astype(np.float32) / float(2 ** (8 * w.dtype.itemsize - 1))
    w = w.astype(np.float32)
    return w.mean(1) if w.ndim == 2 else w


WAV = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def _smil_files(c: Checker):
    """{split: {digit: (sorted pngs, sorted wavs)}} and problems for what is missing."""
    out = {}
    for split in ("train", "test"):
        out[split] = {}
        for d in DIGITS:
            imgs = sorted((c.root / "mnist" / split / d).glob("*.png"))
            sdir = c.root / "sound" / split / d
            wavs = sorted(p for p in sdir.glob("*.wav") if WAV.match(p.name))
            if not imgs:
                c.add(f"mnist/{split}/{d}/: no .png images")
            if not wavs:
                c.add(f"sound/{split}/{d}/: no recordings named {d}_<speaker>_<index>.wav")
            bad = [p.name for p in sdir.glob("*.wav") if WAV.match(p.name) and WAV.match(p.name).group(1) != d]
            if bad:
                c.add(f"sound/{split}/{d}/: recordings of another digit: {bad[:3]}")
            out[split][d] = (imgs, wavs)
    return out


@register_check("avmnist_smil")
def check_avmnist_smil(root, **_) -> list[str]:
    c = Checker("avmnist_smil", root)
    if not c.problems:
        files = _smil_files(c)
        from PIL import Image
        for split in files:             # the first image and recording of each folder (loading reads them all)
            for d, (imgs, wavs) in files[split].items():
                if imgs:
                    try:
                        with Image.open(imgs[0]) as im:
                            if im.size != (28, 28):
                                c.add(f"{imgs[0].relative_to(c.root)}: size {im.size}, expected (28, 28)")
                    except OSError as e:
                        c.add(f"{imgs[0].relative_to(c.root)}: not a readable image ({e})")
                if wavs:
                    try:
                        w = read_wav(wavs[0])
                        if not np.isfinite(w).all() or len(w) == 0:
                            c.add(f"{wavs[0].relative_to(c.root)}: empty or non-finite samples")
                    except ValueError as e:
                        c.add(f"{wavs[0].relative_to(c.root)}: not a readable WAV file ({e})")
    return c.problems


@register("avmnist_smil")
def load_avmnist_smil(root=None, train_per_class: int = 105, test_per_class: int = 45,
                      val_per_class: int = 15) -> MultimodalDataset:
    from PIL import Image
    c = Checker("avmnist_smil", root)
    files = _smil_files(c) if not c.problems else {}
    c.raise_if_any()
    images, audio, labels, split_of = [], [], [], []
    for split in ("train", "test"):
        for d in DIGITS:
            imgs, wavs = files[split][d]
            test_rec = [w for w in wavs if int(WAV.match(w.name).group(3)) < 15]
            train_rec = [w for w in wavs if int(WAV.match(w.name).group(3)) >= 15]
            if split == "train":
                imgs, recs = imgs[:train_per_class], train_rec
            else:
                imgs, recs = imgs[-test_per_class:], test_rec
            k = min(len(imgs), len(recs))
            if k == 0:
                c.add(f"digit {d}, {split}: no image/recording pairs (recordings with index "
                      f"{'>= 15' if split == 'train' else '< 15'} are the {split} sounds)")
                continue
            for i in range(k):
                try:
                    with Image.open(imgs[i]) as im:
                        a = np.asarray(im.convert("L"), dtype=np.float32)
                except OSError as e:
                    c.add(f"{imgs[i].relative_to(c.root)}: not a readable image ({e})")
                    continue
                if a.shape != (28, 28):
                    c.add(f"{imgs[i].relative_to(c.root)}: size {a.shape[::-1]}, expected (28, 28)")
                    continue
                try:
                    w = read_wav(recs[i])
                except ValueError as e:
                    c.add(f"{recs[i].relative_to(c.root)}: not a readable WAV file ({e})")
                    continue
                if len(w) == 0 or not np.isfinite(w).all():
                    c.add(f"{recs[i].relative_to(c.root)}: empty or non-finite samples")
                    continue
                images.append(a / 255.0)
                audio.append(smil_mfcc(w[::3]))
                labels.append(int(d))
                is_val = split == "train" and i >= k - val_per_class and k > val_per_class
                split_of.append("val" if is_val else split)
    c.raise_if_any()
    split_of = np.array(split_of)
    splits = {s: torch.from_numpy(np.nonzero(split_of == s)[0]) for s in ("train", "val", "test")}
    return MultimodalDataset("avmnist_smil", {"image": torch.from_numpy(np.stack(images)),
                                              "audio": torch.from_numpy(np.stack(audio))},
                             torch.tensor(labels), "multiclass", DIGITS, splits,
                             {"source": "SMIL avMNIST folders (MNIST PNG + FSDD WAV)", "root": str(root)})
