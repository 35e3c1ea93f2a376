"""The whole book as one PDF, offline: every page of the built HTML printed by headless Chromium
(Debian's ``chromium`` package; MathJax typesets before printing), merged in the table of
contents' order with one bookmark per page.

    make pdf            # -> _build/pdf/book.pdf   (after `make book`)

Jupyter Book's single-page builder cannot take the chapters' hidden code cells, and the LaTeX
route needs a TeX installation; printing the HTML needs only the browser.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from .chapters import CHAPTERS, PAGES, PARTS, ROOT_PAGE

ROOT = Path(__file__).resolve().parents[1]


def book_pages() -> list[tuple[str, str]]:
    """(title, page path without suffix) in the table of contents' order."""
    names = {"book/real_data": "Running on the real datasets", "book/teachers": "For teachers"}
    out = [("Introduction", ROOT_PAGE)]
    for part in PARTS:
        out += [(f"Datasheet: {c.title}" if part == "Data" else c.title, c.page.removesuffix(".ipynb"))
                for c in CHAPTERS.values() if c.part == part]
        out += [(names.get(p, Path(p).name.replace("_", " ").capitalize()), p) for pt, p in PAGES if pt == part]
    return out


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise RuntimeError("make pdf needs a headless Chromium: install Debian's package (apt install chromium)")


def print_page(html: Path, pdf: Path, budget_ms: int = 20000) -> Path:
    """One HTML page to PDF (A4, no header or footer), after ``budget_ms`` of virtual time for the
    page's scripts (MathJax) to finish."""
    proc = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                           f"--virtual-time-budget={budget_ms}", f"--print-to-pdf={pdf}", html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=300)
    if not pdf.is_file() or pdf.stat().st_size == 0:
        raise RuntimeError(f"printing {html} failed: {proc.stderr[-500:]}")
    return pdf


def build_pdf(html_dir: Path = ROOT / "_build" / "html", out: Path = ROOT / "_build" / "pdf" / "book.pdf",
              pages: list[tuple[str, str]] | None = None, budget_ms: int = 20000) -> Path:
    """Print every page and merge them into ``out`` with a bookmark per page; returns ``out``."""
    from pypdf import PdfReader, PdfWriter
    pages = pages or book_pages()
    missing = [p for _, p in pages if not (html_dir / f"{p}.html").is_file()]
    if missing:
        raise RuntimeError(f"build the HTML first (make html): {html_dir} has no {missing[:3]}")
    writer = PdfWriter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, (title, page) in enumerate(pages):
            part = print_page(html_dir / f"{page}.html", Path(tmp) / f"{k:02d}.pdf", budget_ms)
            start = len(writer.pages)
            for pg in PdfReader(part).pages:
                writer.add_page(pg)
            writer.add_outline_item(title, start)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.add_metadata({"/Title": "Multimodal learning with missing modalities: a reproduction book"})
    with open(out, "wb") as f:
        writer.write(f)
    return out
