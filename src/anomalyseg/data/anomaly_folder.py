"""Real-photo anomaly validation sets in the common "Validation_Dataset" layout, and model-size resizing.

Layout (the PoliTo "Real-Time Anomaly Segmentation for Road Scenes" course package, also how the
SegmentMeIfYouCan and Fishyscapes validation sets are usually redistributed)::

    DATASET/images/N.{png,jpg,webp}      paired by file stem with
    DATASET/labels_masks/N.png           0 = normal, 1 = anomaly, 255 = void (not evaluated)

Road Anomaly's masks mark the anomaly with 2 (no void): the ``road_anomaly`` preset maps 2 -> 1. Samples
have the StreetHazards dict format (``image`` uint8 (3,H,W) without a transform, ``label`` = the 1 / 0 /
255 anomaly target, ``id``, ``image_path``, ``label_path``, ``orig_size``), so the evaluation loop reads
them unchanged with ``anomaly_ids=(1,)``. There are no closed-set class labels (``info.has_class_labels``).

:class:`ModelResize` implements the course / SMIYC-validation protocol "evaluate at the model's
resolution": the image is resized (bilinear, antialiased, like PIL) to the model input size and the mask
to the same size by nearest neighbour (PIL's NEAREST convention: pixel centres).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from anomalyseg.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.data.anomaly_presets import PRESETS as PRESETS  # re-exported (data, benchmarks, tests)
from anomalyseg.data.anomaly_presets import AnomalySetInfo as AnomalySetInfo
from anomalyseg.data.anomaly_presets import available_presets as available_presets
from anomalyseg.data.io import SampleError, read_sample_image, read_sample_label
from anomalyseg.data.samples import Transform, make_sample
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")


def _generic_info(folder: Path, anomaly_value: int) -> AnomalySetInfo:
    return AnomalySetInfo(folder.name, folder.name, folder.name, "user folder", {}, "unknown (user data)",
                          f"0 normal, {anomaly_value} anomaly, 255 void", anomaly_value, None, "any", None, "")


def _stem_key(path: Path) -> tuple[int, int, str]:
    """Numeric stems in numeric order (0, 1, 2, ..., 10), others after them by name."""
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


class AnomalyImageFolder(Dataset):
    """One anomaly validation set in the ``images/`` + ``labels_masks/`` layout.

    Args:
        root: the set's folder (holding ``images/`` and ``labels_masks/``), or the package folder holding
            the preset's folder (``root/RoadAnomaly/...`` for ``preset="road_anomaly"``).
        preset: one of :func:`available_presets`; ``None`` = recognised from the folder name, else generic.
        anomaly_value: mask value of anomaly pixels (default: the preset's, 1 for a generic folder).
        transform: joint ``(image uint8 (3,H,W), label int64 (H,W)) -> (image, label)`` callable, e.g.
            :class:`ModelResize` or :class:`~anomalyseg.data.transforms.EvalTransform`.
    """

    def __init__(self, root: str | Path, preset: str | None = None, anomaly_value: int | None = None,
                 transform: Transform | None = None) -> None:
        if preset is not None and preset not in PRESETS:
            raise UserError(f"unknown anomaly set preset {preset!r}; available: {', '.join(PRESETS)}")
        root = Path(root)
        folder = root
        if preset is not None and not (root / "images").is_dir() and (root / PRESETS[preset].folder).is_dir():
            folder = root / PRESETS[preset].folder
        if not folder.is_dir():
            raise UserError(f"anomaly set folder not found: {folder}")
        if preset is None:
            preset = next((k for k, p in PRESETS.items() if p.folder.lower() == folder.name.lower()), None)
        info = PRESETS[preset] if preset is not None else _generic_info(folder, anomaly_value or 1)
        if anomaly_value is not None and anomaly_value != info.anomaly_value:
            info = replace(info, anomaly_value=int(anomaly_value))
        if not 0 < info.anomaly_value < IGNORE_INDEX:
            raise UserError(f"anomaly_value must be in 1..254, got {info.anomaly_value}")
        self.root, self.folder, self.preset, self.info = root, folder, preset, info
        self.transform = transform
        self.entries = self._pair(folder)
        if info.num_images is not None and len(self.entries) != info.num_images:
            log.warning("%s: %d images in %s, the full validation set has %d", info.name, len(self.entries),
                        folder, info.num_images)
        lut = np.full(256, -1, dtype=np.int64)
        lut[[0, info.anomaly_value, IGNORE_INDEX]] = [0, 1, IGNORE_INDEX]
        self._lut = lut
        self.num_read_errors = 0  # read failures raise (no skip mode): kept for the engine's bookkeeping

    @staticmethod
    def _pair(folder: Path) -> list[tuple[str, Path, Path]]:
        images_dir, masks_dir = folder / "images", folder / "labels_masks"
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise UserError(f"{folder} is not an anomaly set folder: {d.name}/ is missing "
                                "(expected images/N.{png,jpg,webp} and labels_masks/N.png)")
        images: dict[str, Path] = {}
        for path in sorted(images_dir.iterdir(), key=_stem_key):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            if path.stem in images:
                raise UserError(f"two images share the stem {path.stem!r}: {images[path.stem].name} and {path.name}")
            images[path.stem] = path
        if not images:
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {images_dir}")
        masks = {p.stem: p for p in masks_dir.glob("*.png")}
        lonely = [s for s in images if s not in masks]
        if lonely:
            shown = ", ".join(images[s].name for s in lonely[:3]) + (f" (+{len(lonely) - 3} more)" if len(lonely) > 3
                                                                    else "")
            raise UserError(f"{len(lonely)} image(s) in {images_dir} have no mask labels_masks/STEM.png: {shown}")
        extra = sorted(set(masks) - set(images))
        if extra:
            log.warning("%d mask(s) in %s have no image and are ignored (e.g. %s.png)", len(extra), masks_dir, extra[0])
        return [(stem, path, masks[stem]) for stem, path in images.items()]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"AnomalyImageFolder({self.info.key!r}, samples={len(self)}, folder={str(self.folder)!r})"

    @property
    def ids(self) -> list[str]:
        """Sample ids (file stems) in order."""
        return [e[0] for e in self.entries]

    def read_target(self, index: int) -> np.ndarray:
        """The 1 / 0 / 255 anomaly target ``(H, W)`` int64 of sample ``index``; other mask values are an error."""
        path = self.entries[index][2]
        raw = read_sample_label(path, "mask")
        if raw.dtype == np.uint8:
            target = self._lut[raw]
        else:  # 16-bit / int masks: values outside 0..255 are unexpected too
            raw = raw.astype(np.int64)
            target = np.where((raw >= 0) & (raw <= 255), self._lut[np.clip(raw, 0, 255)], -1)
        if (target < 0).any():
            bad = sorted(int(v) for v in np.unique(raw[target < 0]))[:6]
            hint = (" (Road Anomaly marks anomalies with 2: use preset 'road_anomaly' or anomaly_value=2)"
                    if 2 in bad and self.info.anomaly_value != 2 else "")
            raise SampleError(f"unexpected mask values {bad} in {path}; expected 0, {self.info.anomaly_value} "
                              f"(anomaly) and 255{hint}")
        return target

    def pixel_counts(self) -> dict[int, int]:
        """Pixels per target value (0 normal, 1 anomaly, 255 void) over every mask (masks only are read)."""
        counts = np.zeros(256, dtype=np.int64)
        for i in range(len(self)):
            counts += np.bincount(self.read_target(i).ravel(), minlength=256)
        return {v: int(counts[v]) for v in (0, 1, IGNORE_INDEX)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sid, image_path, mask_path = self.entries[index]
        image = read_sample_image(image_path)
        return make_sample(image, self.read_target(index), sample_id=sid, image_path=image_path,
                           label_path=mask_path, transform=self.transform, what="mask")


def open_anomaly_sets(root: str | Path, presets: Sequence[str] | None = None,
                      transform: Transform | None = None) -> dict[str, AnomalyImageFolder]:
    """Every preset set found under a package folder (``root/RoadAnomaly``, ``root/fs_static``, ...).

    With ``presets`` given, each must be there (one-line error otherwise); without, absent ones are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"anomaly sets folder not found: {root}")
    wanted = list(presets) if presets is not None else list(PRESETS)
    sets: dict[str, AnomalyImageFolder] = {}
    for key in wanted:
        if key not in PRESETS:
            raise UserError(f"unknown anomaly set preset {key!r}; available: {', '.join(PRESETS)}")
        if not (root / PRESETS[key].folder).is_dir():
            if presets is not None:
                raise UserError(f"{PRESETS[key].name}: folder {root / PRESETS[key].folder} not found")
            log.info("%s not found under %s: skipped", PRESETS[key].folder, root)
            continue
        sets[key] = AnomalyImageFolder(root, key, transform=transform)
    if not sets:
        folders = ", ".join(p.folder for p in PRESETS.values())
        raise UserError(f"no anomaly set under {root} (expected folders {folders})")
    return sets


