"""Protocol options of the evaluation: the course protocol's pooling (images without an anomaly pixel skipped),
every FPR95 rule on the pooled curve, and the score-map sink (``--save-scores``), against sklearn /
ood_metrics on the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ood_metrics import fpr_at_95_tpr
from sklearn.metrics import average_precision_score, roc_auc_score
from tests.metrics.reference import fpr_first, fpr_official_streethazards

from anomalyseg.engine.evaluate import EvalPlan, run_evaluation
from anomalyseg.engine.score_store import ScoreWriter, check_export_dir, safe_id
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer


class _Fixed(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor, return_features: bool = False) -> SegOutput:
        return SegOutput(logits=self.logits[: x.shape[0]], aux_logits=None, features={})


def _batch(seed: int = 0) -> tuple[dict, torch.Tensor]:
    """3 images: the second holds no anomaly pixel (only normal and void)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 10, 12, generator=g)
    label = torch.randint(0, 2, (3, 10, 12), generator=g)
    label[1] = torch.where(label[1] == 1, torch.zeros_like(label[1]), label[1])
    label[:, :2] = 255
    return {"image": torch.zeros(3, 3, 10, 12), "label": label, "id": ["a", "b", "c"]}, logits


@pytest.mark.parametrize("skip", [False, True])
def test_pooled_skip_leaves_out_images_without_anomaly(skip: bool) -> None:
    batch, logits = _batch()
    plan = EvalPlan(num_classes=4, anomaly_ids=(1,), protocols=("pooled",), segmentation=False, fpr_rule="interp",
                    skip_without_anomaly=skip)
    res = run_evaluation(_Fixed(logits), [batch], [get_scorer("max_logit")], "cpu", plan)
    score = (-logits.amax(1)).numpy()
    label = batch["label"].numpy()
    keep = label != 255
    if skip:
        keep[1] = False  # the course code drops image 1 (no anomaly pixel) before pooling
    y, s = label[keep], score[keep]
    m = res["scorers"]["max_logit"]["metrics"]["pooled"]
    assert m["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert m["fpr95"] == pytest.approx(fpr_at_95_tpr(s, y), abs=1e-6)  # the course code's own FPR95
    assert m["protocol_settings"]["skip_images_without_anomaly"] is skip
    assert m["num_images_skipped"] == (1 if skip else 0)


@pytest.mark.parametrize("rule, reference", [("first", fpr_first), ("closest", fpr_official_streethazards),
                                             ("interp", lambda y, s: fpr_at_95_tpr(s, y))])
def test_every_fpr_rule_on_the_pooled_curve(rule, reference) -> None:
    batch, logits = _batch(1)
    plan = EvalPlan(num_classes=4, anomaly_ids=(1,), protocols=("pooled",), segmentation=False, fpr_rule=rule)
    res = run_evaluation(_Fixed(logits), [batch], [get_scorer("msp")], "cpu", plan)
    label = batch["label"].numpy()
    keep = label != 255
    s = (1 - torch.softmax(logits, 1).amax(1)).numpy()[keep]
    m = res["scorers"]["msp"]["metrics"]["pooled"]
    assert m["protocol_settings"]["fpr_rule"] == rule
    assert m["fpr95"] == pytest.approx(reference(label[keep], s), abs=1e-6)


def test_score_writer_saves_the_maps_the_metrics_saw(tmp_path) -> None:
    batch, logits = _batch(2)
    writer = ScoreWriter(tmp_path / "set", targets=True)
    plan = EvalPlan(num_classes=4, anomaly_ids=(1,), protocols=("pooled",), segmentation=False)
    res = run_evaluation(_Fixed(logits), [batch], [get_scorer("max_logit"), get_scorer("energy")], "cpu", plan,
                         sink=writer)
    assert writer.written == ["a", "b", "c"]
    maps = np.stack([np.load(tmp_path / "set" / "max_logit" / f"{i}.npy") for i in "abc"])
    assert maps.dtype == np.float32 and maps.shape == (3, 10, 12)
    np.testing.assert_array_equal(maps, (-logits.amax(1)).numpy())
    target = np.stack([np.load(tmp_path / "set" / "_target" / f"{i}.npy") for i in "abc"])
    label = batch["label"].numpy()
    keep = target != 255
    assert (keep == (label != 255)).all()
    rescored = average_precision_score(target[keep], maps[keep])  # an independent re-score of the saved maps
    assert res["scorers"]["max_logit"]["metrics"]["pooled"]["aupr"] == pytest.approx(rescored, abs=1e-6)


def test_export_dir_checks(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_export_dir(tmp_path / "file", force=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.npy").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        check_export_dir(tmp_path / "full", force=False)
    assert check_export_dir(tmp_path / "full", force=True) == tmp_path / "full"
    assert safe_id("t5/12", 0) == "t5/12" and safe_id("../x y", 0) == "x_y" and safe_id(None, 7) == "000007"
