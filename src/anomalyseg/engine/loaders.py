"""Data loading for training: the datasets of a config, resumable shuffled sampling and per-sample seeded
augmentation.

:func:`build_datasets` opens the training and validation splits of any registered dataset through its
:class:`~anomalyseg.data.registry.DatasetSpec` (the one dataset interface), after the leakage guard's split
check. With outlier exposure on (``outliers.enabled``) it opens the outlier source once, checks it against the
dataset's held-out data (:func:`~anomalyseg.engine.guards.check_outlier_source`) and gives the training
transform a paster (:func:`outlier_paster`); the validation split never gets pastes.

Exact resume needs two things the stock pieces lack: starting an epoch at batch k
(:class:`ResumableSampler`, a ``DistributedSampler`` that can skip its first samples) and augmentations
that do not depend on which worker process drew them (:class:`SeededSamples` seeds python / numpy / torch
RNGs from ``(seed, epoch, rank, position)`` around each sample, then restores them).

Both loaders are :class:`FaultCarryingLoader` instances: a :class:`~anomalyseg.errors.UserError` raised while a
worker process reads a sample (a :class:`~anomalyseg.data.io.SampleError` naming an unreadable file) reaches
the caller as that error with its one-line message, not as torch's "Caught SampleError in DataLoader worker
process" text with the worker's traceback inside.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, default_collate, get_worker_info

from anomalyseg.config import DataConfig, OutlierExposureConfig
from anomalyseg.constants import OUTLIER_LABEL
from anomalyseg.engine.guards import check_outlier_folders, check_outlier_source, check_split_allowed, held_out_data
from anomalyseg.errors import UserError

if TYPE_CHECKING:
    from anomalyseg.data.outliers.paste import PasteOutliers
    from anomalyseg.data.registry import DatasetSpec

log = logging.getLogger(__name__)


class TrainDatasets(NamedTuple):
    """The two splits a run uses and where they come from."""

    train: Dataset
    val: Dataset
    info: Any  # the opened dataset's ``info`` (DatasetInfo: palette, ...), None when it has none
    spec: DatasetSpec
    outliers: Any = None  # the OutlierSource pasted into training crops, None without outlier exposure


def build_datasets(cfg: DataConfig, outliers: OutlierExposureConfig | None = None) -> TrainDatasets:
    """Training / validation splits of ``cfg.dataset`` with the configured transforms (held-out splits refused,
    ``max_*_samples`` applied); with ``outliers.enabled`` the training transform pastes outliers."""
    from anomalyseg.data.registry import available_datasets, dataset_spec
    from anomalyseg.data.transforms import EvalTransform, TrainTransform

    spec = dataset_spec(cfg.dataset)
    if spec.train_split is None or not spec.has_class_labels:
        trainable = [n for n in available_datasets() if dataset_spec(n).train_split and dataset_spec(n).class_names]
        raise UserError(f"data.dataset={spec.name}: {spec.title} has no class labels to train on; "
                        f"trainable: {', '.join(trainable)}")
    check_split_allowed(cfg.train_split, "training", spec=spec)
    check_split_allowed(cfg.val_split, "validation (choosing checkpoints)", spec=spec)
    paster = outlier_paster(outliers, spec, cfg.root) if outliers is not None and outliers.enabled else None
    train_tf = TrainTransform(crop_size=cfg.crop_size, scale_range=cfg.scale_range, hflip=cfg.hflip,
                              color_jitter=cfg.color_jitter, blur=cfg.blur, paster=paster)
    train_ds = spec.open(cfg.root, cfg.train_split, train_tf, cfg.on_error)
    val_ds = spec.open(cfg.root, cfg.val_split, EvalTransform(size=cfg.val_size), "raise")
    info = getattr(train_ds, "info", None)
    if cfg.max_train_samples is not None:
        train_ds = Subset(train_ds, range(min(cfg.max_train_samples, len(train_ds))))
    if cfg.max_val_samples is not None:
        val_ds = Subset(val_ds, range(min(cfg.max_val_samples, len(val_ds))))
    return TrainDatasets(train_ds, val_ds, info, spec, paster.source if paster is not None else None)


def outlier_paster(cfg: OutlierExposureConfig, spec: DatasetSpec, root: str) -> PasteOutliers:
    """The paster of ``cfg``: its source opened (an empty or unreadable one is a one-line error) and refused
    when it is, holds or copies held-out data of ``spec`` under ``root``."""
    from anomalyseg.data.outliers import open_outlier_source
    from anomalyseg.data.outliers.paste import PasteOutliers

    if OUTLIER_LABEL in spec.anomaly_ids or spec.num_classes > OUTLIER_LABEL:
        raise UserError(f"outlier exposure: {spec.title} uses label {OUTLIER_LABEL}, the label of pasted outliers")
    held = None  # a generated source reads no files: the held-out data is not even listed
    if cfg.source != "procedural":  # the folders first: "this is the test split" beats any complaint about its files
        held = held_out_data(spec, root)
        check_outlier_folders([f for f in (cfg.root, cfg.annotations and Path(cfg.annotations).parent) if f],
                              spec=spec, held=held)
    source = open_outlier_source(cfg.source, root=cfg.root, annotations=cfg.annotations,
                                 exclude_classes=cfg.exclude_classes, dataset=spec.name, shapes=cfg.shapes)
    check_outlier_source(source, spec=spec, root=root, held=held)
    log.info("outlier exposure: %s; p=%g, k=%s, scale %s of the crop's shorter side, blend %g px",
             source.name, cfg.p, tuple(cfg.k), tuple(cfg.scale_range), cfg.blend_px)
    return PasteOutliers(source, p=cfg.p, k=tuple(cfg.k), scale_range=tuple(cfg.scale_range),  # type: ignore[arg-type]
                         blend_px=cfg.blend_px)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch (CPU) RNGs for the block, then put their previous states back."""
    py, np_state, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(th)


