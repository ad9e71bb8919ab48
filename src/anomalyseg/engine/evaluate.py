"""One-pass evaluation and streaming scorer fits.

:func:`run_evaluation`: ONE forward pass per batch (optionally test-time augmented), logits upsampled to the
label's native resolution, then every scorer and every metric consumes that output before the next batch:
memory follows the batch, never the dataset. :func:`fit_scorers`: the in-distribution fitting passes of the
scorers that need them, one model pass over the loader per fitting pass, mergeable across ranks.

Protocols (every result records which one produced it):

* ``per_image`` -- the official StreetHazards protocol (hendrycks/anomaly-seg ``eval_ood.py``): metrics on
  each image's pixels, averaged over the images holding both classes; FPR95 by the "closest" rule; EVERY
  pixel counts (a label-255 pixel counts as normal, as in the official code) unless ``ignore_ids`` are given,
  then those pixels and 255 are left out.
* ``pooled`` -- one curve over all pixels of all images, FPR95 by the "first" rule (SegmentMeIfYouCan
  style); label-255 pixels and ``ignore_ids`` are left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.engine.timing import StageTimer, timings_summary
from anomalyseg.engine.tta import TTA, forward
from anomalyseg.errors import NotFittedError, UserError
from anomalyseg.metrics import AnomalyMetrics, SegmentationMetrics
from anomalyseg.metrics.anomaly import check_finite
from anomalyseg.metrics.base import distributed_ready
from anomalyseg.metrics.targets import anomaly_target, mask_ids
from anomalyseg.scoring import FIT_COMMAND, Scorer, check_unique
from anomalyseg.scoring.base import labels_at

log = logging.getLogger(__name__)

PROTOCOLS = ("per_image", "pooled")
EVAL_AT = ("label", "input", "model")  # "model" = "input": labels resized to the model input
FPR_RULES = ("first", "interp")
PER_IMAGE_KEYS = ("auroc", "aupr", "fpr95")


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------
def protocol_settings(protocol: str, ignore_ids: Sequence[int], anomaly_ids: Sequence[int], eval_at: str,
                      fpr_rule: str = "first", void_label: bool = False) -> dict[str, Any]:
    """Exactly how ``protocol`` is measured (stored with every result); ``fpr_rule`` is the pooled one,
    ``void_label``: label 255 is void (left out) under the per-image protocol too."""
    ignore_ids = sorted(int(i) for i in ignore_ids)
    common = {"protocol": protocol, "anomaly_ids": sorted(int(i) for i in anomaly_ids), "ignore_ids": ignore_ids,
              "eval_at": eval_at}
    if protocol == "per_image":
        official = not ignore_ids and not void_label
        return {**common, "fpr_rule": "closest", "ignore_index": None if official else IGNORE_INDEX,
                "aggregation": "mean over images holding both anomaly and normal pixels",
                "pixels": ("every pixel; label 255 counts as normal (official StreetHazards code)" if official
                           else f"label ids {ignore_ids} and 255 left out" if ignore_ids
                           else "label 255 (void) left out"),
                "official_streethazards": official}
    return {**common, "fpr_rule": fpr_rule, "ignore_index": IGNORE_INDEX,
            "aggregation": "one curve over all pixels of all images",
            "pixels": f"label 255{' and ids ' + str(ignore_ids) if ignore_ids else ''} left out",
            "official_streethazards": False}


def _accumulator(protocol: str, drop_void: bool, fpr_rule: str = "first") -> AnomalyMetrics:
    """The accumulator of ``protocol``; unvalidated: the targets are built here and the scores are checked
    once per scorer (:meth:`_MetricFeed.submit`), not once per protocol."""
    if protocol == "per_image":
        return AnomalyMetrics.streethazards(ignore_index=IGNORE_INDEX if drop_void else None, validate=False)
    return AnomalyMetrics("pooled", ignore_index=IGNORE_INDEX, fpr_rule=fpr_rule, validate=False)


def _targets(label: torch.Tensor, protocols: Sequence[str], anomaly_ids: Sequence[int], ignore_ids: Sequence[int],
             drop_void: bool) -> dict[str, torch.Tensor]:
    """Per protocol, the 1 / 0 (/ 255) anomaly map the accumulators read (label 255 counts as normal only under
    the official per-image protocol, i.e. per_image without ``drop_void``)."""
    built: dict[int | None, torch.Tensor] = {}
    out = {}
    for p in protocols:
        void = None if (p == "per_image" and not drop_void) else IGNORE_INDEX
        if void not in built:
            built[void] = anomaly_target(label, anomaly_ids, ignore_ids, void_label=void)
        out[p] = built[void]
    return out


def check_fitted(scorers: Iterable[Scorer]) -> None:
    """Fail before any forward pass when a scorer that needs fitting has no fitted state."""
    missing = [s.name for s in scorers if s.requires_fit and not s.is_fitted]
    if missing:
        raise NotFittedError(f"scorer(s) {', '.join(missing)} not fitted: run `{FIT_COMMAND} --scorers "
                             f"{','.join(missing)}` first")


def _positions(loader: Any) -> Iterator[int]:
    """Dataset positions in loader order: the shard's indices (ShardSampler) or 0, 1, 2, ..."""
    indices = getattr(getattr(loader, "sampler", None), "indices", None)
    if indices is not None:
        yield from indices
    count = 0 if indices is None else len(indices)
    while True:  # loaders without a known order (or a sampler shorter than the data): running count
        yield count
        count += 1


