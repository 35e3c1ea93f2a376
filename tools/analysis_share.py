"""How much of a chapter notebook is analysis code (the page-module rule: at most 30 %).

Counted over the code cells, parameters cell and imports left out, statement by statement:

- a **call** line belongs to a statement that only calls and shows: an expression or an
  assignment whose value is one call (its arguments may span lines) of a name imported from
  ``mmlib``, or of ``display``/``glue``/``print``/``Markdown``/``HTML``, or a figure call
  (``plt.*``, ``fig.*``, ``ax.*``/``axes``);
- an ``if``/``else`` (``if page:``) counts its header as a call line and its body statement
  by statement;
- every other statement is **analysis**: ``def``, ``for``, comprehensions building frames,
  pandas chains, literal tables, verdict wrangling.

Blank and comment lines are not counted. Run: ``python tools/analysis_share.py notebooks/0*.ipynb``.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

SHOW = {"display", "glue", "print", "Markdown", "HTML"}
FIGURE_ROOTS = {"plt", "fig", "fig_", "ax", "axes"}


def _root(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _lines(src_lines, node, seen: set) -> int:
    """The statement's code lines not counted yet (``x = 1; y = 2`` is one line)."""
    new = [i for i in range(node.lineno - 1, node.end_lineno)
           if i not in seen and src_lines[i].strip() and not src_lines[i].strip().startswith("#")]
    seen.update(new)
    return len(new)


def _is_call(node, lib: set[str]) -> bool:
    value = node.value if isinstance(node, (ast.Expr, ast.Assign, ast.AnnAssign)) else None
    if not isinstance(value, ast.Call):
        return False
    f = value.func
    if isinstance(f, ast.Name):                          # run_grid(...), display(...)
        return f.id in lib or f.id in SHOW
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):     # report.table(...), plt.show()
        return f.value.id in lib or f.value.id in FIGURE_ROOTS
    return False


def count(path: str | Path) -> tuple[int, int]:
    """(analysis lines, call lines) of a notebook's code cells."""
    nb = json.loads(Path(path).read_text())
    lib: set[str] = set()
    analysis = calls = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        src = "".join(cell["source"])
        lines = src.splitlines()
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):                      # names that come from mmlib
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmlib"):
                lib |= {a.asname or a.name for a in node.names}
            if isinstance(node, ast.Import):
                lib |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("mmlib")}

        seen: set[int] = set()

        def visit(stmts):
            nonlocal analysis, calls
            for st in stmts:
                if isinstance(st, (ast.Import, ast.ImportFrom)):
                    continue
                if isinstance(st, ast.If):
                    seen.add(st.lineno - 1)
                    calls += 1 + (1 if st.orelse else 0)
                    visit(st.body)
                    visit(st.orelse)
                elif _is_call(st, lib):
                    calls += _lines(lines, st, seen)
                else:
                    analysis += _lines(lines, st, seen)
        visit(tree.body)
    return analysis, calls


def share(path: str | Path) -> float:
    a, c = count(path)
    return a / max(a + c, 1)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        a, c = count(p)
        print(f"{Path(p).name:32s} analysis {a:4d}  calls {c:4d}  share {a / max(a + c, 1):5.1%}")