# ---------------------------------------------------------------------------------------------------
# Model-size evaluation ("--eval-at model")
# ---------------------------------------------------------------------------------------------------
def resize_pair(image: torch.Tensor, label: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image ``(3, H, W)`` (bilinear, antialiased as PIL) and its label ``(H, W)`` (nearest, PIL's
    pixel-centre convention, so no label value is invented) to ``size`` = (h, w)."""
    h, w = int(size[0]), int(size[1])
    if tuple(image.shape[-2:]) != (h, w):
        image = TF.resize(image, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if tuple(label.shape[-2:]) != (h, w):
        label = F.interpolate(label[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].to(label.dtype)
    return image, label


class ModelResize:
    """``(image uint8 (3,H,W), label (H,W)) -> (float32 image (3,h,w) normalised, label (h,w))`` at the model
    size: the "evaluate at the model's resolution" protocol (course / SMIYC validation). ``mean``/``std``
    default to ImageNet (what every model here takes; models trained without normalisation convert inside)."""

    def __init__(self, size: Sequence[int], mean: Sequence[float] | None = IMAGENET_MEAN,
                 std: Sequence[float] | None = IMAGENET_STD) -> None:
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise UserError(f"model input size must be (H, W) > 0, got {tuple(size)}")
        self.size = (int(size[0]), int(size[1]))
        self.mean, self.std = mean, std

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = resize_pair(image, label, self.size)
        out = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if self.mean is not None and self.std is not None:
            out = TF.normalize(out, list(self.mean), list(self.std))
        return out, label

    def __repr__(self) -> str:
        return f"ModelResize(size={self.size}, mean={self.mean}, std={self.std})"


_EVAL_AT = ("label", "model")


def check_eval_at(eval_at: str) -> str:
    """``"label"`` (logits upsampled to the mask's native size) or ``"model"`` (image and mask resized to the
    model input size); a one-line error otherwise."""
    if eval_at not in _EVAL_AT:
        raise UserError(f"eval_at must be one of {', '.join(_EVAL_AT)}, got {eval_at!r}")
    return eval_at


def eval_at_transform(eval_at: str, size: Sequence[int] | None) -> Transform:
    """The dataset transform of an evaluation resolution, for a model whose input size is ``size`` (H, W):

    * ``"model"``: :class:`ModelResize` (image and mask at ``size``; the loop then scores at the input size);
    * ``"label"``: the image alone resized to exactly ``size`` (no aspect fitting: the protocol stretches
      1920x1080 to 1024x512 like every other image), the mask kept native (the loop upsamples the logits).
      ``size=None`` keeps the image native too.
    """
    from anomalyseg.data.transforms import EvalTransform

    if check_eval_at(eval_at) == "model":
        if size is None:
            raise UserError("evaluating at the model resolution needs the model input size: give size=HxW "
                            "in the input contract")
        return ModelResize(size)
    return EvalTransform(size=None if size is None else (int(size[0]), int(size[1])), keep_aspect=False)

