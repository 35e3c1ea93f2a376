"""Generative baselines for missing modalities (SMIL's AE, GAN and MVAE), for any chapter.

- ``ae_impute`` / ``gan_impute`` (SMIL, "Baseline methods"): take the modality-complete
  training samples, train a generator of each other modality from the modalities that
  are present in every training sample (or those named in ``cond``), impute the missing
  inputs of the other samples, then train the multimodal network
  (:class:`~mmlib.methods.baselines.FusionBaseline`,
  concatenation) on the completed data as if nothing were missing. A test sample missing
  a modality is imputed the same way. The AE is an MLP encoder-decoder trained with the
  squared error; the GAN is a conditional GAN (generator input: the present modalities
  and noise; discriminator: present modalities + candidate) whose generator also pays a
  squared-error term (weight ``rec_weight``), as imputation GANs do so that a few
  hundred pairs suffice. Both generators are selected on the validation squared error.
- ``mvae`` (Wu and Goodman, 2018): a multimodal VAE whose joint posterior is the product
  of Gaussian experts of the present modalities and a N(0, I) prior expert, trained on
  the training samples with whatever they have (ELBO of the joint and of each single
  modality; MLP experts and the KL weight annealed from 0 to 1, as in the MVAE paper's
  MNIST experiments). Then it is frozen, and a linear classifier is trained on the posterior mean
  (SMIL's "linear evaluation protocol").
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import MultimodalDataset
from ..models import MLP, encode, make_encoder
from ..train import Adam, Checkpoint, TrainConfig, fit, get_device, seed_everything, stream_seed
from . import Method
from .baselines import FusionBaseline
from .common import full_presence, task_loss, validation_score


def _flat(data: MultimodalDataset, names: list[str], device) -> torch.Tensor:
    return torch.cat([data.modalities[m].to(device).flatten(1) for m in names], 1)


# --------------------------------------------------------------------------- imputation
@dataclass(eq=False)
class Impute(Method):
    """Generate the missing modalities from the always-present ones (or ``cond``), then
    train the fusion network (``backbone``, ``feat_dim``, ``hidden``, ``sequence``: as
    :class:`FusionBaseline`) on completed data. ``generator="ae"`` or ``"gan"``. On a masked
    validation split (``val_presence``) the generator is selected on the validation rows that
    have its modality, and the classifier on the validation split completed as the test split is.
    The generator, like every network of the book, trains to a validation plateau (its squared
    error on those rows; the budget's patience), not for the budget's whole ceiling of epochs."""
    name: str = "ae_impute"
    generator: str = "ae"
    cond: list | None = None
    rec_weight: float = 10.0
    noise_dim: int = 16
    feat_dim: int = 64
    hidden: int = 64
    backbone: str = "cnn"
    sequence: str = "pooled"

    def __post_init__(self):
        super().__post_init__()
        if self.generator not in ("ae", "gan"):
            raise ValueError(f"unknown generator {self.generator!r}; use 'ae' or 'gan'")

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        cfg = cfg or TrainConfig()
        self.device = dev = get_device(device)
        seed_everything(seed)
        presence = full_presence(data, "train", presence)
        val_P = full_presence(data, "val", val_presence).to(dev)   # a masked validation split: each row as it is
        names = data.modality_names
        always = [m for j, m in enumerate(names) if bool(presence[:, j].all())]
        self.sources = always if self.cond is None else [data.check_modality(m) for m in self.cond]
        if not self.sources:
            raise ValueError(f"{self.name}: no modality is present in every training sample to generate from")
        if not set(self.sources) <= set(always):
            raise ValueError(f"{self.name}: generates from {self.sources}, which must be present in every training sample")
        self.targets = [m for j, m in enumerate(names)      # the others (with a few examples), e.g. audio
                        if m not in self.sources and bool(presence[:, j].any())]
        self.required, self.used = list(self.sources), list(self.sources) + self.targets
        train = data.splits["train"].to(dev)
        C = _flat(data, self.sources, dev)
        self.gens, self.val_mse, self.generator_epochs = {}, {}, {}
        completed = {m: x.clone() for m, x in data.modalities.items()}
        val = data.splits["val"].to(dev)
        for m in self.targets:
            j = names.index(m)
            has = train[presence[:, j].to(dev)]
            T = data.modalities[m].to(dev).flatten(1)
            val_has = val[val_P[:, j]]                          # the generator is selected on the rows that have m
            if len(val_has) == 0:
                raise ValueError(f"{self.name}: no validation row has {m!r} to select its generator on")
            self.gens[m], self.val_mse[m], self.generator_epochs[m] = self._train_generator(C, T, has, val_has, cfg,
                                                                                            seed)
            miss = torch.cat([train[~presence[:, j].to(dev)], val[~val_P[:, j]]])   # completed as at test time
            with torch.no_grad():
                completed[m][miss.cpu()] = self._generate(m, C[miss]).reshape(-1, *data.modalities[m].shape[1:]).cpu()
        done = MultimodalDataset(data.name, completed, data.y, data.task, data.class_names, data.splits, data.info,
                                 data.lengths)
        self.clf = FusionBaseline(self.name, fusion="concat", use=self.used, ignore_missing=True, feat_dim=self.feat_dim,
                                  hidden=self.hidden, backbone=self.backbone, sequence=self.sequence)
        self.clf.fit(done, None, seed=seed, cfg=cfg, device=dev)
        self.history = self.clf.history
        return self

    def _train_generator(self, C, T, rows, val, cfg, seed):
        dev, dc, dt = C.device, C.shape[1], T.shape[1]
        gen = torch.Generator().manual_seed(stream_seed(seed, "impute:generator"))
        zdim = self.noise_dim if self.generator == "gan" else 0
        G = MLP(dc + zdim, [256, 64, 256] if self.generator == "ae" else [256, 256], dt).to(dev)
        opt_g = Adam(G.parameters(), lr=cfg.lr)
        if self.generator == "gan":
            D = MLP(dc + dt, [256, 128], 1, dropout=0.2).to(dev)
            opt_d = Adam(D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        steps = max(1, -(-len(rows) // cfg.batch_size))            # an epoch: one pass over the pairs
        keeper = Checkpoint(cfg.patience, cfg.min_epochs)         # to a validation plateau, as every fit here

        def g_out(c):
            if zdim:
                c = torch.cat([c, torch.randn(len(c), zdim, generator=gen).to(dev)], 1)
            return G(c)

        for epoch in range(cfg.epochs):
            G.train()
            for _ in range(steps):
                b = rows[torch.randint(len(rows), (min(cfg.batch_size, len(rows)),), generator=gen).to(dev)]
                fake = g_out(C[b])
                rec = F.mse_loss(fake, T[b])
                if self.generator == "gan":
                    real_d = D(torch.cat([C[b], T[b]], 1))
                    fake_d = D(torch.cat([C[b], fake.detach()], 1))
                    d_loss = (F.binary_cross_entropy_with_logits(real_d, torch.ones_like(real_d))
                              + F.binary_cross_entropy_with_logits(fake_d, torch.zeros_like(fake_d)))
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                    adv = D(torch.cat([C[b], fake], 1))
                    g_loss = F.binary_cross_entropy_with_logits(adv, torch.ones_like(adv)) + self.rec_weight * rec
                else:
                    g_loss = rec
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
            G.eval()
            with torch.no_grad():                                  # selection: validation squared error
                err = float(F.mse_loss(g_out(C[val]), T[val]))
            if keeper.update(epoch, -err, lambda: copy.deepcopy(G.state_dict())):
                break
        return keeper.restore(G), -keeper.best, epoch + 1

    @torch.no_grad()
    def _generate(self, m, c):
        G = self.gens[m]
        if self.generator == "gan":
            c = torch.cat([c, torch.randn(len(c), self.noise_dim, device=c.device)], 1)
        return G(c)

    def _completed(self, data, split, presence):
        p = full_presence(data, split, presence)
        names = data.modality_names
        for m in self.required:
            if not bool(p[:, names.index(m)].all()):
                raise ValueError(f"{self.name} generates from {self.required}; some rows of {split!r} lack {m!r}")
        idx = data.splits[split]
        mods = {m: x.clone() for m, x in data.modalities.items()}
        C = _flat(data, self.sources, self.device)
        for m in self.targets:
            miss = idx[~p[:, names.index(m)]]
            if len(miss):
                mods[m][miss] = self._generate(m, C[miss.to(self.device)]).reshape(-1, *mods[m].shape[1:]).cpu()
        return MultimodalDataset(data.name, mods, data.y, data.task, data.class_names, data.splits, data.info,
                                 data.lengths)

    def predict(self, data, split, presence=None):
        return self.clf.predict(self._completed(data, split, presence), split)

    def embed(self, data, split, presence=None):
        return self.clf.embed(self._completed(data, split, presence), split)


# --------------------------------------------------------------------------------- MVAE
class MVAENet(nn.Module):
    """One Gaussian expert (encoder) and one decoder per modality; product of experts."""

    def __init__(self, shapes: dict, z_dim: int = 64, backbone: str = "cnn"):
        super().__init__()
        self.names = list(shapes)
        self.enc = nn.ModuleDict({m: make_encoder(s, 128, backbone) for m, s in shapes.items()})
        self.mu = nn.ModuleDict({m: nn.Linear(128, z_dim) for m in shapes})
        self.logvar = nn.ModuleDict({m: nn.Linear(128, z_dim) for m in shapes})
        self.dec = nn.ModuleDict({m: MLP(z_dim, [256], int(torch.tensor(s).prod())) for m, s in shapes.items()})
        self.z_dim = z_dim

    def posterior(self, xs: dict, present: torch.Tensor, lengths: dict | None = None):
        """Product of the N(0, I) prior and the present modalities' experts: (mu, logvar)."""
        B = present.shape[0]
        dev = present.device
        prec = torch.ones(B, self.z_dim, device=dev)               # prior expert
        num = torch.zeros(B, self.z_dim, device=dev)
        for j, m in enumerate(self.names):
            h = encode(self.enc[m], xs[m], (lengths or {}).get(m))
            mu, logvar = self.mu[m](h), self.logvar[m](h).clamp(-8, 8)
            w = present[:, j:j + 1].float() / logvar.exp()
            prec = prec + w
            num = num + w * mu
        return num / prec, -prec.log()


@dataclass(eq=False)
class MVAE(Method):
    """MVAE trained on the training samples (with their missing modalities), frozen, then a
    linear classifier on the posterior mean: of each training row's modalities and, by
    default (``probe_on="subsets"``), of each non-empty subset of them, so that the probe
    has seen the posteriors of the test patterns (trained on the joint posteriors alone, it
    scored 48 % with the image only on avdigits, below the image-only lower bound). The VAE may train up to ``epochs_factor`` times
    the budget's epochs (an unsupervised model needs more passes than a classifier: on
    avdigits the linear probe gets about 50% after 12 epochs and about 75% after 36), with
    the KL weight annealed from 0 to beta over its first ``anneal_epochs`` epochs, then early
    stopping on the validation ELBO with the budget's patience, but at least ``min_patience``
    epochs (the ELBO still improves slowly long after a classifier has plateaued: with 5,
    one measured fit stopped 4.6 validation points short of its best)."""

    name: str = "mvae"
    z_dim: int = 64
    backbone: str = "mlp"
    beta: float = 1.0
    anneal: bool = True
    epochs_factor: int = 3
    anneal_epochs: int = 20
    min_patience: int = 10
    probe_on: str = "subsets"     # the probe's training posteriors: "subsets" of each row's modalities, or "training"

    def __post_init__(self):
        super().__post_init__()
        if self.probe_on not in ("subsets", "training"):
            raise ValueError(f"unknown probe_on={self.probe_on!r}; use 'subsets' or 'training'")
        if self.epochs_factor < 1:
            raise ValueError(f"epochs_factor must be at least 1, got {self.epochs_factor}")

    def fit(self, data, presence, *, seed=0, cfg=None, device=None, val_presence=None):
        cfg = cfg or TrainConfig()
        self.device = dev = get_device(device)
        seed_everything(seed)
        presence = full_presence(data, "train", presence).to(dev)
        self.names = data.modality_names
        self.X = {m: x.to(dev) for m, x in data.modalities.items()}
        self.L = {m: ln.to(dev) for m, ln in data.lengths.items()}         # padded sequences, if any
        y = data.y.to(dev)
        train, val = data.splits["train"].to(dev), data.splits["val"].to(dev)
        P = torch.zeros(len(data), len(self.names), dtype=torch.bool, device=dev)
        P[train] = presence
        P[val] = full_presence(data, "val", val_presence).to(dev)     # selection: the ELBO, then the probe, on these
        vae = MVAENet({m: tuple(x.shape[1:]) for m, x in data.modalities.items()}, self.z_dim, self.backbone).to(dev)
        singles = [torch.eye(len(self.names), dtype=torch.bool, device=dev)[j] for j in range(len(self.names))]

        weight = {"kl": self.beta}

        def elbo_loss(model, idx, p):
            xs = {m: self.X[m][idx] for m in self.names}
            mu, logvar = model.posterior(xs, p, self._lengths(idx))
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            rec = sum(((model.dec[m](z) - xs[m].flatten(1)) ** 2).sum(1) * p[:, j]
                      for j, m in enumerate(self.names))
            kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
            return (rec + weight["kl"] * kl).mean()

        def vae_loss(model, idx):                                  # joint ELBO + each single-modality ELBO
            p = P[idx]
            loss = elbo_loss(model, idx, p)
            for s in singles:
                keep = p & s
                rows = keep.any(1)
                if rows.any():
                    loss = loss + elbo_loss(model, idx[rows], keep[rows])
            return loss

        def vae_val(model):                                        # the full ELBO (beta) on validation
            annealed, weight["kl"] = weight["kl"], self.beta
            score = -float(vae_loss(model, val))
            weight["kl"] = annealed
            return score

        patience = None if cfg.patience is None else max(cfg.patience, self.min_patience)
        vae_cfg = TrainConfig(**{**cfg.to_dict(), "epochs": cfg.epochs * self.epochs_factor, "patience": patience})

        # KL weight 0 -> beta over the first epochs (as MVAE), a fixed warm-up: the budget's epochs
        # are a ceiling for early stopping, not a schedule
        ramp = max(1, min(self.anneal_epochs, vae_cfg.epochs))

        def anneal(epoch):
            weight["kl"] = self.beta * min(1.0, (epoch + 1) / ramp) if self.anneal else self.beta

        self.vae, vae_hist = fit(vae, vae_loss, train, vae_val, vae_cfg, seed=seed, desc="mvae", epoch_start=anneal)
        for q in self.vae.parameters():
            q.requires_grad_(False)
        # the probe's training rows: the posterior mean of every training row under its own presence and,
        # with probe_on="subsets", under each non-empty subset of it (as the sub-sampled ELBO trains the
        # experts), so that it has seen the posteriors of the patterns it is tested on
        subsets = [torch.tensor(bits, dtype=torch.bool, device=dev)
                   for bits in itertools.product([False, True], repeat=len(self.names)) if any(bits)]
        rows_p = [(train, P[train])] + ([(train[(P[train] & sub).any(1)], (P[train] & sub)[(P[train] & sub).any(1)])
                                        for sub in subsets] if self.probe_on == "subsets" else [])
        rows_p.append((val, P[val]))                              # last: validation, as it is
        with torch.no_grad():                                      # frozen: posterior means once
            Zs = [torch.cat([self.vae.posterior({m: self.X[m][c] for m in self.names}, pc, self._lengths(c))[0]
                             for c, pc in zip(r.split(1024), p_.split(1024))]) for r, p_ in rows_p]
        Z, Zv = torch.cat(Zs[:-1]), Zs[-1]
        yz = torch.cat([y[r] for r, _ in rows_p[:-1]])
        n_out = data.n_classes if data.task != "regression" else 1
        self.task = data.task
        clf = nn.Linear(self.z_dim, n_out).to(dev)                # linear probe: full batch, cheap
        probe = TrainConfig(epochs=300, batch_size=len(Z), lr=1e-2, weight_decay=cfg.weight_decay, patience=30)
        self.clf, self.history = fit(clf, lambda model, idx: task_loss(data.task, model(Z[idx]), yz[idx]),
                                     torch.arange(len(Z), device=dev),
                                     lambda model: validation_score(data.task, model(Zv), y[val]), probe,
                                     seed=seed, desc="mvae:linear")
        self.vae_history = vae_hist
        return self

    @torch.no_grad()
    def embed(self, data, split, presence=None):
        idx = data.splits[split].to(self.device)
        p = full_presence(data, split, presence).to(self.device)
        self.vae.eval()
        return torch.cat([self.vae.posterior({m: self.X[m][b] for m in self.names}, p[s:s + 1024], self._lengths(b))[0]
                          for s, b in zip(range(0, len(idx), 1024), idx.split(1024))]).cpu()

    def _lengths(self, idx):
        return {m: ln[idx] for m, ln in self.L.items()}

    @torch.no_grad()
    def predict(self, data, split, presence=None):
        return self.clf.eval()(self.embed(data, split, presence).to(self.device)).cpu()


METHODS = {
    "ae_impute": lambda **kw: Impute("ae_impute", "ae", **kw),
    "gan_impute": lambda **kw: Impute("gan_impute", "gan", **kw),
    "mvae": lambda **kw: MVAE(**kw),
}
