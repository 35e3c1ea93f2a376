"""MLA's datasets in the authors' layouts (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation,
``dataset/dataset.py`` and ``data/*.py``).

Audio-video (``crema_d``, ``kinetics_sounds``)::

    ROOT/stat_cre.txt                         class names, one per line (KS: stat_ks.txt, "name > ... > ...")
    ROOT/my_train_cre.txt, my_test_cre.txt    "<clip>.flv <Label>" per line (KS: "<clip>.mp4 <label>")
    ROOT/audio/{train,test}_fbank/<clip>.npy  (frames, bins) log-mel filter bank
    ROOT/visual/{train,test}_imgs/Image-01-FPS/<clip>/*.jpg   frames at 1 fps
    (Kinetics-Sounds: the same under ROOT/kinsound/)

Image-text (``food101``, ``mvsa``)::

    ROOT/stat_food.txt (stat_mvsa.txt)        class names
    ROOT/my_train_food.txt, my_test_food.txt  "<id>.jpg <label>" per line
    ROOT/visual/{train,test}_imgs/<id>.jpg
    ROOT/text_token/{train,test}_token/<id>_token.npy   BERT token ids (max length 256)
    ROOT/text_token/{train,test}_token/<id>_pm.npy      padding mask (1 = padding)

As the code: the class index is the position in the *sorted* class list; the label files'
lines give the samples. What the book does with the raw inputs on a CPU, without the
pretrained backbones (ResNet-18 from scratch, M3AE, CAV-MAE) that cannot be had offline:

- audio: the filter bank averaged into ``audio_steps`` (64) equal time segments -> (64, bins),
  a sequence for the pooled encoder;
- frames: the three frames the code picks (``seg = n // 3``, frames 0, seg, 2 seg; the book
  sorts the file names, the code takes ``os.listdir``'s order), each to grey and resized to
  ``image_size`` x ``image_size`` (32), stacked and flattened -> a 3 * 32 * 32 vector;
  an image-text set's image: one grey 32 x 32 picture -> 1,024 values;
- text: without BERT's weights, a hashed bag of tokens: the counts of the non-padding token
  ids modulo ``text_bins`` (2,048), log(1 + count). A much weaker text encoder than M3AE's.

A GPU user with the backbones' features should save them per modality and split and read
them with the ``features`` reader instead. The code drops a listed sample whose files are
missing, silently; the book stops and names them (``missing_files="drop"`` does what the code
does and says how many). The code has no validation split (it keeps the best *test* epoch):
the book holds out a fixed 10 % of the training list (seed 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import MultimodalDataset, register, register_check
from .checks import Checker

LAYOUTS = {
    "crema_d": {"kind": "av", "base": "", "tag": "cre", "ext": ".flv "},
    "kinetics_sounds": {"kind": "av", "base": "kinsound/", "tag": "ks", "ext": ".mp4 "},
    "food101": {"kind": "it", "base": "", "tag": "food", "ext": ".jpg "},
    "mvsa": {"kind": "it", "base": "", "tag": "mvsa", "ext": ".jpg "},
}
PAPER_NAME = {"crema_d": "CREMA-D", "kinetics_sounds": "Kinetics-Sounds", "food101": "UPMC-Food-101", "mvsa": "MVSA-Single"}


def _classes(c: Checker, name: str) -> list[str] | None:
    lay = LAYOUTS[name]
    p = c.file(f"stat_{lay['tag']}.txt")
    if p is None:
        return None
    lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
    if name == "kinetics_sounds":            # the code keeps "name > ... > ..." lines, the name before " >"
        lines = [ln.split(" >")[0] for ln in lines if len(ln.split(" >")) == 3]
    if not lines:
        c.add(f"stat_{lay['tag']}.txt: no class names")
        return None
    return sorted(lines)


def _entries(c: Checker, name: str, split: str, classes) -> list[tuple[str, str]]:
    lay = LAYOUTS[name]
    rel = f"my_{split}_{lay['tag']}.txt"
    p = c.file(rel)
    if p is None:
        return []
    out = []
    for k, ln in enumerate(p.read_text(errors="replace").splitlines(), 1):
        if not ln.strip():
            continue
        parts = ln.strip().split(lay["ext"])
        if len(parts) != 2:
            c.add(f"{rel} line {k}: expected '<id>{lay['ext'].strip()} <label>', got {ln.strip()[:60]!r}")
            continue
        sid, label = parts[0], parts[1].strip()
        if classes is not None and label not in classes:
            c.add(f"{rel} line {k}: label {label!r} is not in stat_{lay['tag']}.txt ({len(classes)} classes)")
            continue
        out.append((sid, label))
    if not out and not any(pr.startswith(rel) for pr in c.problems):
        c.add(f"{rel}: no samples")
    return out


def _paths(name: str, root: Path, split: str, sid: str) -> dict[str, Path]:
    lay = LAYOUTS[name]
    b = root / lay["base"]
    if lay["kind"] == "av":
        return {"audio": b / "audio" / f"{split}_fbank" / f"{sid}.npy",
                "visual": b / "visual" / f"{split}_imgs" / "Image-01-FPS" / sid}
    return {"image": b / "visual" / f"{split}_imgs" / f"{sid}.jpg",
            "token": b / "text_token" / f"{split}_token" / f"{sid}_token.npy",
            "pm": b / "text_token" / f"{split}_token" / f"{sid}_pm.npy"}


def _scan(name: str, root, missing_files: str = "error"):
    if missing_files not in ("error", "drop"):
        raise ValueError(f"{name}: missing_files must be 'error' or 'drop', got {missing_files!r}")
    c = Checker(name, root)
    if c.problems:
        return c, None
    classes = _classes(c, name)
    found, dropped = {}, {}
    for split in ("train", "test"):
        keep, gone = [], []
        for sid, label in _entries(c, name, split, classes):
            paths = _paths(name, c.root, split, sid)
            absent = [p for p in paths.values() if not p.exists()]
            (gone if absent else keep).append((sid, label, paths, absent))
        if gone and missing_files == "error":
            shown = "; ".join(str(a[0].relative_to(c.root)) for *_, a in gone[:3])
            c.add(f"my_{split}_{LAYOUTS[name]['tag']}.txt: {len(gone)} listed sample(s) without their files "
                  f"(e.g. {shown}); missing_files='drop' skips them, as the authors' code does")
        found[split], dropped[split] = keep, len(gone)
    if not c.problems:                                 # the first sample's files, read as the loader will
        for split, rows in found.items():
            if rows:
                _read_one(c, name, rows[0][2])
    return c, {"classes": classes, "rows": found, "dropped": dropped}


def _frame(path: Path, size: int) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _read_one(c: Checker, name: str, paths: dict, size: int = 32):
    for key, p in paths.items():
        rel = p.relative_to(c.root)
        try:
            if key == "visual":
                frames = sorted(f for f in p.iterdir() if f.is_file())
                if not frames:
                    c.add(f"{rel}/: no frames")
                else:
                    _frame(frames[0], size)
            elif key == "image":
                _frame(p, size)
            else:
                a = np.load(p, allow_pickle=False)
                if key == "audio" and a.ndim != 2:
                    c.add(f"{rel}: shape {a.shape}, expected (frames, bins)")
                if key in ("token", "pm") and a.ndim != 1:
                    c.add(f"{rel}: shape {a.shape}, expected (tokens,)")
        except (OSError, ValueError) as e:
            c.add(f"{rel}: not a readable {'image' if key in ('visual', 'image') else '.npy'} file ({e})")


def _audio(path: Path, steps: int) -> np.ndarray:
    a = np.load(path, allow_pickle=False).astype(np.float32)
    edges = np.linspace(0, len(a), steps + 1).astype(int)
    return np.stack([a[e0:max(e1, e0 + 1)].mean(0) if e0 < len(a) else np.zeros(a.shape[1], np.float32)
                     for e0, e1 in zip(edges[:-1], edges[1:])])


def _frames(folder: Path, size: int) -> np.ndarray:
    files = sorted(f for f in folder.iterdir() if f.is_file())
    seg = len(files) // 3
    return np.concatenate([_frame(files[min(seg * i, len(files) - 1)], size).ravel() for i in range(3)])


def _text(token: Path, pm: Path, bins: int) -> np.ndarray:
    ids, pad = np.load(token, allow_pickle=False).astype(np.int64), np.load(pm, allow_pickle=False)
    v = np.bincount(ids[pad == 0] % bins, minlength=bins).astype(np.float32)
    return np.log1p(v)


def _load(name: str, root, missing_files="error", image_size=32, audio_steps=64, text_bins=2048):
    c, found = _scan(name, root, missing_files)
    c.raise_if_any()
    classes, rows = found["classes"], found["rows"]
    kind = LAYOUTS[name]["kind"]
    mods: dict[str, list] = {"audio": [], "visual": []} if kind == "av" else {"image": [], "text": []}
    labels = []
    for split in ("train", "test"):
        for sid, label, paths, _ in rows[split]:
            if kind == "av":
                mods["audio"].append(_audio(paths["audio"], audio_steps))
                mods["visual"].append(_frames(paths["visual"], image_size))
            else:
                mods["image"].append(_frame(paths["image"], image_size).ravel())
                mods["text"].append(_text(paths["token"], paths["pm"], text_bins))
            labels.append(classes.index(label))
    n_tr, n_te = len(rows["train"]), len(rows["test"])
    if kind == "av" and len({a.shape for a in mods["audio"]}) > 1:
        raise ValueError(f"{name}: filter banks with different numbers of bins {sorted({a.shape[1] for a in mods['audio']})}")
    X = {m: torch.from_numpy(np.stack(v).astype(np.float32)) for m, v in mods.items()}
    perm = torch.randperm(n_tr, generator=torch.Generator().manual_seed(0))
    k = max(1, n_tr // 10)
    splits = {"train": perm[k:].sort().values, "val": perm[:k].sort().values, "test": torch.arange(n_tr, n_tr + n_te)}
    info = {"source": f"{PAPER_NAME[name]} in the MLA authors' layout", "root": str(root),
            "dropped": found["dropped"], "image_size": image_size, "audio_steps": audio_steps, "text_bins": text_bins}
    return MultimodalDataset(name, X, torch.tensor(labels, dtype=torch.int64), "multiclass", classes, splits, info)


def _register(name: str):
    @register_check(name)
    def check(root, missing_files="error", **_) -> list[str]:
        return _scan(name, root, missing_files)[0].problems

    @register(name)
    def load(root=None, missing_files="error", image_size: int = 32, audio_steps: int = 64,
             text_bins: int = 2048) -> MultimodalDataset:
        return _load(name, root, missing_files, image_size, audio_steps, text_bins)
    return check, load


for _name in LAYOUTS:
    _register(_name)
