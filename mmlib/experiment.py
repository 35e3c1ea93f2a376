"""Run one method on one dataset under one missing pattern and one seed -> one record.

This is the harness every chapter calls: it builds the training presence matrix from a
spec and a seed, fits the method (selecting on validation), evaluates it on the test split
under each test pattern, and returns a record (see :mod:`mmlib.results`). With
``records_dir`` the record is written there, and a run whose record already exists is not
repeated (``reuse=True``), so an interrupted chapter resumes where it stopped.
"""
from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sized
from pathlib import Path

import numpy as np
import torch

from . import masks, metrics
from .data import MultimodalDataset
from .methods import Method, decide, make_method
from .results import PLUMBING, existing_record, log_record_use, provenance, record_path, utc_now, versions, write_record
from .train import TrainConfig, get_device


def pack_presence(presence: torch.Tensor) -> dict:
    """A presence matrix as compact JSON (bit-packed, base64)."""
    a = presence.bool().cpu().numpy()
    return {"shape": list(a.shape), "bits": base64.b64encode(np.packbits(a, axis=None)).decode()}


def unpack_presence(d: dict) -> torch.Tensor:
    n, m = d["shape"]
    bits = np.unpackbits(np.frombuffer(base64.b64decode(d["bits"]), dtype=np.uint8))[: n * m]
    return torch.from_numpy(bits.reshape(n, m).astype(bool))


def count_parameters(method) -> int:
    """Trainable parameters of every network a fitted method holds (each counted once)."""
    seen, total = set(), 0

    def visit(obj):
        nonlocal total
        if isinstance(obj, Method):                     # a wrapped base method (e.g. M3S's)
            if id(obj) not in seen:
                seen.add(id(obj))
                for v in vars(obj).values():
                    visit(v)
        elif isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)
    for v in vars(method).values():
        visit(v)
    return total


# the validation split's mask at seed s is drawn from its own stream, seed s + VAL_SEED_OFFSET; a masked
# test split's (``test_missing``) from seed s + TEST_SEED_OFFSET
VAL_SEED_OFFSET = 10_000
TEST_SEED_OFFSET = 20_000


def masked_test_presence(data: MultimodalDataset, test_missing: dict, seed: int) -> torch.Tensor:
    """The test split's presence matrix for a spec (MLA's protocol masks the test split like
    training), from its own seeded stream: the same for every method at a seed."""
    return masks.from_spec(test_missing, len(data.splits["test"]), data.modality_names, seed + TEST_SEED_OFFSET)


def validation_presence(data: MultimodalDataset, val_missing: dict | None, seed: int) -> torch.Tensor | None:
    """The validation split's presence matrix for a spec (None: every modality present),
    drawn like the training split's but from its own seeded stream."""
    if val_missing is None:
        return None
    return masks.from_spec(val_missing, len(data.splits["val"]), data.modality_names, seed + VAL_SEED_OFFSET)


def corrupted(data: MultimodalDataset, corruption: dict, seed: int) -> tuple[MultimodalDataset, dict]:
    """Missing *inside* modalities (M3S): the data a method is fitted on, with spans of the
    training and validation rows zeroed (fixed per seed, drawn by :func:`masks.span_masks`),
    and one copy per test corruption with spans of the test rows zeroed.

    ``corruption``: ``{"band": [low, high], "axis": "time", "test": {"40-60%": [0.4, 0.6], ...}}``
    (``band``: the hidden fraction of each training and validation row, per modality; each
    test label draws its own spans, the same for every method at a seed). The fit data keeps
    the clean features in ``info["clean"]`` for a method that is meant to see them.
    Returns ``(fit data, {label: test data})``."""
    shapes = {m: tuple(x.shape[1:]) for m, x in data.modalities.items()}
    band, axis = corruption.get("band"), corruption.get("axis", "time")
    tests = corruption.get("test") or {}
    if band is None or not tests:
        raise ValueError(f"a corruption needs a 'band' and at least one 'test' band, got {corruption}")
    kept = masks.span_masks(shapes, len(data), data.splits, {"train": band, "val": band}, seed, data.lengths, axis)
    out = {}
    for label, b in tests.items():
        stream = 1 + int(hashlib.sha1(str(label).encode()).hexdigest()[:6], 16)      # stable per label
        out[label] = data.with_spans(masks.span_masks(shapes, len(data), data.splits, {"test": b}, seed,
                                                      data.lengths, axis, stream=stream))
    fit = data.with_spans(kept, keep_clean=True)
    fit.info["spans"] = {"band": list(band), "axis": axis, "masks": kept}    # what a span-aware method needs
    return fit, out