def _batch_size(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    scorers: Sequence[Scorer],
    device: torch.device | str,
    *,
    num_classes: int = 13,
    anomaly_ids: Sequence[int] = (13,),
    ignore_ids: Sequence[int] = (),
    protocols: Sequence[str] = ("per_image", "pooled"),
    tta: TTA | None = None,
    eval_at: str = "label",
    class_names: Sequence[str] | None = None,
    curve_points: int = 512,
    progress: bool = False,
    fpr_rule: str = "first",
    segmentation: bool = True,
    void_label: bool = False,
    desc: str = "evaluate",
    metric_threads: int | None = None,
) -> dict[str, Any]:
    """Closed-set segmentation metrics plus every scorer under every protocol, from one pass over ``loader``.

    ``loader`` yields dict batches (``collate_samples``) with ``image`` (model input) and ``label`` (native
    resolution, ids; 255 ignore). ``eval_at="label"`` upsamples the logits to the label resolution (the
    official way); ``"input"`` (alias ``"model"``) resizes the labels (nearest) to the input resolution instead.
    ``fpr_rule``: FPR95 rule of the pooled protocol ("first"; "interp" for the SMIYC-validation sets).
    ``segmentation=False`` skips the closed-set metrics (sets without class labels: ``None`` in the result);
    ``num_classes`` is the model's output count either way. ``void_label=True``: label 255 is void under the
    per-image protocol too (real-photo sets); by default it counts as normal there (official StreetHazards).
    ``metric_threads``: accumulators (scorer x protocol) updated concurrently (default 2 on CPU, where the work
    is numpy sorts and histogram adds that release the GIL; 1 on GPU); each accumulator still sees its batches
    in order, so results do not depend on it. Under
    ``torch.distributed`` every metric is summed over ranks and per-image records are gathered on all ranks.
    Returns plain Python data: ``segmentation``, ``protocols``, ``scorers`` (metrics per protocol, pooled
    curve), ``per_image`` (dataset order) and ``timings``.
    """
    device = torch.device(device)
    scorers = list(scorers)
    check_unique(scorers)
    check_fitted(scorers)
    protocols = tuple(dict.fromkeys(protocols))
    if not protocols or any(p not in PROTOCOLS for p in protocols):
        raise UserError(f"protocols must be a non-empty subset of {PROTOCOLS}, got {list(protocols)}")
    if eval_at not in EVAL_AT:
        raise UserError(f"eval_at must be one of {EVAL_AT}, got {eval_at!r}")
    if fpr_rule not in FPR_RULES:
        raise UserError(f"fpr_rule must be one of {FPR_RULES}, got {fpr_rule!r}")
    anomaly_ids = tuple(int(i) for i in anomaly_ids)
    ignore_ids = tuple(sorted({int(i) for i in ignore_ids}))
    if set(anomaly_ids) & set(ignore_ids):
        raise UserError(f"ids {sorted(set(anomaly_ids) & set(ignore_ids))} cannot be both anomaly and ignored")
    if not scorers:
        log.warning("no scorer given: only closed-set segmentation metrics are measured")
    needs_features = any(s.needs_features for s in scorers)

    seg = SegmentationMetrics(num_classes, ignore_index=IGNORE_INDEX)
    drop_void = bool(ignore_ids) or void_label
    accs = {s.name: {p: _accumulator(p, drop_void, fpr_rule) for p in protocols} for s in scorers}
    timer = StageTimer(device)
    if metric_threads is None:  # CPU: the metric work (numpy sorts, histogram adds) of two scorers at a time
        metric_threads = min(2, torch.get_num_threads()) if device.type == "cpu" else 1
    pool = ThreadPoolExecutor(metric_threads, thread_name_prefix="metrics") if metric_threads > 1 and scorers else None
    feed = _MetricFeed(accs, timer, pool)
    records: list[dict[str, Any]] = []
    positions = _positions(loader)
    model.eval()
    bar = tqdm(total=_batch_size(loader), desc=desc, unit="batch", disable=not progress, dynamic_ncols=True)
    start = tick = time.perf_counter()
    try:
        for batch in loader:
            timer.add(time.perf_counter() - tick, "data")
            with timer("transfer"):
                images = batch["image"].to(device, non_blocking=True)
                label = batch["label"].to(device, non_blocking=True).long()
            with timer("inference"):
                size = tuple(label.shape[-2:]) if eval_at == "label" else tuple(images.shape[-2:])
                output = forward(model, images, size, tta=tta, return_features=needs_features)
                if output.logits.shape[1] != num_classes:
                    raise UserError(f"the model predicts {output.logits.shape[1]} classes, "
                                    f"the dataset has {num_classes}")
            with timer("metrics", "metrics_segmentation"):
                if tuple(label.shape[-2:]) != size:
                    label = labels_at(label, size)
                if segmentation:
                    known = mask_ids(label, anomaly_ids)
                    seg.update(output.logits.max(1).indices, known)  # max(1) is ~3x faster than argmax(1) on CPU
                targets = _targets(label, protocols, anomaly_ids, ignore_ids, drop_void)
            ids = list(batch.get("id") or [None] * label.shape[0])
            batch_records = [{"position": next(positions), "id": i, "metrics": {}} for i in ids]
            with timer("metrics", "metrics_anomaly"):
                feed.wait()  # the previous batch's metric work ran beside this batch's loading and inference
            scores = {}
            for scorer in scorers:
                with timer("scoring", f"scoring/{scorer.name}"):
                    scores[scorer.name] = scorer.score(output)
            for name, score in scores.items():  # after scoring: the threads do not slow the scorers down
                feed.submit(name, score, targets, batch_records)
            del scores
            if not scorers or "per_image" not in protocols:
                for rec, t in zip(batch_records, targets[protocols[0]]):
                    rec["num_anomaly"], rec["num_normal"] = int((t == 1).sum()), int((t == 0).sum())
            records.extend(batch_records)
            del output, images, label, targets
            bar.update(1)
            tick = time.perf_counter()
        with timer("metrics", "metrics_anomaly"):
            feed.wait()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    timer.add(time.perf_counter() - start, "loop")

    with timer("metrics", "metrics_sync"):
        seg.sync()
        for by_protocol in accs.values():
            for acc in by_protocol.values():
                acc.sync()
    records = _gather_records(records)
    if not records:
        raise UserError("the loader yielded no image to evaluate")
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    seg_out: dict[str, Any] | None = None
    if segmentation:
        seg_out = seg.compute()
        seg_out["per_class_iou"] = dict(zip(names, seg_out["per_class_iou"]))
        seg_out["per_class_accuracy"] = dict(zip(names, seg_out["per_class_accuracy"]))
        seg_out.update(classes=names, excluded_ids=[*anomaly_ids, IGNORE_INDEX],
                       note=f"closed-set over the {num_classes} known classes; anomaly pixels (ids "
                            f"{list(anomaly_ids)}) and label {IGNORE_INDEX} are excluded")
    results: dict[str, Any] = {
        "segmentation": seg_out,
        "protocols": {p: protocol_settings(p, ignore_ids, anomaly_ids, eval_at, fpr_rule, void_label)
                      for p in protocols},
        "tta": tta.describe() if tta is not None else None,
        "eval_at": eval_at,
        "num_images": len(records),
        "scorers": {},
        "per_image": records,
    }
    for scorer in scorers:
        entry: dict[str, Any] = {"kind": scorer.kind, "params": dict(scorer.params),
                                 "requires_fit": scorer.requires_fit, "metrics": {}}
        for p, acc in accs[scorer.name].items():
            entry["metrics"][p] = {**acc.compute(), "protocol_settings": results["protocols"][p]}
            if p == "pooled":
                entry["curve"] = acc.curve(max_points=curve_points)
        results["scorers"][scorer.name] = entry
    results["timings"] = timings_summary(timer.seconds, len(records))
    if scorers and not any(r.get("num_anomaly") for r in records):
        log.warning("no anomaly pixel (ids %s) in the evaluated labels: AUROC / AUPR / FPR95 are undefined (null); "
                    "anomaly metrics need the test split", list(anomaly_ids))
    elif "per_image" in protocols and scorers:
        skipped = results["scorers"][scorers[0].name]["metrics"]["per_image"]["num_images_skipped"]
        if skipped:
            log.warning("%d of %d images hold only one class (anomaly or normal) and are left out of the per-image "
                        "means, as in the official protocol", skipped, len(records))
    return results


