"""The schema of a training run: nested dataclasses (``Config`` and its sections) with their numeric bounds.

:func:`load_config` reads one from YAML with typed ``key.sub=value`` overrides (``Config`` by default; any
dataclass schema works). The generic loader behind it -- type checks, bounds, overrides, YAML in and out -- is
:mod:`anomalyseg.configio`. Torch-free: the CLI imports it at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from anomalyseg.configio import Bound, apply_overrides, bounded, config_from_dict, read_yaml
from anomalyseg.errors import UserError
from anomalyseg.limits import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_SIDE, MAX_WORKERS

T = TypeVar("T")

_SIDE = Bound(1, MAX_SIDE)
_COUNT = Bound(1, MAX_COUNT)
_COUNT0 = Bound(0, MAX_COUNT)
_BATCH = Bound(1, MAX_BATCH)
_WORKERS = Bound(0, MAX_WORKERS)
_FACTOR = Bound(0, 1, lo_open=True)  # (0, 1]


@bounded(crop_size=_SIDE, scale_range=Bound(0, 10, lo_open=True, ordered=True), val_size=_SIDE,
         batch_size=_BATCH, val_batch_size=_BATCH, workers=_WORKERS, max_train_samples=_COUNT,
         max_val_samples=_COUNT)
@dataclass
class DataConfig:
    """Dataset, augmentation and loader settings (crop / resize sizes are ``[height, width]``).

    ``dataset`` names a registered dataset (:mod:`anomalyseg.data.registry`: ``streethazards``,
    ``cityscapes`` or one added with ``register_dataset``); its splits are opened from ``root``.
    """

    dataset: str = "streethazards"
    root: str = "data/streethazards"
    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, int] = (512, 512)
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: bool = True
    blur: bool = True
    val_size: tuple[int, int] | None = None  # None: validate at native resolution
    batch_size: int = 8
    val_batch_size: int = 1
    workers: int = 4
    on_error: Literal["skip", "raise"] = "skip"
    max_train_samples: int | None = None  # first N training samples only (smoke runs)
    max_val_samples: int | None = None

    def __post_init__(self) -> None:
        check_dataset_name(self.dataset)


def check_dataset_name(name: str) -> None:
    """One-line UserError unless ``name`` is registered (same rule and message as
    :func:`anomalyseg.data.registry.dataset_spec`, without importing any loader: config stays torch-free)."""
    from anomalyseg.data.registry import available_datasets

    known = available_datasets()
    if name.strip().lower().replace("-", "_") not in known:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(known)}")


@bounded(aux_weight=Bound(0, 100))
@dataclass
class ModelConfig:
    """Which network; ``name`` is a registered name (built-in, ``register_model`` in your code, or an
    ``anomalyseg.models`` entry point): a config never names code to import."""

    name: str = "deeplabv3plus_resnet50"
    pretrained: bool = False
    aux: bool | None = None  # None: the model's default
    aux_weight: float = 0.4
    options: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a checkpoint whose weights start this run (fine-tuning; `train --init-from`)


@bounded(lr=Bound(0, 10, lo_open=True), weight_decay=Bound(0, 10), momentum=Bound(0, 1, hi_open=True),
         betas=Bound(0, 1, hi_open=True), backbone_lr_mult=Bound(0, 100), grad_clip_norm=Bound(0, 1e6, lo_open=True))
@dataclass
class OptimConfig:
    """Optimizer; 1-D parameters (norms, biases) get no weight decay unless ``decay_norm_and_bias``."""

    name: Literal["adamw", "sgd", "adam"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    decay_norm_and_bias: bool = False
    backbone_lr_mult: float = 1.0  # lr factor for parameters under backbone_prefixes
    backbone_prefixes: tuple[str, ...] = ("backbone.", "encoder.", "segformer.")
    grad_clip_norm: float | None = None


@bounded(warmup_iters=_COUNT0, warmup_epochs=Bound(0, 1e6), warmup_start_factor=_FACTOR, power=Bound(0, 100),
         min_lr_factor=Bound(0, 1), plateau_factor=Bound(0, 1, lo_open=True, hi_open=True),
         plateau_patience=Bound(0, 10**6))
@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per optimizer step (plateau: once per validation)."""

    name: Literal["poly", "cosine", "plateau", "constant"] = "poly"
    warmup_iters: int = 0
    warmup_epochs: float = 0.0  # converted with the steps per epoch; give one of the two
    warmup_start_factor: float = 0.001
    power: float = 0.9
    min_lr_factor: float = 0.0  # poly / cosine end at (and plateau never drops below) this x the initial lr
    plateau_factor: float = 0.1
    plateau_patience: int = 2  # validations without improvement before the lr drops


