"""One-pass evaluation.

:func:`run_evaluation`: ONE forward pass per batch (optionally test-time augmented), logits upsampled to the
label's native resolution, then every scorer and every metric consumes that output before the next batch:
memory follows the batch, never the dataset. Scorer fits: :mod:`anomalyseg.engine.fit`; the metric side of a
pass: :mod:`anomalyseg.engine.metric_feed`.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.engine.fit import loader_length
from anomalyseg.engine.metric_feed import MetricFeed, gather_records
from anomalyseg.engine.timing import StageTimer, timings_summary
from anomalyseg.engine.tta import TTA, forward
from anomalyseg.errors import NotFittedError, UserError
from anomalyseg.metrics import AnomalyMetrics, SegmentationMetrics
from anomalyseg.metrics.targets import anomaly_target, mask_ids
from anomalyseg.progress import progress_bar
from anomalyseg.scoring import FIT_COMMAND, Scorer, check_unique
from anomalyseg.scoring.base import labels_at

log = logging.getLogger(__name__)

PROTOCOLS = ("per_image", "pooled")
EVAL_AT = ("label", "input", "model")  # "model" = "input": labels resized to the model input
FPR_RULES = ("first", "closest", "interp")


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------
def protocol_settings(protocol: str, ignore_ids: Sequence[int], anomaly_ids: Sequence[int], eval_at: str,
                      fpr_rule: str = "first", void_label: bool = False, skip_without_anomaly: bool = False
                      ) -> dict[str, Any]:
    """Exactly how ``protocol`` is measured (stored with every result); ``fpr_rule`` is the pooled one,
    ``void_label``: label 255 is void (left out) under the per-image protocol too; ``skip_without_anomaly``:
    the pooled curve leaves out images without an anomaly pixel (the course evaluation code)."""
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
            "aggregation": ("one curve over all pixels of the images holding an anomaly pixel (images without one "
                            "are skipped, as the course evaluation code does)" if skip_without_anomaly
                            else "one curve over all pixels of all images"),
            "pixels": f"label 255{' and ids ' + str(ignore_ids) if ignore_ids else ''} left out",
            "skip_images_without_anomaly": skip_without_anomaly, "official_streethazards": False}


def _accumulator(protocol: str, drop_void: bool, fpr_rule: str = "first") -> AnomalyMetrics:
    """The accumulator of ``protocol``; unvalidated: the targets are built here and the scores are checked
    once per scorer (:meth:`_MetricFeed.submit`), not once per protocol."""
    if protocol == "per_image":
        return AnomalyMetrics.streethazards(ignore_index=IGNORE_INDEX if drop_void else None, validate=False)
    return AnomalyMetrics("pooled", ignore_index=IGNORE_INDEX, fpr_rule=fpr_rule, validate=False)


def _targets(label: torch.Tensor, protocols: Sequence[str], anomaly_ids: Sequence[int], ignore_ids: Sequence[int],
             drop_void: bool, skip_without_anomaly: bool = False) -> dict[str, torch.Tensor]:
    """Per protocol, the 1 / 0 (/ 255) anomaly map the accumulators read (label 255 counts as normal only under
    the official per-image protocol, i.e. per_image without ``drop_void``). ``skip_without_anomaly``: the
    pooled map of an image without an anomaly pixel is all 255 (left out)."""
    built: dict[int | None, torch.Tensor] = {}
    out = {}
    for p in protocols:
        void = None if (p == "per_image" and not drop_void) else IGNORE_INDEX
        if void not in built:
            built[void] = anomaly_target(label, anomaly_ids, ignore_ids, void_label=void)
        out[p] = built[void]
    if skip_without_anomaly and "pooled" in out:
        pooled = out["pooled"]
        empty = ~(pooled == 1).flatten(1).any(1)
        if bool(empty.any()):
            out["pooled"] = torch.where(empty[:, None, None], torch.full_like(pooled, IGNORE_INDEX), pooled)
    return out


#: ``sink(ids, scores, target)``: receives each batch's score maps and 1 / 0 / 255 anomaly target.
ScoreSink = Callable[[list[Any], dict[str, torch.Tensor], torch.Tensor], None]


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


@dataclass(frozen=True)
class EvalPlan:
    """What one evaluation measures and how (everything but the model, the data and the scorers).

    Attributes:
        num_classes: output channels of the model (checked on the first batch).
        anomaly_ids: label ids of anomaly pixels.
        ignore_ids: known class ids left out of the anomaly metrics (with label 255).
        protocols: ``per_image`` and / or ``pooled`` (none: segmentation metrics only).
        eval_at: ``label`` upsamples the logits to the label resolution (official); ``input`` (alias
            ``model``) resizes the labels (nearest) to the model input instead.
        fpr_rule: FPR95 rule of the pooled protocol (``first``; ``interp`` for the course / SMIYC-validation sets).
        segmentation: measure closed-set metrics (False for sets without class labels: ``None`` in the result).
        void_label: label 255 is void under the per-image protocol too (real-photo sets); by default it counts
            as normal there (official StreetHazards).
        class_names: names of the known classes for the per-class tables.
        tta: test-time augmentation of every forward pass.
        curve_points: points of the stored pooled curve.
        skip_without_anomaly: the pooled curve leaves out images without an anomaly pixel (the course code).
        window: sliding-window inference (:class:`anomalyseg.engine.slide.Window`), None: one pass per image.
    """

    num_classes: int = 13
    anomaly_ids: tuple[int, ...] = (13,)
    ignore_ids: tuple[int, ...] = ()
    protocols: tuple[str, ...] = PROTOCOLS
    eval_at: str = "label"
    fpr_rule: str = "first"
    segmentation: bool = True
    void_label: bool = False
    class_names: tuple[str, ...] | None = None
    tta: TTA | None = None
    curve_points: int = 512
    skip_without_anomaly: bool = False
    window: Any = None

    def __post_init__(self) -> None:
        protocols = tuple(dict.fromkeys(self.protocols))
        if any(p not in PROTOCOLS for p in protocols):
            raise UserError(f"protocols must be a subset of {PROTOCOLS}, got {list(self.protocols)}")
        if self.eval_at not in EVAL_AT:
            raise UserError(f"eval_at must be one of {EVAL_AT}, got {self.eval_at!r}")
        if self.fpr_rule not in FPR_RULES:
            raise UserError(f"fpr_rule must be one of {FPR_RULES}, got {self.fpr_rule!r}")
        anomaly_ids = tuple(int(i) for i in self.anomaly_ids)
        ignore_ids = tuple(sorted({int(i) for i in self.ignore_ids}))
        if set(anomaly_ids) & set(ignore_ids):
            raise UserError(f"ids {sorted(set(anomaly_ids) & set(ignore_ids))} cannot be both anomaly and ignored")
        object.__setattr__(self, "protocols", protocols)
        object.__setattr__(self, "anomaly_ids", anomaly_ids)
        object.__setattr__(self, "ignore_ids", ignore_ids)

    @property
    def drop_void(self) -> bool:
        """Label 255 is left out under every protocol (ignored ids given, or a void label)."""
        return bool(self.ignore_ids) or self.void_label

    def settings(self, protocol: str) -> dict[str, Any]:
        """How ``protocol`` is measured, stored with every result."""
        return protocol_settings(protocol, self.ignore_ids, self.anomaly_ids, self.eval_at, self.fpr_rule,
                                 self.void_label, self.skip_without_anomaly)

    def class_list(self) -> list[str]:
        """Names of the known classes (``class_<i>`` when none were given)."""
        if self.class_names is not None:
            return list(self.class_names)
        return [f"class_{i}" for i in range(self.num_classes)]


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    scorers: Sequence[Scorer],
    device: torch.device | str,
    plan: EvalPlan | None = None,
    *,
    progress: bool = False,
    desc: str = "evaluate",
    metric_threads: int | None = None,
    sink: ScoreSink | None = None,
) -> dict[str, Any]:
    """Closed-set segmentation metrics plus every scorer under every protocol of ``plan``, from one pass.

    ``loader`` yields dict batches (``collate_samples``) with ``image`` (model input) and ``label`` (native
    resolution, ids; 255 ignore). ``metric_threads``: accumulators (scorer x protocol) updated concurrently
    (default 2 on CPU, where the work is numpy sorts and histogram adds that release the GIL; 1 on GPU); each
    accumulator still sees its batches in order, so results do not depend on it. Under ``torch.distributed``
    every metric is summed over ranks and per-image records are gathered on all ranks. ``sink(ids, scores,
    target)``, when given, receives every batch's score maps (scorer -> (B, H, W) at the evaluation resolution)
    and its 1 / 0 / 255 anomaly target (e.g. to save the maps, or cache them for component metrics). Returns
    plain Python data: ``segmentation``, ``protocols``, ``scorers`` (metrics per protocol, pooled curve), ``per_image``
    (dataset order) and ``timings``.
    """
    device = torch.device(device)
    evaluator = _Evaluator(model, list(scorers), device, plan or EvalPlan(), metric_threads)
    evaluator.sink = sink
    evaluator.positions = _positions(loader)
    bar = progress_bar(total=loader_length(loader), desc=desc, unit="batch", disable=not progress, dynamic_ncols=True)
    start = tick = time.perf_counter()
    try:
        for batch in loader:
            evaluator.timer.add(time.perf_counter() - tick, "data")
            evaluator.step(batch)
            bar.update(1)
            tick = time.perf_counter()
        with evaluator.timer("metrics", "metrics_anomaly"):
            evaluator.feed.wait()
    finally:
        bar.close()
        evaluator.close()
    evaluator.timer.add(time.perf_counter() - start, "loop")
    return evaluator.results()


class _Evaluator:
    """The state of one evaluation pass: accumulators, metric threads, per-image records, timings."""

    def __init__(self, model: nn.Module, scorers: list[Scorer], device: torch.device, plan: EvalPlan,
                 metric_threads: int | None) -> None:
        check_unique(scorers)
        check_fitted(scorers)
        if not scorers:
            log.warning("no scorer given: only closed-set segmentation metrics are measured")
        elif not plan.protocols:
            raise UserError("anomaly scorers need at least one protocol (per_image, pooled)")
        self.model, self.scorers, self.device, self.plan = model.eval(), scorers, device, plan
        self.needs_features = any(s.needs_features for s in scorers)
        self.seg = SegmentationMetrics(plan.num_classes, ignore_index=IGNORE_INDEX)
        self.accs = {s.name: {p: _accumulator(p, plan.drop_void, plan.fpr_rule) for p in plan.protocols}
                     for s in scorers}
        self.timer = StageTimer(device)
        if metric_threads is None:  # CPU: the metric work (numpy sorts, histogram adds) of two scorers at a time
            metric_threads = min(2, torch.get_num_threads()) if device.type == "cpu" else 1
        self.pool = (ThreadPoolExecutor(metric_threads, thread_name_prefix="metrics")
                     if metric_threads > 1 and scorers else None)
        self.feed = MetricFeed(self.accs, self.timer, self.pool)
        self.records: list[dict[str, Any]] = []
        self.positions: Iterator[int] = iter(())  # dataset positions in loader order (set by run_evaluation)
        self.sink: ScoreSink | None = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def step(self, batch: dict[str, Any]) -> None:
        """Forward, segmentation metrics, targets, then every scorer on this batch."""
        plan, timer = self.plan, self.timer
        with timer("transfer"):
            images = batch["image"].to(self.device, non_blocking=True)
            label = batch["label"].to(self.device, non_blocking=True).long()
        with timer("inference"):
            size = tuple(label.shape[-2:]) if plan.eval_at == "label" else tuple(images.shape[-2:])
            output = forward(self.model, images, size, tta=plan.tta, return_features=self.needs_features,
                             window=plan.window)
            if output.logits.shape[1] != plan.num_classes:
                raise UserError(f"the model predicts {output.logits.shape[1]} classes, "
                                f"the dataset has {plan.num_classes}")
        with timer("metrics", "metrics_segmentation"):
            if tuple(label.shape[-2:]) != size:
                label = labels_at(label, size)
            if plan.segmentation:
                known = mask_ids(label, plan.anomaly_ids)
                self.seg.update(output.logits.max(1).indices, known)  # max(1) is ~3x faster than argmax(1) on CPU
            targets = _targets(label, plan.protocols, plan.anomaly_ids, plan.ignore_ids, plan.drop_void,
                               plan.skip_without_anomaly)
        ids = list(batch.get("id") or [None] * label.shape[0])
        batch_records = [{"position": next(self.positions), "id": i, "metrics": {}} for i in ids]
        with timer("metrics", "metrics_anomaly"):
            self.feed.wait()  # the previous batch's metric work ran beside this batch's loading and inference
        scores = {}
        for scorer in self.scorers:
            with timer("scoring", f"scoring/{scorer.name}"):
                scores[scorer.name] = scorer.score(output)
        for name, score in scores.items():  # after scoring: the threads do not slow the scorers down
            self.feed.submit(name, score, targets, batch_records)
        if self.sink is not None:
            with timer("sink"):
                self.sink(ids, scores, anomaly_target(label, plan.anomaly_ids, plan.ignore_ids,
                                                      void_label=IGNORE_INDEX))
        if plan.protocols and (not self.scorers or "per_image" not in plan.protocols):
            for rec, t in zip(batch_records, targets[plan.protocols[0]]):
                rec["num_anomaly"], rec["num_normal"] = int((t == 1).sum()), int((t == 0).sum())
        self.records.extend(batch_records)

    def results(self) -> dict[str, Any]:
        """Sync across ranks and compute every metric."""
        plan = self.plan
        with self.timer("metrics", "metrics_sync"):
            self.seg.sync()
            for by_protocol in self.accs.values():
                for acc in by_protocol.values():
                    acc.sync()
        records = gather_records(self.records)
        if not records:
            raise UserError("the loader yielded no image to evaluate")
        protocols = {p: plan.settings(p) for p in plan.protocols}
        self.pooled_skipped = sum(1 for r in records if not r.get("num_anomaly"))
        results: dict[str, Any] = {
            "segmentation": self._segmentation() if plan.segmentation else None,
            "protocols": protocols,
            "tta": plan.tta.describe() if plan.tta is not None else None,
            "eval_at": plan.eval_at,
            "num_images": len(records),
            "scorers": {s.name: self._scorer_entry(s, protocols) for s in self.scorers},
            "per_image": records,
        }
        results["timings"] = timings_summary(self.timer.seconds, len(records))
        self._warn_undefined(results, records)
        return results

    def _segmentation(self) -> dict[str, Any]:
        plan, names = self.plan, self.plan.class_list()
        out = self.seg.compute()
        out["per_class_iou"] = dict(zip(names, out["per_class_iou"]))
        out["per_class_accuracy"] = dict(zip(names, out["per_class_accuracy"]))
        out.update(classes=names, excluded_ids=[*plan.anomaly_ids, IGNORE_INDEX],
                   note=f"closed-set over the {plan.num_classes} known classes; anomaly pixels (ids "
                        f"{list(plan.anomaly_ids)}) and label {IGNORE_INDEX} are excluded")
        return out

    def _scorer_entry(self, scorer: Scorer, protocols: dict[str, dict[str, Any]]) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": scorer.kind, "params": dict(scorer.params),
                                 "requires_fit": scorer.requires_fit, "metrics": {}}
        for p, acc in self.accs[scorer.name].items():
            entry["metrics"][p] = {**acc.compute(), "protocol_settings": protocols[p]}
            if p == "pooled" and self.plan.skip_without_anomaly:
                entry["metrics"][p]["num_images_skipped"] = self.pooled_skipped
            if p == "pooled":
                entry["curve"] = acc.curve(max_points=self.plan.curve_points)
        return entry

    def _warn_undefined(self, results: dict[str, Any], records: list[dict[str, Any]]) -> None:
        if self.scorers and not any(r.get("num_anomaly") for r in records):
            log.warning("no anomaly pixel (ids %s) in the evaluated labels: AUROC / AUPR / FPR95 are undefined "
                        "(null); anomaly metrics need the test split", list(self.plan.anomaly_ids))
        elif "per_image" in self.plan.protocols and self.scorers:
            skipped = results["scorers"][self.scorers[0].name]["metrics"]["per_image"]["num_images_skipped"]
            if skipped:
                log.warning("%d of %d images hold only one class (anomaly or normal) and are left out of the "
                            "per-image means, as in the official protocol", skipped, len(records))
