"""Constants every layer shares, defined once (torch-free, so any module may import them)."""

from __future__ import annotations

#: Label value of pixels that carry no class: never trained on, never evaluated as a known class.
IGNORE_INDEX = 255

#: Training-only label of pixels covered by a pasted outlier (outlier exposure): never a class id, never the
#: anomaly id of any dataset, never IGNORE_INDEX. Closed-set losses ignore it; outlier losses push these pixels'
#: anomaly score up. It never appears in a dataset file or an evaluation target.
OUTLIER_LABEL = 254

#: ImageNet RGB mean / std on [0, 1] images: every model here takes images normalised with them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
