"""``anomalyseg visualize`` end to end on a tiny synthetic tree and checkpoint: worst-N selection and
thresholds from a results JSON, per-image thresholds without one, files, numbers, one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import precision_score, recall_score
from tests.engine.test_evaluate import make_checkpoint, make_tree

from anomalyseg.checkpoints.reload import load_model
from anomalyseg.cli import main as cli_main
from anomalyseg.cli import visualize as commands
from anomalyseg.data import StreetHazards
from anomalyseg.errors import UserError
from anomalyseg.report.results import read_results
from anomalyseg.viz.samples import select_samples


def visualize(*argv: str) -> int:
    """The command through its own parser (whether or not cli.py lists the module yet), errors as the CLI
    prints them."""
    parser = argparse.ArgumentParser(prog="anomalyseg")
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["visualize", *argv])
    try:
        return args.func(args)
    except UserError as exc:
        print(f"anomalyseg: error: {exc}")
        return 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("viz")
    tree = make_tree(base / "sh")
    ckpt = make_checkpoint(base / "ckpt" / "tiny.pt")
    results = base / "results" / "tiny.json"
    assert cli_main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(tree), "--out", str(results),
                     "--workers", "0", "--no-progress", "--size", "48x32", "--scorers", "max_logit,energy"]) == 0
    return tree, ckpt, results


def test_worst_samples_at_the_pooled_threshold(setup, tmp_path):
    tree, ckpt, results = setup
    out = tmp_path / "worst"
    assert visualize("--checkpoint", str(ckpt), "--data-root", str(tree), "--scorer", "energy", "--results",
                     str(results), "--select", "worst", "--num-samples", "2", "--out", str(out)) == 0
    manifest = json.loads((out / "panels.json").read_text())
    record = read_results(results)
    ranked = sorted((r["metrics"]["energy"]["aupr"], r["index"]) for r in record["per_image"])
    assert [s["id"] for s in manifest["samples"]] == [record["per_image"][i]["id"] for _, i in ranked[:2]]
    threshold = record["scorers"]["energy"]["metrics"]["pooled"]["threshold_fpr95"]
    assert manifest["threshold"]["value"] == threshold and "pooled" in manifest["threshold"]["label"]
    for name in [s["file"] for s in manifest["samples"]] + ["grid.png", "legend.png"]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 200

    # the stated numbers, recomputed independently: same model input (48x32, as in the results), logits at
    # label size, energy score, detections score > threshold, sklearn precision / recall
    model = load_model(ckpt, "cpu").model
    ds = StreetHazards(tree, "test")
    for entry in manifest["samples"]:
        sample = ds[ds.ids.index(entry["id"])]
        x = sample["image"][None].float() / 255.0
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1)
        x = torch.nn.functional.interpolate(x, size=(32, 48), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            logits = torch.nn.functional.interpolate(model(x).logits, size=tuple(sample["label"].shape),
                                                     mode="bilinear", align_corners=False)
        score = (-torch.logsumexp(logits, 1))[0].numpy()  # energy, T=1: higher = more anomalous
        label = sample["label"].numpy()
        keep = label != 255
        y, d = (label[keep] == 13).astype(int), (score[keep] > threshold).astype(int)
        assert entry["stats"]["tp"] + entry["stats"]["fn"] == y.sum()
        assert entry["stats"]["precision"] == pytest.approx(precision_score(y, d), abs=2e-3)
        assert entry["stats"]["recall"] == pytest.approx(recall_score(y, d), abs=2e-3)


def test_random_choice_and_per_image_threshold(setup, tmp_path, capsys):
    tree, ckpt, _ = setup
    out = tmp_path / "random"
    argv = ["--checkpoint", str(ckpt), "--data-root", str(tree), "--scorer", "max_logit", "--seed", "1",
            "--num-samples", "2", "--threshold", "best_f1", "--out", str(out)]
    assert visualize(*argv) == 0
    manifest = json.loads((out / "panels.json").read_text())
    ids = StreetHazards(tree, "test").ids
    assert [s["id"] for s in manifest["samples"]] == [ids[i] for i in select_samples(ids, 2, seed=1)]
    assert manifest["threshold"]["value"] is None and manifest["threshold"]["label"] == "best_f1 of this image"
    assert len({s["threshold"] for s in manifest["samples"]}) == 2  # each image its own operating point
    assert all(np.isfinite(s["stats"]["f1"]) for s in manifest["samples"])
    before = (out / "panels.json").read_bytes()
    capsys.readouterr()
    assert visualize(*argv) == 2  # kept without --force
    assert "already exists" in capsys.readouterr().out
    assert (out / "panels.json").read_bytes() == before


@pytest.mark.parametrize(("extra", "message"), [
    (["--select", "worst"], "give --results"),
    (["--scorer", "sml"], "need fitting"),
    (["--ids", "t9/9"], "unknown sample id"),
    (["--threshold", "middle"], "tpr95, best_f1 or a number"),
])
def test_one_line_errors(setup, tmp_path, capsys, extra, message):
    tree, ckpt, _ = setup
    assert visualize("--checkpoint", str(ckpt), "--data-root", str(tree), "--out", str(tmp_path / "x"), *extra) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and message in out[0]
    assert not (Path(tmp_path) / "x" / "panels.json").exists()