class SeededSamples(Dataset):
    """``dataset[(index, seed)]`` = ``base[index]`` drawn under :func:`seeded_rngs(seed)`; plain ints pass."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if isinstance(item, tuple):
            index, seed = item
            with seeded_rngs(seed):
                return self.base[index]
        return self.base[item]

    def __getattr__(self, name: str) -> Any:  # info, num_read_errors, ... of the wrapped dataset
        if name == "base" or name.startswith("__"):  # never forward protocol hooks such as __getitems__
            raise AttributeError(name)
        return getattr(self.base, name)


def read_error_count(dataset: Any) -> int:
    """Samples replaced so far because they could not be read (``num_read_errors``, summed over DataLoader
    workers), through ``Subset`` and :class:`SeededSamples`; 0 for a dataset that does not count them."""
    while True:
        if isinstance(dataset, Subset):
            dataset = dataset.dataset
        elif isinstance(dataset, (SeededSamples, _CarryFaults)):
            dataset = dataset.base
        else:
            break
    return int(getattr(dataset, "num_read_errors", 0) or 0)


class _WorkerFault:
    """A UserError raised in a DataLoader worker, carried to the main process as a batch (torch would re-raise
    it with the worker's formatted traceback as its message)."""

    def __init__(self, exc: UserError) -> None:
        self.kind = type(exc)
        self.message = str(exc)

    def error(self) -> UserError:
        """The error to raise in the main process: the original class when it takes the message alone."""
        try:
            exc = self.kind(self.message)
        except Exception:  # a subclass with another signature
            return UserError(self.message)
        return exc if isinstance(exc, UserError) and str(exc) == self.message else UserError(self.message)


class _CarryFaults(Dataset):
    """``base[i]``, except that in a worker process a UserError comes back as a :class:`_WorkerFault`."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: Any) -> Any:
        try:
            return self.base[item]
        except UserError as exc:
            if get_worker_info() is None:
                raise
            return _WorkerFault(exc)

    def __getattr__(self, name: str) -> Any:  # info, num_read_errors, ... of the wrapped dataset
        if name == "base" or name.startswith("__"):  # never forward protocol hooks such as __getitems__
            raise AttributeError(name)
        return getattr(self.base, name)


class _CollateFaults:
    """The loader's collate function, except that a batch holding a :class:`_WorkerFault` becomes that fault."""

    def __init__(self, collate_fn: Any) -> None:
        self.collate_fn = collate_fn if collate_fn is not None else default_collate

    def __call__(self, items: list[Any]) -> Any:
        fault = next((x for x in items if isinstance(x, _WorkerFault)), None)
        return fault if fault is not None else self.collate_fn(items)


def _raise_faults(batches: Iterator[Any]) -> Iterator[Any]:
    for batch in batches:
        if isinstance(batch, _WorkerFault):
            raise batch.error()
        yield batch


class FaultCarryingLoader(DataLoader):
    """``DataLoader`` whose worker processes hand a :class:`~anomalyseg.errors.UserError` back as data: the
    main process raises it again with its own message (one line naming the file), in batch order."""

    def __init__(self, dataset: Dataset, *args: Any, collate_fn: Any = None, **kwargs: Any) -> None:
        super().__init__(_CarryFaults(dataset), *args, collate_fn=_CollateFaults(collate_fn), **kwargs)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _raise_faults(super().__iter__())


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 63-bit seed that depends only on the run seed and where the sample sits in the epoch's order."""
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1, np.uint64)[0]) >> 1


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` yielding ``(index, sample_seed)`` pairs that can start mid-epoch.

    ``set_epoch(e)`` reshuffles (deterministically from ``seed`` and ``e``) and restarts at 0;
    ``set_start(k)`` then skips this rank's first ``k`` samples (the batches a resumed run already saw).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        order = list(super().__iter__())
        for position in range(self.start, len(order)):
            yield order[position], sample_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class ShardSampler(Sampler[int]):
    """Rank r of W gets indices r, r+W, r+2W, ... with NO padding, so sharded metrics count each sample once."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_train_loader(
    dataset: Dataset, *, batch_size: int, workers: int, seed: int, rank: int = 0, world_size: int = 1,
    collate_fn: Any = None, pin_memory: bool = False,
) -> tuple[DataLoader, ResumableSampler]:
    """Shuffled, drop-last training loader over :class:`SeededSamples`; returns ``(loader, sampler)``."""
    wrapped = SeededSamples(dataset)
    sampler = ResumableSampler(wrapped, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    generator = torch.Generator().manual_seed(seed + rank)  # worker base seeds never touch the global RNG
    loader = FaultCarryingLoader(
        wrapped, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
        drop_last=True, pin_memory=pin_memory, generator=generator, persistent_workers=False,
    )
    return loader, sampler


def make_eval_loader(
    dataset: Dataset, *, batch_size: int, workers: int, rank: int = 0, world_size: int = 1,
    collate_fn: Any = None, pin_memory: bool = False,
) -> DataLoader:
    """In-order loader over this rank's unpadded shard."""
    return FaultCarryingLoader(
        dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world_size),  # type: ignore[arg-type]
        num_workers=workers, collate_fn=collate_fn, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),  # validating must not advance the global RNG
    )
