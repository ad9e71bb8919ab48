"""Score maps on disk: the ``--save-scores`` export and the cache that component metrics read in their second pass.

Component metrics binarise each map at a threshold that comes from the pooled pixel curve of the whole set,
known only after the pass; instead of a second forward pass (as slow as the first), the maps of the scorers
that need components are cached as float32 ``.npy`` during the pass and read back one image at a time, so
memory follows the image, never the dataset (disk: 4 bytes per pixel per scorer, removed afterwards).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalyseg.constants import detect
from anomalyseg.errors import UserError
from anomalyseg.files import check_output

log = logging.getLogger(__name__)

TARGETS = "_target"  # folder of the cached anomaly targets (uint8 1 / 0 / 255)


def safe_id(sample_id: Any, position: int) -> str:
    """A relative file path for a sample id (``t5/12`` stays nested; odd characters become ``_``)."""
    text = str(sample_id) if sample_id is not None else f"{position:06d}"
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in text.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or f"{position:06d}"


def check_export_dir(path: str | Path, force: bool) -> Path:
    """``--save-scores DIR``: absent or empty, or ``force``; a file is a one-line error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--save-scores {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"--save-scores {path} is not empty (choose another folder, or --force to write into it)")
    return check_output(path, "--save-scores", folder=True)


class ScoreWriter:
    """A ``run_evaluation`` sink that writes ``root/<scorer>/<id>.npy`` (float32, evaluation resolution) for
    the scorers in ``names`` (all when None), and with ``targets`` the 1 / 0 / 255 target as ``_target/<id>.npy``."""

    def __init__(self, root: str | Path, names: Iterable[str] | None = None, *, targets: bool = False) -> None:
        self.root = Path(root)
        self.names = None if names is None else set(names)
        self.targets = targets
        self.written: list[str] = []  # ids written by this process, in order

    def __call__(self, ids: list[Any], scores: dict[str, torch.Tensor], target: torch.Tensor) -> None:
        for i, sample_id in enumerate(ids):
            rel = safe_id(sample_id, len(self.written))
            for name, score in scores.items():
                if self.names is None or name in self.names:
                    _save(self.root / name / f"{rel}.npy", score[i].float().cpu().numpy())
            if self.targets:
                _save(self.root / TARGETS / f"{rel}.npy", target[i].cpu().numpy().astype(np.uint8))
            self.written.append(rel)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        np.save(path, array)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


class SmiycWriter:
    """A ``run_evaluation`` sink writing the SegmentMeIfYouCan benchmark's own output layout:
    ``root/anomaly_p/<scorer>/<dset_name>/<id>.hdf5``, one float16 map under the key ``value`` (gzip level 9),
    as its ``evaluation.py`` ``save_output`` writes and its metrics read (``ChannelLoaderHDF5``); higher = more
    anomalous. The benchmark upsamples maps smaller than the image, so ``--eval-at label`` gives its native size.
    Needs ``h5py`` (``pip install "anomalyseg[smiyc]"``)."""

    def __init__(self, root: str | Path, dset_name: str) -> None:
        try:
            import h5py  # noqa: F401  (checked here, before any forward pass)
        except ImportError:
            raise UserError('--save-scores-format smiyc needs h5py: pip install "anomalyseg[smiyc]"') from None
        self.root, self.dset_name = Path(root), dset_name
        self.written: list[str] = []

    def __call__(self, ids: list[Any], scores: dict[str, torch.Tensor], target: torch.Tensor) -> None:
        import h5py

        for i, sample_id in enumerate(ids):
            rel = safe_id(sample_id, len(self.written))
            for name, score in scores.items():
                path = self.root / "anomaly_p" / name / self.dset_name / f"{rel}.hdf5"
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with h5py.File(path, "w") as fh:
                        fh.create_dataset("value", data=score[i].float().cpu().numpy().astype(np.float16),
                                          compression=9)
                except OSError as exc:
                    raise UserError(f"cannot write {path}: {exc}") from None
            self.written.append(rel)


SCORE_FORMATS = ("npy", "smiyc")


class ComponentCache:
    """Cached maps for the component pass (a temporary folder, removed by :meth:`close`)."""

    def __init__(self, names: Sequence[str], parent: str | Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="anomalyseg-components-", dir=parent))
        self.writer = ScoreWriter(self.dir, names, targets=True)

    def maps(self, name: str) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """``(score, target)`` of every cached image of scorer ``name``, one at a time."""
        for rel in self.writer.written:
            yield np.load(self.dir / name / f"{rel}.npy"), np.load(self.dir / TARGETS / f"{rel}.npy")

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Sinks:
    """Several sinks as one."""

    def __init__(self, sinks: Iterable[Any]) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def __call__(self, ids: list[Any], scores: dict[str, torch.Tensor], target: torch.Tensor) -> None:
        for sink in self.sinks:
            sink(ids, scores, target)


def component_pass(cache: ComponentCache, thresholds: dict[str, float], track: str) -> dict[str, dict[str, Any]]:
    """SegmentMeIfYouCan component metrics of every cached scorer, its map binarised by
    :func:`anomalyseg.constants.detect` (``score > threshold``), summed over this process's images, then over
    the ranks."""
    from anomalyseg.metrics.components import ComponentMetrics

    out: dict[str, dict[str, Any]] = {}
    for name, threshold in thresholds.items():
        acc = ComponentMetrics(track)
        for score, target in cache.maps(name):
            acc.update(detect(score, threshold), target)
        acc.sync()
        out[name] = {"threshold": float(threshold), **acc.compute()}
    return out
