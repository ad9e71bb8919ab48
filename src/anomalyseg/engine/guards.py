"""Leakage guard: training and fitting refuse data whose labels contain an anomaly id, and the test split.

Which ids are anomalies and which split holds them comes from the dataset's registry entry
(:class:`~anomalyseg.data.registry.DatasetSpec`): StreetHazards' anomaly (id 13) lives in its evaluation split,
``test``; a dataset without anomaly ids (Cityscapes) has nothing to scan for. Any split named ``test`` is
refused whatever the dataset (held out for the final numbers).

The scan reads label files only (no images), in parallel DataLoader workers, stops at the first anomaly pixel,
and caches a clean result on disk keyed by the label files' paths, sizes and modification times, so the
second run over the same 5,000 labels costs a few stat calls.

Outlier exposure (:func:`check_outlier_source`): the source of pasted objects may not be, lie in or hold the
held-out split, nor a real anomaly set's folder, and a sample of its files may not be copies of held-out files
(compared by content). Pasted pixels (label ``OUTLIER_LABEL``) are made by the training transform after the
label files are read: the scan of label files (and its cache) never sees them, and the fallback that counts
whole (transformed) samples of a dataset without label files leaves them out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from anomalyseg.checkpoints.io import file_sha256
from anomalyseg.constants import OUTLIER_LABEL
from anomalyseg.errors import UserError
from anomalyseg.files import atomic_write

if TYPE_CHECKING:
    from anomalyseg.data.registry import DatasetSpec

log = logging.getLogger(__name__)

#: Splits that may never be used to train, fit or choose checkpoints, whatever the dataset.
FORBIDDEN_SPLITS = ("test",)
#: Anomaly ids assumed when neither ids nor a dataset spec are given (StreetHazards').
DEFAULT_ANOMALY_IDS: tuple[int, ...] = (13,)


def forbidden_splits(spec: DatasetSpec | None = None) -> tuple[str, ...]:
    """Splits never trained / fitted / validated on: ``test``, plus the dataset's evaluation split when that
    split holds its anomalies (the dataset has anomaly ids)."""
    extra = (spec.eval_split,) if spec is not None and spec.anomaly_ids else ()
    return tuple(dict.fromkeys((*FORBIDDEN_SPLITS, *extra)))


def check_split_allowed(split: str, purpose: str = "training", *, spec: DatasetSpec | None = None) -> None:
    """Refuse a held-out split (:func:`forbidden_splits`) for training / fitting / checkpoint selection
    (one line, names the split)."""
    name = str(split).strip().lower()
    if name not in forbidden_splits(spec):
        return
    use = f"'{spec.train_split}' / '{spec.fit_split}'" if spec is not None and spec.train_split else "'train' / 'val'"
    holds_anomalies = spec is None or (bool(spec.anomaly_ids) and name == spec.eval_split)
    what = "holds the anomaly ground truth" if holds_anomalies else "is held out for testing"
    raise UserError(f"the '{split}' split {what} and is never used for {purpose}; use {use}")


def resolve_anomaly_ids(anomaly_ids: Sequence[int] | None = None, spec: DatasetSpec | None = None
                        ) -> tuple[int, ...]:
    """The ids to refuse: ``anomaly_ids``, else the spec's, else StreetHazards' (13)."""
    if anomaly_ids is not None:
        return tuple(int(i) for i in anomaly_ids)
    if spec is not None:
        return tuple(int(i) for i in spec.anomaly_ids)
    return DEFAULT_ANOMALY_IDS


def cache_dir() -> Path:
    """``$ANOMALYSEG_CACHE_DIR`` or ``$XDG_CACHE_HOME/anomalyseg`` (default ``~/.cache/anomalyseg``)."""
    env = os.environ.get("ANOMALYSEG_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anomalyseg"


def _unwrap(dataset: Any) -> tuple[Any, list[int] | None]:
    """``(base dataset, indices into it or None for all)`` through nested ``Subset``s."""
    if isinstance(dataset, Subset):
        base, inner = _unwrap(dataset.dataset)
        indices = [int(i) for i in dataset.indices]
        return base, indices if inner is None else [inner[i] for i in indices]
    return dataset, None


def _label_paths(dataset: Any) -> list[Path] | None:
    """Label files of a StreetHazards-like dataset (``entries[i].label``), through ``Subset`` too."""
    base, indices = _unwrap(dataset)
    entries = getattr(base, "entries", None)
    if entries is None or not all(hasattr(e, "label") for e in entries):
        return None
    paths = [Path(e.label) for e in entries]
    return paths if indices is None else [paths[i] for i in indices]


class _Unreadable(NamedTuple):
    """Item of a count source whose label could not be read: the one-line reason (it names the file)."""

    message: str


class _LabelCounts(Dataset):
    """Item i -> pixel count per label id (0..255) of label file i, read through the data layer's decoder
    (an unreadable file gives :class:`_Unreadable`: a fault never crosses a worker process as a traceback)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray | _Unreadable:
        from anomalyseg.data.io import label_from_raw, read_sample_label

        try:
            ids, _ = label_from_raw(read_sample_label(self.paths[i]))
        except UserError as exc:  # SampleError: undecodable, a colour image, an unsupported mode
            return _Unreadable(str(exc))
        return np.bincount(ids.ravel(), minlength=256)


