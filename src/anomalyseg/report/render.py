"""The comparison :class:`Table` (text columns, then numeric columns in groups, best value per column) and
its Markdown, CSV and LaTeX renderings (HTML: :mod:`anomalyseg.report.html`). Values are fractions, shown as %.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Table:
    """A table of text columns (``index``) followed by numeric columns in ``groups``; values are fractions
    (shown as %) or None; ``better`` is "min" / "max" per numeric column."""

    title: str
    index: list[str]
    groups: list[tuple[str, list[str]]]
    rows: list[tuple[list[str], list[float | None]]]
    better: list[str]
    notes: list[str] = field(default_factory=list)
    key: str = ""
    #: per group, how it was measured (shown under the group's name; empty: nothing to show)
    details: list[str] = field(default_factory=list)
    #: Markdown names the group only at its first column (wide groups, e.g. one per dataset)
    compact: bool = False

    def group_title(self, index: int) -> str:
        """The group's name with its detail in parentheses."""
        label = self.groups[index][0]
        detail = self.details[index] if index < len(self.details) else ""
        return f"{label} ({detail})" if detail else label

    @property
    def headers(self) -> list[str]:
        return [f"{self.group_title(i)} {m}".strip() for i, (_, metrics) in enumerate(self.groups) for m in metrics]

    def best(self) -> list[set[int]]:
        """Per numeric column, the row positions holding the best value (none when all values are equal)."""
        marks: list[set[int]] = []
        for c, direction in enumerate(self.better):
            values = [(r, v[c]) for r, (_, v) in enumerate(self.rows) if v[c] is not None and math.isfinite(v[c])]
            if not values:
                marks.append(set())
                continue
            if len({v for _, v in values}) < 2:  # one row, or all equal: nothing stands out
                marks.append(set())
                continue
            pick = min if direction == "min" else max
            target = pick(v for _, v in values)
            marks.append({r for r, v in values if v == target})
        return marks


def fmt(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage (``0.1234`` -> ``12.34``); ``-`` when missing."""
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its title and notes; best values bold."""
    best = table.best()
    head = [*table.index, *(_compact_headers(table) if table.compact else table.headers)]
    lines = [f"## {table.title}", "", "| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "|".join(["---"] * len(table.index) + ["---:"] * len(table.headers)) + "|"]
    for r, (text, values) in enumerate(table.rows):
        cells = [_md_escape(t) for t in text]
        cells += [f"**{fmt(v)}**" if r in best[c] else fmt(v) for c, v in enumerate(values)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {_md_escape(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


def _compact_headers(table: Table) -> list[str]:
    """The group's title on its first column only (``RoadAnomaly (pooled, ...) AuPRC``, ``FPR95``, ...)."""
    return [f"{table.group_title(i)} {m}".strip() if j == 0 else m
            for i, (_, metrics) in enumerate(table.groups) for j, m in enumerate(metrics)]


def to_markdown(tables: Sequence[Table], title: str = "Results") -> str:
    return f"# {title}\n\n" + "\n".join(table_markdown(t) for t in tables)


def table_csv(table: Table) -> str:
    """CSV: the text columns, every numeric column as a fraction, and ``best`` naming the columns in which
    the row is best."""
    best = table.best()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*table.index, *table.headers, "best"])
    for r, (text, values) in enumerate(table.rows):
        marked = [h for c, h in enumerate(table.headers) if r in best[c]]
        writer.writerow([*text, *("" if v is None else repr(float(v)) for v in values), ";".join(marked)])
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def table_latex(table: Table) -> str:
    """A ``booktabs`` tabular (needs ``\\usepackage{booktabs}``) with grouped headers; best values bold."""
    best = table.best()
    arrows = {"min": r"$\downarrow$", "max": r"$\uparrow$"}
    spec = "l" * len(table.index) + "".join("r" * len(m) for _, m in table.groups)
    lines = [f"% {table.title}", r"\begin{tabular}{" + spec + "}", r"\toprule"]
    if any(g for g, _ in table.groups):
        cells, rules, col = [""] * len(table.index), [], len(table.index) + 1
        for g, metrics in table.groups:
            cells.append(rf"\multicolumn{{{len(metrics)}}}{{c}}{{{latex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + len(metrics) - 1}}}")
            col += len(metrics)
        lines.append(" & ".join(cells) + r" \\")
        if any(table.details):
            cells = [""] * len(table.index) + [
                rf"\multicolumn{{{len(m)}}}{{c}}{{\footnotesize {latex_escape(d)}}}" if d else ""
                for (_, m), d in zip(table.groups, [*table.details, *[""] * len(table.groups)])]
            lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    metric_cells, c = [], 0
    for _, metrics in table.groups:
        for m in metrics:
            metric_cells.append(f"{latex_escape(m)} {arrows[table.better[c]]}")
            c += 1
    lines += [" & ".join([latex_escape(h) for h in table.index] + metric_cells) + r" \\", r"\midrule"]
    for r, (text, values) in enumerate(table.rows):
        cells = [latex_escape(t) for t in text]
        cells += [rf"\textbf{{{fmt(v)}}}" if r in best[c] else fmt(v) for c, v in enumerate(values)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(tables: Sequence[Table]) -> str:
    return "% generated by anomalyseg report; needs \\usepackage{booktabs}\n\n" + "\n".join(
        table_latex(t) for t in tables)
