"""The whole path at the quick profile: papermill runs the chapters (two missing rates),
records are written, and the HTML book builds with warnings as errors.

Everything goes to a temporary copy of the book's sources, never into the project's book/."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmlib import results, sweep

ROOT = sweep.ROOT
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    # a copy of the project as a clone has it, plus the leftovers a working tree gathers
    # (caches and environments with Markdown files in them) that the book must not scan
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:                                   # not a git checkout: the files the book needs
        tracked = ["_config.yml"] + [f"book/{f}" for f in ["_toc.yml", "intro.md", "references.md", "references.bib"]]
    for f in tracked:
        if (ROOT / f).is_file() and not f.endswith(".npz"):
            (site / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / f, site / f)
    for stray in [".pytest_cache/README.md", ".venv/lib/README.md", "mmlib.egg-info/README.md"]:
        (site / stray).parent.mkdir(parents=True, exist_ok=True)
        (site / stray).write_text("# not a page\n")
    mj = ROOT / "book" / "_mathjax_root"
    if mj.is_dir():
        (site / "book" / "_mathjax_root").symlink_to(mj)
    infos = sweep.sweep_book(None, "quick", jobs=1, device="cpu", book_dir=site / "book", log=lambda *a: None)
    return site, infos


def test_sweep_ran_every_point_and_pages(built):
    site, infos = built
    assert all(i["status"] == "ok" for i in infos)
    assert {i["chapter"] for i in infos if i.get("page")} == set(sweep.CHAPTERS)      # every page ran
    for name in sweep.CHAPTERS:                                                      # each after its grid
        order = [i.get("page", False) for i in infos if i["chapter"] == name]
        assert order[-1] and not any(order[:-1])
    assert (site / "book/runs/timings.json").is_file()
    assert infos[-1]["chapter"] == "runs" and infos[-1]["page"]                 # the Runs appendix comes last
    import nbformat as _nbf
    runs_page = _nbf.read(site / "book/appendix/runs.ipynb", 4)
    assert "05_mla" in str(runs_page.cells) and "done" in str(runs_page.cells)
    assert (site / "book/chapters/00_missing_modalities.ipynb").is_file()
    assert (site / "book/datasheets/avdigits.ipynb").is_file()
    # injected parameters are hidden from the book
    import nbformat
    nb = nbformat.read(site / "book/chapters/00_missing_modalities.ipynb", 4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and all("remove-cell" in c.metadata["tags"] for c in injected)


def test_records_of_two_missing_rates(built):
    site, _ = built
    df = results.load_records(site / "book/records", "[!.]*.json")
    df = df[~df["path"].str.contains("/records/0[12]_|_datasheet/")]     # the shared store's own records
    from mmlib.data import load_dataset
    full = load_dataset("avdigits").fingerprint()          # chapter 0 trains on all of avdigits (SMIL on 1,000)
    df = df[(df["data_fingerprint"] == full) & df["method"].isin(
        ["lower_bound", "upper_bound", "zp_concat", "zp_sum", "late_fusion"])]
    rate = df.groupby("path")["missing.rates.audio"].first()
    assert sorted(rate.dropna().unique()) == [0.5, 0.8, 0.9]               # grid 0.5, 0.9 + the page at 0.8
    per = df.groupby("method")["path"].nunique()
    from mmlib.chapters import profile
    seeds = len(profile("quick")["seeds"])
    # the bounds: one fit per seed at every rate (they select on the complete validation split, shared with
    # the avdigits datasheet's image + audio row); the others: one per seed and rate on a masked validation
    # split, plus one per seed on the complete split at the page's rate ("What we learned" compares the two)
    assert per["upper_bound"] == seeds and per["lower_bound"] == seeds
    others = df[~df["method"].isin(["upper_bound", "lower_bound"]) & df["missing.rates.audio"].notna()]
    masked = others[others["val_missing.kind"].notna()].groupby("method")["path"].nunique()
    complete = others[others["val_missing.kind"].isna()]
    assert len(masked) == 3 and (masked == 3 * seeds).all()
    assert (complete.groupby("method")["path"].nunique() == seeds).all()
    assert set(complete["missing.rates.audio"]) == {0.8}
    both = df[(df.test == "image+audio") & (df.method == "zp_concat")]
    assert (both["accuracy"] > 0.3).all()              # quick profile, chance is 0.1
    from mmlib import report
    verdicts = report.read_verdicts(site / "book/verdicts/00_missing_modalities.json")
    assert len(verdicts) >= 5 and all(v.n >= 2 for v in verdicts)
    assert {v.verdict for v in verdicts} <= set(report.VERDICTS)


def test_smil_chapter_records(built):
    site, _ = built
    from mmlib import report
    df = results.load_records(site / "book/records", "[!.]*.json")
    smil = df[df["method"].str.startswith("smil")]
    # the grid (0.2, 1.0) and the page (0.1); variants and ablations at 0.1 and 0.2
    assert set(smil[smil["method"] == "smil"]["missing.rates.audio"]) == {0.9, 0.8, 0.0}
    ablations = {"smil_no_kmeans", "smil_no_reg", "smil_fixed_gaussian", "smil_deterministic",
                 "smil_code", "smil_alg1", "smil_first_order", "smil_kl_eq7"}
    assert ablations <= set(smil[smil["missing.rates.audio"] == 0.8]["method"])
    assert {"ae_impute", "gan_impute", "mvae", "unimodal"} <= set(df["method"])
    assert ("image",) in set(df[df["method"] == "unimodal"]["config.use"].map(tuple))       # the lower bound
    assert set(smil[smil["method"] == "smil"]["test"]) == {"image", "image+audio"}
    assert (smil[smil["method"] == "smil"]["accuracy"] > 0.15).all()      # quick profile, chance is 0.1
    v = report.read_verdicts(site / "book/verdicts/01_smil.json")
    assert any(x.claim.startswith("Table 3: the full SMIL beats") for x in v) and all(x.n >= 2 for x in v)


def test_mle_chapter_records(built):
    site, _ = built
    from mmlib import report
    df = results.load_records(site / "book/records", "[!.]*.json")
    df = df[df["method"].isin(["mle", "mle_lb", "mle_zp", "hgr", "ae1", "ae2"])]
    # Table 1 at 95% for both modalities: every method and phi the paper has, and the book's variant;
    # a record's method is its registry key, the variant is in its config
    keep95 = df[(df["dataset"] == "avdigits") & ((df["missing.rates.image"] == 0.95) | (df["missing.rates.audio"] == 0.95))]
    runs = set(zip(keep95["method"], keep95["config.phi"], keep95["config.support"].fillna("-")))
    assert {("mle_lb", "add", "all"), ("hgr", "outer", "-"), ("mle_zp", "concat", "all"), ("mle", "outer", "all"),
            ("mle", "add", "all_detached"), ("mle", "add", "batch")} <= runs
    assert ("mle_zp", "outer") not in set(zip(df["method"], df["config.phi"]))
    assert {"ae1", "ae2"} <= set(df["method"])                                # Table 2
    assert "affect" in set(df["dataset"])
    v = report.read_verdicts(site / "book/verdicts/02_mle.json")
    assert any(x.claim.startswith("(1) MLE beats the lower bound") for x in v)
    affect = [x for x in v if x.claim.startswith("(affect)")]        # decided, or not testable for a reason
    assert affect and all(x.verdict != "not testable" or x.reason for x in affect)


def test_redcore_chapter_records(built):
    site, _ = built
    from mmlib import report
    df = results.load_records(site / "book/records", "[!.]*.json")
    three = df[df["method"].isin(["redcore", "redcore_core", "redcore_red", "mmin_lite", "cra"])]
    rc = three[(three["dataset"] == "affect") & (three["missing.kind"] == "independent")]   # (MLA's chapter also
    assert set(rc["method"]) == {"redcore", "redcore_core", "redcore_red", "mmin_lite", "cra"}      # runs MMIN, CRA)
    assert set(rc["test"]) == {"acoustic", "visual", "lexical", "acoustic+visual", "acoustic+lexical",
                               "visual+lexical", "acoustic+visual+lexical"}              # every test pattern
    assert rc["val_missing.kind"].eq("independent").all()          # selected on a masked validation split
    page = rc[(rc["missing.rates.acoustic"] == 0.8) & (rc["missing.rates.visual"] == 0.2)]
    assert {"as_printed", "code"} <= set(page["config.kl"]) and "batch_position" in set(page["config.mask_follows"])
    rec = results.read_record(page[page["method"] == "redcore"]["path"].iloc[0])
    assert rec["trace"] and "ra_lexical" in rec["trace"][0] and rec["pooled_metrics"]["f1_weighted"] > 0
    v = report.read_verdicts(site / "book/verdicts/03_redcore.json")
    assert any(x.claim.startswith("(4) RedCore beats Core") for x in v) and all(x.verdict in report.VERDICTS for x in v)
    # the exact ceiling: RedCore and MMIN on gaussian's imbalanced preset, every pattern, decided against each other
    g = three[three["dataset"] == "gaussian"]
    assert {"redcore", "mmin_lite"} <= set(g["method"]) and set(g["test"]) >= {"A", "V", "L", "A+V+L"}
    assert any(x.claim.startswith("(this book) on gaussian, RedCore is closer to the Bayes oracle") for x in v)


def test_m3s_chapter_records(built):
    """The M3S chapter: the three settings on both tasks, tested on the fixed corruption of
    the band (and at 60-80 % for the 40-60 % models), with its verdicts written."""
    site, _ = built
    from mmlib import report
    df = results.load_records(site / "book/records", "[!.]*.json")
    m = df[df["method"].isin(["m3s", "m3s_orig", "m3s_spl_trn"])]
    m = m[m["corruption.band"].notna()]              # the head-to-head also runs M3S without a fixed corruption
    assert {"m3s", "m3s_orig", "m3s_spl_trn"} <= set(m["method"])
    assert {"acoustic+visual+lexical@40-60%", "acoustic+visual+lexical@60-80%"} <= set(m["test"])
    assert {"mmin_lite", "zp_concat"} <= set(m["config.base"]) and m["corruption.band"].map(lambda b: b[0]).eq(0.4).all()
    v = report.read_verdicts(site / "book/verdicts/04_m3s.json")
    assert any(x.claim.startswith("(1) M3S beats ORIG") for x in v) and all(x.verdict in report.VERDICTS for x in v)


def test_mla_chapter_records(built):
    """The MLA chapter: Table 1's eight methods with a record per modality and Multi, Table 2's
    masked test split, the modality gap in the records, and its verdicts written."""
    site, _ = built
    from mmlib import report
    df = results.load_records(site / "book/records", "[!.]*.json")
    g = df[(df["dataset"] == "gaussian") & df["method"].isin(["sum_linear", "concat_linear", "late_fusion", "film",
                                                              "bigated", "ogm_ge", "qmf", "mla"])]
    assert set(g["method"]) == {"sum_linear", "concat_linear", "late_fusion", "film", "bigated", "ogm_ge", "qmf", "mla"}
    assert {"m0", "m1", "m2", "m0+m1+m2"} <= set(g["test"])
    masked = df[(df["test"] == "masked") & (df["dataset"] == "affect")]
    assert {"mla", "qmf", "late_fusion", "cra", "mmin_lite", "zp_concat"} <= set(masked["method"])
    v = report.read_verdicts(site / "book/verdicts/05_mla.json")
    assert any(x.claim.startswith("(1) MLA has the best Multi accuracy") for x in v)
    assert any(x.claim.startswith("(10) HGM off, DF off equals late fusion") and x.direction == "=" for x in v)
    assert all(x.verdict in report.VERDICTS for x in v)


def test_head_to_head_chapter_records(built):
    """The head-to-head chapter: every method of the roster that applies ran under each protocol of
    the quick plan on the same masks, the others are n/a, and its verdicts are written."""
    site, _ = built
    from mmlib import headtohead as H, report
    from mmlib.chapters import H2H_PLAN
    df = results.load_records(site / "book/records", "[!.]*.json")
    g = df[(df["dataset"] == "gaussian") & (df["test"] == "masked")]
    assert {"zp_concat", "late_fusion", "mmin_lite", "m3s", "redcore", "mla"} <= set(g["method"])
    v = report.read_verdicts(site / "book/verdicts/06_head_to_head.json")
    settings = {H.column_name(ds, p, lv) for ds, ps in H2H_PLAN["quick"].items() for p, lvs in ps.items() for lv in lvs}
    assert {x.setting for x in v} == settings and all(x.verdict in report.VERDICTS for x in v)
    import nbformat
    page = str(nbformat.read(site / "book/chapters/06_head_to_head.ipynb", 4).cells)
    assert "n/a [" in page and "Bayes oracle" in page and "Average rank" in page


def test_sweep_skips_finished_runs(built):
    site, _ = built
    infos = sweep.run_chapter("00_missing_modalities", "quick", device="cpu", book_dir=site / "book",
                              page=False, log=lambda *a: None)
    assert [i["status"] for i in infos] == ["skipped", "skipped"]


@pytest.fixture(scope="module")
def html(built):
    """The HTML build of the quick book, once for every test that reads it (tests of a group may
    run in any order)."""
    site, _ = built
    out = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(site),
                          "--toc", str(site / "book/_toc.yml"), "--config", str(site / "_config.yml"),
                          "-W", "-n", "--keep-going"], capture_output=True, text=True)
    return site, out


def test_book_builds_offline_with_warnings_as_errors(html):
    site, out = html
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    html = site / "_build" / "html"
    for page in ["book/intro.html", "book/chapters/00_missing_modalities.html", "book/chapters/02_mle.html",
                 "book/chapters/05_mla.html", "book/chapters/06_head_to_head.html", "book/scorecard.html",
                 "book/appendix/runs.html", "book/appendix/explorer.html",
                 "book/datasheets/avdigits.html", "book/references.html"]:
        assert (html / page).is_file(), page
    assert 'href="../glossary.html#term-presence-matrix"' in (html / "book/chapters/00_missing_modalities.html").read_text()
    explorer = (html / "book/appendix/explorer.html").read_text()
    assert "itables" in explorer and "05_mla" in explorer and "cdn.datatables" not in explorer   # offline table
    assert explorer.count("num-empty-last") >= 2        # the ordering type registered and given to the metrics
    chapter = (html / "book/chapters/00_missing_modalities.html").read_text()
    assert "cdn.jsdelivr" not in chapter and "_mathjax/tex-chtml.js" in chapter
    assert "Lower-Bound" in chapter and "injected-parameters" not in chapter
    # figures are numbered and the prose refers to each of them by number
    import re
    figs = re.findall(r'<figure[^>]*id="([a-z0-9-]+)"', chapter)
    assert len(figs) == 5 and chapter.count('class="caption-number">Fig.') == 5
    assert all(f'href="#{f}"' in chapter for f in figs)


def test_scorecard_shows_every_claim_of_every_chapter(html):
    """The scorecard is built from the chapters' verdict records: each claim appears, and each
    row's link points at a section that exists in the built chapter."""
    import html as _html
    import re
    from mmlib import report, scorecard
    site, built_html = html
    assert built_html.returncode == 0
    page = (site / "_build/html/book/scorecard.html").read_text()
    files = sorted((site / "book/verdicts").glob("*.json"))
    assert {f.stem for f in files} >= {"01_smil", "02_mle", "03_redcore", "04_m3s", "05_mla", "06_head_to_head"}
    for f in files:
        for v in report.read_verdicts(f):
            assert _html.escape(v.claim, quote=False) in page or _html.escape(v.claim) in page, (f.stem, v.claim)
    card = scorecard.frame(site / "book/verdicts")
    for link in card["link"].unique():
        target, anchor = link.split("#")
        built = (site / "_build/html/book" / target).read_text()
        assert re.search(f'id=["\']{anchor}["\']', built), link


