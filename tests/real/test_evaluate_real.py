"""``anomalyseg import-checkpoint`` + ``anomalyseg evaluate --dataset ...`` end to end on the real ENet and the
real SMIYC RoadAnomaly21 images: the pooled AuPRC / FPR95 of the CLI equal those computed here directly (the
model built from the imported dict, images and masks resized to 512x1024, AnomalyMetrics and sklearn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_curve
from tests.real.conftest import ENET_CONTRACT, evaluate_cli

from anomalyseg.cli import main
from anomalyseg.data.anomaly_folder import AnomalyImageFolder, ModelResize
from anomalyseg.data.registry import parse_datasets
from anomalyseg.errors import UserError
from anomalyseg.metrics import AnomalyMetrics
from anomalyseg.report.results import read_results
from anomalyseg.workflows.evaluate import results_path as set_results_path

LIMIT = 2


def test_import_refuses_overwrite(enet_file: Path, enet_checkpoint_path: Path) -> None:
    before = enet_file.read_bytes()
    assert main(["import-checkpoint", str(enet_checkpoint_path), "--arch", "enet", "--contract", ENET_CONTRACT,
                 "--out", str(enet_file)]) == 2
    assert enet_file.read_bytes() == before


def test_evaluate_real_matches_direct_metrics(enet_file: Path, road_anomaly_root: Path, enet_real,
                                              tmp_path: Path) -> None:
    out = tmp_path / "res" / "enet.json"
    assert evaluate_cli(enet_file, road_anomaly_root, out, "--dataset", "smiyc_ra21", "--scorers", "void,msp",
                     "--eval-at", "model", "--limit", str(LIMIT)) == 0
    res = read_results(set_results_path(out, "smiyc_ra21"))
    assert res["num_images"] == LIMIT and res["eval_at"] == "model" and res["segmentation"] is None
    assert res["input_contract"]["void_index"] == 19 and res["input_contract"]["size"] == [512, 1024]
    assert list(res["protocols"]) == ["pooled"] and res["protocols"]["pooled"]["fpr_rule"] == "interp"
    assert res["scorers"]["void"]["params"]["void_index"] == 19

    # the same pixels, scored here: model from the imported dict (conftest), ModelResize at the contract size
    dataset = AnomalyImageFolder(road_anomaly_root / "RoadAnomaly21", "smiyc_ra21")
    resize = ModelResize((512, 1024))
    accs = {n: AnomalyMetrics("pooled", ignore_index=255, fpr_rule="interp") for n in ("void", "msp")}
    scores: dict[str, list[np.ndarray]] = {"void": [], "msp": []}
    targets = []
    with torch.no_grad():
        for i in range(LIMIT):
            sample = dataset[i]
            image, mask = resize(sample["image"], sample["label"])
            assert tuple(mask.shape) == (512, 1024)
            prob = torch.softmax(enet_real(image[None]).logits.double(), 1)[0]
            by_name = {"void": prob[19], "msp": -prob.amax(0)}
            for name, s in by_name.items():
                accs[name].update(s[None].float(), mask[None])
                scores[name].append(s[mask != 255].numpy())
            targets.append(mask[mask != 255].numpy())
    y = np.concatenate(targets)
    assert 0 < y.sum() < y.size
    for name, acc in accs.items():
        direct = acc.compute()
        got = res["scorers"][name]["metrics"]["pooled"]
        assert got["aupr"] == pytest.approx(direct["aupr"], abs=2e-4)
        assert got["fpr95"] == pytest.approx(direct["fpr95"], abs=2e-4)
        s = np.concatenate(scores[name])  # independent reference: sklearn, ood_metrics' interp rule
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert got["aupr"] == pytest.approx(average_precision_score(y, s), abs=2e-3)
        assert got["fpr95"] == pytest.approx(float(np.interp(0.95, tpr, fpr)), abs=2e-3)


def test_errors_before_any_forward(tmp_path: Path, enet_checkpoint_path: Path, road_anomaly_root: Path,
                                   capsys) -> None:
    bare = tmp_path / "bare.pt"  # no input size, no void channel
    assert main(["import-checkpoint", str(enet_checkpoint_path), "--arch", "enet", "--contract",
                 "norm=none,classes=20", "--out", str(bare)]) == 0
    out = tmp_path / "r.json"
    capsys.readouterr()
    assert evaluate_cli(bare, road_anomaly_root / "fs_static", out, "--dataset", "fs_static", "--scorers", "msp",
                     "--eval-at", "model") == 2  # --data-root may name the set folder itself
    assert "model input size" in capsys.readouterr().err
    assert evaluate_cli(bare, road_anomaly_root, out, "--dataset", "fs_static", "--scorers", "void,msp") == 2
    assert "needs a void channel" in capsys.readouterr().err
    assert evaluate_cli(bare, road_anomaly_root, out, "--dataset", "nope", "--scorers", "msp") == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.glob("r*"))


def test_parse_datasets() -> None:
    def names(text: str) -> list[str]:
        return [s.name for s in parse_datasets(text)]

    assert names("streethazards") == ["streethazards"]
    assert names("anomaly-sets") == ["road_anomaly", "smiyc_ra21", "smiyc_ro21", "fs_static", "fs_lost_found"]
    assert names("road_anomaly, smiyc-ra21,road_anomaly") == ["road_anomaly", "smiyc_ra21"]
    with pytest.raises(UserError, match="only anomaly sets"):
        parse_datasets("streethazards,road_anomaly")
    with pytest.raises(UserError, match="unknown dataset 'nope'; known: streethazards, cityscapes"):
        parse_datasets("nope")
    assert set_results_path("out/enet.json", "fs_static") == Path("out/enet_fs_static.json")


class _FixedLogits(torch.nn.Module):
    """Returns the given logits for every batch (the loop's options are what is tested)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor, return_features: bool = False):
        from anomalyseg.models.outputs import SegOutput

        return SegOutput(logits=self.logits[: x.shape[0]], aux_logits=None, features={})


def test_run_evaluation_options_for_void_labelled_sets() -> None:
    """void_label drops 255 under per_image too, fpr_rule reaches the pooled metrics, segmentation=False
    leaves the closed-set metrics out; numbers against sklearn on the same non-void pixels."""
    from anomalyseg.engine.evaluate import EvalPlan, run_evaluation
    from anomalyseg.scoring import get_scorer

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 8, generator=g)
    label = torch.randint(0, 2, (2, 6, 8), generator=g)
    label[:, :2] = 255
    batch = {"image": torch.zeros(2, 3, 6, 8), "label": label, "id": ["a", "b"]}
    model = _FixedLogits(logits)
    common = {"num_classes": 5, "anomaly_ids": (1,), "protocols": ("per_image", "pooled"), "eval_at": "model"}
    res = run_evaluation(model, [batch], [get_scorer("max_logit")], "cpu",
                         EvalPlan(fpr_rule="interp", segmentation=False, void_label=True, **common))
    assert res["segmentation"] is None
    m = res["scorers"]["max_logit"]["metrics"]
    assert m["per_image"]["protocol_settings"]["official_streethazards"] is False
    assert m["pooled"]["protocol_settings"]["fpr_rule"] == "interp"
    keep = label != 255
    y, s = label[keep].numpy(), (-logits.amax(1))[keep].numpy()
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert m["pooled"]["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert m["pooled"]["fpr95"] == pytest.approx(float(np.interp(0.95, tpr, fpr)), abs=1e-6)
    assert sum(r["num_normal"] for r in res["per_image"]) == int((label == 0).sum())
    official = run_evaluation(model, [batch], [get_scorer("max_logit")], "cpu", EvalPlan(**common))
    assert sum(r["num_normal"] for r in official["per_image"]) == int((label != 1).sum())  # 255 counted normal
    assert official["segmentation"] is not None and official["protocols"]["pooled"]["fpr_rule"] == "first"


def test_streethazards_contract_overrides_are_checked_before_any_pass(tmp_path: Path, capsys) -> None:
    from tests.engine.test_evaluate import make_checkpoint, make_tree

    tree, ckpt = make_tree(tmp_path / "sh"), make_checkpoint(tmp_path / "tiny.pt")
    args = ["--scorers", "msp", "--size", "48x32"]
    assert evaluate_cli(ckpt, tree, tmp_path / "a.json", *args, "--input-contract", "norm=none") == 2
    assert "does not take these options" in capsys.readouterr().err  # the tiny model has no input_mean option
    assert evaluate_cli(ckpt, tree, tmp_path / "b.json", *args, "--scorers", "void") == 2
    assert "needs a void channel" in capsys.readouterr().err
    # a void channel leaves 12 known channels for StreetHazards' 13 classes: refused, whatever the names say
    for contract in ("void=12", "void=12,classes=12"):
        assert evaluate_cli(ckpt, tree, tmp_path / "b.json", *args, "--input-contract", contract) == 2
        assert "predicts 12 classes but the dataset has 13 known classes" in capsys.readouterr().err
    assert evaluate_cli(ckpt, tree, tmp_path / "c.json", *args, "--input-contract", "classes=13") == 0
    res = read_results(tmp_path / "c.json")
    assert res["input_contract"]["class_names"] == [f"class_{i}" for i in range(13)]
    assert res["protocols"]["pooled"]["fpr_rule"] == "first" and not list(tmp_path.glob("b*"))
