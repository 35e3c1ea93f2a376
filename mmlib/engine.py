"""The ensemble engine: K fits of one network trained in one step loop.

A chapter's grid fits the same architecture many times: seeds x settings (missing rates and
patterns only change the masks, which are data) x scalar options. Small networks on a CPU are
bound by per-step overhead, not arithmetic, so the engine trains those fits, its *members*,
together:

- the members' weights are rows of one flat tensor ``W`` of shape (K, n_params); each step
  runs the method's single-model loss for every member at once with ``torch.func.vmap`` over
  ``functional_call`` (the method's code stays one model, top to bottom);
- one fused Adam step for every member (``torch._fused_adam_`` over the members' rows: Adam
  is elementwise, so this is one optimiser per member, each with its own step count);
- per member: its initialisation (the model built after seeding with its seed), its training
  rows, its extra tensors (its presence matrix, its masked validation split), its batch order
  and dropout noise (its own generators, drawn once per epoch), its learning rate, its early
  stopping and best epoch. Members with fewer rows get padded batches with zero row weights
  (the loss is a weighted mean), and sit out the steps after their epoch ended (Adam skips
  them, so their step counts stay their own);
- the best weights are kept with ``torch.where`` on a best-score tensor; a member that
  stopped leaves the stacked tensors, so it costs nothing afterwards.

Nothing per member runs in Python inside an epoch; per epoch, each member draws its batch
order and noise (one call each) and its history line is written.

A member's result is what its fit alone gives (``K = 1`` runs the plain loop,
:func:`mmlib.train.fit`, which draws the same batch order and dropout masks): the members never
read each other's numbers, only the floating-point order of the batched matrix products and of
the padded last batch's sums differs (tests check it).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from .models import noise_stream
from .train import Call, DropoutStream, fit


@dataclass
class Member:
    """One fit of the ensemble. ``model``: the network, built after seeding with ``seed`` (its
    initialisation); ``rows``: its training rows (indices into the data tensors, on the device);
    ``extra``: a tensor or a dict of tensors its loss and validation read (e.g. its presence
    matrix), stacked over members; ``lr``: its learning rate (None: the config's)."""
    model: nn.Module
    rows: torch.Tensor
    extra: Any
    seed: int
    lr: float | None = None


@dataclass
class Parts:
    """What a method trains on the engine, for a method that trains it its own way (M3S): the
    copies of the method that receive the fitted networks, their members, and the loss, the
    validation outputs and the validation score as :func:`fit_ensemble` takes them."""
    copies: list
    members: list[Member]
    loss: Callable
    val_logits: Callable
    val_score: Callable


def order_generator(seed: int) -> torch.Generator:
    """The generator of a fit's batch order (as :func:`mmlib.train.fit`)."""
    return torch.Generator().manual_seed(int(seed))


def noise_generator(seed: int) -> torch.Generator:
    """The generator of a fit's dropout noise (as :class:`mmlib.train.DropoutStream`)."""
    return DropoutStream(seed).gen


class _Listed:
    """Hands out pre-drawn noise tensors in call order (inside a vmap-ed step)."""

    def __init__(self, tensors):
        self.tensors, self.i = tensors, 0

    def draw(self, shape, device):
        u = self.tensors[self.i]
        self.i += 1
        if tuple(u.shape) != tuple(shape):
            raise RuntimeError(f"dropout noise of shape {tuple(u.shape)} drawn for an input of shape {shape}")
        return u


class _Recorder:
    def __init__(self):
        self.shapes = []

    def draw(self, shape, device):
        self.shapes.append(tuple(shape))
        return torch.ones(shape, device=device)


def _stack(extras):
    if isinstance(extras[0], dict):
        return {k: torch.stack([e[k] for e in extras]) for k in extras[0]}
    return torch.stack(extras)


def _take(extra, keep):
    if isinstance(extra, dict):
        return {k: v[keep] for k, v in extra.items()}
    return extra[keep]


@dataclass(frozen=True)
class _Rows:
    """A noise tensor's first dimension that follows the batch: its B rows, after ``extra`` rows the
    loss puts before them (e.g. HGR's top-up rows)."""
    extra: int


def _noise_shapes(loss_fn, model, rows, extra, batch_size) -> list[tuple]:
    """The dropout layers' input shapes in call order for a batch of ``batch_size`` rows; a first
    dimension that follows the batch (found by a second dry run) is a :class:`_Rows`."""
    recs = []
    for bs in (batch_size, batch_size + 1):
        idx = rows[torch.arange(bs, device=rows.device) % len(rows)]
        rec = _Recorder()
        with noise_stream(rec), torch.no_grad():
            loss_fn(model, idx, torch.ones(bs, device=rows.device), extra)
        recs.append(rec.shapes)
    out = []
    for a, b in zip(*recs):
        if a[0] != b[0] and (b[0] - a[0] != 1 or a[0] < batch_size):
            raise ValueError(f"a dropout input of {a[0]} rows for a batch of {batch_size} and {b[0]} for one more row: "
                             "the engine needs its rows to be the batch's, after any fixed number of others")
        out.append((_Rows(a[0] - batch_size), *a[1:]) if a[0] != b[0] else a)
    return out


def _dim(d, b):
    return b + d.extra if isinstance(d, _Rows) else d


def _size(shape, b):
    n = _dim(shape[0], b)
    for d in shape[1:]:
        n *= d
    return n


def _fit_alone(m: Member, loss_fn, val_logits, val_score, cfg, desc, program=None, steps_per_batch=1,
               val_report=None) -> list[dict]:
    """One member: the plain loop (:func:`mmlib.train.fit`), which draws the same batches and noise
    as a member of an ensemble and skips ``functional_call`` (about 1.3x faster for one fit; any
    network, BatchNorm too); ``weight=None`` in the loss: every row of the batch counts. With a
    ``program``, its state is a batch of one, updated around each step as the engine does."""
    if len(m.rows) == 0:
        raise ValueError(f"ensemble member 0 (seed {m.seed}) has no training rows")
    cfg = cfg if m.lr is None else dataclasses.replace(cfg, lr=float(m.lr))
    extra, lines = m.extra, []
    if program is None:
        epoch_start = None

        def loss(model, idx):
            return loss_fn(model, idx, None, m.extra)
    else:
        state, now = program.init([m]), {"epoch": 0, "calls": 0, "extra": _stack([m.extra])}
        one = torch.ones(1, dtype=torch.bool, device=m.rows.device)

        def epoch_start(epoch):
            now["epoch"], now["calls"], now["extra"] = epoch, 0, program.epoch(now["extra"], [0], epoch)

        def loss(model, idx):
            program.at(now["calls"] // steps_per_batch, now["calls"] % steps_per_batch)
            now["calls"] += 1
            with torch.no_grad():
                program.before(state, one, [0], now["epoch"])
            value, aux = loss_fn(model, idx, None, _take(now["extra"], 0), {k: v[0] for k, v in state.items()})
            with torch.no_grad():
                program.after(state, {k: v.detach()[None] for k, v in aux.items()}, one, [0], now["epoch"])
            return value

    def score(model):
        line = program.history(state)[0] if program is not None else {}
        with noise_stream(None):                    # validation draws nothing from the fit's noise stream
            out = val_logits(model, _take(now["extra"], 0) if program else extra).unsqueeze(0)
        if val_report is not None:
            line = {**line, "val_metrics": val_report(out[0])}
        lines.append(line)
        return float(val_score(out)[0])
    with noise_stream(DropoutStream(m.seed)):
        _, history = fit(m.model, loss, m.rows, score, cfg, seed=m.seed, desc=desc, epoch_start=epoch_start,
                         steps_per_batch=steps_per_batch)
    return [{**h, **line} for h, line in zip(history, lines)]


class Program:
    """A method's training state beyond its weights, kept for every member at once (e.g.
    RedCore's modality weights eta and their moving averages). The state is a dict of tensors
    whose first dimension is the member (the rows of the live members, as the engine's other
    stacked tensors); the loss reads its member's row (``loss_fn(model, idx, weight, extra,
    state)`` returns ``(loss, aux)``, ``aux`` a dict of tensors). ``alive``: which member each
    row is; ``active``: (rows,) bool, the members whose epoch is not over (the others sit the
    step out and must keep their state)."""

    #: whether a fit alone may run the plain loop (:func:`mmlib.train.fit`); a program with a schedule,
    #: parameter groups or hooks around Adam says False: its one-member fits run on the ensemble's path
    plain_loop = True
    #: parameter groups, as name prefixes in the model's order (None: one group): each member keeps an
    #: Adam step count per group, and a step updates the groups whose parameters the loss read (as the
    #: plain loop's Adam leaves a parameter without a gradient alone, its step count too)
    groups: tuple[str, ...] | None = None

    def init(self, members: list[Member]) -> dict:
        """The state of every member before the first step."""
        return {}

    def schedule(self, alive: list[int], orders: list[torch.Generator], batch_size: int, epoch: int):
        """The live members' steps of an epoch, drawn from their order generators (``orders``, one per
        live member): ``(idx, weight)``, each (k, T, R, B) with R the ``steps_per_batch``: step (t, j)
        of member r trains on the rows ``idx[r, t, j]`` with weights ``weight[r, t, j]`` (1 for a row,
        its rows first; 0 for padding). A step without rows sits the member out. None: the engine's
        schedule (each member's rows in a random order, every batch R times)."""
        return None

    def at(self, t: int, j: int) -> None:
        """The step about to run: batch position ``t``, sub-step ``j`` (Python numbers, the same for
        every member: the loss may choose its code by them)."""

    def begin(self, state: dict, run: Callable, alive: list[int], epoch: int) -> None:
        """Before an epoch's steps (no gradient): ``run(fn, *args)`` gives ``fn(model, *args)`` for every
        live member (the model in eval mode; ``args`` stacked over the live members)."""

    def epoch(self, extra, alive: list[int], epoch: int):
        """The members' ``extra`` for this epoch (e.g. masks that move every epoch)."""
        return extra

    def before(self, state: dict, active: torch.Tensor, alive: list[int], epoch: int) -> None:
        """Update ``state`` in place before a step (no gradient)."""

    def after(self, state: dict, aux: dict, active: torch.Tensor, alive: list[int], epoch: int) -> None:
        """Update ``state`` in place from the step's ``aux`` (detached)."""

    def adjust(self, state: dict, grads: dict, params: dict, active: torch.Tensor) -> None:
        """After :meth:`after`, before Adam: change the live members' gradients in place (``grads``,
        ``params``: the model's parameter names -> (k, *shape) views; a parameter the step did not read
        holds an old gradient that Adam does not use)."""

    def updated(self, state: dict, params: dict, active: torch.Tensor) -> None:
        """After Adam: change the live members' weights in place (``params`` as in :meth:`adjust`)."""

    def history(self, state: dict) -> list[dict]:
        """What each live member's history line adds at the end of an epoch."""
        return [{} for _ in range(len(next(iter(state.values()))) if state else 0)]


def _run_all(call_eval, fn, params, args):
    """``fn(model, *args)`` for every member at once (the model of ``call_eval``, in eval mode)."""
    from torch.func import functional_call, vmap
    call = Call(call_eval.model, fn).eval()
    return vmap(lambda p, *a: functional_call(call, p, a, tie_weights=False))(params, *args)


def fit_ensemble(members: list[Member], loss_fn: Callable, val_logits: Callable, val_score: Callable, cfg,
                 desc: str = "train", program: Program | None = None, steps_per_batch: int = 1,
                 val_report: Callable | None = None) -> list[list[dict]]:
    """Train every member; load each one's best validation epoch into its ``model`` (eval mode)
    and return the members' histories (one dict per epoch, as :func:`mmlib.train.fit`).

    ``loss_fn(model, idx, weight, extra)``: the member's loss on the batch ``idx`` (B,) with row
    weights ``weight`` (B,) (1 for a row, 0 for padding): the weighted mean of its rows' losses;
    no Python control flow on values. ``val_logits(model, extra)``: the validation outputs;
    ``val_score(out)``: the scores of K members' outputs (K, ...) as a (K,) tensor, higher is
    better. Every member needs the same architecture and, unless it is alone, no buffers (no
    BatchNorm), or buffers its model declares constant (``constant_buffers = True``: each member's
    own, read and never written, e.g. SMIL's priors). ``program``: per-member training state (:class:`Program`); the loss then takes
    the member's state and returns ``(loss, aux)``. ``steps_per_batch``: optimiser steps taken on
    each batch of the member's order (the loss tells them apart through its ``program``'s state,
    e.g. M3S's compute-matched settings); ``val_report(out)``: metrics of one member's validation
    outputs, kept in its history line as ``val_metrics``."""
    from torch.func import functional_call, vmap
    K, B = len(members), cfg.batch_size
    if K == 0:
        return []
    if K == 1 and (program is None or program.plain_loop):      # (any network, BatchNorm too)
        return [_fit_alone(members[0], loss_fn, val_logits, val_score, cfg, desc, program, steps_per_batch, val_report)]
    first = members[0].model
    if any(True for _ in first.buffers()) and not getattr(first, "constant_buffers", False):
        raise ValueError("the ensemble engine needs models without buffers (BatchNorm): fit them one by one")
    # buffers a model declares constant (``constant_buffers``: set before training, never written, e.g. SMIL's
    # priors): each member's own, passed with its weights, not trained
    bufs = {"model." + n: torch.stack([m.model.get_buffer(n) for m in members]) for n, _ in first.named_buffers()}
    names = [n for n, _ in first.named_parameters()]
    shapes = [p.shape for _, p in first.named_parameters()]
    for m in members[1:]:
        if [(n, p.shape) for n, p in m.model.named_parameters()] != list(zip(names, shapes)):
            raise ValueError("members of one ensemble need the same architecture (parameter names and shapes)")
    for k, m in enumerate(members):
        if len(m.rows) == 0:
            raise ValueError(f"ensemble member {k} (seed {m.seed}) has no training rows")
    sizes = [math.prod(s) for s in shapes]
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    device = next(first.parameters()).device

    # a matrix is stored transposed, (in, out): the gradient x^T g of a linear layer is then computed in the
    # stored layout (contiguous), so copying it costs a memcpy, not a transposition
    stored = [(s[1], s[0]) if len(s) == 2 else tuple(s) for s in shapes]
    flip = [len(s) == 2 for s in shapes]

    def flat_of(model):
        return torch.cat([(p.detach().t() if f else p.detach()).reshape(-1) for p, f in zip(model.parameters(), flip)])

    # the live members' state (rows of stacked tensors); ``alive[i]``: the member held in row i
    W = torch.stack([flat_of(m.model) for m in members])
    exp_avg, exp_avg_sq = torch.zeros_like(W), torch.zeros_like(W)
    best_W = W.clone()
    best_score = torch.full((K,), -math.inf, device=device)
    best_epoch = torch.full((K,), -1, dtype=torch.long, device=device)
    extra = _stack([m.extra for m in members])
    alive = list(range(K))
    lrs = [cfg.lr if m.lr is None else float(m.lr) for m in members]
    orders = [order_generator(m.seed) for m in members]
    noises = [noise_generator(m.seed) for m in members]
    done: dict[int, torch.Tensor] = {}
    histories: list[list[dict]] = [[] for _ in range(K)]

    train_fn = Call(copy.deepcopy(first).to("meta"), loss_fn).train()
    val_fn = Call(copy.deepcopy(first).to("meta"), val_logits).eval()
    keys = ["model." + n for n in names]

    def views(flat):      # (k, n_params) -> {name: (k, *stored shape)}, views of the flat tensor
        return {key: flat[:, a:b].view(flat.shape[0], *s) for key, a, b, s in zip(keys, offsets, offsets[1:], stored)}

    flip_of = dict(zip(keys, flip))

    def as_params(v):     # stored views -> the parameters as the model names them, (k, *shape)
        return {key: x.transpose(-1, -2) if flip_of[key] else x for key, x in v.items()}

    def leaves(flat):     # the views as leaves of their own: each gradient lands in its slice, no full-size zeros
        return {k: v.requires_grad_(True) for k, v in views(flat).items()}

    state = program.init(members) if program is not None else {}
    row0 = (lambda model, idx, w, e: loss_fn(model, idx, w, e, {k: v[0] for k, v in state.items()})) \
        if program is not None else loss_fn
    R = steps_per_batch
    noise_shapes = []               # per sub-step j (a loss may read other layers at other sub-steps: MLA)
    for j in range(R):
        if program is not None:
            program.at(0, j)
        noise_shapes.append(_noise_shapes(row0, first, members[0].rows, members[0].extra, B))
    step_sizes = [sum(_size(s, B) for s in shapes) for shapes in noise_shapes]
    step_size = max(step_sizes)
    # Adam's parameter groups: slices of a member's row, each with its own step counts
    if program is not None and program.groups is not None:
        group_of = []
        for n in names:
            hit = [g for g, pre in enumerate(program.groups) if n == pre or n.startswith(pre + ".")]
            if not hit:
                raise ValueError(f"parameter {n!r} is in none of the program's groups {program.groups}")
            group_of.append(hit[0])
        if group_of != sorted(group_of):
            raise ValueError(f"the program's groups {program.groups} must follow the model's parameter order")
        slices = [(offsets[group_of.index(g)], offsets[len(group_of) - group_of[::-1].index(g)])
                  for g in range(len(program.groups))]
    else:
        group_of, slices = [0] * len(names), [(0, offsets[-1])]
    steps = [[torch.zeros((), dtype=torch.float32, device=device) for _ in slices] for _ in range(K)]

    def member_loss(p, idx, w, e, st, *noise):
        with noise_stream(_Listed(noise)):
            return functional_call(train_fn, p, (idx, w, e, st) if program is not None else (idx, w, e), tie_weights=False)

    def member_val(p, e):
        return functional_call(val_fn, p, (e,), tie_weights=False)

    # validation may sample (e.g. a VIB's code at test time): each member draws its own noise
    vstep, vval = vmap(member_loss), vmap(member_val, randomness="different")

    def step(p, idx, w, e, st, *noise):    # (a member left alone keeps its row: K' = 1 is a batch of one)
        out = vstep({**as_params(p), **bufs}, idx, w, e, st, *noise)
        return out if program is not None else (out, None)

    def validate(p, e):
        return vval({**as_params(p), **bufs}, e)
    grad_buf = torch.zeros_like(W)
    n_rows = [len(m.rows) for m in members]
    unused = None
    reads: dict[int, list[int]] = {}

    bar = tqdm(range(cfg.epochs), desc=desc, disable=not cfg.progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        k_live = len(alive)
        if program is not None:
            extra = program.epoch(extra, alive, epoch)
            with torch.no_grad():
                program.begin(state, lambda fn, *args: _run_all(val_fn, fn, {**as_params(views(W)), **bufs}, args), alive, epoch)
        sched = program.schedule(alive, [orders[i] for i in alive], B, epoch) if program is not None else None
        if sched is None:   # each member's rows in the order a fit of its own draws them, every batch R times
            T_max = max(-(-n_rows[i] // B) for i in alive)
            idx = torch.empty(k_live, T_max * B, dtype=torch.long, device=device)
            wts = torch.zeros(k_live, T_max * B, device=device)
            for r, i in enumerate(alive):
                rows, n = members[i].rows, n_rows[i]
                perm = rows[torch.randperm(n, generator=orders[i]).to(rows.device)]
                idx[r, :n] = perm
                idx[r, n:] = perm[0]                    # padding: any row, weight 0
                wts[r, :n] = 1.0
            idx = idx.view(k_live, T_max, 1, B).expand(k_live, T_max, R, B)
            wts = wts.view(k_live, T_max, 1, B).expand(k_live, T_max, R, B)
        else:
            idx, wts = sched
            T_max = idx.shape[1]
            if tuple(idx.shape) != (k_live, T_max, R, B) or idx.shape != wts.shape:
                raise ValueError(f"a schedule of shape {tuple(idx.shape)} for {k_live} members, {R} steps per "
                                 f"batch and batches of {B}")
        counts = wts.sum(-1)                            # (k, T, R): each step's rows
        count_l = counts.round().long().tolist()
        # each member's dropout noise for the epoch, from its own generator in the order a fit of its own draws
        # it: step by step, a short step's noise short (runs of contiguous slots in one call)
        noise = torch.zeros(k_live, T_max, R, step_size)
        if step_size:
            for r, i in enumerate(alive):
                flat, runs = noise[r].view(-1), []
                for t in range(T_max):
                    for j in range(R):
                        c = count_l[r][t][j]
                        if c == 0:
                            continue
                        off = (t * R + j) * step_size
                        for sh in noise_shapes[j]:
                            a, n_el = off, _size(sh, c)
                            if runs and runs[-1][1] == a:
                                runs[-1][1] = a + n_el
                            else:
                                runs.append([a, a + n_el])
                            off += _size(sh, B)
                for a, b in runs:
                    flat[a:b].uniform_(generator=noises[i])
        noise = noise.to(device)
        # Adam's argument lists per set of members that step and groups that the step reads (the step counts
        # stay each member's own), one fused call per learning rate
        active_l = [[tuple(r for r in range(k_live) if count_l[r][t][j] > 0) for j in range(R)] for t in range(T_max)]
        active_t = {}
        plans: dict[tuple, list] = {}

        def plan(act, present):
            if (act, present) not in plans:
                by_lr: dict[float, list[int]] = {}
                for r in act:
                    by_lr.setdefault(lrs[alive[r]], []).append(r)
                gs = [slices[g] for g in present]
                plans[act, present] = [
                    (lr, [W[r, a:b] for r in rs for a, b in gs], [grad_buf[r, a:b] for r in rs for a, b in gs],
                     [exp_avg[r, a:b] for r in rs for a, b in gs], [exp_avg_sq[r, a:b] for r in rs for a, b in gs],
                     [steps[alive[r]][g] for r in rs for g in present]) for lr, rs in by_lr.items()]
            return plans[act, present]
        params, grad_views = leaves(W), list(views(grad_buf).values())
        if program is not None:
            w_model, g_model = as_params(views(W)), as_params(views(grad_buf))
        totals = torch.zeros(k_live, device=device)
        for t, j in ((t, j) for t in range(T_max) for j in range(R)):
            act = active_l[t][j]
            if not act:
                continue
            if act not in active_t:
                active_t[act] = torch.tensor([r in act for r in range(k_live)], device=device)
            active = active_t[act]
            off, noise_t = 0, []
            for sh in noise_shapes[j]:
                n_el = _size(sh, B)
                noise_t.append(noise[:, t, j, off:off + n_el].view(k_live, _dim(sh[0], B), *sh[1:]))
                off += n_el
            if program is not None:
                program.at(t, j)
                with torch.no_grad():
                    program.before(state, active, alive, epoch)
            sel = reads.get(j)              # with groups: only the parameters sub-step j reads (learnt at its
            p_in = params if sel is None else {keys[q]: params[keys[q]] for q in sel}   # first step) are swapped in
            losses, aux = step(p_in, idx[:, t, j], wts[:, t, j], extra, state, *noise_t)
            grads = torch.autograd.grad(losses.sum(), list(p_in.values()), allow_unused=True)
            if sel is not None:
                full_g = [None] * len(keys)
                for q, g in zip(sel, grads):
                    full_g[q] = g
                grads = full_g
            if len(slices) > 1:             # the groups the step read: each whole or not at all
                have = [g is not None for g in grads]
                present = tuple(sorted({group_of[q] for q, h in enumerate(have) if h}))
                if any(not have[q] for q in range(len(names)) if group_of[q] in present):
                    raise ValueError("a step read part of a parameter group: the program's groups must be "
                                     "read whole or not at all")
                reads.setdefault(j, [q for q in range(len(names)) if have[q]])
                restore = []
            else:
                present = (0,)
                if unused is None:          # parameters the loss never reads (e.g. RedCore's Red has no unimodal
                    unused = [(a, b) for g, a, b in zip(grads, offsets, offsets[1:]) if g is None]   # decoders):
                restore = unused            # Adam leaves them alone, as the plain loop's does
            with torch.no_grad():
                kept = [W[:, a:b].clone() for a, b in restore]
                if program is not None:
                    program.after(state, {k: v.detach() for k, v in aux.items()}, active, alive, epoch)
                totals += losses.detach() * counts[:, t, j]
                for gb, g in zip(grad_views, grads):
                    if g is not None:
                        gb.copy_(g)
                if program is not None:
                    program.adjust(state, g_model, w_model, active)
                for lr, ps, gs, ms, vs, st in plan(act, present):
                    torch._foreach_add_(st, 1)
                    torch._fused_adam_(ps, gs, ms, vs, [], st, amsgrad=False, lr=lr, beta1=0.9, beta2=0.999,
                                       weight_decay=cfg.weight_decay, eps=1e-8, maximize=False)
                for (a, b), v in zip(restore, kept):
                    W[:, a:b] = v
                if program is not None:
                    program.updated(state, w_model, active)
        with torch.no_grad():
            outs = validate(views(W), extra)
            scores = val_score(outs).to(device).float()
            better = scores > best_score
            best_score = torch.where(better, scores, best_score)
            best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
            best_W = torch.where(better[:, None], W, best_W)
            if cfg.patience is None:
                stop = torch.zeros(k_live, dtype=torch.bool, device=device)
            else:
                stop = (epoch - best_epoch >= cfg.patience) & (epoch + 1 >= cfg.min_epochs)
        seconds = (time.perf_counter() - t0) / k_live
        loss_list = (totals.cpu() / counts.sum((1, 2)).cpu().clamp(min=1)).tolist()
        score_list = scores.tolist()
        more = program.history(state) if program is not None else [{}] * k_live
        if val_report is not None:
            more = [{**line, "val_metrics": val_report(o)} for line, o in zip(more, outs)]
        for r, i in enumerate(alive):
            histories[i].append({"epoch": epoch, "train_loss": loss_list[r], "val_score": score_list[r],
                                 **more[r], "seconds": seconds, "batched": K})
        bar.set_postfix(members=k_live, best=f"{max(score_list):.3f}")
        if epoch == cfg.epochs - 1:
            stop = torch.ones_like(stop)
        if bool(stop.any()):
            stop_l = stop.tolist()
            for r, i in enumerate(alive):
                if stop_l[r]:
                    done[i] = (best_W[r] if int(best_epoch[r]) >= 0 else W[r]).clone()
            keep = torch.tensor([not s for s in stop_l], device=device)
            alive = [i for r, i in enumerate(alive) if not stop_l[r]]
            if not alive:
                break
            with torch.no_grad():
                W = W[keep]
                exp_avg, exp_avg_sq, best_W = exp_avg[keep].clone(), exp_avg_sq[keep].clone(), best_W[keep]
                best_score, best_epoch = best_score[keep], best_epoch[keep]
                grad_buf = torch.zeros_like(W)
            extra = _take(extra, keep)
            bufs = {k: v[keep] for k, v in bufs.items()}
            state = {k: v[keep] for k, v in state.items()}
    for i, m in enumerate(members):
        flat = done[i]
        with torch.no_grad():
            for p, a, b, st, f in zip(m.model.parameters(), offsets, offsets[1:], stored, flip):
                v = flat[a:b].view(st)
                p.copy_(v.t() if f else v)
        m.model.eval()
    return histories
