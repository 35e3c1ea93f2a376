"""Training speed of the book's loops on this machine, against this machine's peak.

    .venv/bin/python benchmarks/bench_train.py [--device cpu] [--epochs 5] [--threads 2]

1. The peak: fp32 ``torch.mm`` on 2048 x 2048 matrices and a oneDNN (mkldnn) linear layer
   on a large batch, in GFLOP/s.
2. For each baseline and backbone (``mlp``: the default profile's encoders; ``cnn``: the
   papers' LeNet-5 and MFCC CNN, the ``full`` profile's), the seconds per epoch (training
   and the validation pass), training samples per second, and the training loop's achieved
   GFLOP/s: floating-point operations of one training step counted by
   ``torch.utils.flop_counter`` (forward and backward), times the steps, over the time.
3. The ensemble engine: member-steps per second for K = 1, 5, 10, 25, 50 members of zero padding
   (MLP encoders) on ``affect`` and ``avdigits``, against the plain single-fit loop, and achieved
   GFLOP/s as a share of the peaks.
4. The methods with a training state of their own on the engine (RedCore, MMIN, CRA): the
   same, members being settings x seeds.
5. The chapters whose ensembles are a setting's seeds (MLE, M3S with each seed's corruption).
6. SMIL at eta = 10 % on 1,000 training samples: warm starts and one meta iteration.
7. Chapter 03's methods on ``affect`` at MR (A, V, L) = (0.8, 0.2, 0.5), the chapter's batch
   of 128: seconds per epoch and per training sample (validation included).

A benchmark, not a test: the numbers depend on the machine; the closing notes report them.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmlib import masks
from mmlib.data import load_dataset
from mmlib.methods import make_method
from mmlib.train import TrainConfig, get_device


def peak(dev) -> dict:
    out = {}
    n = 2048
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    for _ in range(3):
        a @ b
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out["torch.mm"] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
    if dev.type == "cpu" and torch.backends.mkldnn.is_available():
        from torch.utils import mkldnn as mkldnn_utils
        lin = mkldnn_utils.to_mkldnn(torch.nn.Linear(1024, 1024).eval())
        x = torch.randn(8192, 1024).to_mkldnn()
        with torch.no_grad():
            for _ in range(3):
                lin(x)
            t0, reps = time.perf_counter(), 10
            for _ in range(reps):
                lin(x)
        out["oneDNN linear"] = 2 * 8192 * 1024 * 1024 * reps / (time.perf_counter() - t0) / 1e9
    return out


def step_flops(method, data, P, dev) -> float:
    """FLOPs of one training step (batch of 64: forward, backward) of a fitted baseline."""
    model = method.model
    model.train()
    idx = data.splits["train"][:64].to(dev)
    xs = {m: data.modalities[m][idx.cpu()].to(dev) for m in method.used}
    p = P[:64, method.cols].to(dev)
    y = data.y[idx.cpu()].to(dev)
    with FlopCounterMode(display=False) as fc:
        loss = torch.nn.functional.cross_entropy(model(xs, p), y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-smil", action="store_true")
    ap.add_argument("--no-redcore", action="store_true")
    ap.add_argument("--engine-only", action="store_true", help="only the peaks and the ensemble engine's table")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    pk = peak(dev)
    print(f"device {dev}, torch threads {a.threads}; peak: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in pk.items()))
    if a.engine_only:
        bench_engine(dev, pk, a.epochs)
        bench_engine_methods(dev, pk, a.epochs)
        bench_engine_seeds(dev, pk, a.epochs)
        bench_smil_engine(dev, pk, a.epochs)
        return
    data = load_dataset("avdigits")
    n = len(data.splits["train"])
    P = masks.independent(n, data.modality_names, {"audio": 0.8}, seed=0)
    cfg = TrainConfig(epochs=a.epochs, patience=None)
    print(f"{n} training samples, {a.epochs} epochs, batch {cfg.batch_size} (validation on 1,000 each epoch)")
    print(f"{'method':14s} {'backbone':8s} {'s/epoch':>8s} {'samples/s':>10s} {'GFLOP/s':>8s} "
          + " ".join(f"{'% ' + k:>14s}" for k in pk))
    make_method("zp_concat", backbone="mlp").fit(data, P, seed=0, cfg=TrainConfig(epochs=1), device=dev)  # warm-up
    for backbone in ["mlp", "cnn"]:
        for name in ["lower_bound", "zp_concat", "zp_sum", "late_fusion", "upper_bound"]:
            t0 = time.perf_counter()
            m = make_method(name, backbone=backbone).fit(data, P, seed=0, cfg=cfg, device=dev)
            dt = time.perf_counter() - t0
            train_rows = int(P[:, m.cols].any(1).sum())
            steps = -(-train_rows // cfg.batch_size) * a.epochs
            gflops = step_flops(m, data, P, dev) * steps / dt / 1e9
            print(f"{name:14s} {backbone:8s} {dt / a.epochs:8.2f} {n * a.epochs / dt:10.0f} {gflops:8.2f} "
                  + " ".join(f"{100 * gflops / v:13.1f}%" for v in pk.values()))
    bench_engine(dev, pk, a.epochs)
    bench_engine_methods(dev, pk, a.epochs)
    bench_engine_seeds(dev, pk, a.epochs)
    bench_smil_engine(dev, pk, a.epochs)
    if not a.no_smil:
        bench_smil(data, cfg, dev)
    if not a.no_redcore:
        bench_redcore(a.epochs, dev)


def _member_step_flops(method, data, P, dev, batch) -> float:
    """FLOPs of one member's training step (forward and backward of its loss on one batch)."""
    extra, rows, loss_fn, _, _ = method._setup(data, P, 0, dev)
    idx = rows[:batch]
    with FlopCounterMode(display=False) as fc:
        loss_fn(method.model, idx, None, extra).backward()
    method.model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def bench_engine(dev, pk: dict, epochs: int, sizes=(1, 5, 10, 25, 50)) -> None:
    """Member-steps per second of the ensemble engine (mmlib/engine.py) for K members against the
    plain single-fit loop (:func:`mmlib.train.fit`, torch's Adam), and as a share of the peaks."""
    from mmlib.models import noise_stream
    from mmlib.train import DropoutStream, fit
    cases = [("affect", {"kind": "independent", "rates": {"acoustic": 0.5, "visual": 0.5, "lexical": 0.5}}),
             ("avdigits", {"kind": "independent", "rates": {"audio": 0.8}})]
    cfg = TrainConfig(epochs=epochs, patience=None)
    print(f"\nensemble engine, zero padding (MLP encoders), {epochs} epochs, batch {cfg.batch_size}; "
          "member-steps/s (training steps of one member; validation included in the time; "
          "the faster of two runs; K = 1 is the plain loop by design)")
    print(f"{'dataset':9s} {'loop':14s} {'K':>3s} {'member-steps/s':>15s} {'x plain':>8s} {'GFLOP/s':>8s} "
          + " ".join(f"{'% ' + k:>14s}" for k in pk))
    for name, spec in cases:
        data = load_dataset(name)
        n = len(data.splits["train"])
        Ps = [masks.from_spec(spec, n, data.modality_names, s) for s in range(max(sizes))]
        m = make_method("zp_concat", backbone="mlp")
        flops = _member_step_flops(m, data, Ps[0], dev, cfg.batch_size)
        steps = [-(-int(P.any(1).sum()) // cfg.batch_size) for P in Ps]
        def plain_fit():                                   # the plain loop, one seed
            extra, rows, loss_fn, val_logits, val_score = m._setup(data, Ps[0], 0, dev)
            with noise_stream(DropoutStream(0)):
                fit(m.model, lambda model, idx: loss_fn(model, idx, None, extra), rows,
                    lambda model: float(val_score(val_logits(model, extra).unsqueeze(0))[0]), cfg, seed=0)

        plain = steps[0] * epochs / best_of(plain_fit)
        rows_out = [("plain fit", 1, plain)]
        for K in sizes:
            dt = best_of(lambda: make_method("zp_concat", backbone="mlp").fit_seeds(data, Ps[:K], list(range(K)),
                                                                                    cfg=cfg, device=dev))
            rows_out.append(("engine", K, sum(steps[:K]) * epochs / dt))
        for loop, K, rate in rows_out:
            gf = rate * flops / 1e9
            print(f"{name:9s} {loop:14s} {K:3d} {rate:15.0f} {rate / plain:8.2f} {gf:8.2f} "
                  + " ".join(f"{100 * gf / v:13.1f}%" for v in pk.values()))


def best_of(fn, repeats=2):
    """Seconds of the faster of two runs (the machine is shared)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_engine_methods(dev, pk: dict, epochs: int, sizes=(1, 5, 10, 25)) -> None:
    """The methods with a training state of their own on the engine (RedCore's eta schedule,
    MMIN's teacher, MLA's alternation and HGM; K = 1: MLA's plain loop) and CRA, on affect's emotion task under imbalanced rates: member-steps/s of
    K members (K = 1: the plain loop), their FLOP rate (one fit's FLOPs per step, validation
    included, counted once) and its share of the peaks."""
    from math import ceil
    data = load_dataset("affect", task="emotion")
    n, nv = len(data.splits["train"]), len(data.splits["val"])
    rates = [[0.8, 0.2, 0.5], [0.5, 0.5, 0.8], [0.2, 0.8, 0.5], [0.3, 0.3, 0.3], [0.6, 0.6, 0.6]]
    Ps, VPs, seeds = [], [], []
    for r in rates:                                    # settings x seeds, as a grid run's members
        spec = {"kind": "independent", "rates": dict(zip(data.modality_names, r))}
        for s in range(5):
            Ps.append(masks.from_spec(spec, n, data.modality_names, s))
            VPs.append(masks.from_spec(spec, nv, data.modality_names, s + 99))
            seeds.append(s)
    cfg = TrainConfig(epochs=epochs, patience=None)
    print(f"\nensemble engine, methods with a state of their own, affect (emotion), {epochs} epochs, batch "
          f"{cfg.batch_size}; members: 5 imbalanced settings x 5 seeds; member-steps/s (student steps; MMIN's "
          "teacher comes first, its time included)")
    print(f"{'method':10s} {'K':>3s} {'member-steps/s':>15s} {'x K=1':>6s} {'GFLOP/s':>8s} "
          + " ".join(f"{'% ' + k:>14s}" for k in pk))
    for name in ["redcore", "mmin_lite", "cra", "mla"]:
        if name == "mla":           # Algorithm 1: a step trains one modality on the rows that have it
            steps = [sum(ceil(int(P[:, j].sum()) / cfg.batch_size) for j in range(P.shape[1])) for P in Ps]
        else:
            steps = [ceil(int(P.any(1).sum()) / cfg.batch_size) for P in Ps]
        with FlopCounterMode(display=False) as fc:
            make_method(name).fit(data, Ps[0], seed=0, cfg=TrainConfig(epochs=1, patience=None), device=dev,
                                  val_presence=VPs[0])
        flops = fc.get_total_flops() / steps[0]
        base = None
        for K in sizes:
            if K == 1 and name == "mla":                # its plain loop (a fit alone trains on the engine)
                dt = best_of(lambda: make_method(name).fit_loop(data, Ps[0], seed=0, cfg=cfg, device=dev,
                                                                val_presence=VPs[0]))
            else:
                dt = best_of(lambda: make_method(name).fit_seeds(data, Ps[:K], seeds[:K], cfg=cfg, device=dev,
                                                                 val_presences=VPs[:K]))
            rate = sum(steps[:K]) * epochs / dt
            base = base or rate
            gf = rate * flops / 1e9
            print(f"{name:10s} {K:3d} {rate:15.0f} {rate / base:6.2f} {gf:8.2f} "
                  + " ".join(f"{100 * gf / v:13.1f}%" for v in pk.values()))


def bench_engine_seeds(dev, pk: dict, epochs: int, sizes=(1, 5, 10)) -> None:
    """Chapters whose ensembles are a setting's seeds: MLE and HGR (phi = addition) on avdigits with
    90 % of the audio missing, and M3S (Algorithm 1, first order) around zero padding and MMIN
    (lite) on affect's emotion task, each seed with its own span corruption (40-60 %):
    member-steps/s of K members (K = 1: the plain loop), one fit's FLOPs per step (validation
    included, counted once) and their share of the peaks."""
    from math import ceil
    from mmlib.experiment import corrupted
    cfg = TrainConfig(epochs=epochs, patience=None)
    print(f"\nensemble engine, a setting's seeds as members, {epochs} epochs; member-steps/s")
    print(f"{'method':24s} {'K':>3s} {'member-steps/s':>15s} {'x K=1':>6s} {'GFLOP/s':>8s} "
          + " ".join(f"{'% ' + k:>14s}" for k in pk))
    av = load_dataset("avdigits")
    n = len(av.splits["train"])
    spec = {"kind": "independent", "rates": {"audio": 0.9}}
    mle_P = [masks.from_spec(spec, n, av.modality_names, s) for s in range(max(sizes))]
    aff = load_dataset("affect", task="emotion")
    corr = {"band": [0.4, 0.6], "axis": "time", "test": {"40-60%": [0.4, 0.6]}}
    aff_data = [corrupted(aff, corr, s)[0] for s in range(max(sizes))]
    m3s_cfg = TrainConfig(epochs=epochs, patience=None, batch_size=128)       # the chapter's batch
    cases = [("mle (phi=add)", "mle", {"phi": "add", "backbone": "mlp"}, lambda K: av, mle_P, cfg,
              lambda P: ceil(len(P) / cfg.batch_size)),
             ("hgr (phi=add)", "hgr", {"phi": "add", "backbone": "mlp"}, lambda K: av, mle_P, cfg,
              lambda P: ceil(len(P) / cfg.batch_size)),
             ("m3s (zero padding)", "m3s", {"base": "zp_concat", "base_kwargs": {"backbone": "mlp"}},
              lambda K: aff_data[:K], [None] * max(sizes), m3s_cfg, lambda P: ceil(len(aff.splits["train"]) / 128)),
             ("m3s (mmin lite)", "m3s", {"base": "mmin_lite"}, lambda K: aff_data[:K], [None] * max(sizes), m3s_cfg,
              lambda P: ceil(len(aff.splits["train"]) / 128))]
    for label, name, kw, data_of, Ps, c, n_steps in cases:
        one = data_of(1)[0] if isinstance(data_of(1), list) else data_of(1)
        with FlopCounterMode(display=False) as fc:
            make_method(name, **kw).fit(one, Ps[0], seed=0, cfg=TrainConfig(epochs=1, patience=None,
                                                                         batch_size=c.batch_size), device=dev)
        flops = fc.get_total_flops() / n_steps(Ps[0] if Ps[0] is not None else None)
        base = None
        for K in sizes:
            dt = best_of(lambda: make_method(name, **kw).fit_seeds(data_of(K), Ps[:K], list(range(K)), cfg=c,
                                                                   device=dev))
            rate = K * n_steps(Ps[0]) * epochs / dt
            base = base or rate
            gf = rate * flops / 1e9
            print(f"{label:24s} {K:3d} {rate:15.0f} {rate / base:6.2f} {gf:8.2f} "
                  + " ".join(f"{100 * gf / v:13.1f}%" for v in pk.values()))


def bench_smil_engine(dev, pk: dict, epochs: int, sizes=(1, 5, 10)) -> None:
    """SMIL's meta-learning (Algorithm 1, second order) on avdigits with 90 % of the audio missing, a
    setting's seeds as the members (their warm starts fitted and kept first, as the chapter's variants
    share them): member-steps/s of K members (K = 1: the plain loop)."""
    import tempfile
    from math import ceil
    av = load_dataset("avdigits")
    n, nv = len(av.splits["train"]), len(av.splits["val"])
    Ps = [masks.independent(n, av.modality_names, {"audio": 0.9}, seed=s) for s in range(max(sizes))]
    VPs = [masks.independent(nv, av.modality_names, {"audio": 0.9}, seed=s + 99) for s in range(max(sizes))]
    cfg = TrainConfig(epochs=epochs, patience=None)
    shared = tempfile.mkdtemp()

    def make(name):
        m = make_method(name, backbone="mlp")
        m.shared_dir = shared
        return m
    make("smil_warm_only").fit_seeds(av, Ps, list(range(max(sizes))), cfg=cfg, device=dev, val_presences=VPs)
    steps = ceil(int((~Ps[0][:, 1]).sum()) / cfg.batch_size)
    # (no FLOP count: FlopCounterMode cannot run the autograd.grad inside Eq. 4's torch.func.grad)
    print(f"\nSMIL's meta-learning on the engine, avdigits (audio 90 % missing), {epochs} epochs; member-steps/s")
    print(f"{'method':24s} {'K':>3s} {'member-steps/s':>15s} {'x K=1':>6s}")
    base = None
    for K in sizes:
        dt = best_of(lambda: make("smil").fit_seeds(av, Ps[:K], list(range(K)), cfg=cfg, device=dev,
                                                    val_presences=VPs[:K]))
        rate = K * steps * epochs / dt
        base = base or rate
        print(f"{'smil (second order)':24s} {K:3d} {rate:15.0f} {rate / base:6.2f}")


def bench_smil(data, cfg, dev, iters: int = 50) -> None:
    from mmlib.methods.smil import SMIL
    small = data.with_train_subset(1000)
    P = masks.independent(1000, small.modality_names, {"audio": 0.9}, seed=0)
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


def bench_redcore(epochs, dev) -> None:
    data = load_dataset("affect", task="emotion")
    n = len(data.splits["train"])
    P = masks.independent(n, data.modality_names, {"acoustic": 0.8, "visual": 0.2, "lexical": 0.5}, seed=0)
    cfg = TrainConfig(epochs=epochs, patience=None, batch_size=128)
    make_method("redcore").fit(data, P, seed=0, cfg=TrainConfig(epochs=1, batch_size=128), device=dev)  # warm-up
    for name in ["zp_concat", "cra", "amae_lite", "mmin_lite", "redcore"]:
        t0 = time.perf_counter()
        make_method(name).fit(data, P, seed=0, cfg=cfg, device=dev)
        dt = time.perf_counter() - t0
        extra = " (a teacher fit first)" if name == "mmin_lite" else ""
        print(f"{name:10s} affect, {n} samples, batch 128: {dt / epochs:6.3f} s/epoch, {n * epochs / dt:7.0f} samples/s{extra}")


if __name__ == "__main__":
    main()
