"""The real-photo table of ``anomalyseg report``: scorers as rows, one column group per set and setting (AuPRC /
FPR95 pooled, sIoU / PPV / mean F1 where the component metrics were computed), exact cells in Markdown, CSV,
LaTeX and HTML, best per column marked, and settings never sharing a column. Records are built by hand with
known values (the schema ``anomalyseg evaluate --dataset anomaly-sets`` writes)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from tests.report.helpers import write_record

from anomalyseg.data.anomaly_presets import PRESETS
from anomalyseg.engine.evaluate import protocol_settings
from anomalyseg.report.build import write_report
from anomalyseg.report.real_tables import real_sets_table
from anomalyseg.report.render import table_csv, table_latex, table_markdown
from anomalyseg.report.results import load_result_sets, metric_rows
from anomalyseg.report.tables import build_tables

# scorer -> (AuPRC, FPR95) per set; the README's ENet values
VALUES = {
    "road_anomaly": {"void": (0.0969, 0.8309), "msp": (0.1334, 0.7782), "max_logit": (0.1501, 0.7246)},
    "smiyc_ra21": {"void": (0.1730, 0.8395), "msp": (0.2619, 0.7755), "max_logit": (0.2609, 0.8992)},
    "smiyc_ro21": {"void": (0.0150, 0.5414), "msp": (0.0506, 0.3352), "max_logit": (0.0389, 0.4135)},
    "fs_static": {"void": (0.0461, 0.5624), "msp": (0.0649, 0.4049), "max_logit": (0.0717, 0.4612)},
}
# scorer -> (sIoU, PPV, mean F1) where components were computed
COMPONENTS = {
    "smiyc_ra21": {"void": (0.1012, 0.0850, 0.0333), "msp": (0.2025, 0.1100, 0.0750),
                   "max_logit": (0.1875, 0.1250, 0.0625)},
    "smiyc_ro21": {"void": (0.0500, 0.0200, 0.0100), "msp": (0.1500, 0.3000, 0.1200),
                   "max_logit": (0.1500, 0.2500, 0.0900)},
}
TRACK = {"smiyc_ra21": "anomaly", "smiyc_ro21": "obstacle"}


def real_record(preset: str, values: dict[str, tuple[float, float]],
                components: dict[str, tuple[float, float, float]] | None = None, *, eval_at: str = "model",
                fpr_rule: str = "interp", skip: bool | None = None, ignore_ids: tuple[int, ...] = (),
                track: str = "anomaly") -> dict[str, Any]:
    pooled = protocol_settings("pooled", ignore_ids, (1,), eval_at, fpr_rule, void_label=True)
    if skip is not None:
        pooled["skip_images_without_anomaly"] = skip
    info = PRESETS[preset]
    record: dict[str, Any] = {
        "checkpoint": {"path": "/x/enet.pt", "sha256": "cd" * 32, "model_name": "enet"},
        "dataset": {"name": info.name, "key": preset, "preset": preset, "split": "val", "num_images": 10,
                    "mask_convention": info.mask_convention},
        "input": {"size_wh": None, "native": True, "tta": None, "eval_at": eval_at},
        "input_contract": {"size": [512, 1024], "void_index": 19},
        "segmentation": None, "protocols": {"pooled": pooled}, "num_images": 10, "scorers": {}, "per_image": [],
    }
    for scorer, (aupr, fpr95) in values.items():
        metrics: dict[str, Any] = {"pooled": {"auroc": 0.8, "aupr": aupr, "fpr95": fpr95, "fpr_rule": fpr_rule,
                                              "protocol_settings": pooled}}
        if components is not None:
            siou, ppv, f1 = components[scorer]
            metrics["components"] = {"threshold": 0.5, "track": track, "siou_gt": siou, "ppv": ppv, "f1_25": f1,
                                     "f1_50": f1, "f1_75": f1, "f1_mean": f1, "num_gt_components": 7,
                                     "num_pred_components": 9}
        record["scorers"][scorer] = {"kind": scorer, "params": {}, "requires_fit": False, "metrics": metrics}
    return record


@pytest.fixture()
def enet_files(tmp_path: Path) -> list[Path]:
    """``enet_<set>.json`` as ``evaluate --dataset anomaly-sets --out enet.json`` names them (alphabetical order,
    as a glob gives them)."""
    paths = []
    for preset in sorted(VALUES):
        rec = real_record(preset, VALUES[preset], COMPONENTS.get(preset), track=TRACK.get(preset, "anomaly"))
        paths.append(write_record(tmp_path / "results" / f"enet_{preset}.json", rec))
    return paths


def test_one_table_scorers_by_sets_with_exact_cells(enet_files: list[Path]) -> None:
    tables = build_tables(load_result_sets(enet_files))
    assert [t.key for t in tables] == ["real_sets"]  # no empty segmentation / StreetHazards tables
    table = tables[0]
    assert table.index == ["scorer"]  # one model: no model column
    assert [g for g, _ in table.groups] == ["RoadAnomaly", "RA21", "RO21", "FS Static"]  # registry order, not files'
    assert [m for _, m in table.groups] == [["AuPRC", "FPR95"], ["AuPRC", "FPR95", "sIoU", "PPV", "mean F1"],
                                           ["AuPRC", "FPR95", "sIoU", "PPV", "mean F1"], ["AuPRC", "FPR95"]]
    assert table.details == ["pooled, FPR95 interp, at model input 512x1024",
                             "pooled, FPR95 interp, track anomaly, at model input 512x1024",
                             "pooled, FPR95 interp, track obstacle, at model input 512x1024",
                             "pooled, FPR95 interp, at model input 512x1024"]
    assert [t for t, _ in table.rows] == [["void"], ["msp"], ["max_logit"]]

    md = table_markdown(table)
    assert ("| scorer | RoadAnomaly (pooled, FPR95 interp, at model input 512x1024) AuPRC | FPR95 | "
            "RA21 (pooled, FPR95 interp, track anomaly, at model input 512x1024) AuPRC | FPR95 | sIoU | PPV | "
            "mean F1 | RO21 (pooled, FPR95 interp, track obstacle, at model input 512x1024) AuPRC | FPR95 | sIoU | "
            "PPV | mean F1 | "
            "FS Static (pooled, FPR95 interp, at model input 512x1024) AuPRC | FPR95 |") in md
    assert "|---|---:|" + "---:|" * 13 in md
    assert ("| void | 9.69 | 83.09 | 17.30 | 83.95 | 10.12 | 8.50 | 3.33 | 1.50 | 54.14 | 5.00 | 2.00 | 1.00 | "
            "4.61 | 56.24 |") in md
    assert ("| msp | 13.34 | 77.82 | **26.19** | **77.55** | **20.25** | 11.00 | **7.50** | **5.06** | **33.52** | "
            "**15.00** | **30.00** | **12.00** | 6.49 | **40.49** |") in md
    assert ("| max_logit | **15.01** | **72.46** | 26.09 | 89.92 | 18.75 | **12.50** | 6.25 | 3.89 | 41.35 | "
            "**15.00** | 25.00 | 9.00 | **7.17** | 46.12 |") in md  # ties: both marked
    assert "FPR95 rule 'interp'" in md and "evaluated at the model input (512x1024)" in md
    assert "track anomaly, each map binarised at its stored threshold; thresholds in" in md

    rows = list(csv.DictReader(io.StringIO(table_csv(table))))
    msp = rows[1]
    assert msp["scorer"] == "msp"
    assert float(msp["RoadAnomaly (pooled, FPR95 interp, at model input 512x1024) AuPRC"]) == 0.1334
    assert float(msp["RO21 (pooled, FPR95 interp, track obstacle, at model input 512x1024) PPV"]) == 0.3
    assert rows[2]["best"].split(";") == ["RoadAnomaly (pooled, FPR95 interp, at model input 512x1024) AuPRC",
                                          "RoadAnomaly (pooled, FPR95 interp, at model input 512x1024) FPR95",
                                          "RA21 (pooled, FPR95 interp, track anomaly, at model input 512x1024) PPV",
                                          "RO21 (pooled, FPR95 interp, track obstacle, at model input 512x1024) sIoU",
                                          "FS Static (pooled, FPR95 interp, at model input 512x1024) AuPRC"]
    assert [len(r) for r in rows] == [2 + 14] * 3  # scorer, 14 numeric columns, best

    tex = table_latex(table)
    assert (r" & \multicolumn{2}{c}{RoadAnomaly} & \multicolumn{5}{c}{RA21} & \multicolumn{5}{c}{RO21} & "
            r"\multicolumn{2}{c}{FS Static} \\") in tex
    assert (r" & \multicolumn{2}{c}{\footnotesize pooled, FPR95 interp, at model input 512x1024} & "
            r"\multicolumn{5}{c}{\footnotesize pooled, FPR95 interp, track anomaly, at model input 512x1024} & ") in tex
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-8} \cmidrule(lr){9-13} \cmidrule(lr){14-15}" in tex
    assert (r"max\_logit & \textbf{15.01} & \textbf{72.46} & 26.09 & 89.92 & 18.75 & \textbf{12.50} & 6.25 & "
            r"3.89 & 41.35 & \textbf{15.00} & 25.00 & 9.00 & \textbf{7.17} & 46.12 \\") in tex
    assert r"sIoU $\uparrow$ & PPV $\uparrow$ & mean F1 $\uparrow$" in tex and r"FPR95 $\downarrow$" in tex


def test_settings_never_share_a_column(tmp_path: Path) -> None:
    """The same set measured at two resolutions, with images skipped, with other ignored ids, and without
    component metrics: five groups; each record's values only in its own group."""
    base = VALUES["road_anomaly"]
    variants = {
        "enet_road_anomaly": real_record("road_anomaly", base),
        "enetlabel_road_anomaly": real_record("road_anomaly", {"msp": (0.5, 0.5)}, eval_at="label"),
        "enetskip_road_anomaly": real_record("road_anomaly", {"msp": (0.6, 0.4)}, skip=True),
        "enetnoskip_road_anomaly": real_record("road_anomaly", {"msp": (0.7, 0.3)}, skip=False),  # = not set
        "enetign_road_anomaly": real_record("road_anomaly", {"msp": (0.8, 0.2)}, ignore_ids=(0,)),
        "enetcomp_road_anomaly": real_record("road_anomaly", {"msp": (0.9, 0.1)}, {"msp": (0.3, 0.2, 0.1)}),
    }
    paths = [write_record(tmp_path / f"{name}.json", rec) for name, rec in variants.items()]
    table = real_sets_table(load_result_sets(paths))
    assert table.index == ["model", "scorer"]
    assert [g for g, _ in table.groups] == ["RoadAnomaly [1]", "RoadAnomaly", "RoadAnomaly", "RoadAnomaly [2]",
                                           "RoadAnomaly"]
    assert table.details == ["pooled, FPR95 interp, at model input 512x1024", "pooled, FPR95 interp, at label res.",
                             "pooled, FPR95 interp, images without anomaly skipped, at model input 512x1024",
                             "pooled, FPR95 interp, at model input 512x1024",
                             "pooled, FPR95 interp, track anomaly, at model input 512x1024"]
    rows = {tuple(t): v for t, v in table.rows}
    assert rows[("enet", "msp")] == [0.1334, 0.7782] + [None] * 11
    assert rows[("enetnoskip", "msp")] == [0.7, 0.3] + [None] * 11  # skip=False shares the column with unset
    assert rows[("enetlabel", "msp")] == [None, None, 0.5, 0.5] + [None] * 9
    assert rows[("enetskip", "msp")] == [None] * 4 + [0.6, 0.4] + [None] * 7
    assert rows[("enetign", "msp")] == [None] * 6 + [0.8, 0.2] + [None] * 5
    assert rows[("enetcomp", "msp")] == [None] * 8 + [0.9, 0.1, 0.3, 0.2, 0.1]
    notes = " ".join(table.notes)
    assert "RoadAnomaly [2] (pooled, FPR95 interp, at model input 512x1024): " in notes and "ignored ids [0]" in notes
    assert "images without anomaly pixels left out" in notes and "evaluated at the label resolution" in notes
    md = table_markdown(table)
    assert "| RoadAnomaly (pooled, FPR95 interp, images without anomaly skipped, at model input 512x1024) AuPRC |" in md


