"""The HTML report names the files it read without the absolute folders of the machine that made it (opt-in
absolute paths), and gives an input size as H x W, the input contract's order."""

from __future__ import annotations

from pathlib import Path

from tests.report.helpers import make_record, write_record

from anomalyseg.report.build import shown_path, write_report
from anomalyseg.report.results import load_result_sets
from anomalyseg.report.tables import segmentation_table


def _header(page: str) -> str:
    return page.split('<p class="meta">', 1)[1].split("</p>", 1)[0]


def test_report_header_paths_are_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_record(tmp_path / "results" / "r50.json", make_record({"energy": 1.5}))
    page = write_report(["results/r50.json"], "reports/main")["html"].read_text()
    assert "(../../results/r50.json)" in _header(page)
    assert str(tmp_path) not in page

    page = write_report([tmp_path / "results" / "r50.json"], "reports/abs", absolute_paths=True)["html"].read_text()
    assert str((tmp_path / "results" / "r50.json").resolve()) in _header(page)


def test_files_outside_the_working_directory_show_their_name_only(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    outside = write_record(tmp_path / "elsewhere" / "r50.json", make_record({"energy": 1.5}))
    page = write_report([outside], "report")["html"].read_text()
    assert "(r50.json)" in _header(page) and str(tmp_path) not in page
    assert shown_path(outside, "report") == "r50.json"
    assert shown_path(outside, "report", absolute=True) == str(outside.resolve())


def test_input_size_is_height_by_width(tmp_path):
    record = make_record({"energy": 1.5})
    record["input"] = {"size_wh": [1024, 512], "native": False, "tta": None}  # --size 1024x512 (W x H)
    table = segmentation_table(load_result_sets([write_record(tmp_path / "r.json", record)]))
    texts = [cell for text, _ in table.rows for cell in text]
    assert "512x1024 (HxW)" in texts and "1024x512" not in " ".join(texts)


def test_report_page_of_a_moved_tree_names_nothing_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_record(Path("results/a.json"), make_record({"energy": 1.5}))
    page = write_report(["results"], "report")["html"].read_text()
    assert "/" + tmp_path.parts[1] not in page.replace("../", "")  # no absolute folder anywhere on the page
