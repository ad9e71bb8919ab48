"""``anomalyseg visualize --dataset ...`` and ``anomalyseg report`` on real-photo-style sets: a synthetic
"Validation_Dataset" tree (RoadAnomaly21 with void pixels, RoadAnomaly with value-2 masks; 64x128 images)
and a random ENet imported with an input contract (32x64, no normalisation, Cityscapes classes + void 19).

Everything a panel states is recomputed here from the imported weights: the void score, the detections at
the pooled threshold of the results, TP / FP / FN / TN counts, the per-image AUPR (sklearn); the saved PNG
is read at the pixels where this computation says TP / void / anomaly, and the HTML page embeds the files."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from anomalyseg.cli import main
from anomalyseg.data.anomaly_folder import AnomalyImageFolder, ModelResize
from anomalyseg.data.cityscapes import CITYSCAPES_PALETTE
from anomalyseg.models import build_model
from anomalyseg.report.results import read_results
from anomalyseg.viz import colors as C
from anomalyseg.viz.binary import binary_panel_data, draw_binary_panel
from anomalyseg.viz.panels import axes_pixel, figure_rgb
from anomalyseg.workflows.evaluate import results_path as set_results_path

H, W = 64, 128
CONTRACT = "size=32x64,norm=none,void=19,classes=cityscapes"
SETS = {"smiyc_ra21": ("RoadAnomaly21", 1, True), "road_anomaly": ("RoadAnomaly", 2, False)}


def write_sets(root: Path, per_set: int = 3) -> Path:
    """Per set ``per_set`` random photos, an anomaly block that moves right from image to image, and (RA21)
    the top 8 rows void."""
    rng = np.random.default_rng(0)
    for folder, value, void in SETS.values():
        (root / folder / "images").mkdir(parents=True)
        (root / folder / "labels_masks").mkdir()
        for i in range(per_set):
            mask = np.zeros((H, W), dtype=np.uint8)
            mask[20:48, 8 + 30 * i: 40 + 30 * i] = value
            if void:
                mask[:8] = 255
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / folder / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / folder / "labels_masks" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("realviz")
    root = write_sets(base / "Validation_Dataset")
    torch.manual_seed(0)
    foreign = base / "enet_foreign.pth"
    torch.save({"module." + k: v for k, v in build_model("enet", 20).state_dict().items()}, foreign)
    ckpt = base / "enet.pt"
    assert main(["import-checkpoint", str(foreign), "--arch", "enet", "--contract", CONTRACT, "--out", str(ckpt)]) == 0
    results = base / "results" / "enet.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "anomaly-sets", "--data-root", str(root),
                 "--scorers", "void,max_logit", "--protocol", "both", "--eval-at", "model", "--workers", "0",
                 "--no-progress", "--out", str(results)]) == 0
    out = base / "results" / "panels"
    assert main(["visualize", "--checkpoint", str(ckpt), "--dataset", "anomaly-sets", "--data-root", str(root),
                 "--scorer", "void", "--results", str(results), "--select", "worst", "--num-samples", "2",
                 "--out", str(out)]) == 0
    return {"root": root, "ckpt": ckpt, "results": results, "out": out}


def reference(ckpt: Path, dataset: AnomalyImageFolder, index: int) -> dict[str, np.ndarray]:
    """The sample as evaluate --eval-at model sees it, scored here: softmax probability of void channel 19."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = build_model("enet", 20, **saved["config"]["model"]["options"])
    model.load_state_dict(saved["model"])
    sample = dataset[index]
    x, target = ModelResize((32, 64))(sample["image"], sample["label"])
    with torch.no_grad():
        probs = model.eval()(x[None]).logits.softmax(1)[0]
    return {"image": sample["image"], "target": target.numpy(), "score": probs[19].numpy(),
            "pred": probs.argmax(0).numpy(), "confidence": probs.amax(0).numpy()}