class _ReadLabelCounts(Dataset):
    """Datasets with ``read_label(i)`` (Cityscapes): counts of the untransformed label, no image decoded."""

    def __init__(self, base: Any, indices: list[int] | None) -> None:
        self.base = base
        self.indices = list(range(len(base))) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray | _Unreadable:
        try:
            label = np.asarray(self.base.read_label(self.indices[i])).astype(np.int64)
        except UserError as exc:
            return _Unreadable(str(exc))
        return np.bincount(np.clip(label, 0, 255).ravel(), minlength=256)


class _SampleCounts(Dataset):
    """Fallback for datasets without label files: counts ``dataset[i]["label"]``.

    These are transformed samples: with outlier exposure on, the training transform has pasted outliers into
    them, labelled :data:`~anomalyseg.constants.OUTLIER_LABEL`. That label is never a dataset label, so it is
    not counted (the pixels it covered are lost to their classes, like those a crop leaves out).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> np.ndarray | _Unreadable:
        try:
            sample = self.dataset[i]
        except UserError as exc:
            return _Unreadable(str(exc))
        label = torch.as_tensor(sample["label"]).to(torch.int64).clamp(0, 255)
        counts = torch.bincount(label.reshape(-1), minlength=256).numpy()
        counts[OUTLIER_LABEL] = 0
        return counts


def _on_error(dataset: Any) -> str:
    """The dataset's policy for unreadable samples (``on_error``: "skip" or "raise"), through Subsets."""
    base, _ = _unwrap(dataset)
    return "skip" if getattr(base, "on_error", "raise") == "skip" else "raise"


def _count_source(dataset: Any, paths: list[Path] | None) -> Dataset:
    """Per-label pixel counts: label files, else ``read_label``, else whole samples."""
    if paths is not None:
        return _LabelCounts(paths)
    base, indices = _unwrap(dataset)
    if callable(getattr(base, "read_label", None)):
        return _ReadLabelCounts(base, indices)
    return _SampleCounts(dataset)