def run_identity(data: MultimodalDataset, method: Method, presence: torch.Tensor, seed: int,
                 cfg: TrainConfig, profile: str | None, val_missing: dict | None = None,
                 corruption: dict | None = None, test_missing: dict | None = None) -> dict:
    """What makes two runs the same fit: the data (fingerprint), the method and its config,
    the part of the training presence matrix the method uses (a hash of it: the lower bound
    gives the same fit at every audio missing rate), the seed, the training budget and the
    profile, and the version of the code the fit runs (:meth:`mmlib.methods.Method.code_version`:
    a record of other code is not this fit's). The missing-pattern spec is stored in the record,
    not in its identity."""
    used = method.used_presence(data, presence).bool().cpu().numpy()
    digest = hashlib.sha1(np.packbits(used, axis=None).tobytes() + str(used.shape).encode()).hexdigest()[:16]
    ident = {"dataset": data.name, "data_fingerprint": data.fingerprint(), "method": method.name,
             "method_config": method.config(), "presence": {"shape": list(used.shape), "sha1": digest},
             "seed": int(seed), "train_config": cfg.to_dict() | {"progress": None}, "profile": profile,
             "code": method.code_version()}
    if val_missing is not None:                  # selection on a masked validation split changes the fit
        ident["val_missing"] = val_missing
    if corruption is not None:                   # spans zeroed inside the modalities
        ident["corruption"] = corruption
    if test_missing is not None:                 # the record also holds the metrics on a masked test split
        ident["test_missing"] = test_missing
    return ident


def evaluate(method: Method, data: MultimodalDataset, split: str = "test",
             patterns: list[tuple[str, ...]] | None = None, pooled: dict | None = None) -> dict[str, dict[str, float]]:
    """Metrics on ``split`` for each test pattern (default: every non-empty subset of the
    modalities the method uses), keyed like ``"image+audio"``; on data with a Bayes oracle
    (``gaussian``) also ``kl_oracle``, KL(exact posterior || the method's) in nats. If a dict ``pooled`` is
    given, it receives the metrics over every pattern's predictions together (the split
    replicated once per pattern, as RedCore's and MMIN's code score it)."""
    names = data.modality_names
    used = method.used_modalities(names)
    required = set(method.required)                     # e.g. MLE's always-observed x
    if patterns is None:
        patterns = [p for p in masks.test_patterns(names) if set(p) & set(used) and required <= set(p)]
    y = data.y[data.splits[split]]
    oracle = has_oracle(data)               # the exact posterior is known: how far the method's is from it
    if oracle:
        from .data.gaussian import kl_to_oracle
    out, preds = {}, []
    for pat in patterns:
        P = masks.pattern(len(data.splits[split]), names, pat)
        logits = method.predict(data, split, P)
        pred = decide(data.task, logits)
        out["+".join(pat)] = metrics.report(data.task, y, pred)
        if oracle:
            out["+".join(pat)]["kl_oracle"] = kl_to_oracle(data, split, P, logits)
        preds.append(pred)
    if pooled is not None and preds:
        pooled.update(metrics.report(data.task, y.repeat(len(preds), *([1] * (y.dim() - 1))), torch.cat(preds)))
    return out


def has_oracle(data: MultimodalDataset) -> bool:
    """Whether the data's exact posterior is known (``gaussian``, uncorrupted, a class label)."""
    return "oracle" in data.info and data.task == "multiclass" and "spans" not in data.info


def usable_record(path, data: MultimodalDataset, corruption: dict | None = None) -> dict | None:
    """The record at ``path`` if it can be reused on ``data``: readable (a corrupt one is set
    aside) and complete, i.e. holding every metric this version records for such data (a record
    of a ``gaussian`` fit written before the oracle KL was recorded is refitted)."""
    rec = existing_record(path)
    if rec is not None and corruption is None and has_oracle(data) and rec.get("metrics") and \
            any("kl_oracle" not in ms for ms in rec["metrics"].values()):
        return None
    return rec


