"""One-pass evaluation: numbers against an sklearn loop over the same upsampled logits, one pass == separate
single-scorer passes, TTA identities, protocol records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve
from tests.engine.tiny_model import build
from tests.metrics.paths import PATHS, on_path
from torch.utils.data import DataLoader

from anomalyseg.checkpoints.io import FORMAT, save_checkpoint
from anomalyseg.checkpoints.reload import load_model
from anomalyseg.data import STREETHAZARDS, StreetHazards, collate_samples
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.engine.evaluate import EvalPlan, _targets, run_evaluation
from anomalyseg.engine.fit import fit_scorers
from anomalyseg.engine.tta import TTA, forward
from anomalyseg.errors import NotFittedError, UserError
from anomalyseg.scoring import get_scorer

SIZE_WH = (96, 64)  # synthetic images; the model sees them at half size, logits are upsampled back
INPUT_HW = (32, 48)


def make_tree(root: Path) -> Path:
    """Synthetic StreetHazards: 4 val, 5 test images of 96x64 (every test image holds anomalies)."""
    return write_synthetic(root, train=1, val=4, test=5, size=SIZE_WH, seed=7)


def make_checkpoint(path: Path, num_classes: int = 13, seed: int = 0) -> Path:
    """The engine's tiny net in the engine's checkpoint format, with left-right symmetric conv kernels (so the
    net is flip-equivariant: flipping the input flips the logits)."""
    torch.manual_seed(seed)
    model = build(num_classes, aux=False, width=6)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.copy_((module.weight + module.weight.flip(-1)) / 2)
    config = {"model": {"name": "tiny", "aux": False, "options": {"width": 6}}}
    return save_checkpoint(path, {"format": FORMAT, "model_name": "tiny",
                                  "num_classes": num_classes, "class_names": list(STREETHAZARDS.class_names),
                                  "model": model.state_dict(), "config": config})


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("eval") / "sh")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt, "cpu").model


def loader(root: Path, split: str = "test", size: tuple[int, int] | None = INPUT_HW, batch_size: int = 2):
    ds = StreetHazards(root, split, transform=EvalTransform(size=size))
    return DataLoader(ds, batch_size=batch_size, collate_fn=collate_samples)


def official_fpr95(y: np.ndarray, s: np.ndarray) -> float:
    """hendrycks/anomaly-seg ``fpr_and_fdr_at_recall`` (anomaly positive), re-typed from the published code."""
    desc = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[desc], y[desc].astype(np.float64)
    threshold_idxs = np.r_[np.where(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    sl = slice(tps.searchsorted(tps[-1]), None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    return float(fps[np.argmin(np.abs(recall - 0.95))] / np.sum(y == 0))


def first_fpr95(y: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95)])


def reference(model, root: Path, ignore_ids: tuple[int, ...] = ()) -> dict:
    """sklearn over the logits upsampled (bilinear) to the native label size; score = -max logit.

    Batches come from the same loader as the evaluation (a conv over 2 images may round differently from one
    image, which would reorder near-tied scores and test the floating point instead of the pipeline)."""
    per_image, all_s, all_y, preds, labels = [], [], [], [], []
    for batch in loader(root):
        with torch.no_grad():
            logits = model(batch["image"]).logits
        logits = F.interpolate(logits, size=batch["label"].shape[-2:], mode="bilinear", align_corners=False)
        for one, lab, sample_id in zip(logits, batch["label"], batch["id"]):
            score = (-one.max(0).values).numpy().ravel()
            label = lab.numpy().ravel()
            preds.append(one.argmax(0).numpy().ravel())
            labels.append(label)
            keep = ~np.isin(label, (*ignore_ids, 255)) if ignore_ids else np.ones(label.size, bool)
            y, s = (label[keep] == 13).astype(int), score[keep]
            per_image.append({"id": sample_id, "auroc": roc_auc_score(y, s), "aupr": average_precision_score(y, s),
                              "fpr95": official_fpr95(y, s)})
            pooled_keep = ~np.isin(label, (*ignore_ids, 255))
            all_s.append(score[pooled_keep])
            all_y.append((label[pooled_keep] == 13).astype(int))
    s, y = np.concatenate(all_s), np.concatenate(all_y)
    lab, pred = np.concatenate(labels), np.concatenate(preds)
    known = lab < 13
    cm = confusion_matrix(lab[known], pred[known], labels=range(13))
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, np.diag(cm) / np.maximum(union, 1), np.nan)
    return {"per_image": per_image, "miou": float(np.nanmean(iou)),
            "pooled": {"auroc": roc_auc_score(y, s), "aupr": average_precision_score(y, s), "fpr95": first_fpr95(y, s)}}


def test_numbers_equal_an_sklearn_loop_over_upsampled_logits(tree, model):
    res = run_evaluation(model, loader(tree), [get_scorer("max_logit"), get_scorer("energy")], "cpu",
                         EvalPlan(class_names=STREETHAZARDS.class_names))
    ref = reference(model, tree)
    records = res["per_image"]
    assert [r["id"] for r in records] == [r["id"] for r in ref["per_image"]]
    for got, want in zip(records, ref["per_image"]):
        assert got["metrics"]["max_logit"] == pytest.approx({k: want[k] for k in ("auroc", "aupr", "fpr95")},
                                                             abs=1e-9)
    m = res["scorers"]["max_logit"]["metrics"]
    for key in ("auroc", "aupr", "fpr95"):
        assert m["per_image"][key] == pytest.approx(np.mean([r[key] for r in ref["per_image"]]), abs=1e-9)
        assert m["pooled"][key] == pytest.approx(ref["pooled"][key], abs=2e-5)  # 27-bit pooled histogram
    assert m["per_image"]["num_images"] == 5 and m["per_image"]["num_images_skipped"] == 0
    assert res["segmentation"]["miou"] == pytest.approx(ref["miou"], abs=1e-12)
    assert list(res["segmentation"]["per_class_iou"]) == list(STREETHAZARDS.class_names)
    assert res["segmentation"]["num_pixels"] == sum(
        int((StreetHazards(tree, "test")[i]["label"] < 13).sum()) for i in range(5))
    # every result says which protocol produced it
    assert m["per_image"]["protocol_settings"]["fpr_rule"] == "closest"
    assert m["per_image"]["protocol_settings"]["official_streethazards"] is True
    assert m["pooled"]["fpr_rule"] == "first" and m["pooled"]["protocol_settings"]["eval_at"] == "label"
    curve = res["scorers"]["max_logit"]["curve"]
    assert 2 <= len(curve["tpr"]) <= 512 and curve["tpr"][-1] == 1.0
    assert {"inference_s", "scoring_s", "metrics_s"} <= set(res["timings"])


def test_ignore_ids_leave_pixels_out_of_both_protocols(tree, model):
    other = STREETHAZARDS.class_names.index("other")
    res = run_evaluation(model, loader(tree), [get_scorer("max_logit")], "cpu", EvalPlan(ignore_ids=(other, 0)))
    ref = reference(model, tree, ignore_ids=(other, 0))
    m = res["scorers"]["max_logit"]["metrics"]
    for key in ("auroc", "aupr", "fpr95"):
        assert m["per_image"][key] == pytest.approx(np.mean([r[key] for r in ref["per_image"]]), abs=1e-9)
        assert m["pooled"][key] == pytest.approx(ref["pooled"][key], abs=2e-5)
    settings = m["per_image"]["protocol_settings"]
    assert settings["ignore_ids"] == [0, other] and settings["ignore_index"] == 255
    assert settings["official_streethazards"] is False
    plain = run_evaluation(model, loader(tree), [get_scorer("max_logit")], "cpu", EvalPlan(protocols=("pooled",)))
    assert plain["scorers"]["max_logit"]["metrics"]["pooled"]["num_negative"] > m["pooled"]["num_negative"]
    with pytest.raises(UserError, match="both anomaly and ignored"):
        run_evaluation(model, loader(tree), [], "cpu", EvalPlan(ignore_ids=(13,)))


def test_one_pass_equals_separate_single_scorer_passes(tree, model):
    def fitted(name):
        return fit_scorers(model, loader(tree, "val"), [get_scorer(name)], "cpu")[0]

    scorers = [get_scorer("max_logit"), get_scorer("msp"), get_scorer("entropy"), fitted("sml"), fitted("heat")]
    together = run_evaluation(model, loader(tree), scorers, "cpu")
    for scorer in scorers:
        alone = run_evaluation(model, loader(tree), [scorer], "cpu")
        assert alone["scorers"][scorer.name]["metrics"] == together["scorers"][scorer.name]["metrics"]
        assert alone["scorers"][scorer.name]["curve"] == together["scorers"][scorer.name]["curve"]
        assert [r["metrics"][scorer.name] for r in alone["per_image"]] == [
            r["metrics"][scorer.name] for r in together["per_image"]]
        assert alone["segmentation"]["confusion_matrix"] == together["segmentation"]["confusion_matrix"]


def test_metric_threads_do_not_change_results(tree, model):
    """Metric work on 2 threads beside the next batch equals the serial run, per image included."""
    scorers = [get_scorer("max_logit"), get_scorer("msp"), get_scorer("gen"), get_scorer("rba")]
    serial = run_evaluation(model, loader(tree), scorers, "cpu", metric_threads=1)
    threaded = run_evaluation(model, loader(tree), scorers, "cpu", metric_threads=2)
    assert serial["scorers"] == threaded["scorers"] and serial["per_image"] == threaded["per_image"]
    assert all(len(r["metrics"]) == 4 and "num_anomaly" in r for r in threaded["per_image"])


def test_non_finite_scores_are_one_clear_error(tree, model):
    class Broken(type(get_scorer("max_logit"))):
        def _score(self, output):
            return torch.full(output.logits[:, 0].shape, float("nan"))

    with pytest.raises(UserError, match="scorer 'max_logit' produced non-finite scores"):
        run_evaluation(model, loader(tree), [Broken()], "cpu")


def test_unfitted_scorer_fails_before_the_first_batch(tree, model):
    with pytest.raises(NotFittedError, match="anomalyseg fit-scorers"):
        run_evaluation(model, loader(tree), [get_scorer("max_logit"), get_scorer("mahalanobis")], "cpu")


def test_eval_at_input_resizes_labels_instead(tree, model):
    res = run_evaluation(model, loader(tree), [get_scorer("max_logit")], "cpu",
                         EvalPlan(eval_at="input", protocols=("pooled",)))
    pooled = res["scorers"]["max_logit"]["metrics"]["pooled"]
    assert pooled["num_positive"] + pooled["num_negative"] == 5 * INPUT_HW[0] * INPUT_HW[1]
    assert pooled["protocol_settings"]["eval_at"] == "input" and "per_image" not in res["protocols"]


@pytest.mark.parametrize("path", PATHS)
def test_targets_per_protocol_and_void_rule(path):
    """label 255 counts as normal only under the official per-image protocol; ids in ignore_ids and (then) 255
    are left out of both protocols; the segmentation target drops the anomaly ids."""
    label = torch.tensor([[[0, 13, 255, 3], [13, 7, 3, 255]]])
    official = on_path(path, lambda: _targets(label, ("per_image", "pooled"), (13,), (), drop_void=False))
    assert official["per_image"].tolist() == [[[0, 1, 0, 0], [1, 0, 0, 0]]]
    assert official["pooled"].tolist() == [[[0, 1, 255, 0], [1, 0, 0, 255]]]
    dropped = on_path(path, lambda: _targets(label, ("per_image", "pooled"), (13,), (3,), drop_void=True))
    for p in ("per_image", "pooled"):
        assert dropped[p].tolist() == [[[0, 1, 255, 255], [1, 0, 255, 255]]]
        assert dropped[p].dtype == label.dtype


@pytest.mark.parametrize("ignore_ids", [(), (STREETHAZARDS.class_names.index("other"), 0)])
def test_torch_paths_equal_an_sklearn_loop(tree, model, ignore_ids):
    """The whole evaluation with every dispatch on its torch side (the CUDA code, here on CPU tensors): targets,
    segmentation target, scorers and metrics give the sklearn loop's numbers and the numpy side's results."""
    scorers = [get_scorer("max_logit"), get_scorer("rba"), get_scorer("gen")]
    res = on_path("torch", lambda: run_evaluation(model, loader(tree), scorers, "cpu", EvalPlan(ignore_ids=ignore_ids)))
    ref = reference(model, tree, ignore_ids=ignore_ids)
    m = res["scorers"]["max_logit"]["metrics"]
    for key in ("auroc", "aupr", "fpr95"):
        assert m["per_image"][key] == pytest.approx(np.mean([r[key] for r in ref["per_image"]]), abs=1e-9)
        assert m["pooled"][key] == pytest.approx(ref["pooled"][key], abs=2e-5)
    assert res["segmentation"]["miou"] == pytest.approx(ref["miou"], abs=1e-12)
    base = run_evaluation(model, loader(tree), scorers, "cpu", EvalPlan(ignore_ids=ignore_ids))
    assert res["segmentation"]["confusion_matrix"] == base["segmentation"]["confusion_matrix"]
    for name in ("max_logit", "rba", "gen"):
        # numpy's and torch's tanh / pow round differently in the last bit, which reorders near-tied scores
        tol = 1e-12 if name == "max_logit" else 1e-3
        for p in ("per_image", "pooled"):
            got, want = res["scorers"][name]["metrics"][p], base["scorers"][name]["metrics"][p]
            for key in ("num_positive", "num_negative", "num_images_skipped"):
                assert got[key] == want[key], (name, p, key)
            for key in ("auroc", "aupr", "fpr95"):
                assert got[key] == pytest.approx(want[key], abs=tol), (name, p, key)


# ---- test-time augmentation ----------------------------------------------------------------------------------
def test_tta_parse():
    assert TTA.parse("scales=0.5,0.75,1.0,1.25,1.5,flip") == TTA((0.5, 0.75, 1.0, 1.25, 1.5), True)
    assert TTA.parse("flip") == TTA((1.0,), True)
    assert TTA.parse(None) is None and TTA.parse("none") is None
    for bad in ("scales=a", "0.5,1.0", "scales=0,1", "scales=1.0,1.0"):
        with pytest.raises(UserError):
            TTA.parse(bad)


def test_tta_identities_and_average(tree, model):
    images = next(iter(loader(tree)))["image"]
    plain = forward(model, images, (64, 96)).logits
    assert torch.equal(forward(model, images, (64, 96), tta=TTA((1.0,))).logits, plain)
    flipped = forward(model, images, (64, 96), tta=TTA((1.0,), flip=True)).logits
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=1e-5)  # the toy is flip-equivariant
    assert not torch.allclose(model(images.flip(-1)).logits, model(images).logits, atol=1e-3)  # non-trivial check
    views = [F.interpolate(model(F.interpolate(images, size=(16, 24), mode="bilinear", align_corners=False)).logits,
                           size=(64, 96), mode="bilinear", align_corners=False), plain]
    multi = forward(model, images, (64, 96), tta=TTA((0.5, 1.0))).logits
    torch.testing.assert_close(multi, (views[0] + views[1]) / 2)
    out = forward(model, images, (64, 96), tta=TTA((0.5, 1.0), flip=True), return_features=True)
    torch.testing.assert_close(out.features["body"], model(images, return_features=True).features["body"])
    with pytest.raises(UserError, match=r"include 1\.0"):
        forward(model, images, None, tta=TTA((0.5, 0.75)), return_features=True)


def test_tta_scale_one_only_equals_no_tta_end_to_end(tree, model):
    scorers = [get_scorer("max_logit"), get_scorer("energy")]
    base = run_evaluation(model, loader(tree), scorers, "cpu")
    same = run_evaluation(model, loader(tree), scorers, "cpu", EvalPlan(tta=TTA.parse("scales=1.0")))
    flip = run_evaluation(model, loader(tree), scorers, "cpu", EvalPlan(tta=TTA.parse("scales=1.0,flip")))
    assert same["scorers"] == base["scorers"]
    assert flip["tta"] == {"scales": [1.0], "flip": True, "views": 2, "average": "logits"}
    for name in ("max_logit", "energy"):
        for p in ("per_image", "pooled"):
            for key in ("auroc", "aupr", "fpr95"):
                assert flip["scorers"][name]["metrics"][p][key] == pytest.approx(
                    base["scorers"][name]["metrics"][p][key], abs=1e-3)
    assert flip["segmentation"]["miou"] == pytest.approx(base["segmentation"]["miou"], abs=1e-3)



@pytest.mark.shared
def test_the_real_streethazards_frame(streethazards_root, model):
    """The one real RGB test frame (t6/1028, RGBA PNG) through the whole pipeline at 1280x720 labels."""
    from PIL import Image

    ds = StreetHazards(streethazards_root, "test", transform=EvalTransform(size=(360, 640)))
    assert ds.ids == ["t6/1028"]  # the only test image present with its label
    res = run_evaluation(model, DataLoader(ds, batch_size=1, collate_fn=collate_samples),
                         [get_scorer("max_logit")], "cpu", EvalPlan(protocols=("per_image",)))
    raw = np.asarray(Image.open(ds.entries[0].label))
    record = res["per_image"][0]
    assert (record["num_anomaly"], record["num_normal"]) == (int((raw == 14).sum()), int((raw != 14).sum()))
    assert res["segmentation"]["num_pixels"] == int((raw < 14).sum())
    with torch.no_grad():
        logits = F.interpolate(model(ds[0]["image"][None]).logits, size=(720, 1280), mode="bilinear",
                               align_corners=False)
    y, s = (raw.ravel() == 14).astype(int), (-logits.max(1).values).numpy().ravel()
    assert record["metrics"]["max_logit"]["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert record["metrics"]["max_logit"]["fpr95"] == pytest.approx(official_fpr95(y, s), abs=1e-9)
