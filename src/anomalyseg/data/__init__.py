"""anomalyseg.data: StreetHazards on disk -> dict samples (official loader, download + verify, corruption
scan, joint augmentations, synthetic data in the official format).

``StreetHazards(root, split, transform=None, on_error="raise"|"skip")`` yields
``{"image", "label", "id", "image_path", "label_path", "orig_size"}``; labels are file value - 1
(0..12 known classes, 13 anomaly, 255 ignore). See :mod:`anomalyseg.data.transforms` for the presets and
:mod:`anomalyseg.data.synthetic` for generated data.

The names below are imported on first use (:mod:`anomalyseg.lazy`): the loaders import torch, which
``anomalyseg data --help`` must not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyseg.lazy import lazy_exports

if TYPE_CHECKING:
    from anomalyseg.constants import IGNORE_INDEX
    from anomalyseg.data.anomaly_folder import PRESETS as ANOMALY_SETS
    from anomalyseg.data.anomaly_folder import (
        AnomalyImageFolder,
        AnomalySetInfo,
        ModelResize,
        available_presets,
        eval_at_transform,
        open_anomaly_sets,
        resize_pair,
    )
    from anomalyseg.data.cityscapes import CITYSCAPES, CITYSCAPES_CLASSES, Cityscapes
    from anomalyseg.data.info import SPLITS, STREETHAZARDS, DatasetInfo
    from anomalyseg.data.io import SampleError
    from anomalyseg.data.samples import anomaly_target, collate_samples
    from anomalyseg.data.streethazards import StreetHazards

_EXPORTS = {
    "ANOMALY_SETS": ".anomaly_folder:PRESETS",
    "AnomalyImageFolder": ".anomaly_folder",
    "AnomalySetInfo": ".anomaly_folder",
    "ModelResize": ".anomaly_folder",
    "available_presets": ".anomaly_folder",
    "eval_at_transform": ".anomaly_folder",
    "open_anomaly_sets": ".anomaly_folder",
    "resize_pair": ".anomaly_folder",
    "CITYSCAPES": ".cityscapes",
    "CITYSCAPES_CLASSES": ".cityscapes",
    "Cityscapes": ".cityscapes",
    "IGNORE_INDEX": "anomalyseg.constants",
    "SPLITS": ".info",
    "STREETHAZARDS": ".info",
    "DatasetInfo": ".info",
    "SampleError": ".io",
    "anomaly_target": ".samples",
    "collate_samples": ".samples",
    "StreetHazards": ".streethazards",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ANOMALY_SETS",
    "CITYSCAPES",
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "SPLITS",
    "STREETHAZARDS",
    "AnomalyImageFolder",
    "AnomalySetInfo",
    "Cityscapes",
    "DatasetInfo",
    "ModelResize",
    "SampleError",
    "StreetHazards",
    "anomaly_target",
    "available_presets",
    "collate_samples",
    "eval_at_transform",
    "open_anomaly_sets",
    "resize_pair",
]