def _fingerprint(paths: list[Path], anomaly_ids: tuple[int, ...]) -> str:
    ids = f"anomaly_id={anomaly_ids[0]}" if len(anomaly_ids) == 1 else f"anomaly_ids={','.join(map(str, anomaly_ids))}"
    h = hashlib.sha256(f"v2 {ids}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def scan_labels(
    dataset: Any, split: str, *, anomaly_ids: Sequence[int] | None = None,
    spec: DatasetSpec | None = None, purpose: str = "training", workers: int = 0, use_cache: bool = True,
) -> np.ndarray:
    """Pixel counts per label id (length 256, index 255 = ignore) over the split, refusing anomaly labels.

    Raises a UserError naming ``split`` (and the first offending file) if any label contains one of the
    anomaly ids (:func:`resolve_anomaly_ids`: ``anomaly_ids``, the ``spec``'s, or 13), or if
    ``split`` is held out (:func:`check_split_allowed`). With no anomaly ids the labels are only counted.
    Works on :class:`~anomalyseg.data.StreetHazards` (label files only, parallel, cached when clean), on
    datasets with ``read_label(i)`` (Cityscapes) and on any dataset of dict samples.

    An unreadable label follows the dataset's own ``on_error``, as an unreadable image does when the
    dataset is read: ``"skip"`` logs it (with its path), leaves it out of the counts and does not cache the
    result; otherwise it is a one-line UserError naming the file.
    """
    check_split_allowed(split, purpose, spec=spec)
    ids = resolve_anomaly_ids(anomaly_ids, spec)
    paths = _label_paths(dataset)
    cache_file = None
    if paths is not None and use_cache:
        try:
            cache_file = cache_dir() / "leakage" / f"{_fingerprint(paths, ids)}.json"
        except OSError:  # a label vanished: the dataset will say so itself when it is read
            cache_file = None
        if cache_file is not None and cache_file.is_file():
            try:
                cached = json.loads(cache_file.read_text())
                log.debug("label scan of split %r: cached (%s)", split, cache_file)
                return np.asarray(cached["counts"], dtype=np.int64)
            except (OSError, ValueError, KeyError):
                log.debug("ignoring unreadable cache %s", cache_file)
    # own generator: the scan must not advance the global RNG (a cached scan would change the run otherwise)
    loader = DataLoader(_count_source(dataset, paths), batch_size=16, num_workers=workers, collate_fn=list,
                        generator=torch.Generator().manual_seed(0))
    total = np.zeros(256, dtype=np.int64)
    seen = skipped = 0
    policy = _on_error(dataset)
    for position, counts in enumerate(item for batch in loader for item in batch):
        if isinstance(counts, _Unreadable):
            if policy == "raise":
                raise UserError(f"{counts.message} (split '{split}'; 'anomalyseg data check' lists every bad file)")
            skipped += 1
            log.warning("label scan of split %r: skipping an unreadable sample (on_error=skip; it is skipped in "
                        "training too): %s", split, counts.message)
            continue
        found = next((i for i in ids if counts[i]), None)
        if found is not None:
            where = f" (first in {paths[position]})" if paths is not None else f" (sample {position})"
            raise UserError(
                f"the '{split}' split contains anomaly pixels (label id {found}){where}: it cannot be "
                f"used for {purpose}; anomaly labels belong to the test split only"
            )
        total += counts
        seen += 1
    log.info("label scan: %d labels of split %r, %s%s", seen, split,
             "no anomaly id" if ids else "counted (the dataset has no anomaly ids)",
             f"; {skipped} unreadable skipped" if skipped else "")
    if skipped:
        cache_file = None  # a verdict with unread labels is not kept: the next run reads (and reports) them again
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_file, json.dumps({"split": split, "labels": seen, "clean": True,
                                                 "counts": total.tolist()}))
        except OSError as exc:  # a read-only home must not stop training
            log.debug("cannot cache the label scan: %s", exc)
    return total


def assert_no_anomaly(
    dataset: Any, split: str, *, anomaly_ids: Sequence[int] | None = None,
    spec: DatasetSpec | None = None, purpose: str = "training", workers: int = 0, use_cache: bool = True,
) -> None:
    """Raise a UserError naming ``split`` if any label of ``dataset`` contains an anomaly id, or if ``split``
    is held out (see :func:`scan_labels`)."""
    scan_labels(dataset, split, anomaly_ids=anomaly_ids, spec=spec, purpose=purpose,
                workers=workers, use_cache=use_cache)


# ---------------------------------------------------------------------------------------------------
# Outlier exposure: the outlier source never is, holds or copies evaluation data
# ---------------------------------------------------------------------------------------------------
#: Source files compared by content with the held-out files (evenly spaced over the source's sorted list).
OUTLIER_HASH_SAMPLE = 64


def _held_out_files(spec: DatasetSpec, root: str | Path) -> tuple[list[Path], list[Path]]:
    """``(split folders, image and label files)`` of ``spec``'s held-out splits (:func:`forbidden_splits`)
    present under ``root``."""
    folders: list[Path] = []
    files: list[Path] = []
    for split in forbidden_splits(spec):
        if split not in spec.splits:
            continue
        try:
            dataset = spec.open(root, split)
        except UserError:  # not there (e.g. only the training archive was downloaded): nothing to compare with
            continue
        if getattr(dataset, "split_dir", None) is not None:
            folders.append(Path(dataset.split_dir))
        for entry in getattr(dataset, "entries", ()):
            paths = (entry.image, entry.label) if hasattr(entry, "image") else entry  # Entry, or Cityscapes' tuple
            files += [Path(p) for p in paths if isinstance(p, Path)]
    return folders, files


