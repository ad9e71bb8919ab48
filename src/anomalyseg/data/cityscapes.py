"""Cityscapes (gtFine) as a torch ``Dataset`` of dict samples with the 19 train-id classes, ignore 255.

Layout (as downloaded from cityscapes-dataset.com, after unzipping ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` into one root)::

    ROOT/leftImg8bit/{train,val,test}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

Labels are the official label ids mapped to train ids with the official table (``cityscapesscripts``'
``labels.py``, as shipped in ``torchvision.datasets.Cityscapes.classes``: 19 classes, everything else 255);
where ``*_gtFine_labelTrainIds.png`` files exist (written by ``cityscapesscripts``'
``createTrainIdLabelImgs``) they are read instead. The test split's public labels are all "unlabeled".
Used to train closed-set models for the real-photo anomaly benchmarks (Road Anomaly, SegmentMeIfYouCan,
Fishyscapes: see :mod:`anomalyseg.data.anomaly_folder`). Unreadable files follow the ``on_error`` policy of
:class:`~anomalyseg.data.robust.RobustSamples`, as StreetHazards' do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torchvision.datasets import Cityscapes as _TVCityscapes

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.data.info import DatasetInfo
from anomalyseg.data.io import check_same_size, read_sample_image, read_sample_label
from anomalyseg.data.robust import OnError, RobustSamples
from anomalyseg.data.samples import Transform, make_sample
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

LabelSource = Literal["auto", "labelIds", "labelTrainIds"]

CITYSCAPES_SPLITS: tuple[str, ...] = ("train", "val", "test")
_TRAIN = sorted((c for c in _TVCityscapes.classes if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)

#: The 19 evaluated classes, index = train id (road, sidewalk, building, ..., bicycle).
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(c.name for c in _TRAIN)
#: Official colours, index = train id.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(tuple(c.color) for c in _TRAIN)  # type: ignore[misc]

#: label id (0..255) -> train id; ids without a train id (and unknown values) -> 255.
LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _c in _TVCityscapes.classes:
    if 0 <= _c.id < 256 and 0 <= _c.train_id < IGNORE_INDEX:
        LABEL_TO_TRAIN[_c.id] = _c.train_id

CITYSCAPES = DatasetInfo(
    name="Cityscapes",
    class_names=CITYSCAPES_CLASSES,
    anomaly_name="none",
    anomaly_id=len(CITYSCAPES_CLASSES),  # no anomaly class: id 19 never occurs in the labels
    palette=(*CITYSCAPES_PALETTE, (255, 255, 255)),
    image_size=(1024, 2048),
    label_offset=0,
    licence=("Cityscapes licence: free for non-commercial research and teaching, registration required; "
             "redistribution not allowed (https://www.cityscapes-dataset.com/license/)."),
    paper={
        "title": "The Cityscapes Dataset for Semantic Urban Scene Understanding",
        "authors": "Cordts, Omran, Ramos, Rehfeld, Enzweiler, Benenson, Franke, Roth, Schiele",
        "venue": "CVPR 2016",
        "url": "https://arxiv.org/abs/1604.01685",
        "bibtex_key": "cordts2016cityscapes",
    },
    homepage="https://www.cityscapes-dataset.com",
    url_base="https://www.cityscapes-dataset.com/downloads/",
    notes=(
        "2975 train, 500 val, 1525 test images (fine annotations); test labels are not public.",
        "Download needs a login: leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip.",
    ),
)

_IMAGE_SUFFIX = "_leftImg8bit.png"


class Cityscapes(RobustSamples):
    """Cityscapes ``train`` / ``val`` / ``test`` with gtFine train-id labels.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transform: joint ``(image uint8 (3,H,W), label int64 (H,W)) -> (image, label)`` callable (the
            :mod:`anomalyseg.data.transforms` presets).
        label_source: ``"auto"`` (``labelTrainIds`` files where present, else ``labelIds`` mapped with the
            official table), or force one of them.
        on_error: ``"raise"`` or ``"skip"`` for samples that cannot be read after ``retries`` retries.
        retries: extra read attempts before a failure counts.
        retry_wait: seconds before the first retry (doubles each time).

    A sample is ``{"image", "label", "id", "image_path", "label_path", "orig_size"}`` as StreetHazards';
    ``id`` is ``"city/city_seq_frame"``; labels are train ids 0..18 and 255.
    """

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None,
                 label_source: LabelSource = "auto", on_error: OnError = "raise", retries: int = 2,
                 retry_wait: float = 0.05) -> None:
        if split not in CITYSCAPES_SPLITS:
            raise UserError(f"Cityscapes split must be one of {', '.join(CITYSCAPES_SPLITS)}, got {split!r}")
        if label_source not in ("auto", "labelIds", "labelTrainIds"):
            raise UserError(f"label_source must be auto, labelIds or labelTrainIds, got {label_source!r}")
        self._init_read_policy(on_error, retries, retry_wait)
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / "leftImg8bit" / split
        if not self.split_dir.is_dir():
            raise UserError(f"no Cityscapes images at {self.split_dir} (expected ROOT/leftImg8bit/{split}/CITY/"
                            f"*{_IMAGE_SUFFIX}; unzip leftImg8bit_trainvaltest.zip into {self.root})")
        images = sorted(self.split_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
        if not images:
            raise UserError(f"no *{_IMAGE_SUFFIX} files in {self.split_dir}/CITY/")
        self.entries: list[tuple[str, Path, Path, bool]] = []
        missing: list[Path] = []
        for image in images:
            stem = image.name[: -len(_IMAGE_SUFFIX)]
            base = self.root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_"
            train_ids = base.with_name(base.name + "labelTrainIds.png")
            label_ids = base.with_name(base.name + "labelIds.png")
            use_train = label_source == "labelTrainIds" or (label_source == "auto" and train_ids.is_file())
            label = train_ids if use_train else label_ids
            if not label.is_file():
                missing.append(label)
                continue
            self.entries.append((f"{image.parent.name}/{stem}", image, label, use_train))
        if missing:
            raise UserError(f"{len(missing)} of {len(images)} Cityscapes images have no label, e.g. {missing[0]} "
                            "(unzip gtFine_trainvaltest.zip into the same root)")
        self.transform = transform
        self.info: DatasetInfo = CITYSCAPES

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (f"Cityscapes(split={self.split!r}, samples={len(self)}, root={str(self.root)!r}, "
                f"on_error={self.on_error!r})")

    @property
    def ids(self) -> list[str]:
        """Sample ids in order (``"city/city_seq_frame"``)."""
        return [e[0] for e in self.entries]

    def read_label(self, index: int) -> np.ndarray:
        """Train-id map ``(H, W)`` int64 of sample ``index`` (0..18, 255)."""
        _, _, path, is_train = self.entries[index]
        raw = read_sample_label(path)
        if is_train:
            raw = raw.astype(np.int64)
            return np.where((raw >= 0) & (raw < len(CITYSCAPES_CLASSES)), raw, IGNORE_INDEX)
        if raw.dtype != np.uint8:
            raw = np.clip(raw.astype(np.int64), 0, 255).astype(np.uint8)
        return LABEL_TO_TRAIN[raw]

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode sample ``index`` once: ``(image (H,W,3) uint8, train ids (H,W))``; no retry."""
        _, image_path, label_path, _ = self.entries[index]
        image, label = read_sample_image(image_path), self.read_label(index)
        check_same_size(image, label, image_path, label_path)
        return image, label

    def build_sample(self, index: int, raw: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
        """The dict sample of ``index`` from its decoded ``(image, train ids)``."""
        sid, image_path, label_path, _ = self.entries[index]
        return make_sample(*raw, sample_id=sid, image_path=image_path, label_path=label_path,
                           transform=self.transform)

    def sample_id(self, index: int) -> str:
        """Id of sample ``index`` (``"city/city_seq_frame"``)."""
        return self.entries[index][0]

    def sample_path(self, index: int) -> str:
        """Image file of sample ``index``."""
        return str(self.entries[index][1])
