"""The per-pixel maps the metrics read, built from class-id labels in one place.

:func:`anomaly_target` is the 1 (anomaly) / 0 (normal) / ``ignore_index`` (left out) map of
:class:`~anomalyseg.metrics.AnomalyMetrics`; :func:`mask_ids` is the known-class label of
:class:`~anomalyseg.metrics.SegmentationMetrics` (anomaly ids mapped to the ignore index). The evaluation, the
datasets' public helper and the panels all call these, so every protocol builds its targets the same way.
Numpy arrays and tensors of any device are accepted; CPU tensors take numpy (:mod:`~anomalyseg.metrics.backend`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import torch

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.metrics.backend import numpy_path

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

#: StreetHazards' anomaly class id (``anomalyseg.data.info.STREETHAZARDS.anomaly_id``; a test keeps them equal).
STREETHAZARDS_ANOMALY_ID = 13


def anomaly_target(
    label: ArrayT,
    anomaly_ids: Iterable[int] = (STREETHAZARDS_ANOMALY_ID,),
    ignore_ids: Iterable[int] = (),
    ignore_index: int = IGNORE_INDEX,
    *,
    void_label: int | None = IGNORE_INDEX,
) -> ArrayT:
    """Anomaly map of ``label``: 1 on ``anomaly_ids``, ``ignore_index`` on ``ignore_ids`` and on ``void_label``,
    0 elsewhere; same type, shape, dtype and device as ``label``.

    Args:
        anomaly_ids: class ids that are anomalies (positives).
        ignore_ids: class ids left out of the evaluation, e.g. ``(3,)`` ("other"); may not be anomaly ids.
        ignore_index: the value written for left-out pixels (what the metrics' ``ignore_index`` skips).
        void_label: label value of void pixels, left out (it wins over an anomaly id); ``None`` counts them
            as normal, as the official StreetHazards per-image code does with label 255.
    """
    anomaly_ids, ignore_ids = tuple(int(i) for i in anomaly_ids), tuple(int(i) for i in ignore_ids)
    if set(anomaly_ids) & set(ignore_ids):
        raise ValueError(f"ids {sorted(set(anomaly_ids) & set(ignore_ids))} are both anomaly and ignored")
    dropped = ignore_ids if void_label is None else (*ignore_ids, int(void_label))
    if isinstance(label, torch.Tensor) and not numpy_path(label):
        out = _isin_torch(label, anomaly_ids).to(label.dtype)
        return out.masked_fill_(_isin_torch(label, dropped), ignore_index) if dropped else out
    lab = label.numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    out_np = _isin_numpy(lab, anomaly_ids).astype(lab.dtype)
    if dropped:
        np.putmask(out_np, _isin_numpy(lab, dropped), ignore_index)
    return torch.from_numpy(out_np) if isinstance(label, torch.Tensor) else out_np


def mask_ids(label: ArrayT, ids: Iterable[int], value: int = IGNORE_INDEX) -> ArrayT:
    """``label`` with every pixel whose id is in ``ids`` set to ``value`` (a copy; same type, dtype, device).

    ``mask_ids(label, anomaly_ids)`` is the known-class target of the segmentation metrics.
    """
    ids = tuple(int(i) for i in ids)
    if isinstance(label, torch.Tensor) and not numpy_path(label):
        return label.masked_fill(_isin_torch(label, ids), value)
    lab = label.numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    out = lab.copy()
    np.putmask(out, _isin_numpy(lab, ids), value)
    return torch.from_numpy(out) if isinstance(label, torch.Tensor) else out


def _isin_numpy(lab: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    """``np.isin`` for a few ids: one comparison per id (no sort, no int64 copy of ``lab``)."""
    out = np.zeros(lab.shape, dtype=bool)
    for i in ids:
        out |= lab == i
    return out


def _isin_torch(label: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    return torch.isin(label, torch.tensor(ids, dtype=label.dtype, device=label.device))