SHARED = "shared"       # the record store's folder of fits shared between runs (Method.shared_dir)


def _check_seed(seed) -> None:
    import numbers
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"a seed must be a non-negative integer, got {seed!r}")


def run(data: MultimodalDataset, method: str | Method, missing: dict, seed: int,
        cfg: TrainConfig | None = None, device=None, records_dir=None, reuse: bool = True,
        profile: str | None = None, tags: dict | None = None, method_kwargs: dict | None = None,
        patterns=None, val_missing: dict | None = None, corruption: dict | None = None,
        test_missing: dict | None = None) -> tuple[dict, Method | None]:
    """Fit and evaluate; return ``(record, fitted method)``. When the record exists in
    ``records_dir`` and ``reuse`` is True it is loaded instead, and the method is None.
    ``val_missing``: a spec for the validation split's mask (:func:`validation_presence`;
    None: model selection sees every modality). ``corruption``: spans zeroed inside the
    modalities (:func:`corrupted`); the metrics are then keyed ``"<pattern>@<test label>"``.
    ``test_missing``: a spec that also masks the test split (:func:`masked_test_presence`); its
    metrics are keyed ``"masked"``, beside the per-pattern ones."""
    cfg = cfg or TrainConfig()
    _check_seed(seed)
    method_kwargs = method_kwargs or {}
    m = make_method(method, **method_kwargs) if isinstance(method, str) else method
    names = data.modality_names
    presence = masks.from_spec(missing, len(data.splits["train"]), names, seed)
    val_presence = validation_presence(data, val_missing, seed)
    if val_presence is not None and not m.masked_validation:
        raise ValueError(f"{m.name} cannot select on a masked validation split (masked_validation is False); "
                         "run it with val_missing=None")
    if corruption is not None and not m.reads_data_at_predict:
        raise ValueError(f"{m.name} predicts from the data it was fitted on, so it cannot be tested on a corrupted "
                         "copy; run it without a corruption")
    identity = run_identity(data, m, presence, seed, cfg, profile, val_missing, corruption, test_missing)
    if records_dir is not None and reuse:
        path = record_path(records_dir, identity)
        rec = usable_record(path, data, corruption)     # a corrupt one (e.g. truncated by a kill) is set aside
        if rec is not None:
            log_record_use(path)
            return rec, None
    device = get_device(device)
    started = utc_now()
    t0 = time.perf_counter()
    fit_data, tests = (data, None) if corruption is None else corrupted(data, corruption, seed)
    if records_dir is not None:             # fits shared between runs (SMIL's warm starts) beside the records
        m.shared_dir = str(Path(records_dir) / SHARED)
    m.fit(fit_data, presence, seed=seed, cfg=cfg, device=device,
          **({"val_presence": val_presence} if val_presence is not None else {}))
    record = make_record(fit_data, m, identity, missing, presence, time.perf_counter() - t0, device, started,
                         tags, patterns, test_sets=tests,
                         test_mask=None if test_missing is None else masked_test_presence(data, test_missing, seed))
    if records_dir is not None:
        log_record_use(write_record(records_dir, record))
    return record, m


