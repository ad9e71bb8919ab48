"""``anomalyseg report``: files, a self-contained page, and a headless-Chromium screenshot that shows the
table and the figures (pixels checked)."""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess

import numpy as np
import pytest
from PIL import Image
from tests.browser import chromium
from tests.report.helpers import make_record, write_record
from tests.viz.test_panels import known_case

from anomalyseg.cli import report as commands
from anomalyseg.errors import UserError
from anomalyseg.report.build import write_report
from anomalyseg.report.html import BEST_BG, HEADER_BG
from anomalyseg.viz.curves import SCORER_COLORS
from anomalyseg.viz.panels import comparison_grid, draw_panel, palette_legend, panel_data, save_figure


def rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def write_panels(folder) -> None:
    """A panels folder as `anomalyseg visualize` writes it (from the synthetic known case)."""
    c = known_case()
    data = panel_data(c["image"], c["gt"], c["pred"], c["confidence"], c["score"], 0.5, sample_id="t5/1")
    save_figure(draw_panel(data).figure, folder / "panel_t5_1.png")
    save_figure(comparison_grid([data]), folder / "grid.png")
    save_figure(palette_legend(), folder / "legend.png")
    manifest = {"format": "anomalyseg.panels/1", "scorer": "energy", "model_name": "tiny", "split": "test",
                "threshold": {"label": "fixed"}, "selection": {"mode": "ids"}, "grid": "grid.png",
                "legend": "legend.png", "samples": [{"id": "t5/1", "file": "panel_t5_1.png"}]}
    (folder / "panels.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    results = base / "results"
    write_record(results / "r50.json", make_record({"max_logit": 1.0, "energy": 2.0}, seed=0, miou=0.41))
    write_record(results / "r101.json", make_record({"max_logit": 1.5, "energy": 0.5}, seed=1, miou=0.47))
    (results / "figures_r50").mkdir()
    write_panels(results / "figures_r50")  # beside the results: found without --panels
    out = base / "report"
    parser = argparse.ArgumentParser(prog="anomalyseg")
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["report", str(results / "*.json"), "--out", str(out)])
    assert args.func(args) == 0
    return out


def test_files_and_self_contained_page(report):
    names = {p.name for p in report.iterdir()}
    assert {"report.html", "summary.md", "tables.tex", "anomaly.csv", "segmentation.csv", "per_class.csv"} <= names
    assert len(list((report / "figures").glob("*.png"))) == 4  # curves + threshold plot per results file
    page = (report / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from outside the page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 + 3  # curves, threshold plots, grid + one panel + legend
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert page.count('<td class="num best">') >= 6 and "Qualitative panels" in page
    md = (report / "summary.md").read_text()
    assert "## Anomaly segmentation" in md and "| r50 | energy |" in md


def test_existing_report_is_kept(report):
    before = (report / "report.html").read_bytes()
    with pytest.raises(UserError, match="already exist"):
        write_report([report.parent / "results"], report)
    assert (report / "report.html").read_bytes() == before


def test_headless_chromium_screenshot_shows_table_and_figures(report, tmp_path):
    binary = chromium()
    shot = tmp_path / "shot.png"
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           "--force-color-profile=srgb", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1280,2000", (report / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.shape[:2] == (2000, 1280)

    def mask(color: tuple[int, int, int], tol: int = 2) -> np.ndarray:
        return (np.abs(pixels - np.asarray(color)) <= tol).all(axis=2)

    header = mask(rgb(HEADER_BG))
    assert header.sum() > 5000, "no table header visible"
    assert mask(rgb(BEST_BG)).sum() > 500, "no best-value cell visible"
    rows = np.nonzero(header.any(axis=1))[0]
    table_top, table_bottom = rows.min(), rows.max()
    text = (pixels.sum(axis=2) < 200)[table_top:table_bottom + 60]  # dark text inside and under the header rows
    assert text.sum() > 500, "table cells hold no text"
    below = slice(table_bottom, None)
    for color in SCORER_COLORS[:2]:  # the two scorers' curve lines, drawn below the tables
        assert mask(rgb(color), tol=8)[below].sum() > 300, f"curve colour {color} not visible"
