"""Wiring of one training run: config -> datasets, model, optimizer, run directory, loop, checkpoints.

Called through :func:`anomalyseg.engine.train.train`. Resume continues EXACTLY: the checkpoint holds the
optimizer / schedule / scaler states, each rank's RNG states and how many batches of the current epoch were
consumed; the resumed sampler replays the same order from there and augmentations are seeded per sample.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anomalyseg import __version__
from anomalyseg.config import Config, DataConfig, config_from_dict, config_to_dict, diff_configs, dump_config
from anomalyseg.engine import checkpoint as ckpt_io
from anomalyseg.engine import distributed as D
from anomalyseg.engine.factory import SegLoss, balanced_class_weights, build_model_from_config, build_optimizer
from anomalyseg.engine.guards import check_split_allowed, scan_labels
from anomalyseg.engine.loaders import make_eval_loader, make_train_loader
from anomalyseg.engine.rundir import (
    RunLogger,
    attach_log_file,
    colorize,
    create_run_dir,
    denormalize,
    detach_log_file,
)
from anomalyseg.engine.schedules import LRSchedule
from anomalyseg.engine.train import evaluate_segmentation, train_one_epoch
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

#: Keys a resumed run may change without breaking exactness (they do not touch the numbers).
RESUME_MUTABLE = ("train.epochs", "train.device", "train.progress", "train.log_every", "train.early_stop_patience",
                  "train.checkpoint_every_steps", "data.workers", "data.root", "out_dir", "run_name")


@dataclass
class LoopState:
    """Progress of a run, saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    batch_in_epoch: int = 0  # batches of epoch ``epoch`` already consumed (mid-epoch checkpoints)
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_validations: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_datasets(cfg: DataConfig) -> tuple[Any, Any, Any]:
    """``(train, val, info)`` StreetHazards datasets with the configured transforms (test split refused)."""
    from torch.utils.data import Subset

    from anomalyseg.data.streethazards import StreetHazards
    from anomalyseg.data.transforms import EvalTransform, TrainTransform

    check_split_allowed(cfg.train_split, "training")
    check_split_allowed(cfg.val_split, "validation (choosing checkpoints)")
    train_tf = TrainTransform(crop_size=cfg.crop_size, scale_range=cfg.scale_range, hflip=cfg.hflip,
                              color_jitter=cfg.color_jitter, blur=cfg.blur)
    train_ds = StreetHazards(cfg.root, cfg.train_split, transform=train_tf, on_error=cfg.on_error)
    val_ds = StreetHazards(cfg.root, cfg.val_split, transform=EvalTransform(size=cfg.val_size), on_error="raise")
    info = train_ds.info
    if cfg.max_train_samples is not None:
        train_ds = Subset(train_ds, range(min(cfg.max_train_samples, len(train_ds))))
    if cfg.max_val_samples is not None:
        val_ds = Subset(val_ds, range(min(cfg.max_val_samples, len(val_ds))))
    return train_ds, val_ds, info


def _check_config(cfg: Config) -> None:
    t = cfg.train
    for key, value, low in (("train.epochs", t.epochs, 1), ("train.grad_accum", t.grad_accum, 1),
                            ("train.val_every", t.val_every, 1), ("data.batch_size", cfg.data.batch_size, 1),
                            ("data.val_batch_size", cfg.data.val_batch_size, 1), ("data.workers", cfg.data.workers, 0),
                            ("train.checkpoint_every_steps", t.checkpoint_every_steps, 0)):
        if value < low:
            raise UserError(f"{key} must be >= {low}, got {value}")


def _resume_config(cfg: Config, run_dir: Path, stored: dict[str, Any]) -> Config:
    """The run's own config, with only the :data:`RESUME_MUTABLE` keys taken from ``cfg``."""
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


def run_training(config: Config, device: str | torch.device | None = None, resume: str | Path | None = None) -> Path:
    """See :func:`anomalyseg.engine.train.train`."""
    ctx = D.init_distributed(device or config.train.device)
    previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        return _run(config, ctx, Path(resume) if resume else None)
    finally:  # process-wide switches go back to what the caller had
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]
        D.cleanup(ctx)


