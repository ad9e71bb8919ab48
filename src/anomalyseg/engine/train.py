"""The training loop, torchvision-references style: two flat functions.

``train_one_epoch`` runs optimizer steps (AMP, channels_last, gradient accumulation, DDP ``no_sync``);
``evaluate_segmentation`` fills one dataset-level confusion matrix (synced across ranks). A whole run
(config -> datasets, model, run directory, checkpoints, exact resume) is the workflow
:func:`anomalyseg.workflows.train.train`, which calls these; see :mod:`anomalyseg.engine.loaders` for how data
order and augmentation replay on resume.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.metrics import SegmentationMetrics
from anomalyseg.models.outputs import SegOutput
from anomalyseg.progress import progress_bar

log = logging.getLogger(__name__)

#: ``on_step(batches_done, loss, terms)``: see :func:`train_one_epoch`.
StepCallback = Callable[[int, float | None, Mapping[str, float]], None]

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class EpochLoss:
    """Sum and count of the batch losses of one epoch so far, and of its logging window.

    The window holds the batches since the last logged step (with the criterion's ``last_terms`` summed
    alike): what the next ``train/loss`` point averages. :func:`train_one_epoch` continues both (a resumed epoch
    starts from the values saved with its mid-epoch checkpoint, so its loss and its first logged point after
    resume cover the same batches as an uninterrupted run's) and keeps them current after every batch; the sums
    stay on the device, :meth:`snapshot` syncs.
    """

    total: float | torch.Tensor = 0.0
    count: int = 0
    window: float | torch.Tensor = 0.0
    window_count: int = 0
    window_terms: dict[str, float | torch.Tensor] = field(default_factory=dict)

    def snapshot(self) -> EpochLoss:
        """A copy in Python numbers (what a checkpoint saves), with one device sync; float32 sums stay exact."""
        sums = [self.total, self.window, *self.window_terms.values()]
        device = next((v.device for v in sums if isinstance(v, torch.Tensor)), None)
        numbers = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device) for v in sums]).tolist()
        return EpochLoss(numbers[0], self.count, numbers[1], self.window_count,
                         dict(zip(self.window_terms, numbers[2:])))


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16`` / ``fp16`` on CUDA; a null context otherwise."""
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=AMP_DTYPES[amp])


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images = batch["image"].to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["label"].to(device, non_blocking=True)


def train_one_epoch(
    model: nn.Module,
    criterion: Callable[[SegOutput, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loader: Iterable[dict[str, Any]],
    scheduler: Any,
    device: torch.device,
    epoch: int,
    *,
    num_batches: int,
    start_batch: int = 0,
    grad_accum: int = 1,
    amp: str = "none",
    channels_last: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip_norm: float | None = None,
    log_every: int = 20,
    on_step: StepCallback | None = None,
    progress: bool = True,
    epoch_loss: EpochLoss | None = None,
) -> float:
    """Train over batches ``start_batch .. num_batches-1`` of ``loader`` (which starts at ``start_batch``).

    One optimizer step per ``grad_accum`` batches; ``scheduler.step()`` after each. ``on_step(batches_done,
    loss, terms)`` is called after every optimizer step (``loss``: on the steps whose number within the epoch is a
    multiple of ``log_every``, the mean batch loss since the previous such step of the epoch, the window of
    ``epoch_loss``, which a resumed epoch continues; else None, so the loop syncs with the device only every
    ``log_every`` steps). A criterion with a
    ``last_terms`` mapping (detached scalar tensors of its last call, e.g. the parts of an outlier-exposure
    loss) has them averaged over the same window: ``terms``, empty on the steps without a loss. Returns the mean
    loss.
    """
    model.train()
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    running = epoch_loss if epoch_loss is not None else EpochLoss()

    def resumed(value: float | torch.Tensor) -> torch.Tensor:
        # float32 like the losses; a saved sum is a float32 value, so a resumed epoch adds up bit-identically
        return torch.full((), float(value), dtype=torch.float32, device=device)

    # the same tensors / dict as in ``running``, updated in place below
    running.total, running.window = resumed(running.total), resumed(running.window)
    running.window_terms = {k: resumed(v) for k, v in running.window_terms.items()}
    total, window, window_terms = running.total, running.window, running.window_terms
    micro = 0
    bar = progress_bar(total=num_batches, initial=start_batch, desc=f"epoch {epoch + 1}", unit="batch",
               disable=not progress, dynamic_ncols=True, leave=False)
    optimizer.zero_grad(set_to_none=True)
    batch_idx = start_batch
    for batch in loader:
        if batch_idx >= num_batches:
            break
        images, target = _to_device(batch, device, channels_last)
        micro += 1
        last_micro = micro == grad_accum
        sync = contextlib.nullcontext() if (last_micro or not ddp) else model.no_sync()
        with sync:
            with autocast(device, amp):
                output = model(images)
            loss = criterion(output, target)
            scaler.scale(loss / grad_accum).backward()
        window += loss.detach()
        for key, value in getattr(criterion, "last_terms", {}).items():
            window_terms[key] = window_terms[key] + value if key in window_terms else value.clone()
        total += loss.detach()
        running.count += 1
        running.window_count += 1
        batch_idx += 1
        bar.update(1)
        if not last_micro:
            continue
        micro = 0
        if grad_clip_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        shown, terms = None, {}
        if log_every and (batch_idx // grad_accum) % log_every == 0:
            sums = torch.stack([window, *window_terms.values()])
            means = (sums / max(running.window_count, 1)).tolist()  # one sync
            shown, terms = means[0], dict(zip(window_terms, means[1:]))
            if not math.isfinite(shown):
                raise FloatingPointError(f"loss is {shown} at epoch {epoch + 1}, batch {batch_idx}")
            bar.set_postfix(loss=f"{shown:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            window.zero_()
            window_terms.clear()
            running.window_count = 0
        if on_step is not None:
            on_step(batch_idx, shown, terms)
    bar.close()
    return float(total / max(running.count, 1))


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    num_classes: int,
    *,
    ignore_index: int = 255,
    exclude_ids: Sequence[int] = (),
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = True,
    collect: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    max_collect: int = 0,
) -> dict[str, Any]:
    """mIoU / per-class IoU over the loader (synced across ranks when a process group exists).

    Logits are upsampled to the label resolution (eval labels stay native); label ids in ``exclude_ids``
    (e.g. the anomaly id on the test split) count as ignored. Up to ``max_collect`` ``(image, label,
    prediction)`` CPU triples are appended to ``collect`` for display.
    """
    model.eval()
    metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    for batch in progress_bar(loader, desc="validate", unit="batch", disable=not progress, dynamic_ncols=True,
                              leave=False):
        images, target = _to_device(batch, device, channels_last)
        with autocast(device, amp):
            output = model(images)
        logits = output.logits.float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        for cls in exclude_ids:
            target = torch.where(target == cls, torch.full_like(target, ignore_index), target)
        pred = logits.argmax(1)
        metrics.update(pred, target)
        if collect is not None:
            for i in range(pred.shape[0]):
                if len(collect) >= max_collect:
                    break
                collect.append((images[i].float().cpu(), target[i].cpu(), pred[i].cpu()))
    metrics.sync()
    return metrics.compute()


__all__ = ["autocast", "evaluate_segmentation", "train_one_epoch"]
