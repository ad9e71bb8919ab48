"""Comparison tables: values straight from the records, best per column, protocols never mixed, and the
Markdown / CSV / LaTeX renderings."""

from __future__ import annotations

import csv
import io

import pytest
from tests.report.helpers import make_record, write_record

from anomalyseg.report.render import fmt, table_csv, table_latex, table_markdown
from anomalyseg.report.results import ResultSet, load_result_sets
from anomalyseg.report.tables import anomaly_table, build_tables


@pytest.fixture(scope="module")
def records():
    return {
        "r50": make_record({"max_logit": 1.0, "energy": 2.0}, seed=0, miou=0.41),
        "r101": make_record({"max_logit": 1.5, "energy": 0.5}, seed=1, miou=0.47),
    }


def sets_of(records):
    return [ResultSet(label, None, rec) for label, rec in records.items()]


def test_values_and_best_marks(records):
    table = anomaly_table(sets_of(records))
    assert [g for g, _ in table.groups] == ["per_image", "pooled"]
    assert table.headers[:3] == ["per_image FPR95", "per_image AUROC", "per_image AUPR"]
    assert [t for t, _ in table.rows] == [["r50", "max_logit"], ["r50", "energy"], ["r101", "max_logit"],
                                          ["r101", "energy"]]
    for (model, scorer), values in table.rows:
        m = records[model]["scorers"][scorer]["metrics"]
        assert values == [m[p][k] for p in ("per_image", "pooled") for k in ("fpr95", "auroc", "aupr")]
    best = table.best()
    for c, direction in enumerate(table.better):
        column = [v[c] for _, v in table.rows]
        target = min(column) if direction == "min" else max(column)
        assert best[c] == {r for r, v in enumerate(column) if v == target}
    # r50 / energy has the largest separation: best everywhere
    assert all(best[c] == {1} for c in range(len(table.better)))


def test_markdown_marks_and_notes(records):
    md = table_markdown(anomaly_table(sets_of(records)))
    energy = records["r50"]["scorers"]["energy"]["metrics"]["per_image"]
    assert f"| r50 | energy | **{fmt(energy['fpr95'])}** | **{fmt(energy['auroc'])}** |" in md
    weak = records["r101"]["scorers"]["energy"]["metrics"]["pooled"]
    assert f"| {fmt(weak['aupr'])} |" in md and f"**{fmt(weak['aupr'])}**" not in md
    assert "official StreetHazards protocol" in md and "FPR95 rule 'first'" in md


def test_protocols_are_never_mixed(records):
    other = make_record({"max_logit": 1.0}, seed=2, ignore_ids=(0, 3))
    sets = [*sets_of(records), ResultSet("r50_ignore", None, other)]
    table = anomaly_table(sets)
    labels = [g for g, _ in table.groups]
    assert labels == ["per_image [1]", "pooled [1]", "per_image [2]", "pooled [2]"]
    row = next(v for t, v in table.rows if t[0] == "r50_ignore")
    assert row[:6] == [None] * 6 and None not in row[6:]
    assert next(v for t, v in table.rows if t[0] == "r50")[6:] == [None] * 6
    notes = " ".join(table.notes)
    assert "per_image [2]" in notes and "ignored ids [0, 3]" in notes and "label ids [0, 3] and 255 left out" in notes


def test_csv_holds_exact_fractions_and_best_columns(records):
    table = anomaly_table(sets_of(records))
    rows = list(csv.DictReader(io.StringIO(table_csv(table))))
    assert len(rows) == 4
    r = rows[1]
    m = records["r50"]["scorers"]["energy"]["metrics"]
    assert float(r["pooled AUPR"]) == m["pooled"]["aupr"] and float(r["per_image FPR95"]) == m["per_image"]["fpr95"]
    assert set(r["best"].split(";")) == set(table.headers)
    assert rows[3]["best"] == ""


def test_latex(records):
    tex = table_latex(anomaly_table(sets_of(records)))
    assert tex.count(r"\multicolumn{3}{c}") == 2 and r"\cmidrule(lr){3-5}" in tex
    assert r"max\_logit" in tex and "max_logit" not in tex.replace(r"max\_logit", "")
    energy = records["r50"]["scorers"]["energy"]["metrics"]["pooled"]
    assert rf"\textbf{{{fmt(energy['auroc'])}}}" in tex
    assert tex.count(r"\\") == 2 + 4  # group header, metric header, four rows
    assert r"FPR95 $\downarrow$" in tex and r"AUPR $\uparrow$" in tex


def test_segmentation_and_per_class_tables(records, tmp_path):
    paths = [write_record(tmp_path / "a" / "r50.json", records["r50"]),
             write_record(tmp_path / "b" / "r50.json", records["r101"])]
    sets = load_result_sets(paths)
    assert [s.label for s in sets] == ["a/r50", "b/r50"]  # same stem: folder added
    seg, _, per_class = build_tables(sets)
    assert [v[0] for _, v in seg.rows] == [0.41, 0.47] and seg.best()[0] == {1}
    assert per_class.headers[0] == "unlabeled" and per_class.best()[0] == {1}
    single = build_tables(sets[:1])[0]
    assert single.best() == [set(), set(), set()]  # one row: nothing to mark
    assert "**" not in table_markdown(single)


def test_result_markdown_percentages_use_the_table_formatter():
    """An evaluation's own Markdown formats percentages like the comparison tables: 2 decimals, "-" for a
    missing or undefined value."""
    from anomalyseg.report.results import to_markdown as result_markdown

    record = {"segmentation": {"miou": 0.4567, "note": "n"}, "protocols": {"p": {}},
              "scorers": {"s": {"metrics": {"p": {"auroc": 0.91234, "aupr": float("nan"), "fpr95": None}}}}}
    text = result_markdown(record)
    assert "- closed-set mIoU: 45.67 % (n)" in text
    assert "| s | 91.23 | - | - |" in text
    assert [fmt(v) for v in (0.91234, float("nan"), None)] == ["91.23", "-", "-"]
