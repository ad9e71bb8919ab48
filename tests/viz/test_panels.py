"""Panels on a synthetic case with known TP / FP / FN / TN: layout, colours at known pixels (arrays and the
drawn figure's pixel buffer), numbers against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from anomalyseg.data import STREETHAZARDS
from anomalyseg.viz import colors as C
from anomalyseg.viz.panels import (
    GRID_VIEWS,
    PANEL_VIEWS,
    axes_pixel,
    comparison_grid,
    figure_rgb,
    palette_legend,
    panel_data,
    panel_figure,
)

ROAD, CAR, ANOMALY, IGNORE = 7, 10, 13, 255
THRESHOLD = 0.5


def known_case() -> dict[str, np.ndarray]:
    """16x16 in four 8x8 quadrants.

    TL: anomaly, score 0.9 -> 64 TP.   TR: road, rows 0-3 score 0.8 (32 FP), rows 4-7 score 0.3 (32 TN).
    BL: anomaly, score 0.2 -> 64 FN.   BR: car, score 0.1 (48 TN) with a 4x4 ignore block (12-15, 12-15)
    scored 0.95 (detected, but not counted). Prediction: road on TL / TR, car on BL / BR except a 4x4
    road block (8-11, 8-11) that is wrong.
    """
    gt = np.full((16, 16), ROAD, dtype=np.int64)
    gt[:8, :8] = ANOMALY
    gt[8:, :8] = ANOMALY
    gt[8:, 8:] = CAR
    gt[12:, 12:] = IGNORE
    score = np.zeros((16, 16), dtype=np.float32)
    score[:8, :8] = 0.9
    score[:4, 8:] = 0.8
    score[4:8, 8:] = 0.3
    score[8:, :8] = 0.2
    score[8:, 8:] = 0.1
    score[12:, 12:] = 0.95
    pred = np.full((16, 16), ROAD, dtype=np.int64)
    pred[8:, :] = CAR
    pred[8:12, 8:12] = ROAD
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    confidence = rng.uniform(0.2, 1.0, size=(16, 16)).astype(np.float32)
    return {"image": image, "gt": gt, "pred": pred, "confidence": confidence, "score": score}


# pixel (row, col) -> expected colour, per view
EXPECTED = {
    "outcome": {(2, 2): C.OUTCOME_COLORS["TP"], (2, 10): C.OUTCOME_COLORS["FP"], (6, 10): C.OUTCOME_COLORS["TN"],
                (10, 2): C.OUTCOME_COLORS["FN"], (10, 10): C.OUTCOME_COLORS["TN"],
                (14, 14): C.OUTCOME_COLORS["ignored"]},
    "detection": {(2, 2): C.DETECTION_COLORS["detected"], (2, 10): C.DETECTION_COLORS["detected"],
                  (6, 10): C.DETECTION_COLORS["not detected"], (10, 2): C.DETECTION_COLORS["not detected"],
                  (14, 14): C.DETECTION_COLORS["detected"]},
    "error": {(2, 10): C.ERROR_COLORS["correct"], (9, 9): C.ERROR_COLORS["wrong"], (13, 9): C.ERROR_COLORS["correct"],
              (2, 2): C.ERROR_COLORS["not scored"], (14, 14): C.ERROR_COLORS["not scored"]},
    "ground_truth": {(2, 2): STREETHAZARDS.palette[ANOMALY], (2, 10): STREETHAZARDS.palette[ROAD],
                     (10, 10): STREETHAZARDS.palette[CAR], (14, 14): (255, 255, 255)},
    "prediction": {(2, 2): STREETHAZARDS.palette[ROAD], (10, 2): STREETHAZARDS.palette[CAR]},
}


@pytest.fixture(scope="module")
def case():
    return known_case()


@pytest.fixture(scope="module")
def panel(case):
    return panel_figure(case["image"], case["gt"], case["pred"], case["confidence"], case["score"], THRESHOLD,
                        sample_id="t5/1", threshold_label="fixed")


def test_numbers_match_sklearn(case, panel):
    stats = panel.data.stats
    assert (stats["tp"], stats["fp"], stats["fn"], stats["tn"]) == (64, 32, 64, 80)
    counted = case["gt"] != IGNORE
    y = (case["gt"][counted] == ANOMALY).astype(int)
    d = (case["score"][counted] > THRESHOLD).astype(int)
    assert stats["precision"] == pytest.approx(precision_score(y, d))
    assert stats["recall"] == pytest.approx(recall_score(y, d))
    assert stats["f1"] == pytest.approx(f1_score(y, d))
    known = ~np.isin(case["gt"], [ANOMALY, IGNORE])  # closed-set: anomaly and ignored pixels excluded
    ref = jaccard_score(case["gt"][known], case["pred"][known], average="macro")
    assert stats["miou"] == pytest.approx(ref)
    assert stats["miou"] == pytest.approx((64 / 80 + 32 / 48) / 2)


def test_arrays_have_the_documented_colours(panel):
    for view, pixels in EXPECTED.items():
        for (r, c), rgb in pixels.items():
            assert tuple(panel.data.rgb[view][r, c]) == tuple(rgb), (view, r, c)
    over = panel.data.rgb["overlay"]
    assert tuple(over[0, 0]) == STREETHAZARDS.palette[ANOMALY]  # GT anomaly outline
    assert tuple(over[4, 4]) != STREETHAZARDS.palette[ANOMALY]  # inside: blended, not outlined


def test_layout_is_three_by_three(panel):
    fig = panel.figure
    assert list(panel.axes) == list(PANEL_VIEWS)
    for i, view in enumerate(PANEL_VIEWS):
        spec = panel.axes[view].get_subplotspec()
        assert (spec.rowspan.start, spec.colspan.start) == (i // 3, i % 3), view
        assert spec.get_gridspec().get_geometry() == (3, 3)
    assert len([ax for ax in fig.axes if ax.get_images()]) == 9
    title = fig._suptitle.get_text()
    assert "t5/1" in title and "mIoU 73.3%" in title and "P 66.7% R 50.0% F1 57.1%" in title
    assert "0.5" in panel.axes["detection"].get_title()


def test_drawn_figure_pixels(panel):
    """Read the rendered figure's pixel buffer at the centres of known pixels of three maps."""
    fig = panel.figure
    buf = figure_rgb(fig)
    for view in ("outcome", "detection", "error"):
        for (r, c), rgb in EXPECTED[view].items():
            y, x = axes_pixel(fig, panel.axes[view], r, c)
            assert tuple(buf[y, x]) == tuple(rgb), (view, r, c, tuple(buf[y, x]))


