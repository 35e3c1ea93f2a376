"""The book's chapters in one place: notebook, page, grid, page parameters, profiles, seeds.

Adding a chapter is one entry in :data:`CHAPTERS` (plus its notebook, its method file and
its tests): the sweep (:mod:`mmlib.sweep`), the table of contents (``mmbook toc`` writes
``book/_toc.yml`` from :func:`toc`; a test checks the committed one matches) and the book
test all read it.

Conventions every chapter notebook follows:

* its parameters cell has ``profile``, ``device``, ``data_root``, ``results_dir`` and, when
  the chapter trains, ``seeds`` (a list; ``None`` means the profile's seeds): a grid run is
  one kernel per *setting* that loops over the seeds itself;
* ``page`` is True only for the run that becomes the book's page (it draws the figures;
  grid runs draw none).

Profiles set the budget: ``quick`` (tests, seconds per run), ``default`` (the published
book on a 2-core CPU), ``full`` (a GPU and the real data).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from .train import TrainConfig

# ``train``: the budget (``epochs`` is a ceiling: training stops when validation has not
# improved for ``patience`` epochs, i.e. on a plateau). Patience 5 in ``default``: replayed on
# the validation histories of 190 fits trained with patience 10, it picks the same best epoch
# in 84 % of them, 0.11 validation points lower on average, in 34 % fewer epochs (13.5 vs
# 20.5; see the README's speed section). ``seeds``: at least 5 wherever a
# verdict is computed (an exact paired test cannot go below p = 2/2^n); ``backbone``: the
# encoders for avdigits' images and MFCCs (``mlp`` on a CPU, the papers' CNNs in ``full``).
PROFILES = {
    "quick": {"train": TrainConfig(epochs=2, patience=None, batch_size=128), "seeds": [0, 1],
              "backbone": "mlp"},
    "default": {"train": TrainConfig(epochs=100, patience=5), "seeds": [0, 1, 2, 3, 4], "backbone": "mlp"},
    "full": {"train": TrainConfig(epochs=300, patience=20), "seeds": list(range(10)), "backbone": "cnn"},
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rate(v) -> bool:
    return _number(v) and 0 <= v <= 1


def _names(v, n=None) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(m, str) and m for m in v) and len(set(v)) == len(v) \
        and (n is None or len(v) == n)


# The chapters' notebook parameters, one meaning per name across the book: what each must be
# (said in an error) and a test of a value. ``None`` is accepted where the notebook's default is
# None; a name not listed here must have its default's type.
PARAMETERS = {
    "missing_rate": ("a number in [0, 1] (the fraction missing)", _rate),
    "missing_rates": ("a list of numbers in [0, 1], one per modality in the dataset's order, e.g. [0.8, 0.2, 0.5]",
                      lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(map(_rate, v))),
    "band": ("[low, high]: two numbers in [0, 1] with low < high, e.g. [0.4, 0.6]",
             lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_rate, v)) and v[0] < v[1]),
    "seeds": ("a non-empty list of different non-negative integers (or None for the profile's)",
              lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
              and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)),
    "profile": (f"one of {sorted(PROFILES)}", lambda v: isinstance(v, str) and v in PROFILES),
    "device": ('a device name: "auto", "cpu", "cuda" or "cuda:N"', lambda v: isinstance(v, str) and bool(v)),
    "dataset": ("a dataset name (a string)", lambda v: isinstance(v, str) and bool(v)),
    "data_root": ("a folder (a string)", lambda v: isinstance(v, str) and bool(v)),
    "data_options": ('a dict of reader options, e.g. {"fold": 1}', lambda v: isinstance(v, dict)),
    "modalities": ('a list of two different modality names [x1, x2], e.g. ["image", "audio"]',
                   lambda v: _names(v, 2)),
    "train_size": ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "backbone": ('"mlp" or "cnn"', lambda v: v in ("mlp", "cnn")),
    "results_dir": ("a folder (a string)", lambda v: isinstance(v, str) and bool(v)),
    "page": ("true or false", lambda v: isinstance(v, bool)),
    "missing_modality": ("a modality name (a string)", lambda v: isinstance(v, str) and bool(v)),
    "isolation": ("a modality name (a string)", lambda v: isinstance(v, str) and bool(v)),
    "also_rates": ("a list of further settings, each like missing_rates",
                   lambda v: isinstance(v, (list, tuple)) and all(
                       isinstance(r, (list, tuple)) and len(r) > 0 and all(map(_rate, r)) for r in v)),
    "part": ('"all", "settings" or "controls"', lambda v: v in ("all", "settings", "controls")),
    "protocol": ('one of "smil", "mle", "m3s", "redcore", "mla"', lambda v: v in ("smil", "mle", "m3s", "redcore", "mla")),
}


def check_value(name: str, value, default, what: str) -> None:
    """Refuse a notebook parameter's value that is not what the parameter takes, naming the
    parameter, what it takes and what it got (``default``: the notebook's own value)."""
    if value is None and default is None:
        return
    if name in PARAMETERS:
        expected, ok = PARAMETERS[name]
    elif default is not None:
        kind = type(default)
        expected = f"a {kind.__name__} like its default {default!r}"

        def ok(v):
            return isinstance(v, kind) and not (isinstance(v, bool) and kind is not bool) or \
                (kind is float and _number(v))
    else:
        return
    if not ok(value):
        raise ValueError(f"{what}: parameter {name} must be {expected}, got {type(value).__name__} {value!r}")


def profile(name: str) -> dict:
    """A profile's training budget (``"train"``), seeds (``"seeds"``) and encoders
    (``"backbone"``)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; use one of {sorted(PROFILES)}")
    return PROFILES[name]


@dataclass
class Chapter:
    """A notebook of the book.

    ``grid[profile]`` is a dict of lists (their product) or a list of such dicts (their
    products joined): the settings the sweep runs before the page. ``page_params`` are the
    page run's settings. ``seeded`` chapters get the profile's ``seeds`` (a list) in every
    run, and loop over them in one kernel.
    """
    name: str
    title: str
    part: str
    notebook: str
    page: str
    grid: dict = field(default_factory=dict)
    page_params: dict = field(default_factory=dict)
    seeded: bool = True
    last: bool = False           # its page runs after every other task of the sweep (the Runs appendix)
    # a parameter whose value lists further values of another in one grid run (e.g. ``also_rates``: the
    # other settings a RedCore grid run fits, each method's (setting, seed) fits as one ensemble)
    extends: dict = field(default_factory=dict)
    # a chapter that decides claims: the paper it reproduces (its name on the scorecard), the paper's
    # bibliography key, and the heading of the section where its verdicts are (the scorecard links there)
    paper: str = ""
    bib: str = ""
    claims_heading: str = "What reproduced and what did not"
    scorecard_note: str = ""     # the paper in a paragraph on the scorecard: the idea, the authors' code, what was hard

    def seeds(self, prof: str) -> list[int]:
        return list(profile(prof)["seeds"])

    def points(self, prof: str) -> list[dict]:
        """The grid's parameter sets for a profile, seeds included as the chapter takes them."""
        grids = self.grid.get(prof, {})
        grids = grids if isinstance(grids, list) else [grids]
        seeds = self.seeds(prof)
        pts = []
        for grid in grids:
            if not grid:
                continue
            names = list(grid)
            for values in itertools.product(*(grid[n] for n in names)):
                p = dict(zip(names, values))
                pts.append({**p, **({"seeds": list(seeds)} if self.seeded else {})})
        return pts

    def page_point(self, prof: str) -> dict:
        p = dict(self.page_params)
        if self.seeded:
            p["seeds"] = self.seeds(prof)
        return p

    def grid_values(self, prof: str, name: str, where: dict | None = None) -> list:
        """Every value parameter ``name`` takes in the profile's grid (and the page), sorted:
        a page uses it to gather the records of the whole grid. ``where`` keeps the grids whose
        other parameters take the given values, None standing for a parameter the grid leaves
        at the notebook's default (``where={"dataset": None}``: the default dataset's grids)."""
        grids = self.grid.get(prof, {})
        grids = grids if isinstance(grids, list) else [grids]

        def keep(params: dict) -> bool:
            return all(v in params.get(k, [None]) for k, v in (where or {}).items())

        page = {k: [v] for k, v in self.page_params.items()}
        vals = [v for g in grids if keep(g) for v in g.get(name, [])] + \
            [v for g in grids if keep(g) for extra, of in self.extends.items() if of == name
             for vs in g.get(extra, []) for v in vs] + \
            ([self.page_params[name]] if name in self.page_params and keep(page) else [])
        out = []
        for v in vals:                       # unique, values may be lists (e.g. one rate per modality)
            if v not in out:
                out.append(v)
        return sorted(out)


M3S_GRID = [{"band": [[0.4, 0.6]], "part": ["controls", "settings"]}, {"band": [[0.2, 0.4], [0.6, 0.8]]}]
REDCORE_RATES = [[0.8, 0.5, 0.5], [0.5, 0.8, 0.5], [0.5, 0.5, 0.8], [0.2, 0.5, 0.8], [0.5, 0.2, 0.8], [0.8, 0.5, 0.2],
                 [0.8, 0.2, 0.5], [0.2, 0.8, 0.5], [0.5, 0.8, 0.2], [0.0, 0.0, 0.0], [0.3, 0.3, 0.3], [0.6, 0.6, 0.6],
                 [0.9, 0.9, 0.9]]
# the exact ceiling (gaussian's imbalanced preset, whose strongest modality is L): Figure 5's setting, and
# Table 1's triple with the strongest modality missing most
GAUSSIAN_RATES = [[0.8, 0.2, 0.5], [0.5, 0.5, 0.8]]

# The head-to-head chapter's settings: per profile, {dataset: {protocol: [levels]}} (the protocols of
# mmlib.headtohead; gaussian's presets are datasets of their own, "gaussian:<preset>"). One grid point per
# (dataset, protocol) runs every method at that protocol's levels. The default covers each paper's own protocol
# on the dataset that stands for its benchmark, and gaussian's presets where the oracle applies (no span
# protocol there: the oracle of a partly hidden modality is not computed); full adds levels and the rest.
H2H_PLAN = {
    "quick": {"gaussian:imbalanced": {"mla": [0.5]}, "avdigits": {"smil": [0.9]}},
    "default": {"gaussian:imbalanced": {"smil": [0.9], "redcore": [0.4, 0.8], "mla": [0.3, 0.6]},
                "gaussian:balanced": {"mla": [0.6]}, "gaussian:dominant": {"mla": [0.6]},
                "gaussian:pair": {"smil": [0.9], "mle": [0.9]},
                "avdigits": {"smil": [0.9], "mle": [0.95]},
                "affect": {"m3s": [0.5], "redcore": [0.8], "mla": [0.5]}},
    "full": {"gaussian:imbalanced": {"smil": [0.5, 0.8, 0.9], "mle": [0.5, 0.8, 0.9], "m3s": [0.3, 0.5, 0.7],
                                     "redcore": [0.4, 0.6, 0.8], "mla": [0.3, 0.5, 0.7]},
             "gaussian:balanced": {"redcore": [0.8], "mla": [0.3, 0.6]},
             "gaussian:dominant": {"redcore": [0.8], "mla": [0.3, 0.6]},
             "gaussian:pair": {"smil": [0.5, 0.9], "mle": [0.5, 0.9], "mla": [0.5]},
             "avdigits": {"smil": [0.8, 0.9, 0.95], "mle": [0.8, 0.95], "m3s": [0.5], "redcore": [0.8], "mla": [0.3, 0.5]},
             "affect": {"m3s": [0.3, 0.5, 0.7], "redcore": [0.4, 0.8], "mla": [0.3, 0.5, 0.7]}},
}


def h2h_grid(prof: str) -> list[dict]:
    return [{"dataset": [ds], "protocol": [p]} for ds, plan in H2H_PLAN[prof].items() for p in plan]


CHAPTERS = {c.name: c for c in [
    # every claim the chapters decide, read from their verdict records (runs after every chapter's page)
    Chapter("scorecard", "Scorecard: what reproduced", "Scorecard", "notebooks/scorecard.ipynb",
            "book/scorecard.ipynb", seeded=False, last=True),
    Chapter("00_missing_modalities", "Missing modalities: the problem, the patterns, the baselines",
            "Foundations", "notebooks/00_missing_modalities.ipynb", "book/chapters/00_missing_modalities.ipynb",
            grid={"quick": {"missing_rate": [0.5, 0.9]},
                  "default": {"missing_rate": [0.5, 0.8, 0.9, 0.95]},
                  "full": {"missing_rate": [0.2, 0.5, 0.8, 0.9, 0.95]}},
            page_params={"missing_rate": 0.8}, paper="Baselines (SMIL's Table 1 setting)",
            claims_heading="What the runs say"),
    # SMIL's audio ratio eta = 1 - missing_rate; the page (eta = 10%, with figures) reads the grid's
    # records and refits only the figures' models
    Chapter("01_smil", "SMIL: Bayesian meta-learning for severely missing modalities", "The papers",
            "notebooks/01_smil.ipynb", "book/chapters/01_smil.ipynb",
            grid={"quick": {"missing_rate": [0.8, 0.0]},
                  "default": {"missing_rate": [0.95, 0.9, 0.8, 0.5, 0.0]},
                  "full": {"missing_rate": [0.95, 0.9, 0.85, 0.8, 0.5, 0.0]}},
            page_params={"missing_rate": 0.9}, paper="SMIL", bib="ma2021smil",
            scorecard_note=("SMIL reconstructs the missing audio feature from the image through a weighted sum of learnt "
                            "audio priors, regularises the features with learnt noise, and meta-learns both. The authors' "
                            "code (`mengmenm/SMIL`) reconstructs without the paper's sampled weights, adds fixed-variance "
                            "noise where the paper multiplies, has no KL term, tests on the image alone and keeps the "
                            "checkpoint with the best *test* accuracy; `smil_code` trains as coded, and the book selects "
                            "every model on validation. What was hard: Algorithm 1 and the equations disagree on the outer "
                            "step, and Eq. 7's KL units are ambiguous; the chapter measures each reading.")),
    Chapter("02_mle", "MLE: maximum likelihood with a generalized softmax", "The papers",
            "notebooks/02_mle.ipynb", "book/chapters/02_mle.ipynb",
            grid={"quick": [{"missing_modality": ["image", "audio"], "missing_rate": [0.5, 0.95]},
                            {"dataset": ["affect"], "missing_modality": ["visual"], "missing_rate": [0.8]}],
                  "default": [{"missing_modality": ["image", "audio"], "missing_rate": [0.5, 0.8, 0.9, 0.95]},
                              {"dataset": ["affect"], "missing_modality": ["visual", "acoustic"],
                               "missing_rate": [0.8, 0.95]}],
                  "full": [{"missing_modality": ["image", "audio"], "missing_rate": [0.5, 0.8, 0.9, 0.95]},
                           {"dataset": ["affect"], "missing_modality": ["visual", "acoustic"],
                            "missing_rate": [0.8, 0.9, 0.95]}]},
            page_params={"missing_modality": "image", "missing_rate": 0.95}, paper="MLE", bib="ma2021mle",
            scorecard_note=("MLE trains with a generalized softmax that marginalises the missing modality exactly (Eq. 5). No"
                            " code was published, so the sum over y' (every complete sample, the batch's, or detached) is the"
                            " book's choice, measured. What was hard: the support of Eq. 5 and the HGR baseline's exact form.")),
    # missing_rates = (acoustic, visual, lexical): Table 1's six triples, the permutations of Table 2 and
    # Figure 4, and Figure 3's shared rates, on affect; two triples on gaussian (the Bayes ceiling); the page is
    # Figure 5's setting
    Chapter("03_redcore", "RedCore: relative advantage aware cross-modal representation learning", "The papers",
            "notebooks/03_redcore.ipynb", "book/chapters/03_redcore.ipynb",
            grid={"quick": [{"missing_rates": [[0.8, 0.2, 0.5], [0.2, 0.5, 0.8], [0.0, 0.0, 0.0], [0.9, 0.9, 0.9]]},
                            {"dataset": ["gaussian"], "missing_rates": [[0.8, 0.2, 0.5]]}],
                  # three grid runs of several settings each: every method's (setting, seed) fits train as one
                  # ensemble (25 members instead of 5: RedCore's step 1.6x faster per member instead of 1.1x)
                  "default": [{"missing_rates": [REDCORE_RATES[a]], "also_rates": [REDCORE_RATES[a + 1:b]]}
                              for a, b in ((0, 5), (5, 9), (9, 13))]
                  + [{"dataset": ["gaussian"], "missing_rates": GAUSSIAN_RATES}],
                  "full": [{"missing_rates": REDCORE_RATES + [[r, r, r] for r in (0.1, 0.2, 0.4, 0.5, 0.7, 0.8)]},
                           {"dataset": ["gaussian"], "missing_rates": GAUSSIAN_RATES + [[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]]}]},
            page_params={"missing_rates": [0.8, 0.2, 0.5]}, extends={"also_rates": "missing_rates"},
            paper="RedCore", bib="sun2024redcore",
            scorecard_note=("RedCore imputes missing representations with a VIB and supervises the weaker modalities more, by"
                            " relative advantage. The authors' code (`sunjunaimer/RedCore`) weighs the KL differently (0.0008"
                            " on present modalities), updates \u03b7 by clamping then normalising instead of the projection, "
                            "samples z at test time and re-attaches masks by batch position while the loader shuffles (a leak"
                            " the chapter measures). What was hard: the IB objective is printed with a typo, and \u0393 is not "
                            "convex.")),
    # band = the fraction of every modality zeroed in each training, validation and test sample (Table 3's three);
    # 40-60 % (Tables 2, 4, 5 and the controls: 60 % of the fits) is two runs, its settings and its controls, so
    # that two workers share the chapter evenly (the longest first)
    Chapter("04_m3s", "M3S: missing modality meets meta sampling", "The papers",
            "notebooks/04_m3s.ipynb", "book/chapters/04_m3s.ipynb",
            grid={"quick": {"band": [[0.4, 0.6]]},
                  "default": M3S_GRID,
                  "full": M3S_GRID},
            page_params={"band": [0.4, 0.6]}, paper="M3S", bib="chi2022m3s",
            scorecard_note=("M3S adds meta-sampling of span masks on top of any base model. No code was published: K, the "
                            "order of Eq. 2, the learning rates and where the fresh spans are drawn are the book's choices, "
                            "each named and measured. What was hard: the paper's IEMOCAP sizes are MMIN's folds replicated "
                            "over its missing patterns.")),
    # missing_rate = eta of the CPM-Nets mask on affect (Table 2; 0: Table 1 and 3 on affect, complete); the
    # other datasets' Table 1 and 3 and Figure 2's two panels (the modality missing in avdigits' training) are
    # grid points of their own; the page (affect, complete) reads them all
    Chapter("05_mla", "MLA: multimodal learning by alternating unimodal adaptation", "The papers",
            "notebooks/05_mla.ipynb", "book/chapters/05_mla.ipynb",
            grid={"quick": [{"missing_rate": [0.5]}, {"dataset": ["gaussian"]}],
                  "default": [{"missing_rate": [0.0, 0.1, 0.3, 0.5, 0.7]}, {"dataset": ["avdigits", "gaussian"]},
                              {"dataset": ["avdigits"], "isolation": ["audio", "image"]}],
                  "full": [{"missing_rate": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
                           {"dataset": ["avdigits", "gaussian"]},
                           {"dataset": ["avdigits"], "isolation": ["audio", "image"]}]},
            page_params={"missing_rate": 0.0}, paper="MLA", bib="zhang2024mla",
            scorecard_note=("MLA alternates unimodal training through a shared head protected by a gradient projection and "
                            "fuses by entropy at test time. The released code "
                            "(`Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation`) never fires its "
                            "projection (a name check fails), fuses over the batch dimension, alternates inside each batch, "
                            "zeroes missing inputs and keeps the checkpoint with the best test accuracy; `mla_code` trains as"
                            " coded, and the book selects on validation. What was hard: the paper prints the RLS gain with "
                            "the wrong matrix, and Eq. 4's projected gradient under Adam is not a projected update; the "
                            "chapter measures both readings.")),
    # every method of the book under every paper's protocol, on the same masks and seeds, against the oracle
    Chapter("06_head_to_head", "Head to head: five methods, five protocols, one oracle", "Head to head",
            "notebooks/06_head_to_head.ipynb", "book/chapters/06_head_to_head.ipynb",
            grid={p: h2h_grid(p) for p in H2H_PLAN}, paper="Head to head (this book)", claims_heading="Findings"),
    Chapter("avdigits_datasheet", "avdigits", "Data", "notebooks/avdigits_datasheet.ipynb",
            "book/datasheets/avdigits.ipynb", seeded=False),
    Chapter("affect_datasheet", "affect", "Data", "notebooks/affect_datasheet.ipynb",
            "book/datasheets/affect.ipynb", seeded=False),
    Chapter("gaussian_datasheet", "gaussian", "Data", "notebooks/gaussian_datasheet.ipynb",
            "book/datasheets/gaussian.ipynb", seeded=False),
    # every grid point of every chapter: status, time, hardware, commit (read from the markers and records)
    # every record of the book in one sortable, searchable, filterable table (offline)
    Chapter("explorer", "Results explorer", "Back matter", "notebooks/explorer.ipynb", "book/appendix/explorer.ipynb",
            seeded=False, last=True),
    Chapter("runs", "Runs", "Back matter", "notebooks/runs.ipynb", "book/appendix/runs.ipynb", seeded=False,
            last=True),
]}

# Pages written by hand (Markdown), in the part they belong to, after that part's chapters.
PAGES = [("Data", "book/real_data"), ("Back matter", "book/teachers"), ("Back matter", "book/glossary"),
         ("Back matter", "book/references")]
PARTS = ["Scorecard", "Foundations", "The papers", "Head to head", "Data", "Back matter"]
ROOT_PAGE = "book/intro"


def chapter(name: str) -> Chapter:
    if name not in CHAPTERS:
        raise ValueError(f"unknown chapter {name!r}; chapters: {sorted(CHAPTERS)}")
    return CHAPTERS[name]


def toc() -> str:
    """``book/_toc.yml`` as the registry says it (chapters in registry order, then the
    hand-written pages of each part)."""
    lines = ["# Table of contents, written by `mmbook toc` from mmlib/chapters.py: edit the registry, not this file.",
             "# Paths are relative to the project root, where _config.yml lives.",
             "format: jb-book", f"root: {ROOT_PAGE}", "parts:"]
    for part in PARTS:
        files = [c.page.removesuffix(".ipynb") for c in CHAPTERS.values() if c.part == part]
        files += [p for pt, p in PAGES if pt == part]
        if files:
            lines += [f"  - caption: {part}", "    chapters:"] + [f"      - file: {f}" for f in files]
    return "\n".join(lines) + "\n"