class _MetricFeed:
    """Hands each scorer's map to its accumulators (one per protocol); with ``pool``, on its threads, and
    :meth:`wait` is called only before the NEXT batch is scored, so the metric work of a batch runs beside the
    loading and inference of the next one (the scores of at most two batches are alive). Each accumulator
    still sees its batches in order, so results do not depend on the threads. Seconds per scorer go to the
    timer as ``metrics/<name>`` (thread time: with threads they sum to more than the wall)."""

    def __init__(self, accs: dict[str, dict[str, AnomalyMetrics]], timer: StageTimer,
                 pool: ThreadPoolExecutor | None) -> None:
        self.accs, self.timer, self.pool = accs, timer, pool
        self.pending: list[tuple[str, Future[float]]] = []
        self.records: list[tuple[str, list[dict[str, Any]]]] = []  # per-image values still to copy

    def _work(self, name: str, protocol: str, score: torch.Tensor, target: torch.Tensor) -> float:
        start = time.perf_counter()
        self.accs[name][protocol].update(score, target)
        if self.timer.device.type == "cuda":
            torch.cuda.synchronize(self.timer.device)
        return time.perf_counter() - start

    def submit(self, name: str, score: torch.Tensor, targets: dict[str, torch.Tensor],
               records: list[dict[str, Any]]) -> None:
        """Start the metric work of ``name`` on this batch; its per-image values go into ``records``."""
        try:
            check_finite(score)
        except ValueError as exc:
            raise UserError(f"scorer '{name}' produced non-finite scores: {exc}") from None
        for p in self.accs[name]:
            if self.pool is None:
                self.timer.add(self._work(name, p, score, targets[p]), f"metrics/{name}")
            else:
                self.pending.append((name, self.pool.submit(self._work, name, p, score, targets[p])))
        if "per_image" in self.accs[name]:
            self.records.append((name, records))
        if self.pool is None:
            self.wait()

    def wait(self) -> None:
        """Finish the submitted work and copy its per-image values into the batch records."""
        for name, future in self.pending:
            self.timer.add(future.result(), f"metrics/{name}")
        self.pending = []
        for name, records in self.records:
            for rec, values in zip(records, self.accs[name]["per_image"].per_image[-len(records):]):
                rec.setdefault("num_anomaly", values["num_positive"])
                rec.setdefault("num_normal", values["num_negative"])
                rec["metrics"][name] = {k: values.get(k) for k in PER_IMAGE_KEYS}
        self.records = []


