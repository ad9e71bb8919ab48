"""One detection rule everywhere a score map is binarised: ``score > threshold`` (a pixel exactly at the threshold
is not detected), in the panels, the binary panels and the gallery's count (predict: tests/engine/test_predict.py)."""

from __future__ import annotations

import numpy as np

from anomalyseg.constants import DETECTION_RULE, detect
from anomalyseg.viz import colors as C
from anomalyseg.viz.binary import binary_panel_data
from anomalyseg.viz.gallery import detected_pixels, levels
from anomalyseg.viz.panels import detection_title, panel_data

T = 0.5
DETECTED, NOT = C.DETECTION_COLORS["detected"], C.DETECTION_COLORS["not detected"]


def _maps() -> dict[str, np.ndarray]:
    """4x4, all anomaly: row 0 scored above T, row 1 exactly T, rows 2-3 below."""
    score = np.full((4, 4), 0.25, dtype=np.float32)
    score[0], score[1] = 0.75, T
    return {"image": np.zeros((4, 4, 3), np.uint8), "pred": np.zeros((4, 4), np.int64), "score": score,
            "confidence": np.ones((4, 4), np.float32), "target": np.ones((4, 4), np.int64)}


def test_the_rule_is_strictly_greater():
    assert DETECTION_RULE == "score > threshold"
    assert detect(np.array([0.4, T, 0.6]), T).tolist() == [False, False, True]


def test_panels_leave_a_pixel_at_the_threshold_undetected():
    m = _maps()
    gt = np.full((4, 4), 13, np.int64)  # all StreetHazards anomaly
    data = panel_data(m["image"], gt, m["pred"], m["confidence"], m["score"], T)
    binary = binary_panel_data(m["image"], m["pred"], m["confidence"], m["score"], m["target"], T,
                               C.class_palette(["road"], None))
    for d in (data, binary):
        detection = d.rgb["detection"]
        assert tuple(detection[0, 0]) == DETECTED and tuple(detection[1, 0]) == NOT, type(d).__name__
        assert (d.stats["tp"], d.stats["fn"]) == (4, 12), type(d).__name__
    assert detection_title(data).startswith("detection: score > ")


def test_gallery_count_leaves_a_level_at_the_threshold_undetected():
    q = np.array([[0, 128, 255]], dtype=np.uint8)
    at = float(levels(0.0, 1.0)[128])
    assert detected_pixels(q, 0.0, 1.0, at) == 1
    assert detected_pixels(q, 0.0, 1.0, np.nextafter(at, -1.0)) == 2