def test_no_chapter_tests_the_same_paired_differences_twice(html):
    """A claim that is another claim's mirror or algebraic twin is declared once: within a chapter's
    family no two verdicts rest on the same paired differences (up to sign), and each verdict is
    decided family-wise (its Holm p is recorded)."""
    from mmlib import report
    site, _ = html
    for f in sorted((site / "book/verdicts").glob("*.json")):
        vs = report.read_verdicts(f)
        assert all(v.id for v in vs), [(f.stem, v.claim) for v in vs if not v.id]     # every claim declared with an id
        assert not report.same_comparisons(vs), [(f.stem, a.claim, b.claim) for a, b in report.same_comparisons(vs)]
        # by value (algebraic twins too): only where the seeds can tell a twin from a coincidence (the quick
        # profile's two seeds and two epochs make coincidences common; the default build's five do not)
        if min((v.n for v in vs if v.n), default=0) >= 3:
            assert not report.duplicates(vs), [(f.stem, a.claim, b.claim) for a, b in report.duplicates(vs)]
        tested = [v for v in vs if v.raw_verdict not in ("", "not testable")]
        assert all(v.p_holm >= v.p - 1e-12 for v in tested), f.stem
        assert all(v.raw_verdict for v in vs), f"{f.stem}: a verdict written before the family-wise adjustment"


