"""Benchmark-exact evaluation on the real sets with the real ENet: the course protocol (images without anomaly
skipped before pooling), SegmentMeIfYouCan component metrics, score export (npy re-scored independently, and the
benchmark's own hdf5 layout) and their bad inputs. Skips without ../shared."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ood_metrics import fpr_at_95_tpr
from PIL import Image
from sklearn.metrics import average_precision_score
from tests.real.conftest import evaluate_cli

from anomalyseg.report.results import read_results
from anomalyseg.workflows.evaluate import results_path

pytestmark = pytest.mark.shared


def test_course_protocol_skips_images_without_anomaly(enet_file, road_anomaly_root, tmp_path) -> None:
    """fs_static: images 0..4 hold 5 of the ten masks without anomaly (checked below); the course code drops them
    before pooling, so the pooled numbers equal sklearn / ood_metrics on the other images' pixels only."""
    out = tmp_path / "r.json"
    args = ("--dataset", "fs_static", "--scorers", "void", "--eval-at", "model", "--limit", "8")
    assert evaluate_cli(enet_file, road_anomaly_root, out, *args, "--skip-images-without-anomaly",
                     "--save-scores", str(tmp_path / "s")) == 0
    res = read_results(results_path(out, "fs_static"))
    m = res["scorers"]["void"]["metrics"]["pooled"]
    assert m["protocol_settings"]["skip_images_without_anomaly"] is True
    folder = tmp_path / "s" / "fs_static"
    targets = {p.stem: np.load(p) for p in sorted((folder / "_target").glob("*.npy"))}
    empty = [k for k, t in targets.items() if not (t == 1).any()]
    assert len(targets) == 8 and m["num_images_skipped"] == len(empty) >= 1
    kept = [k for k in targets if k not in empty]
    y = np.concatenate([targets[k][targets[k] != 255] for k in kept])
    s = np.concatenate([np.load(folder / "void" / f"{k}.npy")[targets[k] != 255] for k in kept])
    assert m["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-5)
    assert m["fpr95"] == pytest.approx(fpr_at_95_tpr(s, y), abs=5e-5)
    plain = tmp_path / "plain.json"
    assert evaluate_cli(enet_file, road_anomaly_root, plain, *args) == 0
    p = read_results(results_path(plain, "fs_static"))["scorers"]["void"]["metrics"]["pooled"]
    assert p["protocol_settings"]["skip_images_without_anomaly"] is False and p["aupr"] != m["aupr"]


def test_components_on_ra21_and_the_smiyc_export(enet_file, road_anomaly_root, tmp_path) -> None:
    out = tmp_path / "c.json"
    assert evaluate_cli(enet_file, road_anomaly_root, out, "--dataset", "smiyc_ra21", "--scorers", "void,msp",
                     "--limit", "3", "--save-scores", str(tmp_path / "h5"), "--save-scores-format", "smiyc") == 0
    res = read_results(results_path(out, "smiyc_ra21"))
    c = res["scorers"]["msp"]["metrics"]["components"]
    assert c["track"] == "anomaly" and c["binarised"] == "score > threshold"
    assert c["threshold"] == res["scorers"]["msp"]["metrics"]["pooled"]["threshold_best_f1"]
    assert set(c) >= {"siou_gt", "ppv", "f1_25", "f1_50", "f1_75", "f1_mean", "num_gt_components",
                      "num_pred_components"} and c["num_gt_components"] >= 1
    first = sorted((road_anomaly_root / "RoadAnomaly21" / "images").iterdir(), key=lambda p: int(p.stem))[0]
    path = tmp_path / "h5" / "anomaly_p" / "msp" / "AnomalyTrack-all" / f"{first.stem}.hdf5"
    with h5py.File(path, "r") as fh:
        value = fh["value"][()]
    assert value.dtype == np.float16 and value.shape == Image.open(first).size[::-1]  # native size (eval at label)
    assert float(value.min()) >= -1.0 and float(value.max()) <= 0.0  # msp = -max softmax: higher = more anomalous


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "streethazards", "--components", "anomaly"], "applies to the binary-mask anomaly sets"),
    (["--components", "lane"], "--components must be one of anomaly, obstacle, off"),
    (["--save-scores", "{file}"], "is a file, not a folder"),
    (["--fpr-rule", "last"], "--fpr-rule must be one of first, closest, interp"),
    (["--save-scores-format", "png", "--save-scores", "{dir}"], "--save-scores-format must be one of npy, smiyc"),
    (["--protocol", "per_image"], "component metrics take their threshold from the pooled curve"),
])
def test_bad_benchmark_options_are_one_line(enet_file, road_anomaly_root, tmp_path, capsys, extra, message) -> None:
    (tmp_path / "file").write_text("x")
    extra = [e.replace("{file}", str(tmp_path / "file")).replace("{dir}", str(tmp_path / "d")) for e in extra]
    if "--dataset" not in extra:
        extra = ["--dataset", "smiyc_ra21", *extra]
    capsys.readouterr()
    assert evaluate_cli(enet_file, road_anomaly_root, tmp_path / "x.json", "--scorers", "msp", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.glob("x*")) and not (tmp_path / "d").exists()