@pytest.mark.parametrize("key", list(SETS))
def test_panels_state_what_the_model_does(setup, key):
    manifest = json.loads((setup["out"] / key / "panels.json").read_text())
    record = read_results(set_results_path(setup["results"], key))
    assert manifest["dataset"]["key"] == key and manifest["eval_at"] == "model"  # taken from the results
    assert manifest["results"] == str(set_results_path(setup["results"], key).resolve())
    ranked = sorted((r["metrics"]["void"]["aupr"], r["index"]) for r in record["per_image"])
    assert [s["index"] for s in manifest["samples"]] == [p for _, p in ranked[:2]]  # the two worst
    threshold = record["scorers"]["void"]["metrics"]["pooled"]["threshold_fpr95"]
    assert manifest["threshold"]["value"] == threshold and "pooled" in manifest["threshold"]["label"]

    dataset = AnomalyImageFolder(setup["root"], key)
    palette = C.class_palette(manifest["input_contract"]["class_names"], 19)
    for entry, (_, position) in zip(manifest["samples"], ranked):
        ref = reference(setup["ckpt"], dataset, position)
        target, score = ref["target"], ref["score"]
        assert entry["size_hw"] == [32, 64]
        keep = target != 255
        detected = score > threshold
        stats = entry["stats"]
        assert stats["void"] == int((~keep).sum()) == (4 * 64 if key == "smiyc_ra21" else 0)  # 4 rows at 32x64
        anomaly, normal = target == 1, target == 0
        assert (stats["tp"], stats["fn"]) == (int((detected & anomaly).sum()), int((~detected & anomaly).sum()))
        assert (stats["fp"], stats["tn"]) == (int((detected & normal).sum()), int((~detected & normal).sum()))
        # 1e-4: the scorer's float32 arithmetic and this softmax order a few near-tied pixels differently
        assert stats["aupr"] == pytest.approx(average_precision_score(target[keep], score[keep]), abs=1e-4)
        assert stats["aupr"] == pytest.approx(record["per_image"][position]["metrics"]["void"]["aupr"], abs=1e-6)
        assert stats["tp"] > 0

        # the saved PNG: redraw the same panel from the arrays computed here to locate the axes, then read
        # the file at pixels this computation classifies
        data = binary_panel_data(ref["image"], ref["pred"], ref["confidence"], score, target, threshold, palette,
                                 threshold_label=manifest["threshold"]["label"], sample_id=entry["id"])
        panel = draw_binary_panel(data, entry["title"])
        drawn = figure_rgb(panel.figure)
        saved = np.asarray(Image.open(setup["out"] / key / entry["file"]).convert("RGB"))
        assert saved.shape == drawn.shape
        checks = [("outcome", detected & (target == 1), C.OUTCOME_COLORS["TP"]),
                  ("outcome", ~keep, C.OUTCOME_COLORS["ignored"]),
                  ("anomaly_gt", target == 1, C.ANOMALY_GT_COLORS["anomaly"]),
                  ("anomaly_gt", ~keep, C.ANOMALY_GT_COLORS["void"]),
                  ("prediction", ref["pred"] == 19, C.VOID_CLASS_COLOR)]
        checks += [("prediction", ref["pred"] == c, CITYSCAPES_PALETTE[c]) for c in np.unique(ref["pred"]) if c < 19]
        for view, where, rgb in checks:
            for r, c in np.argwhere(where)[:: max(1, int(where.sum()) // 25)]:
                y, x = axes_pixel(panel.figure, panel.axes[view], r, c)
                assert tuple(saved[y, x]) == tuple(rgb), (key, entry["id"], view, r, c)


def test_report_shows_a_section_per_set_with_its_panels(setup, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(setup["results"].parent), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    for key, name in (("smiyc_ra21", "SMIYC RoadAnomaly21 (validation)"), ("road_anomaly", "Road Anomaly")):
        start = page.index(f">{name}</h2>")
        end = page.find("<h2", start)
        section = page[start:end]
        assert f'id="table-anomaly_{key}"' in section and ">mIoU<" not in section  # no closed-set column
        embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', section)
        manifest = json.loads((setup["out"] / key / "panels.json").read_text())
        files = [manifest["grid"], *(s["file"] for s in manifest["samples"]), manifest["legend"]]
        assert [base64.b64decode(b) for b in embedded] == [(setup["out"] / key / f).read_bytes() for f in files]


def test_report_finds_panels_given_with_panels(setup, tmp_path):
    """Results copied elsewhere, panels named with --panels (the visualize --out, one subfolder per set)."""
    results = tmp_path / "results"
    results.mkdir()
    for path in setup["results"].parent.glob("enet_*.json"):
        (results / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "report"
    assert main(["report", str(results), "--panels", str(setup["out"]), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    for key in SETS:
        grid = (setup["out"] / key / "grid.png").read_bytes()
        assert base64.b64encode(grid).decode("ascii") in page


@pytest.mark.parametrize(("extra", "message"), [
    (["--dataset", "smiyc_ra21", "--select", "worst"], "give --results"),
    (["--dataset", "smiyc_ra21", "--scorer", "nope"], "unknown scorer"),
    (["--dataset", "nope"], "unknown dataset 'nope'; known: streethazards"),
    (["--dataset", "smiyc_ra21", "--results", "{results_dir}/other.json"], "no results for SMIYC RoadAnomaly21"),
    (["--dataset", "smiyc_ra21", "--scorer", "void", "--input-contract", "void=none,classes=20"],
     "needs a void channel"),
    (["--dataset", "smiyc_ra21", "--ids", "9"], "unknown sample id"),
    (["--eval-at", "model"], "no StreetHazards test split"),  # the default dataset is StreetHazards
    (["--dataset", "road_anomaly", "--split", "val"], "is a validation set (no split)"),
])
def test_one_line_errors(setup, tmp_path, capsys, extra, message):
    extra = [e.replace("{results_dir}", str(setup["results"].parent)) for e in extra]
    capsys.readouterr()
    assert main(["visualize", "--checkpoint", str(setup["ckpt"]), "--data-root", str(setup["root"]), "--out",
                 str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x").exists()


def test_existing_panels_are_kept(setup, capsys):
    manifest = setup["out"] / "road_anomaly" / "panels.json"
    before = manifest.read_bytes()
    assert main(["visualize", "--checkpoint", str(setup["ckpt"]), "--dataset", "road_anomaly", "--data-root",
                 str(setup["root"]), "--out", str(setup["out"])]) == 2
    assert "already exists" in capsys.readouterr().err
    assert manifest.read_bytes() == before
