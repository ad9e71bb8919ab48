"""``anomalyseg visualize`` on two real Road Anomaly photos with the real Cityscapes ENet (skipped without
../shared): the panels' numbers against the model run here (void probability, sklearn AUPR) and the mask
read with PIL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, precision_score, recall_score
from tests.conftest import shared_path

from anomalyseg.checkpoints.foreign import import_checkpoint
from anomalyseg.cli import main
from anomalyseg.models import build_model

CONTRACT = "size=512x1024,norm=none,void=19,classes=cityscapes"
IDS = ("0", "1")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def test_real_enet_panels_on_road_anomaly(tmp_path: Path) -> None:
    weights = shared_path("models", "enet_cityscapes_void20.pth")
    root = shared_path("data", "road_anomaly")
    ckpt = import_checkpoint(weights, "enet", CONTRACT, out=tmp_path / "enet.pt")
    out = tmp_path / "panels"
    assert main(["visualize", "--checkpoint", str(tmp_path / "enet.pt"), "--dataset", "road_anomaly",
                 "--data-root", str(root), "--scorer", "void", "--eval-at", "model", "--ids", *IDS,
                 "--threshold", "best_f1", "--out", str(out)]) == 0
    manifest = json.loads((out / "road_anomaly" / "panels.json").read_text())
    assert [s["id"] for s in manifest["samples"]] == list(IDS)
    assert manifest["input_contract"]["void_index"] == 19
    assert manifest["threshold"]["label"] == "best_f1 of this image"

    model = build_model("enet", 20, **ckpt["config"]["model"]["options"])
    model.load_state_dict(ckpt["model"])
    for entry in manifest["samples"]:
        with Image.open(out / "road_anomaly" / entry["file"]) as im:
            assert im.format == "PNG" and im.size[0] >= 1000
        folder = root / "RoadAnomaly"
        with Image.open(folder / "labels_masks" / f"{entry['id']}.png") as m:
            mask = np.asarray(m.resize((1024, 512), Image.NEAREST))
        target = (mask == 2).astype(int)  # Road Anomaly: 2 = anomaly, no void
        stats = entry["stats"]
        assert entry["size_hw"] == [512, 1024] and stats["void"] == 0
        assert stats["tp"] + stats["fn"] == target.sum() and stats["fp"] + stats["tn"] == (1 - target).sum()

        with Image.open(folder / "images" / f"{entry['id']}.jpg") as im:
            image = im.convert("RGB").resize((1024, 512), Image.BILINEAR)
        x = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0 - MEAN) / STD  # model un-does it
        with torch.no_grad():
            void = model.eval()(x[None]).logits.softmax(1)[0, 19].numpy()
        # PIL's resize here vs torchvision's antialiased one in the tool: a few 1e-3 of AUPR
        assert stats["aupr"] == pytest.approx(average_precision_score(target.ravel(), void.ravel()), abs=5e-3)
        detected = (void >= entry["threshold"]).ravel()
        assert stats["precision"] == pytest.approx(precision_score(target.ravel(), detected), abs=5e-3)
        assert stats["recall"] == pytest.approx(recall_score(target.ravel(), detected), abs=5e-3)