def _gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's per-image records, in dataset order."""
    if distributed_ready():
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        records = [r for part in parts for r in part]
    records = sorted(records, key=lambda r: r["position"])
    return [{"index": i, **{k: v for k, v in r.items() if k != "position"}} for i, r in enumerate(records)]


# ---------------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def fit_scorers(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    scorers: Sequence[Scorer],
    device: torch.device | str,
    *,
    tta: TTA | None = None,
    progress: bool = False,
) -> list[Scorer]:
    """Fit every scorer that needs it on in-distribution batches (known ids / 255 labels only).

    One model pass over ``loader`` per fitting pass (``fit_passes``: 2 for HEAT's feature term); labels are
    resized (nearest) to the logits resolution, i.e. the model input. Under ``torch.distributed`` each
    pass ends with ``sync_fit`` so every rank finishes with the statistics of the whole split. A label
    holding an id outside the known classes (the anomaly id) is refused by the scorers' leakage check.
    The caller refuses the test split itself (:func:`anomalyseg.engine.guards.assert_no_anomaly`).
    Returns the scorers, now fitted (post-hoc scorers are passed through untouched).
    """
    device = torch.device(device)
    scorers = list(scorers)
    check_unique(scorers)
    model.eval()
    pass_no = 0
    while active := [s for s in scorers if s.requires_fit and not s.is_fitted]:
        pass_no += 1
        needs_features = any(s.needs_features for s in active)
        seen = 0
        desc = f"fit pass {pass_no}"
        for batch in tqdm(loader, total=_batch_size(loader), desc=desc, unit="batch", disable=not progress,
                          dynamic_ncols=True):
            images = batch["image"].to(device, non_blocking=True)
            output = forward(model, images, None, tta=tta, return_features=needs_features)
            label = labels_at(batch["label"].to(device, non_blocking=True).long(), tuple(output.logits.shape[-2:]))
            for scorer in active:
                scorer.fit_update(output, label)
            seen += images.shape[0]
        if distributed_ready():
            counts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(counts, seen)
            if min(counts) == 0:
                raise UserError(f"a rank received no fitting image ({counts} per rank): use fewer processes")
        elif seen == 0:
            raise UserError("the fitting loader yielded no image")
        for scorer in active:
            scorer.sync_fit()
            scorer.fit_finalize()
        log.info("fitting pass %d done on %d images (this rank): %s", pass_no, seen,
                 ", ".join(s.name for s in active))
    return scorers
