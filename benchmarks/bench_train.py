"""Training speed of the baselines on avdigits (CPU or CUDA), and a papermill chapter run.

    .venv/bin/python benchmarks/bench_train.py [--device cpu] [--epochs 5] [--threads 2]

Prints seconds per epoch (training and the validation pass) and training samples per
second for each baseline. A benchmark, not a
test: the numbers depend on the machine; the closing notes of the project report them.
"""
from __future__ import annotations

import argparse
import time

import torch

from mmlib import masks
from mmlib.data import load_dataset
from mmlib.methods import make_method
from mmlib.train import TrainConfig, get_device


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    data = load_dataset("avdigits")
    n = len(data.splits["train"])
    P = masks.keep_fraction(n, data.modality_names, {"audio": 0.2}, seed=0)
    cfg = TrainConfig(epochs=a.epochs, patience=None)
    print(f"device {dev}, torch threads {a.threads}, {n} training samples, {a.epochs} epochs, batch {cfg.batch_size}")
    print(f"{'method':14s} {'s/epoch':>8s} {'samples/s':>10s}")
    for name in ["lower_bound", "zp_concat", "zp_sum", "late_fusion", "upper_bound"]:
        t0 = time.perf_counter()
        m = make_method(name).fit(data, P, seed=0, cfg=cfg, device=dev)
        dt = time.perf_counter() - t0
        print(f"{name:14s} {dt / a.epochs:8.2f} {n * a.epochs / dt:10.0f}")


if __name__ == "__main__":
    main()
