"""The training workflow: config -> datasets, model, optimizer, run directory, epoch loop, checkpoints.

:func:`train` is what ``anomalyseg train``, the notebook and the tests call. The steps below read top to
bottom in the order a run goes through them: prepare (or resume) the config, open the data and scan it for
leakage, build the model / optimizer / schedule, restore a checkpoint, open the run directory, then the epoch
loop (train, validate, checkpoint: :mod:`anomalyseg.workflows.train_loop`).

Any registered dataset with class labels trains the same way (``data.dataset``: StreetHazards, Cityscapes,
...): its :class:`~anomalyseg.data.registry.DatasetSpec` gives the classes, the anomaly ids the leakage guard
refuses and the held-out split; the checkpoint records them.

``model.init_from`` (``train --init-from``) starts a new run from a checkpoint's weights only (fine-tuning);
``outlier_exposure.enabled`` adds an outlier loss on pasted-outlier pixels (:mod:`anomalyseg.engine.oe_losses`);
its ``auto`` margins are set from the starting model's validation scores (:mod:`anomalyseg.engine.oe_margins`).

Resume continues EXACTLY: the checkpoint holds the optimizer / schedule / scaler states, each rank's RNG
states, how many batches of the current epoch were consumed and the sum of their losses (the epoch's
``train_loss`` covers all of it); the resumed sampler replays the same order from there and augmentations
are seeded per sample.

One process trains in a run folder at a time: rank 0 holds ``<run>/.lock`` (PID, host, start time) from before
the resumed checkpoint is read until the run ends; a second ``train --resume`` of a live run is refused, the
lock of a killed run is taken over (:func:`anomalyseg.engine.rundir.lock_run_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anomalyseg.checkpoints import io as ckpt_io
from anomalyseg.checkpoints.reload import init_weights
from anomalyseg.config import Config, TrainConfig
from anomalyseg.configio import check_values, config_from_dict, config_to_dict, diff_configs, dump_config
from anomalyseg.engine import distributed as D
from anomalyseg.engine.factory import SegLoss, balanced_class_weights, build_model_from_config, build_optimizer
from anomalyseg.engine.guards import scan_labels
from anomalyseg.engine.loaders import (
    TrainDatasets,
    build_datasets,
    make_eval_loader,
    make_train_loader,
    seed_everything,
)
from anomalyseg.engine.oe_losses import OutlierExposureLoss, resolve_settings
from anomalyseg.engine.oe_margins import calibrate_margins
from anomalyseg.engine.rundir import RunLogger, attach_log_file, create_run_dir, detach_log_file, lock_run_dir
from anomalyseg.engine.schedules import LRSchedule
from anomalyseg.errors import UserError
from anomalyseg.files import FileLock, check_output
from anomalyseg.workflows.train_loop import LoopState, RunData, Trainables, TrainRun, run_epochs

log = logging.getLogger(__name__)

#: Keys a resumed run may change without breaking exactness (they do not touch the numbers).
RESUME_MUTABLE = ("train.epochs", "train.device", "train.progress", "train.log_every", "train.early_stop_patience",
                  "train.checkpoint_every_steps", "data.workers", "data.root", "out_dir", "run_name")


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------
def train(config: Config, *, device: str | torch.device | None = None, resume: str | Path | None = None) -> Path:
    """Run (or resume) a training run described by ``config``; returns the run directory.

    ``device`` overrides ``config.train.device``; ``resume`` is a run directory to continue exactly.
    Under ``torchrun`` each process joins the group and trains with DDP; rank 0 writes.
    """
    ctx = D.init_distributed(device or config.train.device)
    previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        return _train(config, ctx, Path(resume) if resume else None)
    finally:  # process-wide switches go back to what the caller had
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]
        D.cleanup(ctx)


def _train(cfg: Config, ctx: D.DistContext, resume: Path | None) -> Path:
    """The steps of one run, in order; the log file and TensorBoard writer are closed and the run folder's lock
    released whatever happens."""
    locks: list[FileLock] = []
    try:
        if resume is not None:  # locked before its checkpoint is read: a concurrent resume is refused here
            _check_resumable(resume)
            _lock(ctx, resume, locks)
        cfg, ckpt = prepare_config(cfg, resume)
        amp = _set_numerics(cfg.train, ctx.device)
        data = _prepare_data(cfg, ctx)
        parts = _build_trainables(cfg, ctx, data, amp)
        state = _restore(parts, ckpt, ctx, resume) if ckpt is not None else LoopState()
        init = ckpt.get("init_from") if ckpt is not None else _init_from(cfg, parts, data)
        _settle_margins(parts, ckpt, ctx, data, amp)
        parts.model = _distribute(parts.model, cfg.train, ctx)
        run_dir = _open_run_dir(cfg, ctx, parts.bare, resume, locks)
        handler = _write_run_files(cfg, ctx, run_dir, state, resumed=resume is not None)
        try:
            logger = RunLogger(run_dir if ctx.is_main else None, purge_step=state.step + 1 if resume else None)
            run = TrainRun(cfg, ctx, amp, data, parts, state, run_dir, logger, resumed=resume is not None,
                           init_from=init)
            try:
                run_epochs(run)
            finally:
                logger.close()
        finally:
            if handler is not None:
                detach_log_file(handler)
        D.barrier(ctx)
        return run_dir
    finally:
        for lock in locks:
            lock.release()


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
def prepare_config(cfg: Config, resume: Path | None) -> tuple[Config, dict[str, Any] | None]:
    """The config to run (on resume: the run's own, see :func:`resume_config`) and the checkpoint to resume."""
    ckpt = None
    if resume is not None:
        _check_resumable(resume)
        ckpt = ckpt_io.load_checkpoint(resume / "checkpoints" / "last.pt")
        cfg = resume_config(cfg, resume, ckpt["config"])
    _check_config(cfg)
    if resume is None:
        check_output(cfg.out_dir, "out_dir", folder=True)
        if cfg.model.init_from:  # a missing checkpoint fails before the data is opened
            try:
                ckpt_io.resolve_checkpoint(cfg.model.init_from)
            except UserError as exc:
                raise UserError(f"model.init_from: {exc}") from None
    return cfg, ckpt


def _check_resumable(resume: Path) -> None:
    if not (resume / "checkpoints" / "last.pt").is_file():
        raise UserError(f"--resume {resume}: no checkpoints/last.pt there (is it a run folder?)")


def _check_config(cfg: Config) -> None:
    """Every numeric setting in its range (a config built in code skips the loader, which checks as it reads);
    outlier-exposure loss settings that fit the chosen loss."""
    check_values(cfg)
    if cfg.outlier_exposure.enabled:
        resolve_settings(cfg.outlier_exposure)


def resume_config(cfg: Config, run_dir: Path, stored: dict[str, Any]) -> Config:
    """The run's own config, with only the :data:`RESUME_MUTABLE` keys taken from ``cfg``.

    ``stored`` is read through the schema first, so keys added since the run started (``data.dataset``)
    take their defaults instead of counting as changes.
    """
    stored = config_to_dict(config_from_dict(Config, stored))
    given = config_to_dict(cfg)
    changed = [k for k in diff_configs(stored, given) if k not in RESUME_MUTABLE]
    if changed:
        raise UserError(f"--resume {run_dir}: the given config differs from the run's in {', '.join(changed[:5])}; "
                        "only epochs, device, workers, data root and logging settings may change on resume")
    merged = json.loads(json.dumps(stored))
    for key in RESUME_MUTABLE:
        *parents, leaf = key.split(".")
        src, dst = given, merged
        for part in parents:
            src, dst = src[part], dst[part]
        dst[leaf] = src[leaf]
    return config_from_dict(Config, merged)


def _set_numerics(t: TrainConfig, dev: torch.device) -> str:
    """Deterministic / cuDNN switches for this run; returns the AMP mode actually used."""
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")  # CUDA: bilinear backward warns
        if dev.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not t.deterministic
    amp = t.amp if dev.type == "cuda" else "none"
    if amp != t.amp:
        log.warning("train.amp=%s needs CUDA; training in float32 on %s", t.amp, dev)
    return amp


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def _prepare_data(cfg: Config, ctx: D.DistContext) -> RunData:
    """Open the splits, scan their labels (leakage guard, class counts), build the loaders."""
    from anomalyseg.data.samples import collate_samples

    t = cfg.train
    sets = build_datasets(cfg.data, outliers=cfg.outlier_exposure)
    class_weights = _class_weights(t, sets.spec.num_classes, _scan_labels(cfg, ctx, sets))
    pin = ctx.device.type == "cuda"
    loader, sampler = make_train_loader(sets.train, batch_size=cfg.data.batch_size, workers=cfg.data.workers,
                                        seed=t.seed, rank=ctx.rank, world_size=ctx.world_size,
                                        collate_fn=collate_samples, pin_memory=pin)
    val_loader = make_eval_loader(sets.val, batch_size=cfg.data.val_batch_size, workers=cfg.data.workers,
                                  rank=ctx.rank, world_size=ctx.world_size, collate_fn=collate_samples,
                                  pin_memory=pin)
    batches_per_epoch = (sampler.num_samples // cfg.data.batch_size) // t.grad_accum * t.grad_accum
    if batches_per_epoch == 0:
        raise UserError(f"training split has {len(sets.train)} samples: fewer than one step of "
                        f"batch_size {cfg.data.batch_size} x grad_accum {t.grad_accum} x {ctx.world_size} process(es)")
    return RunData(sets, loader, sampler, val_loader, batches_per_epoch, batches_per_epoch // t.grad_accum,
                   class_weights)


def _scan_labels(cfg: Config, ctx: D.DistContext, sets: TrainDatasets) -> list[int] | None:
    """Leakage guard on both splits (rank 0 scans once, cached; every rank gets the verdict), giving the
    training split's pixel counts per label id. A dataset without anomaly ids is only counted, and only
    when class balancing needs the counts."""
    spec, workers = sets.spec, min(cfg.data.workers, 8)
    error, counts = None, None
    if ctx.is_main:
        try:
            if spec.anomaly_ids or cfg.train.class_balance != "none":
                counts = scan_labels(sets.train, cfg.data.train_split, spec=spec, workers=workers).tolist()
            if spec.anomaly_ids:
                scan_labels(sets.val, cfg.data.val_split, spec=spec, purpose="choosing checkpoints", workers=workers)
        except UserError as exc:
            error = str(exc)
    error, counts = D.broadcast_object(ctx, (error, counts))
    if error:
        raise UserError(error)
    return counts


def _class_weights(t: TrainConfig, num_classes: int, counts: list[int] | None) -> list[float] | None:
    """``train.class_weights`` as given, or balanced from the label counts (``train.class_balance``)."""
    if t.class_balance == "none":
        return t.class_weights
    if t.class_weights is not None:
        raise UserError("give train.class_weights or train.class_balance, not both")
    assert counts is not None  # scanned above whenever class_balance is set
    weights = balanced_class_weights(counts[:num_classes], t.class_balance)
    log.info("class weights (%s): %s", t.class_balance, ", ".join(f"{w:.2f}" for w in weights))
    return weights


# ---------------------------------------------------------------------------------------------------
# Model, optimizer, schedule; restore; DDP
# ---------------------------------------------------------------------------------------------------
def _build_trainables(cfg: Config, ctx: D.DistContext, data: RunData, amp: str) -> Trainables:
    """Seed, then model (+ channels_last), loss (+ outlier exposure), optimizer, LR schedule and AMP scaler."""
    t, dev = cfg.train, ctx.device
    seed_everything(t.seed + ctx.rank)  # here: nothing above may change what the model starts from
    # weights from model.init_from (or a resumed checkpoint) replace the pretrained ones: no download for them
    model_cfg = dataclasses.replace(cfg.model, pretrained=False) if cfg.model.init_from else cfg.model
    model = build_model_from_config(model_cfg, data.num_classes).to(dev)
    if t.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion: SegLoss | OutlierExposureLoss = SegLoss(data.num_classes, cfg.model.aux_weight, data.class_weights)
    if cfg.outlier_exposure.enabled:
        criterion = OutlierExposureLoss.from_config(cfg.outlier_exposure, criterion)
    criterion = criterion.to(dev)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = LRSchedule(optimizer, cfg.schedule, t.epochs * data.steps_per_epoch, data.steps_per_epoch)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    return Trainables(model, criterion, optimizer, scheduler, scaler)


def _init_from(cfg: Config, parts: Trainables, data: RunData) -> dict[str, Any] | None:
    """A new run with ``model.init_from``: that checkpoint's weights (only) into the model; returns its record
    (path, sha256, ...) for the run's checkpoints."""
    if not cfg.model.init_from:
        return None
    return init_weights(parts.model, cfg.model.init_from, model_name=cfg.model.name,
                        class_names=data.sets.spec.class_names)


def _settle_margins(parts: Trainables, ckpt: dict[str, Any] | None, ctx: D.DistContext, data: RunData, amp: str
                    ) -> None:
    """``auto`` outlier-loss margins: a resumed run takes the values its checkpoint stored (never recomputed:
    exact resume); a new one computes them from the starting model on the validation split
    (:mod:`anomalyseg.engine.oe_margins`): rank 0 on its validation shard, every rank gets its numbers."""
    crit = parts.criterion
    if not isinstance(crit, OutlierExposureLoss) or not crit.pending_margins:
        return
    if ckpt is not None:
        stored = ckpt.get("outlier_exposure") or {}
        if not all(isinstance(stored.get(k), int | float) for k in ("margin_in", "margin_out")):
            raise UserError("--resume: the checkpoint holds no resolved outlier_exposure margins for 'auto'")
        crit.set_margins(stored["margin_in"], stored["margin_out"], stored.get("auto") or {})
        return
    error, margins = None, None
    if ctx.is_main:
        s = crit.settings
        try:
            margins = calibrate_margins(parts.bare, data.val_loader, s["loss"], data.num_classes, ctx.device,
                                        s["margin_in"], s["margin_out"], amp=amp)
        except UserError as exc:
            error = str(exc)
    error, margins = D.broadcast_object(ctx, (error, margins))
    if error:
        raise UserError(error)
    crit.set_margins(*margins)


def _restore(parts: Trainables, ckpt: dict[str, Any], ctx: D.DistContext, resume: Path | None) -> LoopState:
    """Load model / optimizer / schedule / scaler / this rank's RNG states; returns the loop's progress."""
    ckpt_io.load_model_state(parts.model, ckpt["model"], source=str(resume))
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        parts.scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng") or []
    if len(rngs) == ctx.world_size:
        ckpt_io.set_rng_state(rngs[ctx.rank])
    else:
        log.warning("checkpoint has RNG states for %d process(es), this run has %d: RNG not restored",
                    len(rngs), ctx.world_size)
    known = {f.name for f in dataclasses.fields(LoopState)}  # checkpoints of older versions lack loss_sum
    return LoopState(**{k: v for k, v in ckpt["loop"].items() if k in known})


def _distribute(model: nn.Module, t: TrainConfig, ctx: D.DistContext) -> nn.Module:
    """DistributedDataParallel (SyncBatchNorm on CUDA if asked) under ``torchrun``; else ``model`` itself."""
    if not ctx.distributed:
        return model
    dev = ctx.device
    if t.sync_bn and dev.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


# ---------------------------------------------------------------------------------------------------
# Run directory
# ---------------------------------------------------------------------------------------------------
def _lock(ctx: D.DistContext, run_dir: Path, locks: list[FileLock]) -> None:
    """Rank 0 locks ``run_dir`` (appended to ``locks``, to release); every rank learns a refusal."""
    error = None
    if ctx.is_main:
        try:
            locks.append(lock_run_dir(run_dir))
        except UserError as exc:
            error = str(exc)
    error = D.broadcast_object(ctx, error)
    if error:
        raise UserError(error)


def _open_run_dir(cfg: Config, ctx: D.DistContext, bare: nn.Module, resume: Path | None, locks: list[FileLock]
                  ) -> Path:
    """The resumed run's folder (locked already), or a new one: rank 0 creates and locks it, every rank learns
    its name."""
    if resume is not None:
        return resume
    made = create_run_dir(cfg.out_dir, cfg.run_name, getattr(bare, "name", cfg.model.name)) if ctx.is_main else None
    run_dir = Path(D.broadcast_object(ctx, str(made) if made else None))
    _lock(ctx, run_dir, locks)
    return run_dir


def _write_run_files(cfg: Config, ctx: D.DistContext, run_dir: Path, state: LoopState, *, resumed: bool
                     ) -> logging.Handler | None:
    """Rank 0: resolved ``config.yaml``, ``train.log`` attached (returned, to detach), and on resume
    ``metrics.jsonl`` cut back to the validations of the checkpoint we continue from."""
    if not ctx.is_main:
        return None
    dump_config(cfg, run_dir / "config.yaml")
    handler = attach_log_file(run_dir)
    if resumed:
        with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in state.history)
    return handler