class HeldOut(NamedTuple):
    """What outliers must never come from: held-out files and the folders holding them (all resolved)."""

    files: list[Path]
    folders: set[Path]


def held_out_data(spec: DatasetSpec, root: str | Path) -> HeldOut:
    """The held-out files and folders of ``spec`` under ``root`` (split folders included), listed once."""
    split_dirs, files = _held_out_files(spec, root)
    held = [p.resolve() for p in files]
    return HeldOut(held, {p.parent for p in held} | {d.resolve() for d in split_dirs})


def _given_or_listed(held: HeldOut | None, spec: DatasetSpec, root: str | Path | None) -> HeldOut:
    if held is not None:
        return held
    if root is None:
        raise TypeError("give the dataset root or its held-out data (held_out_data)")
    return held_out_data(spec, root)


def check_outlier_folders(folders: Sequence[str | Path], *, spec: DatasetSpec, root: str | Path | None = None,
                          held: HeldOut | None = None) -> None:
    """Refuse (one line) outlier source folders that are, lie in or hold a held-out split of ``spec`` under
    ``root`` (or ``held``: :func:`held_out_data`), or a real anomaly set's package folder (``RoadAnomaly``,
    ``fs_static``, ...)."""
    from anomalyseg.data.anomaly_presets import PRESETS

    held_dirs = _given_or_listed(held, spec, root).folders
    anomaly_folders = {p.folder for p in PRESETS.values()}
    for folder in (Path(f).expanduser().resolve() for f in folders):
        inside = next((d for d in held_dirs if d == folder or d in folder.parents), None)
        holds = next((d for d in held_dirs if folder in d.parents), None)
        if inside is not None or holds is not None:
            where = "is inside" if inside is not None else "holds"
            raise UserError(f"outlier source folder {folder} {where} the held-out {spec.title} evaluation data "
                            f"({inside or holds}): outliers must never come from the evaluation split")
        named = next((n for n in anomaly_folders if n in folder.parts or (folder / n).is_dir()), None)
        if named is not None:
            raise UserError(f"outlier source folder {folder} is or holds the anomaly evaluation set {named!r}: "
                            "outliers must never come from evaluation data")


def check_outlier_source(source: Any, *, spec: DatasetSpec, root: str | Path | None = None,
                         held: HeldOut | None = None, sample: int = OUTLIER_HASH_SAMPLE) -> None:
    """Refuse (one line) an outlier source (:class:`~anomalyseg.data.outliers.OutlierSource`) that could leak
    evaluation data into training: its folders (:func:`check_outlier_folders`), or one of ``sample`` of its
    files (evenly spaced) that is a held-out file, by resolved path or by content (SHA-256; only files of equal
    size are hashed)."""
    files = list(source.files)
    picked = files[:: max(1, math.ceil(len(files) / sample))] if sample > 0 else []
    if not source.roots and not picked:  # a generated source reads nothing: no held-out data to list
        return
    held = _given_or_listed(held, spec, root)
    check_outlier_folders(source.roots, spec=spec, held=held)
    if not picked:
        return
    held_set, by_size = set(held.files), {}
    for p in held.files:
        if p.is_file():
            by_size.setdefault(p.stat().st_size, []).append(p)
    digest = functools.cache(file_sha256)  # each held-out twin hashed once, however many source files match it
    for path in picked:
        real = Path(path).resolve()
        if real in held_set:
            raise UserError(f"outlier source file {path} is the held-out evaluation file {real} ({spec.title})")
        twins = by_size.get(real.stat().st_size, []) if real.is_file() else []
        if twins:
            mine = file_sha256(real)
            copy = next((t for t in twins if digest(t) == mine), None)
            if copy is not None:
                raise UserError(f"outlier source file {path} is a copy of the held-out evaluation file {copy} "
                                f"({spec.title}): outliers must never come from the evaluation split")
