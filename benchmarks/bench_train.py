"""Training speed of the baselines and of SMIL on avdigits (CPU or CUDA).

    .venv/bin/python benchmarks/bench_train.py [--device cpu] [--epochs 5] [--threads 2]

Prints seconds per epoch (training and the validation pass) and training samples per
second for each baseline; then, for SMIL at eta = 10% on 1,000 training samples (the
chapter's setting), the time of its warm starts and of one meta-learning iteration
(inner step on a D^m batch + outer loss on a D^f batch, second and first order). A benchmark, not a
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
        make_method(name).fit(data, P, seed=0, cfg=cfg, device=dev)
        dt = time.perf_counter() - t0
        print(f"{name:14s} {dt / a.epochs:8.2f} {n * a.epochs / dt:10.0f}")
    bench_smil(data, cfg, dev)


def bench_smil(data, cfg, dev, iters: int = 50) -> None:
    from mmlib.methods.smil import SMIL
    small = data.with_train_subset(1000)
    P = masks.keep_fraction(1000, small.modality_names, {"audio": 0.1}, seed=0)
    t0 = time.perf_counter()
    m = SMIL().fit(small, P, seed=0, cfg=TrainConfig(epochs=cfg.epochs, patience=None), device=dev)
    total = time.perf_counter() - t0
    meta = sum(h["seconds"] for h in m.history)
    print(f"SMIL eta=10%, 1000 samples, {cfg.epochs} epochs: fit {total:.1f} s "
          f"(warm starts {total - meta:.1f} s, meta-learning {meta:.1f} s)")
    train = small.splits["train"].to(dev)
    has = P[:, 1].to(dev)
    idx_m, idx_f = train[~has][:64], train[has][:64]
    for first_order in (False, True):
        m.first_order = first_order
        m.model.train()
        for i in range(iters + 5):
            if i == 5:
                t0 = time.perf_counter()
            m.model.zero_grad()
            m.meta_loss(m.model, idx_m, idx_f).backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / iters * 1000
        print(f"  one meta iteration ({'first' if first_order else 'second'} order, batches of 64): {ms:.1f} ms")


if __name__ == "__main__":
    main()
