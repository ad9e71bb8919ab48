"""``anomalyseg predict``: its score maps equal ``evaluate --save-scores`` maps at the label resolution; the
bad inputs give one readable line; a rerun keeps finished images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.engine.test_evaluate import make_checkpoint, make_tree
from tests.viz.test_gallery import page_data

from anomalyseg.cli import main
from anomalyseg.errors import UserError
from anomalyseg.workflows.evaluate import evaluate
from anomalyseg.workflows.predict import predict


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("predict")
    tree = make_tree(base / "sh")
    ckpt = make_checkpoint(base / "tiny.pt")
    images = next(p for p in tree.rglob("images") if p.is_dir() and any(p.rglob("t5")))
    return {"base": base, "tree": tree, "ckpt": ckpt, "images": images / "test"}


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("inference", [None, "slide"])
def test_predict_equals_evaluate_save_scores(setup, tmp_path, inference):
    kw = {"inference": inference, "tile": "32x48"} if inference else {}
    evaluate(setup["ckpt"], setup["tree"], tmp_path / "r.json", scorers="max_logit,energy", device="cpu",
             workers=0, progress=False, save_scores=tmp_path / "saved", eval_at="label", **kw)
    out = tmp_path / "pred"
    s = predict(setup["ckpt"], setup["images"], out, scorers="max_logit,energy", recursive=True, device="cpu",
                threshold="tpr95", results=tmp_path / "r.json", progress=False, **kw)
    assert len(s.predicted) == 5 and not s.failed
    rows = _rows(out)
    assert len(rows) == 5
    for row in rows:
        town, idx = Path(row["file"]).parent.name, Path(row["file"]).stem
        for name in ("max_logit", "energy"):
            ours = np.load(out / "scores" / name / f"{row['stem']}.npy")
            theirs = np.load(tmp_path / "saved" / "streethazards" / name / town / f"{idx}.npy")
            assert ours.dtype == np.float32 and ours.shape == theirs.shape
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
            for kind in ("heatmaps", "overlays", "masks"):
                assert (out / kind / name / f"{row['stem']}.png").is_file()
        assert (out / "segmentation" / f"{row['stem']}.png").is_file()
        assert 0.0 <= float(row["max_logit_anomaly_fraction"]) <= 1.0
    page = (out / "index.html").read_text()
    gallery = page_data(page)
    assert [e["stem"] for e in gallery["images"]] == [r["stem"] for r in rows]
    assert gallery["run"]["energy"] == s.thresholds["energy"] == gallery["initial"]["energy"]
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["input"]["inference"]["mode"] == (inference or "whole")
    # a rerun keeps the finished images, --force redoes them
    again = predict(setup["ckpt"], setup["images"], out, scorers="max_logit,energy", recursive=True, device="cpu",
                    threshold="tpr95", results=tmp_path / "r.json", progress=False, **kw)
    assert len(again.kept) == 5 and not again.predicted and len(_rows(out)) == 5
    assert (out / "index.html").read_text() == page  # the gallery rebuilt from the files on disk


def test_corrupt_image_is_skipped_and_named(setup, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(setup["images"].rglob("*.png"))[:2]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    code = main(["predict", "--checkpoint", str(setup["ckpt"]), str(folder), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 file(s) could not be read" in err and "broken.png" in err
    assert len(_rows(tmp_path / "o")) == 2


@pytest.mark.parametrize("argv, message", [
    (["EMPTY"], "no images"),
    (["IMAGES", "--scorers", "nonsense"], "nonsense"),
    (["IMAGES", "--threshold", "tpr95"], "give --results"),
    (["IMAGES", "--threshold", "tpr95", "--results", "OTHER"], "another checkpoint"),
    (["IMAGES", "--scorers", "sml"], "fit-scorers"),
    (["MISSING"], "does not exist"),
])
def test_bad_inputs_one_line(setup, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other.json"
    other.write_text("{}")
    if "OTHER" in argv:
        evaluate(make_checkpoint(tmp_path / "other.pt", seed=3), setup["tree"], other, scorers="max_logit",
                 device="cpu", workers=0, progress=False, limit=1, force=True)
    subs = {"EMPTY": str(tmp_path / "empty"), "IMAGES": str(setup["images"] / "t5"), "OTHER": str(other),
            "MISSING": str(tmp_path / "nope")}
    code = main(["predict", "--checkpoint", str(setup["ckpt"]), *[subs.get(a, a) for a in argv],
                 "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("anomalyseg: error:") and len(err.splitlines()) == 1 and message in err, err


def test_python_api_no_images(tmp_path):
    with pytest.raises(UserError, match="no images"):
        predict("x.pt", tmp_path, tmp_path / "o")


def test_a_pixel_exactly_at_the_threshold_is_not_detected(setup, tmp_path):
    """predict's mask, overlay outline and predictions.csv follow anomalyseg.constants.DETECTION_RULE
    (``score > threshold``): with the threshold set to one pixel's own score, that pixel is not detected."""
    photo = sorted(setup["images"].rglob("*.png"))[0]
    first = predict(setup["ckpt"], [photo], tmp_path / "a", scorers="energy", device="cpu", progress=False)
    stem = first.predicted[0]
    score = np.load(tmp_path / "a" / "scores" / "energy" / f"{stem}.npy")
    at = float(score.flat[np.argmin(np.abs(score - np.median(score)))])  # one pixel's own score, exactly
    predict(setup["ckpt"], [photo], tmp_path / "b", scorers="energy", device="cpu", progress=False, threshold=at)
    mask = np.asarray(Image.open(tmp_path / "b" / "masks" / "energy" / f"{stem}.png"))
    assert (score == at).any() and not mask[score == at].any()
    np.testing.assert_array_equal(mask, np.where(score > at, 255, 0))
    assert (score >= at).sum() > (score > at).sum() > 0
    assert float(_rows(tmp_path / "b")[0]["energy_anomaly_fraction"]) == pytest.approx((score > at).mean(), abs=1e-12)


def test_inputs_found_in_folders_and_patterns_come_in_natural_order(tmp_path):
    from anomalyseg.workflows.predict import collect_inputs

    names = ["img10.png", "img2.png", "img1.png", "img11.png", "img02b.png", "frame9.jpg", "clip3.mp4", "clip20.mp4"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    for sub in ("day10", "day2"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.png").write_bytes(b"")
    natural = ["frame9.jpg", "img1.png", "img2.png", "img02b.png", "img10.png", "img11.png"]
    images, videos = collect_inputs(tmp_path)
    assert [p.name for p in images] == natural and [p.name for p in videos] == ["clip3.mp4", "clip20.mp4"]
    images, _ = collect_inputs(str(tmp_path / "img*.png"))
    assert [p.name for p in images] == natural[1:]
    images, _ = collect_inputs(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in images] == ["day2/x.png", "day10/x.png", *natural]
    given = [tmp_path / "img10.png", tmp_path / "img2.png", tmp_path / "img1.png"]  # named one by one: as given
    assert collect_inputs(given)[0] == given
