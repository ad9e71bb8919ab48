"""Leakage guard: training and fitting refuse data whose labels contain the anomaly id, and the test split.

The scan reads label files only (no images), in parallel DataLoader workers, stops at the first anomaly pixel,
and caches a clean result on disk keyed by the label files' paths, sizes and modification times, so the
second run over the same 5,000 labels costs a few stat calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

#: Splits that may never be used to train, fit or choose checkpoints.
FORBIDDEN_SPLITS = ("test",)


def check_split_allowed(split: str, purpose: str = "training") -> None:
    """Refuse the test split for training / fitting / checkpoint selection (one line, names the split)."""
    if str(split).strip().lower() in FORBIDDEN_SPLITS:
        raise UserError(
            f"the '{split}' split holds the anomaly ground truth and is never used for {purpose}; "
            f"use 'train' / 'val'"
        )


def cache_dir() -> Path:
    """``$ANOMALYSEG_CACHE_DIR`` or ``$XDG_CACHE_HOME/anomalyseg`` (default ``~/.cache/anomalyseg``)."""
    env = os.environ.get("ANOMALYSEG_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anomalyseg"


def _label_paths(dataset: Any) -> list[Path] | None:
    """Label files of a StreetHazards-like dataset (``entries[i].label``), through ``Subset`` too."""
    if isinstance(dataset, Subset):
        inner = _label_paths(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    entries = getattr(dataset, "entries", None)
    if entries is None or not all(hasattr(e, "label") for e in entries):
        return None
    return [Path(e.label) for e in entries]


class _LabelCounts(Dataset):
    """Item i -> pixel count per label id (0..255) of label file i, read through the data layer's decoder."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        from anomalyseg.data.io import label_from_raw, read_label_raw

        ids, _ = label_from_raw(read_label_raw(self.paths[i]))
        return np.bincount(ids.ravel(), minlength=256)


class _SampleCounts(Dataset):
    """Fallback for datasets without label files: counts ``dataset[i]["label"]``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> np.ndarray:
        label = torch.as_tensor(self.dataset[i]["label"]).to(torch.int64).clamp(0, 255)
        return torch.bincount(label.reshape(-1), minlength=256).numpy()


def _fingerprint(paths: list[Path], anomaly_id: int) -> str:
    h = hashlib.sha256(f"v2 anomaly_id={anomaly_id}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def scan_labels(
    dataset: Any, split: str, *, anomaly_id: int = 13, purpose: str = "training", workers: int = 0,
    use_cache: bool = True,
) -> np.ndarray:
    """Pixel counts per label id (length 256, index 255 = ignore) over the split, refusing anomaly labels.

    Raises a UserError naming ``split`` (and the first offending file) if any label contains ``anomaly_id``,
    or if ``split`` is the test split. Works on :class:`~anomalyseg.data.StreetHazards` (label files only,
    parallel, cached when clean) and on any dataset of dict samples.
    """
    check_split_allowed(split, purpose)
    paths = _label_paths(dataset)
    cache_file = None
    if paths is not None and use_cache:
        try:
            cache_file = cache_dir() / "leakage" / f"{_fingerprint(paths, anomaly_id)}.json"
        except OSError:  # a label vanished: the dataset will say so itself when it is read
            cache_file = None
        if cache_file is not None and cache_file.is_file():
            try:
                cached = json.loads(cache_file.read_text())
                log.debug("label scan of split %r: cached (%s)", split, cache_file)
                return np.asarray(cached["counts"], dtype=np.int64)
            except (OSError, ValueError, KeyError):
                log.debug("ignoring unreadable cache %s", cache_file)
    source: Dataset = _SampleCounts(dataset) if paths is None else _LabelCounts(paths)
    # own generator: the scan must not advance the global RNG (a cached scan would change the run otherwise)
    loader = DataLoader(source, batch_size=16, num_workers=workers, collate_fn=list,
                        generator=torch.Generator().manual_seed(0))
    total = np.zeros(256, dtype=np.int64)
    seen = 0
    for batch in loader:
        for counts in batch:
            if counts[anomaly_id]:
                where = f" (first in {paths[seen]})" if paths is not None else f" (sample {seen})"
                raise UserError(
                    f"the '{split}' split contains anomaly pixels (label id {anomaly_id}){where}: it cannot be "
                    f"used for {purpose}; anomaly labels belong to the test split only"
                )
            total += counts
            seen += 1
    log.info("label scan: %d labels of split %r, no anomaly id", seen, split)
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"split": split, "labels": seen, "clean": True, "counts": total.tolist()}))
            os.replace(tmp, cache_file)
        except OSError as exc:  # a read-only home must not stop training
            log.debug("cannot cache the label scan: %s", exc)
    return total


def assert_no_anomaly(
    dataset: Any, split: str, *, anomaly_id: int = 13, purpose: str = "training", workers: int = 0,
    use_cache: bool = True,
) -> None:
    """Raise a UserError naming ``split`` if any label of ``dataset`` contains ``anomaly_id`` (see
    :func:`scan_labels`), or if ``split`` is the test split."""
    scan_labels(dataset, split, anomaly_id=anomaly_id, purpose=purpose, workers=workers, use_cache=use_cache)
