"""One self-contained HTML page: tables, curves, threshold plots and panels, figures embedded as base64 PNG
(no external file, script or font: it opens offline, in a mail, or as a CI artifact)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyseg.report.render import Table, fmt

#: Table header background (also used by tests to find the table in a screenshot).
HEADER_BG = "#1f4e79"
#: Background of best-in-column cells.
BEST_BG = "#ffe08a"

CSS = f"""
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #222;
        max-width: 1240px; }}
h1 {{ font-size: 24px; margin-bottom: 4px; }}
h2 {{ font-size: 19px; margin-top: 28px; border-bottom: 1px solid #ccc; padding-bottom: 3px; }}
h3 {{ font-size: 15px; margin: 16px 0 6px; }}
table.results {{ border-collapse: collapse; font-size: 13px; margin: 8px 0; }}
table.results th {{ background: {HEADER_BG}; color: #fff; padding: 5px 9px; border: 1px solid #fff; }}
table.results td {{ padding: 4px 9px; border: 1px solid #ddd; }}
table.results th .detail {{ font-weight: normal; font-size: 11px; }}
table.results td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
table.results td.best {{ background: {BEST_BG}; font-weight: bold; }}
table.results tr:nth-child(even) td:not(.best) {{ background: #f4f7fb; }}
ul.notes {{ font-size: 12px; color: #555; margin-top: 2px; }}
figure {{ margin: 12px 0 20px; }}
figure img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 12px; color: #555; }}
.meta {{ font-size: 12px; color: #555; }}
"""


@dataclass
class Figure:
    """A PNG to embed, with a heading and a caption."""

    title: str
    png: bytes
    caption: str = ""
    section: str = "Figures"


def figure_png(fig: Any, dpi: int | None = None) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return buf.getvalue()


@dataclass
class Section:
    """A titled part of the page holding its own tables and figures (e.g. one real-photo set)."""

    title: str
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    notes: Sequence[str] = ()


def png_file(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def table_html(table: Table) -> str:
    """``<table class="results">`` with a grouped header row (when groups have names) and marked best cells."""
    best = table.best()
    e = html.escape
    rows = []
    named = any(g for g, _ in table.groups)
    span = 2 if named else 1
    head = "".join(f'<th rowspan="{span}">{e(h)}</th>' for h in table.index)
    if named:
        details = [*table.details, *[""] * len(table.groups)]
        head += "".join(f'<th colspan="{len(m)}">{e(g)}' + (f'<br><span class="detail">{e(d)}</span>' if d else "")
                        + "</th>" for (g, m), d in zip(table.groups, details))
        rows.append(f"<tr>{head}</tr>")
        rows.append("<tr>" + "".join(f"<th>{e(m)}</th>" for _, ms in table.groups for m in ms) + "</tr>")
    else:
        rows.append("<tr>" + head + "".join(f"<th>{e(m)}</th>" for _, ms in table.groups for m in ms) + "</tr>")
    for r, (text, values) in enumerate(table.rows):
        cells = "".join(f"<td>{e(t)}</td>" for t in text)
        cells += "".join(f'<td class="num{" best" if r in best[c] else ""}">{fmt(v)}</td>'
                         for c, v in enumerate(values))
        rows.append(f"<tr>{cells}</tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in table.notes)
    return (f'<h2>{e(table.title)}</h2>\n<table class="results" id="table-{e(table.key)}">\n'
            + "\n".join(rows) + f'\n</table>\n<ul class="notes">{notes}</ul>\n')


def figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    cap = f"<figcaption>{html.escape(fig.caption)}</figcaption>" if fig.caption else ""
    return (f"<figure><h3>{html.escape(fig.title)}</h3>"
            f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">{cap}</figure>\n')


def section_html(section: Section) -> str:
    """A section: heading, notes, its tables (as level-3 headings) and its figures."""
    e = html.escape
    parts = [f'<h2 id="section-{e(_anchor(section.title))}">{e(section.title)}</h2>']
    parts += [f'<p class="meta">{e(n)}</p>' for n in section.notes]
    parts += [table_html(t).replace("<h2>", "<h3>", 1).replace("</h2>", "</h3>", 1) for t in section.tables]
    parts += [figure_html(f) for f in section.figures]
    return "\n".join(parts) + "\n"


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def build_html(title: str, tables: Sequence[Table], figures: Sequence[Figure], meta: Sequence[str] = (),
               sections: Sequence[Section] = ()) -> str:
    """The whole page: title, provenance lines, tables, the ``sections`` (one per real-photo set), then
    figures grouped by their section name."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    parts += [f'<p class="meta">{e(m)}</p>' for m in meta]
    parts += [table_html(t) for t in tables]
    parts += [section_html(s) for s in sections]
    grouped: dict[str, list[Figure]] = {}
    for fig in figures:
        grouped.setdefault(fig.section, []).append(fig)
    for section, figs in grouped.items():
        parts.append(f"<h2>{e(section)}</h2>")
        parts += [figure_html(f) for f in figs]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
