"""Run directories (never overwritten), the run's log file, and TensorBoard logging.

Layout of ``<out_dir>/<run_name>/``: ``config.yaml`` (resolved), ``train.log``, ``metrics.jsonl`` (one line
per validation), ``checkpoints/{last,best}.pt``, ``tb/`` (TensorBoard events), and ``.lock`` while a ``train``
runs in it (:func:`lock_run_dir`: a second ``train --resume`` of the same run is refused).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalyseg.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.data.palette import colorize as colorize_ids
from anomalyseg.errors import UserError
from anomalyseg.files import FileLock, remove_stale_tmp

#: The lock file of a run folder, held by the process training in it (PID, host, start time).
RUN_LOCK = ".lock"

log = logging.getLogger(__name__)


def create_run_dir(out_dir: str | Path, run_name: str | None, default_stem: str) -> Path:
    """Make a NEW folder ``out_dir/run_name`` (or ``<default_stem>_<timestamp>``).

    An existing folder is never reused: ``_1``, ``_2``, ... is appended (``os.mkdir`` is atomic, so two
    runs started at once get different folders).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    stem = run_name or f"{default_stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in stem or stem in (".", ".."):
        raise UserError(f"run_name {stem!r} must be a plain folder name")
    for i in range(10_000):
        candidate = out / (stem if i == 0 else f"{stem}_{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        if i:
            log.info("run folder %s exists; this run writes to %s", out / stem, candidate)
        return candidate
    raise UserError(f"no free run folder name for {out / stem}")


def lock_run_dir(run_dir: Path) -> FileLock:
    """Lock ``run_dir`` for one training process (``<run>/.lock``) and remove the temporary files that dead
    writers left in it (a run killed while saving a checkpoint). A lock of a dead process is taken over with a
    warning; a live one is a :class:`UserError` naming its PID. Release the returned lock when done."""
    lock = FileLock(run_dir / RUN_LOCK, f"run folder {run_dir}")
    lock.acquire()
    for folder in (run_dir, run_dir / "checkpoints"):
        remove_stale_tmp(folder)
    return lock


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Copy the ``anomalyseg`` logger's records into ``run_dir/train.log`` (appending on resume)."""
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("anomalyseg")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger("anomalyseg").removeHandler(handler)
    handler.close()


def colorize(ids: torch.Tensor, palette: Sequence[Sequence[int]], ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``(H,W)`` class ids -> ``(3,H,W)`` uint8 colours (:func:`anomalyseg.data.palette.colorize`, as a tensor)."""
    return torch.from_numpy(colorize_ids(ids.detach().cpu().numpy(), palette, ignore_index)).permute(2, 0, 1)


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """ImageNet-normalised ``(3,H,W)`` float -> uint8 for display."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((image.float().cpu() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)


def prediction_panel(sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor], palette: Sequence[Sequence[int]],
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """image | ground truth | prediction side by side at label resolution, ``(3,H,3W)`` uint8 for TensorBoard."""
    image, label, pred = sample
    img = denormalize(image, mean, std)
    if img.shape[-2:] != label.shape[-2:]:
        img = torch.nn.functional.interpolate(img[None].float(), size=label.shape[-2:], mode="bilinear",
                                              align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return torch.cat([img, colorize(label, palette), colorize(pred, palette)], dim=2)


class RunLogger:
    """TensorBoard scalars / images and ``metrics.jsonl`` for rank 0; a no-op object on other ranks."""

    def __init__(self, run_dir: Path | None, purge_step: int | None = None) -> None:
        self.run_dir = run_dir
        self.writer = None
        if run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if value is not None and np.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def validation(self, record: Mapping[str, Any], class_names: Sequence[str], step: int) -> None:
        """mIoU + per-class IoU to TensorBoard, the whole record to ``metrics.jsonl``."""
        if self.writer is None or self.run_dir is None:
            return
        self.scalars({"val/miou": record["miou"], "val/pixel_accuracy": record.get("pixel_accuracy")}, step)
        for name, iou in zip(class_names, record.get("per_class_iou", [])):
            self.scalars({f"val_iou/{name}": iou}, step)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), allow_nan=True) + "\n")

    def images(self, tag: str, panels: Sequence[torch.Tensor], step: int) -> None:
        """Each panel ``(3,H,W)`` uint8 (image | truth | prediction stacked side by side)."""
        if self.writer is not None:
            for i, panel in enumerate(panels):
                self.writer.add_image(f"{tag}/{i}", panel, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