def _plain_verdicts(vs: list[dict]) -> list[tuple[str, float, float]]:
    """Every verdict of a chapter recomputed from its JSON alone, independently of mmlib.report: the
    paired differences from the two sides' per-seed values, a paired t-test written out, the 95 %
    interval, the raw verdict, then Holm's step-down within each family. Returns (verdict, p, Holm p)."""
    import math
    from scipy import stats
    rows = []
    for v in vs:
        a, b = v["sides"].get("a", {}), v["sides"].get("b", {})
        d = [a[k] - b[k] for k in a if k in b]
        n = len(d)
        if v["verdict"] == "not testable" and (n < 2 or v["reason"]):
            rows.append(("not testable", math.nan, v["kind"]))
            continue
        mean = sum(d) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
        se = sd / math.sqrt(n)
        if v["direction"] == "=":
            m = v["margin"]
            if se == 0:
                p = 0.0
            elif abs(mean) < m:
                p = min(1.0, 2 * max(stats.t.sf((mean + m) / se, n - 1), stats.t.sf((m - mean) / se, n - 1)))
            else:
                p = min(1.0, 2 * stats.t.sf((abs(mean) - m) / se, n - 1))
            h = stats.t.ppf(0.975, n - 1) * se
            lo, hi = mean - h, mean + h
            raw = "reproduced" if -m < lo and hi < m else ("contradicted" if lo >= m or hi <= -m else "inconclusive")
        else:
            p = (1.0 if mean == 0 else 0.0) if se == 0 else 2 * stats.t.sf(abs(mean) / se, n - 1)
            h = stats.t.ppf(0.975, n - 1) * se
            lo, hi = mean - h, mean + h
            raw = "inconclusive" if lo <= 0 <= hi else ("reproduced" if lo > 0 else "contradicted")
            assert abs(mean - v["effect"]) < 1e-6 * max(1, abs(mean)) and abs(lo - v["ci_low"]) < 1e-6 * max(1, abs(lo)), v["claim"]
        rows.append((raw, p, v["kind"]))
    holm = [math.nan] * len(rows)
    for fam in ("paper", "book"):
        idx = sorted((i for i, r in enumerate(rows) if not math.isnan(r[1]) and (r[2] == "paper") == (fam == "paper")),
                     key=lambda i: rows[i][1])
        running = 0.0
        for rank, i in enumerate(idx):
            running = max(running, min(1.0, (len(idx) - rank) * rows[i][1]))
            holm[i] = running
    out = []
    for (raw, p, _), ph in zip(rows, holm):
        decisive = raw in ("reproduced", "contradicted")
        out.append((raw if not decisive or ph < 0.05 else "inconclusive", p, ph))
    return out


