"""Outlier source: COCO-style images + instance masks (``instances_*.json``), target-domain classes left out.

The usual outlier-exposure recipe (Chan et al., ICCV 2021; PEBAL, Tian et al., ECCV 2022) pastes COCO objects
of classes the road-scene dataset does not label as known: instances of :data:`DEFAULT_EXCLUDED` ``[dataset]``
are never cut out (per instance, not per image: only the instance's own mask is pasted, so an excluded object
elsewhere in the photo never travels with it). Crowd annotations and instances under :data:`MIN_AREA` pixels
are skipped; a cutout is the instance's bounding box with its mask as alpha.

Masks (polygons or RLE) are decoded with ``pycocotools`` (the reference implementation; optional extra
``pip install "anomalyseg[coco]"``). Only the kept instances' records stay in memory after opening.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomalyseg.data.io import DECODE_ERRORS, SampleError
from anomalyseg.data.outliers import Cutout
from anomalyseg.errors import UserError

#: COCO classes that road users and traffic control of the target domain would be labelled as (person / rider,
#: car, truck, bus, train, motorcycle, bicycle, traffic light, traffic sign).
_ROAD_SCENE = ("person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "traffic light", "stop sign")

#: COCO category names never cut out, per target dataset (``outlier_exposure.exclude_classes`` overrides):
#: the COCO counterparts of the dataset's known classes. Cityscapes: its road users and traffic control, and
#: potted plants (vegetation). StreetHazards (CARLA): ``pedestrian``, ``car`` (every CARLA vehicle), ``traffic
#: sign`` and ``vegetation`` as above, plus the street furniture its catch-all class ``other`` labels (bench,
#: fire hydrant, parking meter). A dataset not listed here gets the union.
DEFAULT_EXCLUDED: dict[str, tuple[str, ...]] = {
    "cityscapes": (*_ROAD_SCENE, "potted plant"),
    "streethazards": (*_ROAD_SCENE, "potted plant", "bench", "fire hydrant", "parking meter"),
}

#: Instances with fewer mask pixels are skipped (COCO's "small" objects: too few pixels to scale up).
MIN_AREA = 32 * 32


def default_exclusions(dataset: str | None) -> tuple[str, ...]:
    """COCO classes left out when training on ``dataset`` (the union of all lists for any other dataset)."""
    if dataset in DEFAULT_EXCLUDED:
        return DEFAULT_EXCLUDED[dataset]
    return tuple(dict.fromkeys(n for names in DEFAULT_EXCLUDED.values() for n in names))


def _mask_api() -> Any:
    try:
        from pycocotools import mask
    except ImportError:
        raise UserError('outlier_exposure.source=coco needs pycocotools: pip install "anomalyseg[coco]"') from None
    return mask


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"outlier_exposure.annotations: no file {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"outlier_exposure.annotations: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise UserError(f"outlier_exposure.annotations: {path} is not a COCO instances file (needs 'images', "
                        "'annotations' and 'categories' lists)")
    return data


class CocoSource:
    """Instances of ``annotations`` (images under ``root``) whose category is not excluded.

    Args:
        root: folder of the images (``file_name`` of the json is relative to it).
        annotations: the ``instances_*.json`` file.
        exclude_classes: COCO category names never cut out; None: :func:`default_exclusions` of ``dataset``
            (names the file lacks are fine there; a name given here must be one of its categories).
        dataset: the training dataset's registry name.
    """

    def __init__(self, root: str | Path, annotations: str | Path, *, exclude_classes: Sequence[str] | None = None,
                 dataset: str | None = None) -> None:
        _mask_api()  # fail fast, before reading a large json
        self.root = Path(root).expanduser()
        self.annotations = Path(annotations).expanduser()
        if not self.root.is_dir():
            raise UserError(f"outlier_exposure.root: no folder {self.root}")
        data = _load(self.annotations)
        try:
            names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
            images = {int(im["id"]): (str(im["file_name"]), int(im["height"]), int(im["width"]))
                      for im in data["images"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"outlier_exposure.annotations: {self.annotations}: malformed entry ({exc})") from None
        self.excluded = self._excluded(names, exclude_classes, dataset)
        self._items: list[tuple[str, int, int, list[float], Any]] = []
        for ann in data["annotations"]:
            if ann.get("iscrowd") or names.get(ann.get("category_id")) in self.excluded:
                continue
            if ann.get("image_id") not in images or not ann.get("segmentation") or len(ann.get("bbox", ())) != 4:
                continue
            bbox = [float(v) for v in ann["bbox"]]
            if float(ann.get("area", bbox[2] * bbox[3])) >= MIN_AREA:
                self._items.append((*images[ann["image_id"]], bbox, ann["segmentation"]))
        if not self._items:
            raise UserError(f"outlier_exposure: no usable instance in {self.annotations} (crowd, excluded classes "
                            f"{', '.join(self.excluded) or 'none'} and instances under {MIN_AREA} pixels are skipped)")
        self._files = sorted({self.root / f for f, *_ in self._items})
        missing = next((p for p in self._files[:: max(1, len(self._files) // 64)] if not p.is_file()), None)
        if missing is not None:
            raise UserError(f"outlier_exposure.root: image {missing} of {self.annotations.name} not found")
        self.name = f"coco {self.root} ({len(self._items)} instances, excluded: {', '.join(self.excluded)})"

    @staticmethod
    def _excluded(names: dict[int, str], exclude: Sequence[str] | None, dataset: str | None) -> tuple[str, ...]:
        if exclude is None:
            return default_exclusions(dataset)
        known = set(names.values())
        unknown = [n for n in exclude if n not in known]
        if unknown:
            raise UserError(f"outlier_exposure.exclude_classes: {', '.join(map(repr, unknown))} "
                            f"not a category of the annotations (categories: {', '.join(sorted(known))})")
        return tuple(exclude)

    @property
    def roots(self) -> tuple[Path, ...]:
        return self.root, self.annotations.parent

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"CocoSource({str(self.root)!r}, instances={len(self._items)}, excluded={self.excluded})"

    def read(self, index: int) -> Cutout:
        """Cutout of instance ``index``: its bounding box, its mask as alpha (a SampleError names a bad file)."""
        file_name, height, width, (x, y, w, h), segm = self._items[index]
        path = self.root / file_name
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except DECODE_ERRORS as exc:
            raise SampleError(f"outlier image {path} cannot be read: {exc}") from None
        if image.shape[:2] != (height, width):
            raise SampleError(f"outlier image {path} is {image.shape[1]}x{image.shape[0]}, its annotation says "
                              f"{width}x{height}")
        x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
        x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
        mask = self._decode(segm, height, width)[y0:y1, x0:x1]
        return Cutout(np.ascontiguousarray(image[y0:y1, x0:x1]), mask.astype(np.float32))

    @staticmethod
    def _decode(segm: Any, height: int, width: int) -> np.ndarray:
        api = _mask_api()  # not kept on the instance: a module does not pickle (DataLoader workers under spawn)
        if isinstance(segm, list):  # polygons
            rle = api.merge(api.frPyObjects(segm, height, width))
        elif isinstance(segm.get("counts"), list):  # uncompressed RLE
            rle = api.frPyObjects(segm, height, width)
        else:  # compressed RLE
            rle = segm
        return np.asarray(api.decode(rle), dtype=bool)

    def sample(self, rng: np.random.Generator, longer_side: int) -> Cutout:
        """An instance drawn uniformly (``longer_side`` unused: the paster resizes)."""
        return self.read(int(rng.integers(len(self._items))))