def test_report_writes_the_table_everywhere(enet_files: list[Path], tmp_path: Path) -> None:
    written = write_report([enet_files[0].parent], tmp_path / "report", dpi=40)
    out = tmp_path / "report"
    assert written["csv_real_sets"] == out / "real_sets.csv"
    assert not (out / "segmentation.csv").exists() and not (out / "anomaly.csv").exists()
    md = (out / "summary.md").read_text()
    assert "## Real photos: anomaly segmentation" in md and "| max_logit | **15.01** | **72.46** |" in md
    tex = (out / "tables.tex").read_text()
    assert r"\multicolumn{5}{c}{RO21}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    page = (out / "report.html").read_text()
    start = page.index('id="table-real_sets"')
    table_html = page[start:page.index("</table>", start)]
    assert ('<th colspan="5">RO21<br><span class="detail">pooled, FPR95 interp, track obstacle, at model input '
            '512x1024</span></th>') in table_html
    assert '<td class="num best">15.01</td>' in table_html
    assert table_html.count("<tr>") == 2 + 3
    # the per-set sections stay (their own table with AUROC beside their panels)
    assert 'id="table-anomaly_smiyc_ro21"' in page


def test_streethazards_and_real_sets_together(enet_files: list[Path], tmp_path: Path) -> None:
    from tests.report.helpers import make_record

    sh = write_record(tmp_path / "r50.json", make_record({"energy": 1.0}))
    tables = build_tables(load_result_sets([sh, *enet_files]))
    assert [t.key for t in tables] == ["segmentation", "anomaly", "per_class", "real_sets"]
    assert [t[0] for t, _ in tables[1].rows] == ["r50"]  # real-photo files only in their own table
    assert [t for t, _ in tables[3].rows] == [["void"], ["msp"], ["max_logit"]]


def test_results_csv_rows_skip_components() -> None:
    record = real_record("smiyc_ra21", VALUES["smiyc_ra21"], COMPONENTS["smiyc_ra21"])
    assert [(r["scorer"], r["protocol"]) for r in metric_rows(record)] == [
        ("void", "pooled"), ("msp", "pooled"), ("max_logit", "pooled")]