def make_record(data: MultimodalDataset, m: Method, identity: dict, missing: dict, presence: torch.Tensor,
                fit_seconds: float, device, started: str, tags=None, patterns=None, batched: int = 1,
                test_sets: dict | None = None, test_mask: torch.Tensor | None = None) -> dict:
    """Evaluate a fitted method on the test split and describe the run as a record.
    ``test_sets``: ``{label: dataset}`` copies of the data to test on instead (e.g. corrupted
    ones), the metrics keyed ``"<pattern>@<label>"``. ``test_mask``: a presence matrix of the
    test split, its metrics keyed ``"masked"``. A method that exposes ``embed_modality`` also
    gets the modality gap of every pair of modalities on the test split (``modality_gap``)."""
    t0 = time.perf_counter()
    pooled: dict = {}
    if test_sets is None:
        scores = evaluate(m, data, "test", patterns, pooled=pooled)
    else:
        scores = {f"{k}@{label}": v for label, d in test_sets.items()
                  for k, v in evaluate(m, d, "test", patterns).items()}
    if test_mask is not None:
        y = data.y[data.splits["test"]]
        logits = m.predict(data, "test", test_mask)
        scores["masked"] = metrics.report(data.task, y, decide(data.task, logits))
        if test_sets is None and has_oracle(data):
            from .data.gaussian import kl_to_oracle
            scores["masked"]["kl_oracle"] = kl_to_oracle(data, "test", test_mask, logits)
    extra = {"trace": m.trace} if m.trace else {}                       # e.g. RedCore's RA and eta per update
    if m.warm_starts:                                                   # e.g. SMIL's warm starts: budgets, histories
        extra["warm_starts"] = m.warm_starts
    if m.embeds_modalities:
        extra["modality_gap"] = modality_gaps(m, data)
    eval_s = time.perf_counter() - t0
    hist = m.history
    return {
        "identity": identity, "tags": tags or {}, "missing": missing,
        "presence": pack_presence(presence), "presence_summary": masks.describe(presence, data.modality_names),
        "metrics": scores, "pooled_metrics": pooled, **extra,
        "selection": {"split": "val", "best_val": max((h["val_score"] for h in hist), default=None),
                      "best_epoch": (max(range(len(hist)), key=lambda i: hist[i]["val_score"]) if hist else None),
                      "epochs_run": len(hist)},
        "history": hist,
        "timings": {"fit_seconds": fit_seconds, "eval_seconds": eval_s, "batched_seeds": batched},
        "device": str(device), "torch_threads": torch.get_num_threads(), "versions": versions(),
        "provenance": provenance(device, started, count_parameters(m)),
    }


def modality_gap(h_a: torch.Tensor, h_b: torch.Tensor) -> float:
    """Liang et al. (2022)'s modality gap: the distance between the centres of two modalities'
    L2-normalised embeddings, || mean_i h_a(x_i)/|h_a(x_i)| - mean_i h_b(x_i)/|h_b(x_i)| ||."""
    na = torch.nn.functional.normalize(h_a.float(), dim=1).mean(0)
    nb = torch.nn.functional.normalize(h_b.float(), dim=1).mean(0)
    return float((na - nb).norm())


def modality_gaps(m: Method, data: MultimodalDataset, split: str = "test") -> dict[str, float]:
    """The modality gap of every pair of the modalities a method uses, keyed ``"a|b"``."""
    used = m.used_modalities(data.modality_names)
    h = {n: m.embed_modality(data, split, n) for n in used}
    return {f"{a}|{b}": modality_gap(h[a], h[b]) for i, a in enumerate(used) for b in used[i + 1:]
            if h[a].shape[1] == h[b].shape[1]}


