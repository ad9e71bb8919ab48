"""The epoch loop of a training run: train, validate when due, checkpoint; and the state it shares.

:func:`anomalyseg.workflows.train.train` builds a :class:`TrainRun` (data, model, optimizer, run directory)
and hands it to :func:`run_epochs`. Every ``last`` / ``best`` checkpoint holds what exact resume needs
(:func:`checkpoint_payload`); every rank calls :func:`save` (RNG states are gathered), rank 0 writes.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from anomalyseg import __version__
from anomalyseg.checkpoints import io as ckpt_io
from anomalyseg.config import Config
from anomalyseg.configio import config_to_dict
from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.engine import distributed as D
from anomalyseg.engine.factory import SegLoss
from anomalyseg.engine.loaders import ResumableSampler, TrainDatasets, read_error_count
from anomalyseg.engine.oe_losses import OutlierExposureLoss
from anomalyseg.engine.rundir import RunLogger, prediction_panel
from anomalyseg.engine.schedules import LRSchedule
from anomalyseg.engine.train import EpochLoss, evaluate_segmentation, train_one_epoch

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Progress of a run, saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    batch_in_epoch: int = 0  # batches of epoch ``epoch`` already consumed (mid-epoch checkpoints)
    loss_sum: float = 0.0  # sum of the losses of those batches (float32 value), so a resumed epoch's
    loss_count: int = 0  # train_loss covers the whole epoch; how many batches that sum holds
    loss_window_sum: float = 0.0  # the same for the batches since the last logged train/loss (and the
    loss_window_count: int = 0  # criterion's terms), so the first point logged after resume averages the
    loss_window_terms: dict[str, float] = field(default_factory=dict)  # batches an uninterrupted run's does
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_validations: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunData:
    """The opened splits, their loaders and what follows from their sizes and labels."""

    sets: TrainDatasets
    loader: DataLoader
    sampler: ResumableSampler
    val_loader: DataLoader
    batches_per_epoch: int
    steps_per_epoch: int
    class_weights: list[float] | None

    @property
    def num_classes(self) -> int:
        """Known classes of the dataset (the model's outputs)."""
        return self.sets.spec.num_classes


@dataclass
class Trainables:
    """Model (DDP-wrapped under ``torchrun``), the bare module inside it, loss, optimizer, schedule, scaler."""

    model: nn.Module
    criterion: SegLoss | OutlierExposureLoss
    optimizer: torch.optim.Optimizer
    scheduler: LRSchedule
    scaler: torch.amp.GradScaler

    @property
    def bare(self) -> nn.Module:
        """The module without its DDP wrapper: what is validated and saved."""
        return ckpt_io.unwrap(self.model)


@dataclass
class TrainRun:
    """What the loop's steps share once everything is built."""

    cfg: Config
    ctx: D.DistContext
    amp: str
    data: RunData
    parts: Trainables
    state: LoopState
    run_dir: Path
    logger: RunLogger
    resumed: bool
    rng_all: list[Any] = field(default_factory=list)  # every rank's RNG state at the last save
    epoch_loss: EpochLoss = field(default_factory=EpochLoss)  # the current epoch's loss sum, kept by the loop
    init_from: dict[str, Any] | None = None  # the checkpoint whose weights started the run (model.init_from)

    @property
    def palette(self) -> list[Any]:
        """The dataset's colours for the TensorBoard panels (a fixed cycle when it has none)."""
        fallback = [(i * 19 % 256, i * 67 % 256, i * 137 % 256) for i in range(256)]
        return list(getattr(self.data.sets.info, "palette", fallback))


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------
def run_epochs(run: TrainRun) -> None:
    """Epochs from where the state stands: train, validate when due, save ``last``; stop early if asked."""
    cfg, state, t = run.cfg, run.state, run.cfg.train
    log.info("run %s: %s on %s x%d, %d train / %d val samples, %d steps/epoch, %d epochs", run.run_dir,
             cfg.model.name, run.ctx.device, run.ctx.world_size, len(run.data.sets.train), len(run.data.sets.val),
             run.data.steps_per_epoch, t.epochs)
    if run.init_from:
        log.info("weights from %s (sha256 %s); fresh optimizer, schedule and epoch count", run.init_from["path"],
                 run.init_from["sha256"][:16])
    if isinstance(run.parts.criterion, OutlierExposureLoss):
        log.info("outlier exposure (source %s): %s", cfg.outlier_exposure.source, run.parts.criterion.describe())
    if run.resumed:
        log.info("resuming at epoch %d, batch %d (step %d)", state.epoch + 1, state.batch_in_epoch, state.step)
    for epoch in range(state.epoch, t.epochs):
        mean_loss = _train_epoch(run, epoch)
        stop = False
        if (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs:
            stop = _validate(run, epoch, mean_loss)
        save(run, "last")
        if stop:
            log.info("early stop: no mIoU improvement in %d validations", state.bad_validations)
            break


def _train_epoch(run: TrainRun, epoch: int) -> float:
    """One epoch (or its rest, on resume) of optimizer steps; returns the mean loss."""
    cfg, data, parts, state, t = run.cfg, run.data, run.parts, run.state, run.cfg.train
    data.sampler.set_epoch(epoch)
    data.sampler.set_start(state.batch_in_epoch * cfg.data.batch_size)
    errors_before = read_error_count(data.sets.train)
    # a resumed epoch continues its saved sums
    run.epoch_loss = EpochLoss(state.loss_sum, state.loss_count, state.loss_window_sum, state.loss_window_count,
                               dict(state.loss_window_terms))
    mean_loss = train_one_epoch(
        parts.model, parts.criterion, parts.optimizer, data.loader, parts.scheduler, run.ctx.device, epoch,
        num_batches=data.batches_per_epoch, start_batch=state.batch_in_epoch, grad_accum=t.grad_accum, amp=run.amp,
        channels_last=t.channels_last, scaler=parts.scaler, grad_clip_norm=cfg.optim.grad_clip_norm,
        log_every=t.log_every, on_step=functools.partial(_on_step, run), progress=t.progress and run.ctx.is_main,
        epoch_loss=run.epoch_loss)
    state.epoch, state.batch_in_epoch = epoch + 1, 0
    _keep_epoch_loss(state, EpochLoss())
    read_errors = sum(D.gather_objects(run.ctx, read_error_count(data.sets.train) - errors_before))
    log.log(logging.WARNING if read_errors else logging.INFO,
            "epoch %d/%d: mean loss %.4f, lr %.3g, %d unreadable sample(s) skipped (data.on_error=%s)",
            epoch + 1, t.epochs, mean_loss, parts.optimizer.param_groups[0]["lr"], read_errors, cfg.data.on_error)
    D.sync_buffers(run.ctx, parts.bare)
    return mean_loss


def _on_step(run: TrainRun, batches_done: int, loss: float | None, terms: Mapping[str, float]) -> None:
    """After each optimizer step: count it, log the loss (and the criterion's terms) when given, save a
    mid-epoch ``last`` when due."""
    state = run.state
    state.step += 1
    state.batch_in_epoch = batches_done
    if loss is not None:
        run.logger.scalars({"train/loss": loss, "train/lr": run.parts.optimizer.param_groups[0]["lr"],
                            **{f"train/{k}": v for k, v in terms.items()}}, state.step)
    every = run.cfg.train.checkpoint_every_steps
    if every and state.step % every == 0 and batches_done < run.data.batches_per_epoch:
        _keep_epoch_loss(state, run.epoch_loss.snapshot())  # the only device sync this adds
        save(run, "last")
        if run.ctx.is_main:
            log.info("saved mid-epoch checkpoint at step %d (epoch %d, batch %d)", state.step, state.epoch + 1,
                     batches_done)


def _keep_epoch_loss(state: LoopState, loss: EpochLoss) -> None:
    """Copy the epoch's loss sums (Python numbers) into the state a checkpoint saves."""
    state.loss_sum, state.loss_count = float(loss.total), loss.count
    state.loss_window_sum, state.loss_window_count = float(loss.window), loss.window_count
    state.loss_window_terms = {k: float(v) for k, v in loss.window_terms.items()}


def _validate(run: TrainRun, epoch: int, mean_loss: float) -> bool:
    """mIoU on the validation split: log it, step a plateau schedule, save ``best`` when it improved.
    Returns whether early stopping is due."""
    state, t, spec = run.state, run.cfg.train, run.data.sets.spec
    shown: list[Any] = []
    result = evaluate_segmentation(run.parts.bare, run.data.val_loader, run.ctx.device, run.data.num_classes,
                                   amp=run.amp, channels_last=t.channels_last, progress=t.progress and run.ctx.is_main,
                                   collect=shown, max_collect=t.num_vis_images if run.ctx.is_main else 0)
    record = {"epoch": epoch + 1, "step": state.step, "train_loss": mean_loss,
              **{k: result[k] for k in ("miou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy")}}
    state.history.append(record)
    run.logger.validation(record, list(spec.class_names), state.step)
    palette = run.palette
    run.logger.images("val", [prediction_panel(s, palette) for s in shown], state.step)
    run.parts.scheduler.observe(result["miou"])
    improved = not math.isnan(result["miou"]) and result["miou"] > state.best_metric
    if improved:
        state.best_metric, state.best_epoch, state.bad_validations = result["miou"], epoch + 1, 0
    else:
        state.bad_validations += 1
    log.info("validation epoch %d: mIoU %.4f (best %.4f at epoch %d)", epoch + 1, result["miou"],
             state.best_metric, state.best_epoch)
    if improved:
        save(run, "best")
    patience = t.early_stop_patience
    return patience is not None and state.bad_validations >= patience


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------
def save(run: TrainRun, name: str) -> None:
    """Write ``checkpoints/<name>.pt`` (rank 0); collective: every rank calls it (RNG states are gathered)."""
    run.rng_all = D.gather_objects(run.ctx, ckpt_io.rng_state())
    if run.ctx.is_main:
        ckpt_io.save_checkpoint(run.run_dir / "checkpoints" / f"{name}.pt", checkpoint_payload(run))


def checkpoint_payload(run: TrainRun) -> dict[str, Any]:
    """Everything a checkpoint holds (see :mod:`anomalyseg.checkpoints.io`): weights, training states, the
    loop's progress, RNG states, the config, the dataset's class metadata, the checkpoint the weights started
    from (``init_from``: path, sha256, ...) and the resolved outlier-exposure loss settings."""
    bare, parts, state, spec = run.parts.bare, run.parts, run.state, run.data.sets.spec
    oe = parts.criterion.settings if isinstance(parts.criterion, OutlierExposureLoss) else None
    return {
        "format": ckpt_io.FORMAT, "model_name": run.cfg.model.name, "num_classes": run.data.num_classes,
        "has_aux": bool(getattr(bare, "has_aux", False)), "class_names": list(spec.class_names),
        "ignore_index": IGNORE_INDEX, "anomaly_id": int(spec.anomaly_ids[0]) if spec.anomaly_ids else None,
        "dataset": spec.name, "model": bare.state_dict(),
        "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(), "epoch": state.epoch, "step": state.step,
        "batch_in_epoch": state.batch_in_epoch, "loop": {**state.__dict__, "history": list(state.history)},
        "rng": run.rng_all, "config": config_to_dict(run.cfg),
        "versions": {"anomalyseg": __version__, "torch": str(torch.__version__)},
        "init_from": run.init_from, "outlier_exposure": oe,
    }
