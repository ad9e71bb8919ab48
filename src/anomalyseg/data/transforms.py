"""Joint image + label transforms on torchvision.transforms.v2 (labels as ``tv_tensors.Mask``: nearest only).

``TrainTransform`` is the seed's best recipe: a multi-scale *variable* crop (a window of about crop x s,
s ~ U(scale_range), clamped to the image with the crop's aspect ratio, resized to the crop size — small s
zooms in, large s zooms out, and the window always lies inside the image so nothing is ever padded), then
horizontal flip, optional outlier pasting (outlier exposure:
:class:`~anomalyseg.data.outliers.paste.PasteOutliers`, after the geometric steps and before the photometric
ones; its module says why), colour jitter and Gaussian blur, each switchable for ablations. ``EvalTransform``
only resizes the image (optionally) and normalises it; the label stays at native resolution for the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD

#: Default colour jitter strengths (brightness, contrast, saturation, hue).
DEFAULT_JITTER: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.05)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


class ScaleCrop(v2.Transform):
    """Variable-size crop: window of about ``size * s`` (s uniform in ``scale_range``) resized to ``size``.

    The window keeps the aspect ratio of ``size`` and is shrunk to fit inside the image when it would not,
    so the output is never padded. Images are resampled bilinearly (antialiased), masks by nearest neighbour.
    """

    def __init__(self, size: int | Sequence[int], scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        self.size = _pair(size)
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        H, W = v2.query_size(flat_inputs)
        lo, hi = self.scale_range
        s = lo + (hi - lo) * float(torch.rand(()))
        wh, ww = self.size[0] * s, self.size[1] * s
        fit = min(1.0, H / wh, W / ww)
        height, width = max(1, min(H, round(wh * fit))), max(1, min(W, round(ww * fit)))
        top = int(torch.randint(0, H - height + 1, ()))
        left = int(torch.randint(0, W - width + 1, ()))
        return {"top": top, "left": left, "height": height, "width": width}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resized_crop, inpt, **params, size=list(self.size),
                                 interpolation=InterpolationMode.BILINEAR, antialias=True)


def _finish(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[v2.Transform]:
    steps: list[v2.Transform] = [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)]
    if mean is not None and std is not None:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return steps


def _wrap(image: torch.Tensor, label: torch.Tensor) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    if image.ndim != 3 or label.ndim != 2 or tuple(image.shape[-2:]) != tuple(label.shape):
        raise ValueError(f"expected image (C,H,W) and label (H,W) of the same size, got "
                         f"{tuple(image.shape)} and {tuple(label.shape)}")
    return tv_tensors.Image(image), tv_tensors.Mask(label)


class TrainTransform:
    """Training augmentation: ``(image uint8 (3,H,W), label (H,W)) -> (float32 (3,h,w), int64 (h,w))``.

    Args:
        crop_size: output ``(h, w)`` (or one int for a square).
        scale_range: range of the crop scale s; ``None`` or ``(1, 1)`` gives plain random crops of
            ``crop_size`` (shrunk to fit the image).
        hflip: random horizontal flip with probability 0.5.
        color_jitter: ``True`` for :data:`DEFAULT_JITTER`, a (brightness, contrast, saturation, hue) tuple,
            or ``False``.
        blur: Gaussian blur (kernel 5, sigma 0.1..1.5) with probability 0.3; a float sets the probability.
        mean, std: normalisation (``None`` keeps [0, 1] floats).
        paster: a joint transform run after the crop and flip, before colour jitter (outlier exposure:
            :class:`~anomalyseg.data.outliers.paste.PasteOutliers`); ``None``: no pasting.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int] = 512,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: bool | Sequence[float] = True,
        blur: bool | float = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        paster: v2.Transform | None = None,
    ) -> None:
        self.crop_size = _pair(crop_size)
        self.paster = paster
        steps: list[v2.Transform] = [ScaleCrop(self.crop_size, scale_range or (1.0, 1.0))]
        if hflip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        if paster is not None:
            steps.append(paster)
        if color_jitter:
            b, c, s, h = DEFAULT_JITTER if color_jitter is True else tuple(color_jitter)
            steps.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
        if blur:
            p = 0.3 if blur is True else float(blur)
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=p))
        self.pipeline = v2.Compose(steps + _finish(mean, std))

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.pipeline(*_wrap(image, label))
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"TrainTransform({self.pipeline})"


class EvalTransform:
    """Evaluation preprocessing: optional image resize, normalisation; the label is returned untouched.

    Args:
        size: ``None`` (native), ``(h, w)``, or an int (shorter side, aspect kept).
        keep_aspect: with ``(h, w)``, scale to fit inside that box keeping the aspect ratio (``True``) or
            resize to exactly ``(h, w)`` (``False``).
        mean, std: normalisation (``None`` keeps [0, 1] floats).
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        keep_aspect: bool = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        self.size = size
        self.keep_aspect = keep_aspect
        self.pipeline = v2.Compose(_finish(mean, std))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Image size (h, w) this transform produces for an input of ``height x width``."""
        if self.size is None:
            return height, width
        if isinstance(self.size, int):
            f = self.size / min(height, width)
            return max(1, round(height * f)), max(1, round(width * f))
        h, w = _pair(self.size)
        if not self.keep_aspect:
            return h, w
        f = min(h / height, w / width)
        return max(1, round(height * f)), max(1, round(width * f))

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img, _ = _wrap(image, label)
        size = self.output_size(*img.shape[-2:])
        if size != tuple(img.shape[-2:]):
            img = F.resize(img, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        return self.pipeline(img).as_subclass(torch.Tensor), label

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, keep_aspect={self.keep_aspect}, {self.pipeline})"
