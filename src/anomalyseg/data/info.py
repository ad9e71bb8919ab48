"""StreetHazards metadata in one place: classes, palette, layout, sizes, licence, paper, downloads.

Sources: the dataset authors' repository (github.com/hendrycks/anomaly-seg: README download links,
``create_dataset.py`` colour table and ``.odgt`` layout) and pytorch-ood's ``StreetHazards`` class (archive
MD5 sums). Label PNGs hold ``value = class id + 1``: 1..13 are the 13 known classes (id 0..12, "unlabeled"
included, as in the official training code) and 14 is the anomaly (id 13), present in the test split only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from anomalyseg.constants import IGNORE_INDEX

#: Split names accepted by the loader and the commands.
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Archive:
    """One official tarball: file name, MD5 as published, and the splits it contains."""

    filename: str
    md5: str
    splits: tuple[str, ...]
    folder: str  # top-level folder inside the archive


@dataclass(frozen=True)
class SplitLayout:
    """Where one split lives inside the extracted tree (paths relative to the root)."""

    archive_folder: str  # "streethazards_train" / "streethazards_test"
    inner: str  # "train" / "test"
    odgt: str  # list file inside ``inner``
    images: str  # image folder inside ``inner``
    annotations: str  # label folder inside ``inner``
    expected_size: int  # number of samples in the full official split


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """Everything a user (or a report) needs to know about the dataset, read-only.

    ``num_classes`` follows from ``class_names``; datasets without downloads or a fixed layout (Cityscapes)
    leave ``archives`` / ``splits`` empty.
    """

    name: str
    class_names: tuple[str, ...]  # known classes, index = class id
    anomaly_name: str
    anomaly_id: int
    palette: tuple[tuple[int, int, int], ...]  # one RGB colour per id 0..anomaly_id
    image_size: tuple[int, int]  # (H, W) of every official frame
    label_offset: int  # file value - label_offset = class id
    licence: str
    paper: Mapping[str, str]
    homepage: str
    url_base: str
    archives: Mapping[str, Archive] = field(default_factory=dict)
    splits: Mapping[str, SplitLayout] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    ignore_index: int = IGNORE_INDEX
    num_classes: int = field(init=False)  # known classes, "unlabeled" included

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_classes", len(self.class_names))

    @property
    def all_names(self) -> tuple[str, ...]:
        """Class names followed by the anomaly name (index = id, 0..anomaly_id)."""
        return (*self.class_names, self.anomaly_name)

    def url(self, archive: str, url_base: str | None = None) -> str:
        """Download URL of ``archive`` (``"train"`` or ``"test"``), optionally from a mirror."""
        base = (url_base or self.url_base).rstrip("/")
        return f"{base}/{self.archives[archive].filename}"


STREETHAZARDS = DatasetInfo(
    name="StreetHazards",
    class_names=(
        "unlabeled", "building", "fence", "other", "pedestrian", "pole", "road line",
        "road", "sidewalk", "vegetation", "car", "wall", "traffic sign",
    ),
    anomaly_name="anomaly",
    anomaly_id=13,
    # Official colours (hendrycks/anomaly-seg create_dataset.py; Cityscapes-like), index = class id.
    palette=(
        (0, 0, 0), (70, 70, 70), (190, 153, 153), (250, 170, 160), (220, 20, 60), (153, 153, 153),
        (157, 234, 50), (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156),
        (220, 220, 0), (60, 250, 240),
    ),
    image_size=(720, 1280),
    label_offset=1,
    licence=(
        "No licence file is published with the dataset (github.com/hendrycks/anomaly-seg); "
        "distributed by the authors for research use. Rendered with CARLA (code MIT, assets CC-BY)."
    ),
    paper={
        "title": "Scaling Out-of-Distribution Detection for Real-World Settings",
        "authors": "Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song",
        "venue": "ICML 2022 (first circulated 2019 as 'A Benchmark for Anomaly Segmentation')",
        "url": "https://arxiv.org/abs/1911.11132",
        "bibtex_key": "hendrycks2019anomalyseg",
    },
    homepage="https://github.com/hendrycks/anomaly-seg",
    url_base="https://people.eecs.berkeley.edu/~hendrycks",
    archives={
        "train": Archive("streethazards_train.tar", "cd2d1a8649848afb85b5059d227d2090", ("train", "val"),
                         "streethazards_train"),
        "test": Archive("streethazards_test.tar", "8c547c1346b00c21b2483887110bfea7", ("test",),
                        "streethazards_test"),
    },
    splits={
        "train": SplitLayout("streethazards_train", "train", "train.odgt", "images/training",
                             "annotations/training", 5125),
        "val": SplitLayout("streethazards_train", "train", "validation.odgt", "images/validation",
                           "annotations/validation", 1031),
        "test": SplitLayout("streethazards_test", "test", "test.odgt", "images/test", "annotations/test", 1500),
    },
    notes=(
        "Towns: train t1-3, validation t4, test t5 (1..1024) and t6 (1025..1500).",
        "Class 'pedestrian' (id 4) never occurs in the test split.",
        "Anomaly covers about 1% of test pixels; every test image contains some.",
    ),
)

