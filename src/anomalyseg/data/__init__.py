"""anomalyseg.data: StreetHazards on disk -> dict samples (official loader, download + verify, corruption
scan, joint augmentations, synthetic data in the official format).

``StreetHazards(root, split, transform=None, on_error="raise"|"skip")`` yields
``{"image", "label", "id", "image_path", "label_path", "orig_size"}``; labels are file value - 1
(0..12 known classes, 13 anomaly, 255 ignore). See :mod:`anomalyseg.data.transforms` for the presets and
:mod:`anomalyseg.data.synthetic` for generated data.
"""

from anomalyseg.data.info import IGNORE_INDEX, SPLITS, STREETHAZARDS, DatasetInfo
from anomalyseg.data.io import SampleError
from anomalyseg.data.samples import anomaly_target, collate_samples
from anomalyseg.data.streethazards import StreetHazards

__all__ = [
    "IGNORE_INDEX",
    "SPLITS",
    "STREETHAZARDS",
    "DatasetInfo",
    "SampleError",
    "StreetHazards",
    "anomaly_target",
    "collate_samples",
]