def test_torch_chw_inputs_give_the_same_panel(case, panel):
    img = torch.from_numpy(case["image"]).permute(2, 0, 1)
    data = panel_data(img, torch.from_numpy(case["gt"]), torch.from_numpy(case["pred"])[None],
                      torch.from_numpy(case["confidence"]), torch.from_numpy(case["score"])[None], THRESHOLD)
    for view, arr in panel.data.rgb.items():
        np.testing.assert_array_equal(data.rgb[view], arr, err_msg=view)


def test_explicit_target_overrides_gt(case):
    """A target with the TR quadrant ignored: its 32 false positives disappear."""
    target = (case["gt"] == ANOMALY).astype(np.int64)
    target[case["gt"] == IGNORE] = 255
    target[:8, 8:] = 255
    data = panel_data(case["image"], case["gt"], case["pred"], case["confidence"], case["score"], THRESHOLD, target)
    assert (data.stats["tp"], data.stats["fp"], data.stats["fn"]) == (64, 0, 64)
    assert tuple(data.rgb["outcome"][2, 10]) == C.OUTCOME_COLORS["ignored"]


def test_default_target_leaves_out_the_given_void_id(case):
    """With ``ignore_index=250`` the derived target leaves the 250 pixels out (their 16 detections at 0.95 are
    not false positives) and treats the anomaly id as before."""
    gt = np.where(case["gt"] == IGNORE, 250, case["gt"])
    data = panel_data(case["image"], gt, case["pred"], case["confidence"], case["score"], THRESHOLD,
                      ignore_index=250)
    assert (data.stats["tp"], data.stats["fp"], data.stats["fn"], data.stats["tn"]) == (64, 32, 64, 80)
    assert tuple(data.rgb["outcome"][14, 14]) == C.OUTCOME_COLORS["ignored"]  # counted, it would be an FP

def test_mismatched_sizes_are_refused(case):
    with pytest.raises(ValueError, match="score has shape"):
        panel_data(case["image"], case["gt"], case["pred"], case["confidence"], case["score"][:8], THRESHOLD)


def test_grid_and_legend(case, panel):
    other = panel_data(case["image"], case["gt"], case["pred"], case["confidence"], case["score"], 0.85,
                       sample_id="t5/2")
    assert other.stats["tp"] == 64 and other.stats["fp"] == 0  # 0.8 < 0.85 <= 0.9
    grid = comparison_grid([panel.data, other])
    image_axes = [ax for ax in grid.axes if ax.get_images()]
    assert len(image_axes) == 2 * len(GRID_VIEWS)
    assert "t5/2" in image_axes[len(GRID_VIEWS)].get_ylabel()
    legend = palette_legend()
    texts = {t.get_text() for ax in legend.axes for t in ax.texts}
    assert {f"{i}: {n}" for i, n in enumerate(STREETHAZARDS.all_names)} <= texts
    assert {"TP", "FP", "FN", "TN", "255: ignore"} <= texts
    swatches = [tuple(round(255 * v) for v in p.get_facecolor()[:3]) for ax in legend.axes for p in ax.patches]
    assert tuple(STREETHAZARDS.palette[ANOMALY]) in swatches and C.OUTCOME_COLORS["FN"] in swatches
