"""The student edition: the book without the exercises' solutions, and the chapter notebooks as a
student opens them (no outputs, no solutions) in one zip.

    mmbook student            # -> _build/student/html/index.html and _build/student/notebooks.zip

Exercises are sphinx-exercise directives (``{exercise}`` with a ``:label:``, ``{solution}`` pointing
at it); the HTML is built with sphinx-exercise's ``hide_solutions`` on, and the notebooks lose every
``{solution}`` block.
"""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from .chapters import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = re.compile(r"\n*```\{solution\}[^\n]*\n.*?\n```[ \t]*(?=\n|$)", re.S)


def strip_solutions(markdown: str) -> str:
    """A markdown cell without its ``{solution}`` blocks."""
    return SOLUTION.sub("", markdown)


def student_notebook(path: Path):
    """A chapter notebook as a student gets it: outputs cleared, solutions removed."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = strip_solutions(cell.source)
        elif cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def write_notebooks_zip(dest: Path) -> Path:
    """Every chapter's notebook (the sources in notebooks/, not the executed pages) in one zip."""
    import nbformat
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for ch in CHAPTERS.values():
            z.writestr(f"notebooks/{Path(ch.notebook).name}", nbformat.writes(student_notebook(ROOT / ch.notebook)))
        z.writestr("README.txt", "The book's chapters without outputs or solutions. Run them from the project root\n"
                                 "(`make install` first), e.g. `.venv/bin/jupyter lab notebooks/00_missing_modalities.ipynb`.\n")
    return dest


def student_config(src: Path, dest: Path) -> Path:
    """The book's _config.yml with the solutions hidden."""
    text = src.read_text()
    if "hide_solutions: false" not in text:
        raise ValueError(f"{src}: expected 'hide_solutions: false' under sphinx.config")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text.replace("hide_solutions: false", "hide_solutions: true"))
    return dest


def build_student(book_root: Path = ROOT, out: Path | None = None) -> Path:
    """Build the student edition's HTML (warnings are errors, as the book's) and the notebooks zip;
    returns the output folder."""
    out = Path(out or book_root / "_build" / "student")
    cfg = student_config(book_root / "_config.yml", out / "_config.yml")
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(book_root), "--toc", str(book_root / "book" / "_toc.yml"),
                           "--config", str(cfg), "--path-output", str(out), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the student edition's HTML build failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    write_notebooks_zip(out / "notebooks.zip")
    return out