def fit_seeds_batched(data: MultimodalDataset, method: str, method_kwargs: dict, missing: dict | list[dict],
                      seeds: list[int], cfg: TrainConfig, device=None, records_dir=None, profile: str | None = None,
                      val_missing: dict | list | None = None, test_missing: dict | list | None = None,
                      corruption: dict | None = None, patterns=None) -> int:
    """Fit the seeds of a method under one or several missing-pattern specs as one ensemble
    (:mod:`mmlib.engine`: members are (spec, seed) pairs, each with its own masks) when the
    method can (``batchable(data)``), and write the records ``records_dir`` lacks. An ensemble
    with any record missing is fitted whole, so a member's numbers never depend on which
    records another run left (members and single fits agree only to rounding). Returns how many
    records were written; methods that cannot batch, or a single member, are left to :func:`run`.
    ``missing``: a spec or a list of specs; ``val_missing`` / ``test_missing``: as in :func:`run`
    (None, or one per spec: each member selects on its own masked validation split);
    ``corruption``, ``patterns``: as in :func:`run` (with a corruption, each member is fitted on its
    seed's corrupted copy of the data and tested on its seed's test copies)."""
    specs = missing if isinstance(missing, list) else [missing]
    vals = val_missing if isinstance(val_missing, list) else [val_missing] * len(specs)
    tests = test_missing if isinstance(test_missing, list) else [test_missing] * len(specs)
    proto = make_method(method, **method_kwargs)
    if records_dir is None or not proto.batchable(data) or (corruption is not None and not proto.data_per_member):
        return 0
    members = []
    for spec, vm, tm in zip(specs, vals, tests):
        for seed in seeds:
            presence = masks.from_spec(spec, len(data.splits["train"]), data.modality_names, seed)
            members.append((spec, vm, tm, seed, presence, run_identity(data, proto, presence, seed, cfg, profile, vm,
                                                                       corruption, tm)))
    # one fit per identity (e.g. the lower bound is the same fit at every missing rate)
    unique = list({record_path(records_dir, m[5]): m for m in members}.items())
    todo = {path for path, _ in unique if usable_record(path, data, corruption) is None}
    # the whole ensemble, or none of it: which records a run finds (another grid run writing the same identities,
    # a killed run's leftovers) must not decide how a member is fitted; the records already there are left
    if len(unique) < 2 or not todo:
        return 0
    device = get_device(device)
    started = utc_now()
    t0 = time.perf_counter()
    group = [m for _, m in unique]
    vps = [validation_presence(data, vm, seed) for _, vm, _, seed, _, _ in group]
    copies = [(data, None) if corruption is None else corrupted(data, corruption, g[3]) for g in group]
    ensemble = make_method(method, **method_kwargs)
    ensemble.shared_dir = str(Path(records_dir) / SHARED)     # fits shared with other runs (SMIL's warm starts)
    fitted_methods = ensemble.fit_seeds(
        data if corruption is None else [c[0] for c in copies], [g[4] for g in group], [g[3] for g in group],
        cfg=cfg, device=device, **({} if all(v is None for v in vps) else {"val_presences": vps}))
    per = (time.perf_counter() - t0) / len(group)
    fitted = 0
    for (path, (spec, _, tm, seed, presence, identity)), m, (fit_data, tests) in zip(unique, fitted_methods, copies):
        if path not in todo:
            continue
        mask = None if tm is None else masked_test_presence(data, tm, seed)
        log_record_use(write_record(records_dir, make_record(fit_data, m, identity, spec, presence, per, device,
                                                             started, patterns=patterns, batched=len(group),
                                                             test_sets=tests, test_mask=mask)))
        fitted += 1
    return fitted


# options that set the plumbing (encoders, sizes, which modality plays which role), not the variant: one list,
# results.PLUMBING (the explorer leaves them out of its "options" too)


def variant_label(kwargs: dict) -> str:
    """A grid entry's options as a short label, e.g. ``{"phi": "add", "support": "batch"}``
    -> ``"phi=add, support=batch"`` (plumbing options such as the backbone left out)."""
    def fmt(v):
        return "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in kwargs.items() if k not in PLUMBING)


