"""Page modules: a chapter's analysis, as small tested functions over records.

A chapter notebook keeps the prose, the equations, ``show_code`` of its method, the calls that
run and show, and its figures. Its page module holds the rest: the chapter's plan (which
methods and settings feed which table), its tables (ours beside the paper's), its claims
(declared once, with ids), and the text of its summaries. Each function reads the record frame
that :func:`mmlib.experiment.run_grid` returns, so the tests drive it with a handful of
synthetic rows, fast (``tests/test_pages.py``).

One module per chapter: ``intro`` (00), ``smil`` (01), ``mle`` (02), ``redcore`` (03), ``m3s`` (04)
and ``mla`` (05); the head to head's page functions live in :mod:`mmlib.headtohead` beside its
protocols. A module depends on ``report``, ``results``, ``masks``, ``plots`` and ``experiment``
(never the other way round); a notebook imports its page as ``from mmlib.pages import smil as
page_``.
"""


def show(items) -> None:
    """Display ``(title, table)`` pairs in a notebook: the title as Markdown, then the table (a
    frame, or Markdown text)."""
    from IPython.display import Markdown, display
    for title, table in items:
        display(Markdown(title))
        display(Markdown(table) if isinstance(table, str) else table)
