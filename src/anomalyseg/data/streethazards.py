"""The StreetHazards dataset as a torch ``Dataset`` of dict samples, with a policy for unreadable files.

A read that fails is retried (transient I/O errors: network file systems, files being written); if it still
fails, ``on_error="skip"`` (training) logs the path, counts the event in ``num_read_errors`` (summed across
DataLoader workers) and returns another sample instead, while ``on_error="raise"`` (evaluation) raises a
:class:`SampleError` naming the path.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.data.info import STREETHAZARDS, DatasetInfo
from anomalyseg.data.io import (
    DECODE_ERRORS,
    SampleError,
    SharedCounter,
    check_same_size,
    label_from_raw,
    read_sample_image,
    read_sample_label,
)
from anomalyseg.data.layout import Entry, list_samples
from anomalyseg.data.samples import Transform, make_sample
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

#: How many different samples ``on_error="skip"`` tries before giving up (a dead disk must not loop).
MAX_REPLACEMENTS = 16


class StreetHazards(Dataset):
    """StreetHazards ``train`` / ``val`` / ``test`` split as dict samples.

    Args:
        root: folder where the official tarballs were extracted (holding ``streethazards_train/`` and/or
            ``streethazards_test/``), or the inner ``train/`` / ``test/`` folder.
        split: ``"train"``, ``"val"`` (``"validation"``) or ``"test"``.
        transform: joint ``(image uint8 (3,H,W), label int64 (H,W)) -> (image, label)`` callable, e.g.
            :class:`~anomalyseg.data.transforms.TrainTransform`.
        on_error: ``"raise"`` or ``"skip"`` for samples that cannot be read after ``retries`` retries.
        ignore_index: id given to label values outside 1..14.
        retries: extra read attempts before a failure counts.
        retry_wait: seconds before the first retry (doubles each time).

    A sample is ``{"image", "label", "id", "image_path", "label_path", "orig_size"}``; labels are file value
    minus one (0..12 known classes, 13 anomaly) and ``ignore_index`` elsewhere.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        on_error: OnError = "raise",
        ignore_index: int = IGNORE_INDEX,
        retries: int = 2,
        retry_wait: float = 0.05,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        listing = list_samples(root, split)
        self.root = Path(root)
        self.split = listing.split
        self.split_dir = listing.split_dir
        self.source = listing.source
        self.entries: list[Entry] = listing.entries
        self.num_listed = listing.num_listed
        self.transform = transform
        self.on_error = on_error
        self.ignore_index = ignore_index
        self.retries = max(0, int(retries))
        self.retry_wait = retry_wait
        self.info: DatasetInfo = STREETHAZARDS
        self._read_errors = SharedCounter()
        self._ignored_pixels = SharedCounter()

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (f"StreetHazards(split={self.split!r}, samples={len(self)}, dir={str(self.split_dir)!r}, "
                f"on_error={self.on_error!r})")

    @property
    def ids(self) -> list[str]:
        """Sample ids in order (e.g. ``"t5/1"``)."""
        return [e.id for e in self.entries]

    @property
    def num_read_errors(self) -> int:
        """Samples replaced because they could not be read (``on_error="skip"``), all workers included."""
        return self._read_errors.value

    @property
    def num_ignored_pixels(self) -> int:
        """Label pixels read so far whose value was outside 1..14 (mapped to ``ignore_index``)."""
        return self._ignored_pixels.value

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode sample ``index`` once: ``(image (H,W,3) uint8, raw label values (H,W))``; no retry."""
        entry = self.entries[index]
        image, raw = read_sample_image(entry.image), read_sample_label(entry.label)
        check_same_size(image, raw, entry.image, entry.label)
        return image, raw

    def _read_with_retries(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        wait = self.retry_wait
        for attempt in range(self.retries + 1):
            try:
                return self.read_raw(index)
            except SampleError as exc:
                transient = isinstance(exc.__cause__, DECODE_ERRORS)
                if not transient or attempt == self.retries:
                    raise
                log.debug("retrying %s after: %s", self.entries[index].image, exc)
                time.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")

    def _make_sample(self, index: int, image: np.ndarray, raw: np.ndarray) -> dict[str, Any]:
        entry = self.entries[index]
        ids, n_bad = label_from_raw(raw, self.ignore_index)
        if n_bad:
            self._ignored_pixels.add(n_bad)
            log.debug("%d label pixels outside 1..14 set to %d in %s", n_bad, self.ignore_index, entry.label)
        return make_sample(image, ids, sample_id=entry.id, image_path=entry.image, label_path=entry.label,
                           transform=self.transform)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        for step in range(min(MAX_REPLACEMENTS, len(self))):
            current = (index + step) % len(self)
            try:
                image, raw = self._read_with_retries(current)
            except SampleError as exc:
                if self.on_error == "raise":
                    raise
                self._read_errors.add(1)
                log.warning("skipping unreadable sample %s (replaced by the next one): %s",
                            self.entries[current].id, exc)
                continue
            return self._make_sample(current, image, raw)
        raise SampleError(
            f"{MAX_REPLACEMENTS} consecutive samples from {self.entries[index].image} on could not be read; "
            f"run 'anomalyseg data check --root {self.root}'"
        )