def run_grid(data: MultimodalDataset, methods: list, settings: dict[str, dict], seeds: list[int],
             cfg: TrainConfig, device=None, store=None, profile: str | None = None, keep=(),
             patterns=None, log=None, batch: bool = True, validation: str = "full",
             pooled: bool = False, corruption: dict | None = None,
             test: str = "patterns") -> tuple["pd.DataFrame", dict]:
    """Every method under every setting at every seed, through :func:`run` (a run whose
    record is in ``store`` is read, not refitted). Runs at one seed share their masks, so
    the frame is ready for paired comparisons (:mod:`mmlib.report`).

    ``methods``: registry keys, or ``(key, kwargs)`` pairs; ``settings``: a label per
    missing-pattern spec, e.g. ``{"0.9": {"kind": "independent", "rates": {"audio": 0.9}}}``.
    ``keep``: ``(method, setting)`` pairs, or ``(method, variant, setting)`` triples (``variant``:
    :func:`variant_label` of the entry's options; needed when a method runs as several entries),
    whose fitted model (first seed) is returned in the dict under the same tuple (refitted if
    its record existed: figures need the model). With ``batch`` the
    (setting, seed) fits of a method that allows it (``batchable(data)``) train first as one
    ensemble (:func:`fit_seeds_batched`, :mod:`mmlib.engine`; the same records up to rounding). ``validation``: "full"
    (model selection on the validation split with every modality) or "masked" (the
    validation split masked like the training split, by the setting's spec and the seed).
    ``pooled``: add a row per run with ``test="pooled"``, the metrics over every test
    pattern's predictions together (see :func:`evaluate`). ``corruption``: spans zeroed
    inside the modalities, the same for every method at a seed (:func:`corrupted`). ``test``:
    "patterns" (each test pattern on the complete test split) or "masked" (also the test split
    masked by the setting's spec, as MLA's protocol: a row with ``test="masked"``).

    Returns ``(frame, fitted)``; the frame has one row per (method, setting, seed, test
    pattern): ``method`` (its registry key), ``variant`` (the entry's options, see
    :func:`variant_label`), ``config.<option>`` for every hyperparameter of the method
    (lists joined by "+"), ``setting``, ``seed``, ``test``, the metrics,
    ``epochs_run``, ``best_epoch``, ``val_score`` (the validation score of the selected epoch),
    ``warm_start_epochs`` (epochs of the warm starts a method trains first, e.g. SMIL's; 0 if none),
    ``max_epochs``, ``fit_seconds``, ``parameters`` (trained), ``reused`` and ``path``
    (the record's file in the store, e.g. to read its per-epoch ``history``).
    """
    import pandas as pd
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sized) or len(seeds) == 0:
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for s_ in seeds:
        _check_seed(s_)
    if validation not in ("full", "masked"):
        raise ValueError(f"validation must be 'full' or 'masked', got {validation!r}")
    if test not in ("patterns", "masked"):
        raise ValueError(f"test must be 'patterns' or 'masked', got {test!r}")
    rows, fitted = [], {}
    keep = set(keep)
    variants: dict[str, list[str]] = {}
    for entry in methods:
        key, kwargs = (entry, {}) if isinstance(entry, str) else entry
        variants.setdefault(key, []).append(variant_label(kwargs))

    def kept_as(key, kwargs, label):
        """The key of ``fitted`` a kept model goes under: (key, variant, setting), or (key, setting)
        when the method runs as one entry (naming a method with several variants by its key alone
        would keep whichever ran last: refused)."""
        v = variant_label(kwargs)
        if (key, v, label) in keep:
            return (key, v, label)
        if (key, label) in keep:
            if len(variants[key]) > 1:
                raise ValueError(f"keep=({key!r}, {label!r}) is ambiguous: {key} runs as {len(variants[key])} variants "
                                 f"{variants[key]}; name one, e.g. ({key!r}, {variants[key][0]!r}, {label!r})")
            return (key, label)
        return None
    if batch:     # (setting, seed) pairs as members of one ensemble where the method allows it
        for entry in methods:
            key, kwargs = (entry, {}) if isinstance(entry, str) else entry
            # a kept model (first seed) is fitted on its own by run() below: its setting's first seed stays out of
            # the ensemble, so that its record is that one fit's (members and single fits agree only to rounding)
            free = [lab for lab in settings if kept_as(key, kwargs, lab) is None]
            kept = [lab for lab in settings if kept_as(key, kwargs, lab) is not None]
            for group, todo in ((free, list(seeds)), (kept, list(seeds[1:]))):
                if not group or not todo:
                    continue
                specs = [settings[lab] for lab in group]
                n = fit_seeds_batched(data, key, kwargs, specs, todo, cfg, device, store, profile,
                                      specs if validation == "masked" else None,
                                      specs if test == "masked" else None, corruption, patterns)
                if log and n:
                    log(f"{key} {', '.join(group)}: {n} fits trained as one ensemble")
    for seed in seeds:
        for entry in methods:
            key, kwargs = (entry, {}) if isinstance(entry, str) else entry
            for label, spec in settings.items():
                as_ = kept_as(key, kwargs, label)
                want = seed == seeds[0] and as_ is not None
                rec, m = run(data, key, spec, seed, cfg, device, records_dir=store, reuse=not want,
                             profile=profile, method_kwargs=kwargs, patterns=patterns,
                             val_missing=spec if validation == "masked" else None, corruption=corruption,
                             test_missing=spec if test == "masked" else None)
                if want:
                    fitted[as_] = m
                sel = rec["selection"]
                conf = {f"config.{k}": "+".join(map(str, v)) if isinstance(v, list) else v
                        for k, v in rec["identity"]["method_config"].items()}
                tests = dict(rec["metrics"])
                conf.update({f"gap.{k}": v for k, v in rec.get("modality_gap", {}).items()})
                if pooled:
                    tests["pooled"] = rec.get("pooled_metrics") or {}
                for pattern, ms in tests.items():
                    rows.append({"method": rec["identity"]["method"], "variant": variant_label(kwargs),
                                 "setting": label, "seed": seed, "test": pattern, **conf,
                                 **ms, "epochs_run": sel["epochs_run"], "best_epoch": sel.get("best_epoch"),
                                 "val_score": sel.get("best_val"),
                                 "warm_start_epochs": rec.get("warm_starts", {}).get("epochs", 0),
                                 # the ceiling the method trains under (MVAE's VAE may run epochs_factor x the budget)
                                 "max_epochs": rec["identity"]["train_config"]["epochs"]
                                 * int(rec["identity"]["method_config"].get("epochs_factor") or 1),
                                 "fit_seconds": rec["timings"]["fit_seconds"],
                                 "parameters": rec.get("provenance", {}).get("parameters"), "reused": m is None,
                                 "path": str(record_path(store, rec["identity"])) if store is not None else None})
                if log:
                    how = "record read" if m is None else f"fitted in {rec['timings']['fit_seconds']:.1f} s"
                    log(f"{rec['identity']['method']} {label} seed {seed}: {how}")
    return pd.DataFrame(rows), fitted


