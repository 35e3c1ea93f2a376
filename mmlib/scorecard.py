"""The book's scorecard: every claim the chapters decide, in one table, read from their verdict records.

Each chapter writes its verdicts with :func:`mmlib.report.write_verdicts` to
``book/verdicts/<chapter>.json``; this module reads them back, so the scorecard page changes
whenever a chapter's verdict does (nothing is retyped). A claim is the **paper's** when the
paper makes it (the chapters number them after the paper's tables and figures) and the
**code's** when it sets the authors' released code (or one of its differences) against the
paper's reading, and the **book's** when the book asks it of the method (its claim text says
"this book": a control, a reading of an ambiguous equation, a ceiling).

Verdicts are decided family-wise (:func:`mmlib.report.adjust`): within a chapter, the paper's
claims are one family and the book's own questions (the code's included) another, each
adjusted with Holm's method; the scorecard counts the adjusted verdicts and says how many raw
verdicts the adjustment moved.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .report import ALPHA, KINDS, VERDICTS, adjust, anchor, detectable_effect, fmt_p, \
    read_verdict_file, verdict_text

def papers() -> dict[str, tuple[str, str]]:
    """chapter -> (its paper's name on the scorecard, the heading of its verdict section), in the
    book's order, from the chapter registry (the one place a chapter is named)."""
    from .chapters import CHAPTERS
    return {n: (c.paper, c.claims_heading) for n, c in CHAPTERS.items() if c.paper}


def slug(heading: str) -> str:
    """The HTML id Sphinx gives a section heading: lower case, runs of other characters -> "-"."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")



def read_all(verdict_dir: str | Path, chapters: list[str] | None = None) -> dict[str, dict]:
    """``{chapter: {"context": ..., "verdicts": [Verdict, ...]}}`` for every verdict file (or
    the ``chapters`` named), in chapter order. A file that cannot be read raises, naming it."""
    out = {}
    for p in sorted(Path(verdict_dir).glob("*.json")):
        if chapters is not None and p.stem not in chapters:
            continue
        context, verdicts = read_verdict_file(p)
        out[p.stem] = {"context": context, "verdicts": adjust(verdicts)}    # (a file written before families: decided now)
    return out


def frame(verdict_dir: str | Path, page: str = "book/scorecard.ipynb", chapters: list[str] | None = None) -> pd.DataFrame:
    """One row per verdict: paper, chapter, kind, claim, setting, effect, CI, n, p, verdict,
    reason, and ``link`` (the chapter's verdict section, relative to ``page``)."""
    from .chapters import CHAPTERS
    rows = []
    here = Path(page).parent
    for ch, d in read_all(verdict_dir, chapters).items():
        paper, heading = papers().get(ch, (ch, "What reproduced and what did not"))
        target = Path(CHAPTERS[ch].page).with_suffix(".html") if ch in CHAPTERS else Path(f"{ch}.html")
        link = f"{_relative(target, here)}#{slug(heading)}"
        for v in d["verdicts"]:
            own = f"{_relative(target, here)}#{anchor(v.id)}" if v.id else link    # the claim's own row
            rows.append({"paper": paper, "chapter": ch, "kind": v.kind, "claim": v.claim,
                         "setting": v.setting, "metric": v.metric, "effect": v.effect, "ci_low": v.ci_low,
                         "ci_high": v.ci_high, "n": v.n, "p": v.p, "p_holm": v.p_holm, "q_bh": v.q_bh,
                         "signs": v.signs, "verdict": v.verdict, "raw_verdict": v.raw_verdict,
                         "shown": verdict_text(v), "reason": v.reason, "text": v.text(), "link": own, "section": link,
                         "id": v.id,
                         "sd": float(pd.Series(list(v.diffs.values()), dtype=float).std()) if v.n >= 2 else float("nan"),
                         "profile": d["context"].get("profile")})
    return pd.DataFrame(rows)


def _relative(target: Path, start: Path) -> str:
    import os
    return Path(os.path.relpath(target, start)).as_posix()


def summary(df: pd.DataFrame, kinds=("paper",)) -> pd.DataFrame:
    """Per paper: how many claims (of ``kinds``) each verdict got, the total, and how many of the
    inconclusive ones were decisive before the family-wise adjustment."""
    sub = df[df["kind"].isin(kinds)]
    counts = sub.groupby(["paper", "verdict"], sort=False).size().unstack("verdict").reindex(columns=list(VERDICTS))
    counts = counts.fillna(0).astype(int)
    counts["claims"] = counts.sum(axis=1)
    if "raw_verdict" in sub:        # decisive before the family-wise adjustment, inconclusive after it
        counts["inconclusive only after Holm"] = (sub["raw_verdict"] != sub["verdict"]).groupby(sub["paper"]).sum() \
            .reindex(counts.index).fillna(0).astype(int)
    order = [p for p, _ in papers().values() if p in counts.index]
    return counts.reindex(order)


def power(df: pd.DataFrame, seeds=(5, 10, 20), power_: float = 0.8) -> pd.DataFrame:
    """What "inconclusive" means, per paper: of its claims (kind "paper") the share left
    inconclusive, the seed-to-seed standard deviation of a typical claim's paired differences
    (the median over its claims, in their units, mostly points), and the minimal effect a
    claim of that spread is detected with at 80 % power (:func:`mmlib.report.detectable_effect`)
    at 5, 10 and 20 seeds: at the unadjusted 0.05 and at the level Holm's method asks of the
    family's strongest claim (0.05 / the number of tests)."""
    rows = []
    sub = df[df["kind"] == "paper"]
    for paper, g in sub.groupby("paper", sort=False):
        tested = g[g["verdict"] != "not testable"]
        m = max(len(tested), 1)
        sd = float(tested["sd"].median()) if len(tested) else float("nan")
        row = {"paper": paper, "claims": len(g), "inconclusive": f"{(g['verdict'] == 'inconclusive').mean():.0%}",
               "n": int(tested["n"].median()) if len(tested) else 0, "typical SD": round(sd, 2)}
        for n in seeds:
            row[f"MDE {n}"] = round(detectable_effect(sd, n, ALPHA, power_), 1)               # (short headers: the
            row[f"MDE {n}, Holm"] = round(detectable_effect(sd, n, ALPHA / m, power_), 1)     # table fits the page)
        rows.append(row)
    order = [p for p, _ in papers().values()]
    out = pd.DataFrame(rows)
    return out.set_index("paper").reindex([p for p in order if p in set(out["paper"])]) if len(out) else out


def html_table(df: pd.DataFrame, digits: int = 1) -> str:
    """The claims as an HTML table a reader can follow: claim, setting, effect [95 % CI], n,
    the verdict (coloured) and a link to the chapter section that decides it."""
    import html
    colour = {"reproduced": "#1a7f37", "contradicted": "#cf222e", "inconclusive": "#6e7781", "not testable": "#9a6700"}
    head = ("<table class='scorecard' style='width:100%;table-layout:fixed;font-size:0.85em'>"
            "<colgroup><col style='width:30%'><col style='width:6%'><col style='width:18%'><col style='width:19%'>"
            "<col style='width:8%'><col style='width:15%'><col style='width:4%'></colgroup>"
            "<thead><tr><th>claim</th><th>kind</th><th>setting</th><th>effect [95% CI], n</th>"
            "<th title='raw p; p adjusted with Holm within the family'>p / Holm p</th>"
            "<th>verdict</th><th></th></tr></thead><tbody>")
    body = []
    for _, r in df.iterrows():
        effect = html.escape(r["text"] + (f" ({r['signs']} settings)" if r["signs"] else ""))
        verdict = r["shown"]
        body.append(f"<tr><td>{html.escape(r['claim'])}</td><td>{r['kind']}</td><td>{html.escape(str(r['setting']))}</td>"
                    f"<td>{effect}</td><td>{html.escape(fmt_p(r['p']))} / {html.escape(fmt_p(r['p_holm']))}</td>"
                    f"<td style='color:{colour.get(r['verdict'], '#000')};font-weight:600'>{html.escape(verdict)}</td>"
                    f"<td><a href='{html.escape(r['link'])}' title='the claim on the chapter page that decides it'>§</a></td></tr>")
    return head + "".join(body) + "</tbody></table>"


def tally(df: pd.DataFrame) -> str:
    """One sentence per kind: "Of the paper's N claims, a reproduced, b contradicted, ...", with
    the reproduced and contradicted claims named."""
    out = []
    for k, who in KINDS.items():
        sub = df[df["kind"] == k]
        if not len(sub):
            continue
        c = sub["verdict"].value_counts()
        counts = ", ".join(f"{int(c[v])} {v}" for v in VERDICTS if v in c)
        moved = int((sub["raw_verdict"] != sub["verdict"]).sum())
        out.append(f"- Of {who} ({len(sub)} tests): {counts}" +
                   (f" (the family-wise adjustment made {moved} raw verdict{'s' * (moved != 1)} inconclusive)."
                    if moved else "."))
        for v in ("reproduced", "contradicted"):
            names = list(dict.fromkeys(sub[sub["verdict"] == v]["claim"]))
            if names and k == "paper":
                out.append(f"  - {v.capitalize()}: " + "; ".join(names[:8]) + (" …" if len(names) > 8 else "") + ".")
    return "\n".join(out)
