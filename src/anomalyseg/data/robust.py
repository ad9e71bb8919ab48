"""The policy for unreadable samples, shared by every dataset that trains (StreetHazards, Cityscapes).

A read that fails is retried (transient I/O errors: network file systems, files being written); if it still
fails, ``on_error="skip"`` (training) logs the path, counts the event in ``num_read_errors`` (summed across
DataLoader workers) and returns the next readable sample instead, at most :data:`MAX_REPLACEMENTS` tries (a dead
disk must not loop), while ``on_error="raise"`` (evaluation) raises the one-line :class:`SampleError` naming
the file. Own code: a retry library would not give the skip-and-count half, which is the part that matters.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from torch.utils.data import Dataset

from anomalyseg.data.io import DECODE_ERRORS, SampleError, SharedCounter
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

#: How many different samples ``on_error="skip"`` tries before giving up (a dead disk must not loop).
MAX_REPLACEMENTS = 16


class RobustSamples(Dataset):
    """Base of file-backed datasets: ``dataset[i]`` = :meth:`build_sample` of :meth:`read_raw` (retried),
    under the ``on_error`` policy.

    Subclasses call :meth:`_init_read_policy` in ``__init__`` and implement ``__len__``, :meth:`read_raw`
    (decode sample ``i``, raising :class:`SampleError` naming the file), :meth:`build_sample`,
    :meth:`sample_id` and :meth:`sample_path` (the file named when every replacement failed too).
    """

    def _init_read_policy(self, on_error: OnError, retries: int, retry_wait: float) -> None:
        """Validate and store the policy: ``retries`` extra attempts, ``retry_wait`` s before the first (doubling)."""
        if on_error not in ("raise", "skip"):
            raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error: OnError = on_error
        self.retries = max(0, int(retries))
        self.retry_wait = retry_wait
        self._read_errors = SharedCounter()

    @property
    def num_read_errors(self) -> int:
        """Samples replaced because they could not be read (``on_error="skip"``), all workers included."""
        return self._read_errors.value

    def read_raw(self, index: int) -> Any:
        """Decode sample ``index`` once (no retry); a :class:`SampleError` naming the file when it cannot."""
        raise NotImplementedError

    def build_sample(self, index: int, raw: Any) -> dict[str, Any]:
        """The dict sample of ``index`` from what :meth:`read_raw` returned."""
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        """The id of sample ``index`` (logged when it is skipped)."""
        raise NotImplementedError

    def sample_path(self, index: int) -> str:
        """The file that names sample ``index`` in messages (its image)."""
        raise NotImplementedError

    def give_up_hint(self) -> str:
        """Appended to the message raised when no replacement could be read either (e.g. a command to run)."""
        return ""

    def _read_with_retries(self, index: int) -> Any:
        wait = self.retry_wait
        for attempt in range(self.retries + 1):
            try:
                return self.read_raw(index)
            except SampleError as exc:
                transient = isinstance(exc.__cause__, DECODE_ERRORS)
                if not transient or attempt == self.retries:
                    raise
                log.debug("retrying %s after: %s", self.sample_path(index), exc)
                time.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)  # type: ignore[arg-type]
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for step in range(min(MAX_REPLACEMENTS, n)):
            current = (index + step) % n
            try:
                raw = self._read_with_retries(current)
            except SampleError as exc:
                if self.on_error == "raise":
                    raise
                self._read_errors.add(1)
                log.warning("skipping unreadable sample %s (replaced by the next one): %s",
                            self.sample_id(current), exc)
                continue
            return self.build_sample(current, raw)
        raise SampleError(f"{min(MAX_REPLACEMENTS, n)} consecutive samples from {self.sample_path(index)} on "
                          f"could not be read{self.give_up_hint()}")