def test_every_verdict_recomputes_from_its_json_alone(html):
    """A separate, plain implementation of the paired t-test, the equivalence test and Holm's method,
    from the per-seed values each verdict record holds, gives every verdict, p and Holm p of the
    built book."""
    import json
    import math
    site, _ = html
    checked = 0
    for f in sorted((site / "book/verdicts").glob("*.json")):
        vs = json.loads(f.read_text())["verdicts"]
        for v, (verdict, p, ph) in zip(vs, _plain_verdicts(vs)):
            assert v["verdict"] == verdict, (f.stem, v["claim"], v["verdict"], verdict)
            if not math.isnan(p):
                assert abs(v["p"] - p) <= 1e-9 + 1e-6 * p and abs(v["p_holm"] - ph) <= 1e-9 + 1e-6 * ph, (f.stem, v["claim"])
            checked += 1
    assert checked > 100


def test_student_edition_hides_every_solution(html):
    """`make book-student`'s HTML: the exercises are there, numbered; no solution text is."""
    site, built_html = html
    assert built_html.returncode == 0
    from mmlib.edition import student_config
    out = site / "_student"
    cfg = student_config(site / "_config.yml", out / "_config.yml")
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(site), "--toc",
                           str(site / "book/_toc.yml"), "--config", str(cfg), "--path-output", str(out),
                           "-W", "-n", "--keep-going"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    student = (out / "_build/html/book/chapters/00_missing_modalities.html").read_text()
    teacher = (site / "_build/html/book/chapters/00_missing_modalities.html").read_text()
    secret = "the two modalities are dropped independently"
    assert "Build a presence matrix" in student and "Exercise" in student
    assert secret in teacher and secret not in student
    assert "hide_solutions: true" in cfg.read_text()


def test_the_book_prints_as_one_pdf(html):
    """`make pdf`: one PDF, a bookmark per page of the table of contents, the chapters' text in it."""
    site, built_html = html
    assert built_html.returncode == 0
    from pypdf import PdfReader
    from mmlib.pdf import book_pages, build_pdf
    out = build_pdf(site / "_build/html", site / "_pdf/book.pdf", budget_ms=5000)
    reader = PdfReader(out)
    titles = [o.title for o in reader.outline]
    assert titles == [t for t, _ in book_pages()]
    assert "MLA: multimodal learning by alternating unimodal adaptation" in titles
    text = " ".join(p.extract_text() for p in reader.pages)
    assert "Table 1: each modality alone and all together" in text and "What reproduced and what did not" in text
