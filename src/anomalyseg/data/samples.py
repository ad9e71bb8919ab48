"""The sample dict every dataset returns and batching such samples.

``anomaly_target`` (the 1 / 0 / ignore map the metrics read) is defined in :mod:`anomalyseg.metrics.targets`
and re-exported here for ``anomalyseg.data.anomaly_target``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalyseg.data.io import check_same_size
from anomalyseg.metrics.targets import anomaly_target as anomaly_target  # public as anomalyseg.data.anomaly_target

#: Joint ``(image uint8 (3,H,W), label int64 (H,W)) -> (image, label)`` callable of the datasets.
Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_STACKED = ("image", "label")


def make_sample(image: np.ndarray, label: np.ndarray, *, sample_id: str, image_path: str | Path,
                label_path: str | Path, transform: Transform | None = None, what: str = "label") -> dict[str, Any]:
    """The sample every dataset returns: ``{"image", "label", "id", "image_path", "label_path", "orig_size"}``.

    ``image`` ``(H, W, 3)`` uint8 and ``label`` ``(H, W)`` int64 (class ids or an anomaly target) must have
    the same size (a SampleError otherwise); ``transform`` maps the ``(3, H, W)`` uint8 / ``(H, W)`` tensors.
    """
    check_same_size(image, label, image_path, label_path, what)
    img_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    lab_t = torch.from_numpy(label)
    if transform is not None:
        img_t, lab_t = transform(img_t, lab_t)
    return {"image": img_t, "label": lab_t, "id": sample_id, "image_path": str(image_path),
            "label_path": str(label_path), "orig_size": (int(label.shape[0]), int(label.shape[1]))}


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``image`` and ``label`` tensors of a list of samples; other keys become lists.

    Use as ``DataLoader(dataset, collate_fn=collate_samples)``. Images of different sizes cannot be stacked:
    use a transform with a fixed output size, or batch size 1 at native resolution.
    """
    if not samples:
        raise ValueError("collate_samples got an empty batch")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in _STACKED and isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                ids = [s.get("id") for s in samples]
                raise ValueError(f"cannot stack {key!r} of different shapes {sorted(shapes)} (samples {ids}); "
                                 "resize to one size or use batch size 1")
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