@bounded(epochs=Bound(1, 10**6), grad_accum=Bound(1, 4096), val_every=Bound(1, 10**6),
         early_stop_patience=Bound(1, 10**6), seed=Bound(0, MAX_SEED), class_weights=Bound(0, 1e6),
         checkpoint_every_steps=_COUNT0, log_every=_COUNT, num_vis_images=Bound(0, 256))
@dataclass
class TrainConfig:
    """Loop, precision, reproducibility and bookkeeping."""

    epochs: int = 40
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    grad_accum: int = 1
    val_every: int = 1
    early_stop_patience: int | None = None  # validations without improvement
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    class_weights: list[float] | None = None
    class_balance: Literal["none", "inverse_sqrt", "median_freq"] = "none"  # weights from train-label counts
    sync_bn: bool = True  # CUDA + DDP only
    checkpoint_every_steps: int = 500  # mid-epoch "last" checkpoints, for exact resume
    log_every: int = 20
    num_vis_images: int = 4
    progress: bool = True


@bounded(p=Bound(0, 1), k=Bound(1, 64, ordered=True), scale_range=Bound(0, 1, lo_open=True, ordered=True),
         blend_px=Bound(0, 64), weight=Bound(0, 100), margin_in=Bound(-1e4, 1e4), margin_out=Bound(-1e4, 1e4))
@dataclass
class OutlierExposureConfig:
    """Anomaly-aware training (outlier exposure): paste outlier cutouts into training crops and add an outlier
    loss on their pixels (label :data:`anomalyseg.constants.OUTLIER_LABEL`) to the closed-set loss.

    ``source``: ``procedural`` (objects generated on the fly, a family disjoint from the synthetic test
    anomalies), ``folder`` (RGBA PNG cutouts under ``root``) or ``coco`` (images under ``root`` + instance masks
    of ``annotations``, classes of the target domain excluded: ``exclude_classes``, None = the dataset's
    default list). Per training image with probability ``p``, ``k`` (uniform in ``[low, high]``) cutouts whose
    longer side is ``scale_range`` x the crop's shorter side, edges feathered over ``blend_px`` pixels.
    ``loss``: ``entropy`` (Chan et al. 2021), ``energy`` (PEBAL-style hinge, Tian et al. 2022) or ``rba``
    (Nayal et al. 2023); ``weight`` / ``margin_in`` / ``margin_out``: None = the loss's paper default;
    ``margin_in`` / ``margin_out`` may also be ``auto``: set from the model's own score scale on the validation
    split when the run starts (:mod:`anomalyseg.engine.oe_margins`; the rule is documented there).
    """

    enabled: bool = False
    source: Literal["procedural", "folder", "coco"] = "procedural"
    root: str | None = None
    annotations: str | None = None
    exclude_classes: list[str] | None = None
    shapes: list[str] | None = None  # procedural source: a subset of its shapes (None: all)
    p: float = 0.5
    k: tuple[int, int] = (1, 3)
    scale_range: tuple[float, float] = (0.05, 0.3)
    blend_px: float = 2.0
    loss: Literal["entropy", "energy", "rba"] = "entropy"
    weight: float | None = None
    margin_in: float | Literal["auto"] | None = None
    margin_out: float | Literal["auto"] | None = None


@dataclass
class Config:
    """A training run: everything needed to reproduce it is in here (``config.yaml`` in the run dir)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    outlier_exposure: OutlierExposureConfig = field(default_factory=OutlierExposureConfig)
    out_dir: str = "runs"
    run_name: str | None = None  # None: <model>_<timestamp>


def load_config(
    path: str | Path | None, overrides: Iterable[str] = (), schema: type[T] = Config  # type: ignore[assignment]
) -> T:
    """Load ``schema`` from a YAML file (or defaults when ``path`` is None) and apply typed overrides."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(schema, apply_overrides(schema, data, overrides))