def _run(cfg: Config, ctx: D.DistContext, resume: Path | None) -> Path:
    dev = ctx.device
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        if not (resume / "checkpoints" / "last.pt").is_file():
            raise UserError(f"--resume {resume}: no checkpoints/last.pt there (is it a run folder?)")
        ckpt = ckpt_io.load_checkpoint(resume / "checkpoints" / "last.pt")
        cfg = _resume_config(cfg, resume, ckpt["config"])
    _check_config(cfg)
    t = cfg.train
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")  # CUDA: bilinear backward warns
        if dev.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not t.deterministic
    amp = t.amp if dev.type == "cuda" else "none"
    if amp != t.amp:
        log.warning("train.amp=%s needs CUDA; training in float32 on %s", t.amp, dev)

    train_ds, val_ds, info = build_datasets(cfg.data)
    # leakage guard (rank 0 scans the labels once, cached), also giving the class counts for balancing
    error, counts = None, None
    if ctx.is_main:
        try:
            counts = scan_labels(train_ds, cfg.data.train_split, anomaly_id=info.anomaly_id,
                                 workers=min(cfg.data.workers, 8)).tolist()
            scan_labels(val_ds, cfg.data.val_split, anomaly_id=info.anomaly_id, purpose="choosing checkpoints",
                        workers=min(cfg.data.workers, 8))
        except UserError as exc:
            error = str(exc)
    error, counts = D.broadcast_object(ctx, (error, counts))
    if error:
        raise UserError(error)
    num_classes = info.num_classes
    class_weights = t.class_weights
    if t.class_balance != "none":
        if class_weights is not None:
            raise UserError("give train.class_weights or train.class_balance, not both")
        class_weights = balanced_class_weights(counts[:num_classes], t.class_balance)
        log.info("class weights (%s): %s", t.class_balance, ", ".join(f"{w:.2f}" for w in class_weights))

    from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
    from anomalyseg.data.samples import collate_samples

    pin = dev.type == "cuda"
    loader, sampler = make_train_loader(train_ds, batch_size=cfg.data.batch_size, workers=cfg.data.workers,
                                        seed=t.seed, rank=ctx.rank, world_size=ctx.world_size,
                                        collate_fn=collate_samples, pin_memory=pin)
    val_loader = make_eval_loader(val_ds, batch_size=cfg.data.val_batch_size, workers=cfg.data.workers,
                                  rank=ctx.rank, world_size=ctx.world_size, collate_fn=collate_samples,
                                  pin_memory=pin)
    batches_per_epoch = (sampler.num_samples // cfg.data.batch_size) // t.grad_accum * t.grad_accum
    if batches_per_epoch == 0:
        raise UserError(f"training split has {len(train_ds)} samples: fewer than one step of "
                        f"batch_size {cfg.data.batch_size} x grad_accum {t.grad_accum} x {ctx.world_size} process(es)")
    steps_per_epoch = batches_per_epoch // t.grad_accum

    seed_everything(t.seed + ctx.rank)  # here: nothing above may change what the model starts from
    model = build_model_from_config(cfg.model, num_classes).to(dev)
    if t.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion = SegLoss(num_classes, cfg.model.aux_weight, class_weights).to(dev)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = LRSchedule(optimizer, cfg.schedule, t.epochs * steps_per_epoch, steps_per_epoch)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    state = LoopState()

    if ckpt is not None:
        ckpt_io.load_model_state(model, ckpt["model"], source=str(resume))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = LoopState(**ckpt["loop"])
        rngs = ckpt.get("rng") or []
        if len(rngs) == ctx.world_size:
            ckpt_io.set_rng_state(rngs[ctx.rank])
        else:
            log.warning("checkpoint has RNG states for %d process(es), this run has %d: RNG not restored",
                        len(rngs), ctx.world_size)
    if ctx.distributed:
        if t.sync_bn and dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    bare = ckpt_io.unwrap(model)

    # run directory: rank 0 creates it, everyone learns its name
    run_dir = resume
    if run_dir is None:
        made = create_run_dir(cfg.out_dir, cfg.run_name, getattr(bare, "name", cfg.model.name)) if ctx.is_main else None
        run_dir = Path(D.broadcast_object(ctx, str(made) if made else None))
    handler = None
    if ctx.is_main:
        dump_config(cfg, run_dir / "config.yaml")
        handler = attach_log_file(run_dir)
        if resume is not None:  # drop validations logged after the checkpoint we continue from
            with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in state.history)
    logger = RunLogger(run_dir if ctx.is_main else None, purge_step=state.step + 1 if resume else None)
    class_names = list(getattr(info, "class_names", [str(i) for i in range(num_classes)]))
    palette = list(getattr(info, "palette", [(i * 19 % 256, i * 67 % 256, i * 137 % 256) for i in range(256)]))
    progress = t.progress and ctx.is_main

    def payload() -> dict[str, Any]:
        return {
            "format": ckpt_io.FORMAT, "model_name": cfg.model.name, "num_classes": num_classes,
            "has_aux": bool(getattr(bare, "has_aux", False)), "class_names": class_names,
            "ignore_index": 255, "anomaly_id": int(info.anomaly_id), "model": bare.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": state.epoch, "step": state.step,
            "batch_in_epoch": state.batch_in_epoch, "loop": {**state.__dict__, "history": list(state.history)},
            "rng": rng_all, "config": config_to_dict(cfg),
            "versions": {"anomalyseg": __version__, "torch": str(torch.__version__)},
        }

    def save(name: str) -> None:
        nonlocal rng_all
        rng_all = D.gather_objects(ctx, ckpt_io.rng_state())  # collective: every rank calls save()
        if ctx.is_main:
            ckpt_io.save_checkpoint(run_dir / "checkpoints" / f"{name}.pt", payload())

    rng_all: list[Any] = []
    log.info("run %s: %s on %s x%d, %d train / %d val samples, %d steps/epoch, %d epochs", run_dir, cfg.model.name,
             dev, ctx.world_size, len(train_ds), len(val_ds), steps_per_epoch, t.epochs)
    if resume is not None:
        log.info("resuming at epoch %d, batch %d (step %d)", state.epoch + 1, state.batch_in_epoch, state.step)

    def on_step(batches_done: int, loss: float | None) -> None:
        state.step += 1
        state.batch_in_epoch = batches_done
        if loss is not None:
            logger.scalars({"train/loss": loss, "train/lr": optimizer.param_groups[0]["lr"]}, state.step)
        every = t.checkpoint_every_steps
        if every and state.step % every == 0 and batches_done < batches_per_epoch:
            save("last")
            if ctx.is_main:
                log.info("saved mid-epoch checkpoint at step %d (epoch %d, batch %d)", state.step,
                         state.epoch + 1, batches_done)

    stop = False
    try:
        for epoch in range(state.epoch, t.epochs):
            sampler.set_epoch(epoch)
            sampler.set_start(state.batch_in_epoch * cfg.data.batch_size)
            mean_loss = train_one_epoch(
                model, criterion, optimizer, loader, scheduler, dev, epoch, num_batches=batches_per_epoch,
                start_batch=state.batch_in_epoch, grad_accum=t.grad_accum, amp=amp, channels_last=t.channels_last,
                scaler=scaler, grad_clip_norm=cfg.optim.grad_clip_norm, log_every=t.log_every, on_step=on_step,
                progress=progress)
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            log.info("epoch %d/%d: mean loss %.4f, lr %.3g", epoch + 1, t.epochs, mean_loss,
                     optimizer.param_groups[0]["lr"])
            D.sync_buffers(ctx, bare)
            if (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs:
                shown: list[Any] = []
                result = evaluate_segmentation(bare, val_loader, dev, num_classes, amp=amp,
                                               channels_last=t.channels_last, progress=progress,
                                               collect=shown, max_collect=t.num_vis_images if ctx.is_main else 0)
                record = {"epoch": epoch + 1, "step": state.step, "train_loss": mean_loss,
                          **{k: result[k] for k in ("miou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy")}}
                state.history.append(record)
                logger.validation(record, class_names, state.step)
                logger.images("val", [_panel(s, palette, IMAGENET_MEAN, IMAGENET_STD) for s in shown], state.step)
                scheduler.observe(result["miou"])
                improved = not math.isnan(result["miou"]) and result["miou"] > state.best_metric
                if improved:
                    state.best_metric, state.best_epoch, state.bad_validations = result["miou"], epoch + 1, 0
                else:
                    state.bad_validations += 1
                log.info("validation epoch %d: mIoU %.4f (best %.4f at epoch %d)", epoch + 1, result["miou"],
                         state.best_metric, state.best_epoch)
                if improved:
                    save("best")
                patience = t.early_stop_patience
                stop = patience is not None and state.bad_validations >= patience
            save("last")
            if stop:
                log.info("early stop: no mIoU improvement in %d validations", state.bad_validations)
                break
    finally:
        logger.close()
        if handler is not None:
            detach_log_file(handler)
    D.barrier(ctx)
    return run_dir


def _panel(sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor], palette: list[Any], mean: Any, std: Any
           ) -> torch.Tensor:
    """image | ground truth | prediction, side by side at label resolution."""
    image, label, pred = sample
    img = denormalize(image, mean, std)
    if img.shape[-2:] != label.shape[-2:]:
        img = torch.nn.functional.interpolate(img[None].float(), size=label.shape[-2:], mode="bilinear",
                                              align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return torch.cat([img, colorize(label, palette), colorize(pred, palette)], dim=2)
