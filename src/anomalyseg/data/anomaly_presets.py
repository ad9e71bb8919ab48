"""The real-photo anomaly validation sets: what each one is (:class:`AnomalySetInfo`) and :data:`PRESETS`.

Kept free of torch so that ``anomalyseg evaluate --help`` can list the preset names without importing the
loader (:mod:`anomalyseg.data.anomaly_folder`, which re-exports everything here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from anomalyseg.constants import IGNORE_INDEX


@dataclass(frozen=True)
class AnomalySetInfo:
    """What a user (or a report) needs to know about one anomaly validation set."""

    key: str  # preset name
    name: str  # display name
    folder: str  # folder name in the Validation_Dataset package
    source: str  # where the images come from
    paper: Mapping[str, str]
    licence: str
    mask_convention: str
    anomaly_value: int  # mask value of anomaly pixels (2 for Road Anomaly, else 1)
    num_images: int | None  # images of the full validation set
    image_format: str
    image_size: tuple[int, int] | None  # (H, W) of every image, when fixed
    homepage: str
    notes: tuple[str, ...] = field(default=())
    # what the evaluation engine reads
    anomaly_id: int = 1
    ignore_index: int = IGNORE_INDEX
    has_class_labels: bool = False
    class_names: tuple[str, ...] = ("normal", "anomaly")


_SMIYC_PAPER = {
    "title": "SegmentMeIfYouCan: A Benchmark for Anomaly Segmentation",
    "authors": "Chan, Lis, Uhlemeyer, Blum, Honari, Siegwart, Fua, Salzmann, Rottmann",
    "venue": "NeurIPS 2021 Datasets and Benchmarks",
    "url": "https://arxiv.org/abs/2104.14812",
}
_FS_PAPER = {
    "title": "The Fishyscapes Benchmark: Measuring Blind Spots in Semantic Segmentation",
    "authors": "Blum, Sarlin, Nieto, Siegwart, Cadena",
    "venue": "IJCV 2021 (first at ICCV Workshops 2019)",
    "url": "https://arxiv.org/abs/1904.03215",
}
_VOID = "0 normal, 1 anomaly, 255 void (not evaluated)"

PRESETS: dict[str, AnomalySetInfo] = {
    "road_anomaly": AnomalySetInfo(
        "road_anomaly", "Road Anomaly", "RoadAnomaly",
        "web photos of unusual objects on or near roads", {
            "title": "Detecting the Unexpected via Image Resynthesis",
            "authors": "Lis, Nakka, Fua, Salzmann", "venue": "ICCV 2019", "url": "https://arxiv.org/abs/1904.07595"},
        "research use only; images collected from the web (their own licences), see the authors' page",
        "0 normal, 2 anomaly (mapped to 1), no void", 2, 60, "jpg", (720, 1280),
        "https://www.epfl.ch/labs/cvlab/data/road-anomaly/",
        ("Anomalies are often large (animals, vehicles of unusual kinds), about 10% of pixels.",)),
    "smiyc_ra21": AnomalySetInfo(
        "smiyc_ra21", "SMIYC RoadAnomaly21 (validation)", "RoadAnomaly21",
        "SegmentMeIfYouCan RoadAnomaly21 validation images (web photos)", _SMIYC_PAPER,
        "research use only (SegmentMeIfYouCan terms); images keep their original licences",
        _VOID, 1, 10, "png", (720, 1280), "https://segmentmeifyoucan.com",
        ("The 100 test images are scored by the benchmark server only.",)),
    "smiyc_ro21": AnomalySetInfo(
        "smiyc_ro21", "SMIYC RoadObstacle21 (validation)", "RoadObsticle21",
        "SegmentMeIfYouCan RoadObstacle21 validation images (small obstacles on the road)", _SMIYC_PAPER,
        "research use only (SegmentMeIfYouCan terms)",
        _VOID + "; everything off the road is void", 1, 30, "webp", (1080, 1920), "https://segmentmeifyoucan.com",
        ("The folder name keeps the package's spelling 'RoadObsticle21'.",
         "Only the road is evaluated: about 70% of pixels are void.")),
    "fs_static": AnomalySetInfo(
        "fs_static", "Fishyscapes Static (validation)", "fs_static",
        "Cityscapes validation images with pasted Pascal VOC objects", _FS_PAPER,
        "research use only; Cityscapes images (Cityscapes licence, non-commercial), Pascal VOC objects",
        _VOID, 1, 30, "jpg", (1024, 2048), "https://fishyscapes.com",
        ("Some masks hold no anomaly pixel.",)),
    "fs_lost_found": AnomalySetInfo(
        "fs_lost_found", "Fishyscapes Lost & Found (validation)", "FS_LostFound_full",
        "Lost and Found stereo recordings (Pinggera et al., IROS 2016) relabelled by Fishyscapes", _FS_PAPER,
        "research use only; Lost and Found images (Daimler, non-commercial), Fishyscapes annotations",
        _VOID, 1, 100, "png", (1024, 2048), "https://fishyscapes.com",
        ("Small obstacles on the road; only the road and the obstacles are labelled.",)),
}


def available_presets() -> list[str]:
    """Preset names accepted by :class:`AnomalyImageFolder`."""
    return list(PRESETS)
