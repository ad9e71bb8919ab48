"""``anomalyseg data check``: decode every image and label of a split, in parallel, and name every bad file.

A file is bad when it cannot be decoded, when image and label sizes differ (or differ from the size the
``.odgt`` declares), when label values fall outside 1..14, or when an anomaly value (14) appears outside the
test split. Listed samples missing from disk and images without labels are reported too.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.data.io import DECODE_ERRORS, SampleError, probe_image, read_label_raw
from anomalyseg.data.layout import Entry, list_split
from anomalyseg.errors import UserError
from anomalyseg.progress import progress_bar

_NUM_VALUES = STREETHAZARDS.anomaly_id + 1  # 14 valid file values: 1..14


@dataclass
class FileResult:
    """Outcome for one sample: problems (empty when fine) and pixel counts per raw value 0..255."""

    id: str
    problems: list[tuple[str, str]]  # (path, what is wrong)
    counts: np.ndarray | None = None


@dataclass
class SplitReport:
    """Everything ``data check`` found in one split."""

    split: str
    source: str
    num_listed: int
    num_checked: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path or id, reason)
    value_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    images_with_anomaly: int = 0
    per_file: dict[str, np.ndarray] = field(default_factory=dict)  # id -> counts of values 0..14+

    @property
    def class_pixels(self) -> np.ndarray:
        """Pixels per class id 0..13 (file values 1..14)."""
        return self.value_pixels[1: 1 + _NUM_VALUES]

    @property
    def out_of_range_pixels(self) -> int:
        return int(self.value_pixels.sum() - self.class_pixels.sum())

    @property
    def class_share(self) -> np.ndarray:
        """Share (0..1) of all valid label pixels per class id 0..13."""
        total = self.class_pixels.sum()
        return self.class_pixels / total if total else np.zeros(_NUM_VALUES)


def check_entry(entry: Entry, split: str) -> FileResult:
    """Decode one sample and list its problems."""
    problems: list[tuple[str, str]] = []
    counts = None
    try:
        image_hw: tuple[int, int] | None = probe_image(entry.image)
    except DECODE_ERRORS as exc:
        problems.append((str(entry.image), f"cannot decode image ({exc})"))
        image_hw = None
    try:
        raw = read_label_raw(entry.label)
    except (*DECODE_ERRORS, SampleError) as exc:
        problems.append((str(entry.label), f"cannot decode label ({exc})"))
        raw = None
    if raw is not None:
        counts = np.bincount(raw.ravel(), minlength=256)[:256] if raw.dtype == np.uint8 else np.bincount(
            np.clip(raw.ravel(), 0, 255).astype(np.int64), minlength=256)
        bad_values = raw.size - int(counts[1: 1 + _NUM_VALUES].sum())
        if bad_values:
            found = sorted({int(v) for v in np.flatnonzero(counts)} - set(range(1, 1 + _NUM_VALUES)))
            problems.append((str(entry.label), f"{bad_values} pixels with values outside 1..{_NUM_VALUES} {found}"))
        if split != "test" and counts[_NUM_VALUES]:
            problems.append((str(entry.label), f"anomaly value {_NUM_VALUES} in the {split} split "
                                               f"({int(counts[_NUM_VALUES])} pixels)"))
    if image_hw is not None and raw is not None and image_hw != raw.shape:
        problems.append((str(entry.image), f"image is {image_hw[1]}x{image_hw[0]} but label "
                                           f"{entry.label} is {raw.shape[1]}x{raw.shape[0]}"))
    shape = raw.shape if raw is not None else image_hw
    if shape is not None and entry.width and entry.height and (entry.height, entry.width) != tuple(shape):
        problems.append((str(entry.label), f"size {shape[1]}x{shape[0]} differs from the listed "
                                           f"{entry.width}x{entry.height}"))
    return FileResult(entry.id, problems, counts)


def _check_task(args: tuple[Entry, str]) -> FileResult:
    return check_entry(*args)


def check_split(root: str | Path, split: str, workers: int | None = None, progress: bool = True,
                keep_per_file: bool = False) -> SplitReport:
    """Decode every sample of ``split`` with ``workers`` processes (0/1: in this process)."""
    listing = list_split(root, split)
    report = SplitReport(listing.split, listing.source, listing.num_listed)
    report.bad.extend(listing.problems)
    for entry in listing.missing:
        report.bad.append((str(entry.image), "listed but missing on disk"))
    workers = (os.cpu_count() or 1) if workers is None else workers
    tasks = [(e, listing.split) for e in listing.entries]
    bar = progress_bar(total=len(tasks), desc=f"check {listing.split}", unit="img", disable=not progress, leave=False)
    if workers <= 1 or len(tasks) < 2:
        results = map(_check_task, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(min(workers, len(tasks)))
        results = pool.map(_check_task, tasks, chunksize=max(1, min(32, len(tasks) // (4 * workers))))
    try:
        for res in results:
            bar.update(1)
            report.num_checked += 1
            report.bad.extend(res.problems)
            if res.counts is not None:
                report.value_pixels += res.counts
                report.images_with_anomaly += int(res.counts[_NUM_VALUES] > 0)
                if keep_per_file:
                    report.per_file[res.id] = res.counts[: 1 + _NUM_VALUES].copy()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report


def format_report(report: SplitReport, max_bad: int = 200) -> str:
    """Human-readable summary: counts, per-class pixel %, and the bad files."""
    layout = STREETHAZARDS.splits[report.split]
    lines = [f"{report.split}: {report.num_checked} samples decoded, {report.num_listed} listed "
             f"({report.source}; the official split has {layout.expected_size}), {len(report.bad)} problems"]
    share = report.class_share
    for i, name in enumerate(STREETHAZARDS.all_names):
        lines.append(f"  {i:>2} {name:<13} {100 * share[i]:7.3f} %")
    lines.append(f"  images with anomaly: {report.images_with_anomaly} / {report.num_checked}")
    if report.out_of_range_pixels:
        lines.append(f"  pixels with values outside 1..14 (ignored): {report.out_of_range_pixels}")
    for path, reason in report.bad[:max_bad]:
        lines.append(f"  BAD {path}: {reason}")
    if len(report.bad) > max_bad:
        lines.append(f"  ... and {len(report.bad) - max_bad} more problems")
    return "\n".join(lines)


def check_splits(root: str | Path, split: str = "all", *, workers: int = 1, progress: bool = False
                 ) -> dict[str, SplitReport | None]:
    """:func:`check_split` of ``split``, or with ``"all"`` of every split present under ``root`` (absent ones map
    to None; none present at all is a UserError)."""
    from anomalyseg.data.layout import resolve_split_dir

    if split != "all":
        return {split: check_split(root, split, workers=workers, progress=progress)}
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"StreetHazards root not found: {base}")
    reports: dict[str, SplitReport | None] = {}
    for name in ("train", "val", "test"):
        try:
            resolve_split_dir(base, name)
        except UserError:
            reports[name] = None
            continue
        reports[name] = check_split(root, name, workers=workers, progress=progress)
    if not any(r is not None for r in reports.values()):
        raise UserError(f"no StreetHazards split found under {base}")
    return reports