def plateau(frame, label=None) -> "pd.DataFrame":
    """Per method and variant: how many runs (setting x seed) it has and how many distinct
    fits they needed (``fits``: a run whose identity another run shares, e.g. the lower
    bound at every missing rate, reads that fit's record), how many runs stopped on a
    validation plateau (early stopping fired before the epoch ceiling), the median best
    epoch and the ceiling; for a method with warm starts of its own (SMIL), the median number of
    epochs they took (``median_warm_start_epochs``, from its records).
    ``label(method, variant)`` names the rows (default: :func:`mmlib.report.label`)."""
    from .report import label as default_label
    label = label or default_label
    keys = ["method", "variant"] if "variant" in frame else ["method"]
    runs = frame.drop_duplicates(keys + ["setting", "seed"])
    runs = runs.assign(stopped=runs["epochs_run"] < runs["max_epochs"],
                       run=[label(*k) for k in zip(*(runs[c] for c in keys))])
    g = runs.groupby("run", sort=False)
    fits = g["path"].nunique() if runs["path"].notna().all() else g["stopped"].size()
    out = g.agg(runs=("stopped", "size"), on_plateau=("stopped", "sum"),
                median_best_epoch=("best_epoch", "median"), median_epochs_run=("epochs_run", "median"),
                max_epochs=("max_epochs", "max")).assign(fits=fits)[
        ["runs", "fits", "on_plateau", "median_best_epoch", "median_epochs_run", "max_epochs"]]
    if "warm_start_epochs" in runs and runs["warm_start_epochs"].fillna(0).gt(0).any():
        # a method that trains warm starts before its own loop (SMIL): their epochs, from its records
        out["median_warm_start_epochs"] = g["warm_start_epochs"].median()
    return out


PLATEAU_HEADERS = {"runs": "runs (setting x seed)", "fits": "distinct fits", "on_plateau": "stopped on a plateau",
                   "median_best_epoch": "median best epoch", "median_epochs_run": "median epochs run",
                   "max_epochs": "epoch ceiling", "median_warm_start_epochs": "median warm-start epochs (from the records)"}


def plateau_table(frame, label=None, order=None, runs: str = "setting x seed") -> "pd.DataFrame":
    """:func:`plateau` as a page shows it: the rows in ``order`` (labels; None: as they come),
    the columns named for a reader (``runs``: what a run is, e.g. "band x seed")."""
    out = plateau(frame, label)
    if order is not None:
        out = out.reindex([o for o in order if o in out.index])
    return out.rename(columns={**PLATEAU_HEADERS, "runs": f"runs ({runs})"})
