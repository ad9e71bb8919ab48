"""Constants every layer shares, and the one detection rule, defined once (torch-free, so any module may import
them)."""

from __future__ import annotations

from typing import Any

#: Label value of pixels that carry no class: never trained on, never evaluated as a known class.
IGNORE_INDEX = 255

#: Training-only label of pixels covered by a pasted outlier (outlier exposure): never a class id, never the
#: anomaly id of any dataset, never IGNORE_INDEX. Closed-set losses ignore it; outlier losses push these pixels'
#: anomaly score up. It never appears in a dataset file or an evaluation target.
OUTLIER_LABEL = 254

#: How an anomaly-score map becomes detections wherever one is binarised (predict's masks, overlays and
#: predictions.csv, the gallery and its slider, the panels, the component metrics): a pixel is detected when its
#: score is STRICTLY above the threshold, as in SegmentMeIfYouCan's code (``anomaly_p > thresh_p``); a pixel
#: exactly at the threshold is not. ROC / PR curves are a different object: each curve point counts
#: ``score >= t`` for t one of the scores, as sklearn's (AUROC / AUPR do not depend on that choice).
DETECTION_RULE = "score > threshold"


def detect(score: Any, threshold: float) -> Any:
    """Boolean detections of a score map (numpy array or tensor) at ``threshold``: :data:`DETECTION_RULE`."""
    return score > threshold


#: ImageNet RGB mean / std on [0, 1] images: every model here takes images normalised with them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
