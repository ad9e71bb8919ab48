"""The StreetHazards dataset as a torch ``Dataset`` of dict samples.

Unreadable files follow the ``on_error`` policy of :class:`~anomalyseg.data.robust.RobustSamples` (retry,
then skip and count for training or raise for evaluation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.data.info import STREETHAZARDS, DatasetInfo
from anomalyseg.data.io import SharedCounter, check_same_size, label_from_raw, read_sample_image, read_sample_label
from anomalyseg.data.layout import Entry, list_samples
from anomalyseg.data.robust import OnError, RobustSamples
from anomalyseg.data.samples import Transform, make_sample

log = logging.getLogger(__name__)


class StreetHazards(RobustSamples):
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
        self._init_read_policy(on_error, retries, retry_wait)
        listing = list_samples(root, split)
        self.root = Path(root)
        self.split = listing.split
        self.split_dir = listing.split_dir
        self.source = listing.source
        self.entries: list[Entry] = listing.entries
        self.num_listed = listing.num_listed
        self.transform = transform
        self.ignore_index = ignore_index
        self.info: DatasetInfo = STREETHAZARDS
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
    def num_ignored_pixels(self) -> int:
        """Label pixels read so far whose value was outside 1..14 (mapped to ``ignore_index``)."""
        return self._ignored_pixels.value

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode sample ``index`` once: ``(image (H,W,3) uint8, raw label values (H,W))``; no retry."""
        entry = self.entries[index]
        image, raw = read_sample_image(entry.image), read_sample_label(entry.label)
        check_same_size(image, raw, entry.image, entry.label)
        return image, raw

    def build_sample(self, index: int, raw: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
        """The dict sample of ``index`` from its decoded ``(image, raw label)`` (counts ignored label pixels)."""
        entry = self.entries[index]
        image, values = raw
        ids, n_bad = label_from_raw(values, self.ignore_index)
        if n_bad:
            self._ignored_pixels.add(n_bad)
            log.debug("%d label pixels outside 1..14 set to %d in %s", n_bad, self.ignore_index, entry.label)
        return make_sample(image, ids, sample_id=entry.id, image_path=entry.image, label_path=entry.label,
                           transform=self.transform)

    def sample_id(self, index: int) -> str:
        """Id of sample ``index`` (e.g. ``"t5/1"``)."""
        return self.entries[index].id

    def sample_path(self, index: int) -> str:
        """Image file of sample ``index``."""
        return str(self.entries[index].image)

    def give_up_hint(self) -> str:
        """Where to look when several files in a row are unreadable."""
        return f"; run 'anomalyseg data check --root {self.root}'"
