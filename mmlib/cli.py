"""``mmbook``: run the book's chapters.

    mmbook sweep                         # every chapter, default profile (what `make book` runs)
    mmbook sweep 00_missing_modalities --profile quick --jobs 2
    mmbook run 00_missing_modalities -p missing_rate=0.9 -p seed=1 --profile default
    mmbook list                          # chapters, datasets, methods, profiles
    mmbook data check iemocap /data/iemocap -o fold=3   # is this folder what the reader expects?
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _param(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameters are NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        v = json.loads(v)
    except json.JSONDecodeError:
        pass
    return k, v


def main(argv=None) -> int:
    from . import sweep
    ap = argparse.ArgumentParser(prog="mmbook", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep", help="run chapters over their grids, then their pages")
    s.add_argument("chapters", nargs="*", help=f"default: all ({', '.join(sweep.CHAPTERS)})")
    r = sub.add_parser("run", help="run one chapter once, at the parameters given")
    r.add_argument("chapter")
    for p in (s, r):
        p.add_argument("-p", "--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                       help="a notebook parameter, e.g. dataset='\"crema_d\"' (sweep: for every run)")
    r.add_argument("-o", "--output", help="executed notebook (default: book/runs/<chapter>/<key>.ipynb)")
    for p in (s, r):
        p.add_argument("--profile", default="default", choices=sorted(sweep.PROFILES))
        p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
        p.add_argument("--data-root", default=None, help="folder with the real dataset, if any")
    s.add_argument("--jobs", type=int, default=1, help="notebooks run in parallel (1 thread each)")
    s.add_argument("--no-page", action="store_true", help="only the grid, not the book page")
    s.add_argument("--executor", default="process", choices=["process", "dask"],
                   help="process: this machine's workers (default); dask: a Dask cluster (pip install -e '.[cluster]')")
    s.add_argument("--scheduler", default=None, help="with --executor dask: tcp://HOST:PORT (default: a local cluster)")
    s.add_argument("--slurm", default=None, metavar="partition=P,memory=8GB,walltime=02:00:00,gres=gpu:1",
                   help="with --executor dask: workers as Slurm jobs (dask-jobqueue); --jobs sets how many")
    sub.add_parser("list", help="chapters, datasets, methods and profiles")
    sub.add_parser("toc", help="write book/_toc.yml from the chapter registry (mmlib/chapters.py)")
    sub.add_parser("pages", help="check that every chapter page ran to the end (before building the HTML)")
    sub.add_parser("student", help="the student edition: the HTML without solutions and a zip of clean notebooks")
    sub.add_parser("pdf", help="the whole built book as one PDF (headless Chromium): _build/pdf/book.pdf")
    st = sub.add_parser("status", help="per chapter, which grid points and pages are done, failed or to do")
    st.add_argument("chapters", nargs="*")
    st.add_argument("--profile", default="default", choices=sorted(sweep.PROFILES))
    d = sub.add_parser("data", help="real datasets: check a folder before running on it")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    dc = dsub.add_parser("check", help="say what is missing or malformed in a data folder (file, key, shape, dtype)")
    dc.add_argument("name", help="dataset, e.g. avmnist, mosi_mfn, mosi, iemocap, mmimdb")
    dc.add_argument("root", help="the folder with the dataset's files")
    dc.add_argument("-o", "--option", type=_param, action="append", default=[], metavar="NAME=VALUE",
                    help="reader options, e.g. fold=3 (iemocap) or aligned=true (mosi)")
    a = ap.parse_args(argv)

    if a.cmd == "data":
        from .data import check_folder, reader_options
        try:
            opts = dict(a.option)
            known = reader_options(a.name)
            if set(opts) - set(known):
                raise ValueError(f"unknown option(s) {sorted(set(opts) - set(known))} for {a.name}; "
                                 f"its options are {known}")
            problems = check_folder(a.name, a.root, **opts)
        except ValueError as e:
            print(f"mmbook: error: {e}", file=sys.stderr)
            return 2
        if problems:
            print(f"{a.name}: {a.root} has {len(problems)} problem(s):")
            for p in problems:
                print(f"  - {p}")
            return 1
        print(f"{a.name}: {a.root} looks right (files, keys, shapes, dtypes and finite values checked); "
              f"load it with load_dataset({a.name!r}, root) or run a chapter with --data-root")
        return 0

    if a.cmd == "toc":
        from .chapters import toc
        (sweep.ROOT / "book" / "_toc.yml").write_text(toc())
        print("wrote book/_toc.yml")
        return 0

    if a.cmd == "pages":
        problems = sweep.unfinished_pages()
        for p in problems:
            print(f"mmbook: page not published: {p}", file=sys.stderr)
        if not problems:
            print(f"all {len(sweep.CHAPTERS)} pages ran to the end")
        return 1 if problems else 0

    if a.cmd == "student":                     # the HTML of a half-built book would publish broken pages
        problems = sweep.unfinished_pages()
        for p in problems:
            print(f"mmbook: page not published: {p}", file=sys.stderr)
        if problems:
            print("mmbook: error: the student edition needs every page built: run `make book` first", file=sys.stderr)
            return 1

    if a.cmd in ("pdf", "student"):
        from .edition import build_student
        from .pdf import build_pdf
        build, describe = {"pdf": (build_pdf, lambda out: f"the book as one PDF: {out}"),
                           "student": (build_student, lambda out: f"student edition: {out / '_build' / 'html' / 'index.html'}"
                                                                 f" and {out / 'notebooks.zip'}")}[a.cmd]
        try:
            out = build()
        except RuntimeError as e:
            print(f"mmbook: error: {e}", file=sys.stderr)
            return 1
        print(describe(out))
        return 0

    if a.cmd == "status":
        rows = sweep.status(a.chapters or None, a.profile)
        for r in rows:
            sec = f"{r['seconds']:.0f} s" if r["seconds"] else ""
            cause = f"\n{'':33s}{r['cause']}" if r.get("cause") else ""
            print(f"{r['chapter']:24s} {r['status']:7s} {sec:>7s}  {r['point']}{cause}")
        counts = {s_: sum(r["status"] == s_ for r in rows) for s_ in ("done", "failed", "to do")}
        print(", ".join(f"{n} {s_}" for s_, n in counts.items()))
        return 0

    if a.cmd == "list":
        from .data import available as datasets
        from .methods import available as methods
        for c in sweep.CHAPTERS.values():
            print(f"chapter  {c.name:28s} {c.notebook} -> {c.page}")
        print("datasets", ", ".join(datasets()))
        print("methods ", ", ".join(methods()))
        print("profiles", ", ".join(sweep.PROFILES))
        return 0
    try:
        if a.cmd == "sweep":
            sweep.sweep_book(a.chapters or None, a.profile, jobs=a.jobs, device=a.device, data_root=a.data_root,
                             extra=dict(a.param) or None, page=not a.no_page, executor=a.executor,
                             scheduler=a.scheduler, slurm=a.slurm)
            return 0
        ch = sweep.chapter(a.chapter)
        params = {"profile": a.profile, "device": a.device,
                  "results_dir": "book/records", **dict(a.param)}
        if a.data_root:
            params["data_root"] = a.data_root
        sweep.check_parameters(sweep.ROOT / ch.notebook, params, f"chapter {ch.name}")
        out = Path(a.output) if a.output else sweep.BOOK / "runs" / ch.name / f"{sweep.key(params)}.ipynb"
        # one thread, as in a sweep, so the same run gives the same numbers either way
        seconds = sweep.execute(sweep.ROOT / ch.notebook, out.resolve(), params, sweep.THREADS)
        print(f"ran {ch.name} with {params} in {seconds:.0f} s -> {out}")
        return 0
    except KeyboardInterrupt:
        print("\nmmbook: interrupted; every finished run is kept (its marker and records): the same command "
              "resumes where this one stopped", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as e:
        print(f"mmbook: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # papermill's execution errors: the cell, the exception, the executed notebook
        where = f" (the executed notebook is kept: {locals()['out']})" if "out" in locals() else ""
        print(f"mmbook: error: {sweep.describe_failure(e)}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
