"""Panels of binary-ground-truth sets (real photos) on a synthetic case with known TP / FP / FN / TN and void
pixels: colours in the arrays and in the drawn figure, per-image numbers against sklearn, the palettes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from anomalyseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from anomalyseg.viz import colors as C
from anomalyseg.viz.binary import (
    BINARY_GRID_VIEWS,
    BINARY_OUTCOME_COLORS,
    BINARY_VIEWS,
    binary_legend,
    binary_panel_data,
    draw_binary_panel,
)
from anomalyseg.viz.panels import axes_pixel, comparison_grid, figure_rgb

THRESHOLD = 0.5
VOID = 19
NAMES = (*CITYSCAPES_CLASSES, "void")


def binary_case() -> dict[str, np.ndarray]:
    """16x24: anomaly in columns 0-7 (rows 0-7 scored 0.9 -> TP, rows 8-15 scored 0.2 -> FN); normal in
    columns 8-15 (rows 0-3 scored 0.7 -> FP, the rest 0.1 -> TN); columns 16-23 void, scored 0.95 (detected,
    not counted). Prediction: road (0) left, car (13) middle, the void channel (19) right."""
    target = np.zeros((16, 24), dtype=np.int64)
    target[:, :8] = 1
    target[:, 16:] = 255
    score = np.full((16, 24), 0.1, dtype=np.float32)
    score[:8, :8], score[8:, :8], score[:4, 8:16], score[:, 16:] = 0.9, 0.2, 0.7, 0.95
    score += np.random.default_rng(1).uniform(0, 0.01, size=score.shape).astype(np.float32)  # no ties
    pred = np.zeros((16, 24), dtype=np.int64)
    pred[:, 8:16], pred[:, 16:] = 13, VOID
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8), "target": target, "score": score,
            "pred": pred, "confidence": rng.uniform(0.2, 1.0, size=(16, 24)).astype(np.float32)}


EXPECTED = {
    "outcome": {(2, 2): C.OUTCOME_COLORS["TP"], (10, 2): C.OUTCOME_COLORS["FN"], (2, 10): C.OUTCOME_COLORS["FP"],
                (10, 10): C.OUTCOME_COLORS["TN"], (5, 20): C.OUTCOME_COLORS["ignored"]},
    "anomaly_gt": {(2, 2): C.ANOMALY_GT_COLORS["anomaly"], (10, 10): C.ANOMALY_GT_COLORS["normal"],
                   (5, 20): C.ANOMALY_GT_COLORS["void"]},
    "prediction": {(2, 2): CITYSCAPES_PALETTE[0], (2, 10): CITYSCAPES_PALETTE[13], (2, 20): C.VOID_CLASS_COLOR},
    "detection": {(2, 2): C.DETECTION_COLORS["detected"], (10, 2): C.DETECTION_COLORS["not detected"],
                  (5, 20): C.DETECTION_COLORS["detected"]},
}


@pytest.fixture(scope="module")
def case():
    return binary_case()


@pytest.fixture(scope="module")
def panel(case):
    data = binary_panel_data(case["image"], case["pred"], case["confidence"], case["score"], case["target"],
                             THRESHOLD, C.class_palette(NAMES, VOID), threshold_label="fixed", sample_id="7")
    return draw_binary_panel(data, "Road Anomaly · 7")


def test_numbers_match_sklearn_and_void_is_not_counted(case, panel):
    stats = panel.data.stats
    assert (stats["tp"], stats["fn"], stats["fp"], stats["tn"], stats["void"]) == (64, 64, 32, 96, 128)
    keep = case["target"] != 255
    y, s = case["target"][keep], case["score"][keep]
    assert stats["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert stats["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert stats["precision"] == pytest.approx(precision_score(y, s > THRESHOLD))
    assert stats["recall"] == pytest.approx(recall_score(y, s > THRESHOLD))
    assert "miou" not in stats
    # FPR95, the per-image protocol's "closest" rule: TPR closest to 0.95 -> every anomaly pixel must be
    # scored above the FN rows' 0.2, so the 32 FP rows (0.7) are crossed but not the TN ones (0.1)
    assert stats["fpr95"] == pytest.approx(32 / 128)


def test_arrays_and_drawn_pixels_have_the_documented_colours(panel):
    for view, pixels in EXPECTED.items():
        for (r, c), rgb in pixels.items():
            assert tuple(panel.data.rgb[view][r, c]) == tuple(rgb), (view, r, c)
    buf = figure_rgb(panel.figure)
    for view in ("outcome", "anomaly_gt", "prediction"):
        for (r, c), rgb in EXPECTED[view].items():
            y, x = axes_pixel(panel.figure, panel.axes[view], r, c)
            assert tuple(buf[y, x]) == tuple(rgb), (view, r, c, tuple(buf[y, x]))


def test_layout_and_title_say_no_miou(panel):
    assert list(panel.axes) == list(BINARY_VIEWS)
    for i, view in enumerate(BINARY_VIEWS):
        spec = panel.axes[view].get_subplotspec()
        assert (spec.rowspan.start, spec.colspan.start) == (i // 3, i % 3)
        assert spec.get_gridspec().get_geometry() == (2, 3)
    title = panel.figure._suptitle.get_text()
    assert "Road Anomaly · 7" in title and "mIoU" not in title
    assert "AUPR" in title and "FPR95 25.0%" in title and "P 66.7% R 50.0%" in title
    legends = {t.get_text() for ax in panel.figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert {"normal", "anomaly", "void", "void (not counted)", "TP"} <= legends


def test_no_anomaly_image_has_undefined_metrics(case):
    target = np.where(case["target"] == 1, 0, case["target"])
    data = binary_panel_data(case["image"], case["pred"], case["confidence"], case["score"], target, THRESHOLD,
                             C.class_palette(NAMES, VOID))
    assert np.isnan(data.stats["aupr"]) and np.isnan(data.stats["recall"])
    assert "AUPR n/a" in data.summary()


def test_mismatched_sizes_are_refused(case):
    with pytest.raises(ValueError, match="score has shape"):
        binary_panel_data(case["image"], case["pred"], case["confidence"], case["score"][:8], case["target"],
                          THRESHOLD, C.class_palette(NAMES, VOID))


def test_palettes_grid_and_legend(panel):
    cityscapes = C.class_palette(NAMES, VOID)
    assert cityscapes[:VOID] == list(CITYSCAPES_PALETTE) and cityscapes[VOID] == C.VOID_CLASS_COLOR
    moved = C.class_palette(("void", *CITYSCAPES_CLASSES), 0)  # void first: the classes keep their colours
    assert moved[0] == C.VOID_CLASS_COLOR and moved[1:] == list(CITYSCAPES_PALETTE)
    other = C.class_palette(("a", "b", "c"))
    assert len(set(other)) == 3 and C.VOID_CLASS_COLOR not in other
    grid = comparison_grid([panel.data, panel.data], BINARY_GRID_VIEWS)
    image_axes = [ax for ax in grid.axes if ax.get_images()]
    assert len(image_axes) == 2 * len(BINARY_GRID_VIEWS)
    assert "AUPR" in image_axes[0].get_ylabel() and "mIoU" not in image_axes[0].get_ylabel()
    legend = binary_legend(NAMES, cityscapes)
    texts = {t.get_text() for ax in legend.axes for t in ax.texts}
    assert {f"{i}: {n}" for i, n in enumerate(NAMES)} | set(BINARY_OUTCOME_COLORS) <= texts
