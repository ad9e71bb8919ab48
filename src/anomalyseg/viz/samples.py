"""Which samples to draw (seeded random, explicit ids, worst / best by per-image AUPR), the detection
threshold to draw them at, and one model forward per sample to get the maps a panel needs."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

SELECT_MODES = ("random", "worst", "best")
#: Per-image metrics usable for worst / best selection and whether higher is better.
RANK_METRICS = {"aupr": True, "auroc": True, "fpr95": False}
THRESHOLD_NAMES = {"tpr95": "threshold_fpr95", "best_f1": "threshold_best_f1"}


def select_samples(
    ids: Sequence[str],
    num: int,
    *,
    select: str = "random",
    seed: int = 0,
    wanted: Sequence[str] | None = None,
    per_image: Sequence[Mapping[str, Any]] | None = None,
    scorer: str | None = None,
    metric: str = "aupr",
) -> list[int]:
    """Dataset positions of the samples to draw.

    ``wanted`` ids win (in the order given); otherwise ``select="random"`` draws ``num`` positions with
    ``numpy.random.default_rng(seed)`` (sorted, so the same seed always gives the same panels), and
    ``"worst"`` / ``"best"`` rank the images by ``scorer``'s per-image ``metric`` from a results JSON's
    ``per_image`` records (images without a value -- no anomaly or no normal pixel -- are left out; ties
    go to the earlier image).
    """
    ids = list(ids)
    position = {sid: i for i, sid in enumerate(ids)}
    if wanted:
        missing = [w for w in wanted if w not in position]
        if missing:
            raise UserError(f"unknown sample id(s) {', '.join(missing[:5])}; ids look like {', '.join(ids[:3])}")
        return [position[w] for w in dict.fromkeys(wanted)]
    if num < 1:
        raise UserError(f"--num-samples must be >= 1, got {num}")
    if select not in SELECT_MODES:
        raise UserError(f"--select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    if select == "random":
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(len(ids), size=min(num, len(ids)), replace=False))
    if per_image is None or scorer is None:
        raise UserError(f"--select {select} ranks images by their per-image {metric.upper()}: give --results "
                        "RESULTS.json from `anomalyseg evaluate` (protocol per_image or both)")
    if metric not in RANK_METRICS:
        raise UserError(f"ranking metric must be one of {', '.join(RANK_METRICS)}, got {metric!r}")
    ranked = []
    for rec in per_image:
        value = (rec.get("metrics") or {}).get(scorer, {}).get(metric)
        sid = rec.get("id")
        if value is not None and math.isfinite(value) and sid in position:
            ranked.append((value, position[sid]))
    if not ranked:
        raise UserError(f"the results hold no per-image {metric.upper()} of scorer {scorer!r} for images of this "
                        "split (evaluate with --protocol per_image or both, on the same data)")
    higher_better = RANK_METRICS[metric]
    worst_first = select == "worst"
    sign = 1.0 if higher_better == worst_first else -1.0
    ranked.sort(key=lambda vp: (sign * vp[0], vp[1]))
    return [p for _, p in ranked[:num]]


def results_threshold(results: Mapping[str, Any] | None, scorer: str, spec: str) -> tuple[float | None, str]:
    """``(threshold, label)`` for ``--threshold tpr95|best_f1|FLOAT``.

    A number is used as given. ``tpr95`` / ``best_f1`` come from the pooled operating points a results JSON
    stores for ``scorer`` (``threshold_fpr95`` / ``threshold_best_f1``); without a results file they are
    ``None``: each image then gets its own operating point (:func:`image_threshold`), said so in the label.
    """
    try:
        value = float(spec)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value):
            raise UserError(f"--threshold must be a finite number, tpr95 or best_f1, got {spec!r}")
        return value, "fixed threshold"
    if spec not in THRESHOLD_NAMES:
        raise UserError(f"--threshold must be tpr95, best_f1 or a number, got {spec!r}")
    if results is None:
        return None, f"{spec} of this image"
    entry = (results.get("scorers") or {}).get(scorer)
    if entry is None:
        have = ", ".join(results.get("scorers") or {})
        raise UserError(f"scorer {scorer!r} is not in the results file (it has {have})")
    pooled = (entry.get("metrics") or {}).get("pooled") or {}
    value = pooled.get(THRESHOLD_NAMES[spec])
    if value is None:
        raise UserError(f"the results hold no pooled {spec} threshold for {scorer!r}: evaluate with --protocol "
                        "pooled or both, or give --threshold a number")
    return float(value), f"{spec} (pooled, {pooled.get('fpr_rule', 'first')} rule)"


def _image_curve(score: np.ndarray, target: np.ndarray) -> tuple[Any, Any, Any] | None:
    """Exact cumulative counts of one image's non-void pixels (None without anomaly or normal pixels)."""
    from anomalyseg.metrics.curves import exact_counts

    keep = (target == 0) | (target == 1)
    s = torch.from_numpy(np.asarray(score, np.float32)[keep])
    y = torch.from_numpy(np.asarray(target)[keep] == 1)
    if not bool(y.any()) or bool(y.all()):
        return None
    return exact_counts(s, y)


def image_threshold(score: np.ndarray, target: np.ndarray, spec: str) -> float:
    """This image's own operating point: highest threshold reaching TPR 95 % ("first" rule) or best F1 (void
    pixels, target 255, left out). NaN when the image lacks anomaly or normal pixels (nothing is detected)."""
    from anomalyseg.metrics.curves import curve_metrics

    counts = _image_curve(score, target)
    if counts is None:
        return float("nan")
    tps, fps, thr = counts
    return float(curve_metrics(tps, fps, "first", thresholds=thr)[THRESHOLD_NAMES[spec]])


def image_metrics(score: np.ndarray, target: np.ndarray, fpr_rule: str = "closest") -> dict[str, float]:
    """One image's AUROC, AUPR and FPR95 over its non-void pixels (target 0 / 1; 255 left out), by the same
    exact curve the evaluation uses (``closest``: the per-image protocol's rule). NaN when undefined."""
    from anomalyseg.metrics.curves import curve_metrics

    counts = _image_curve(score, target)
    if counts is None:
        return {"auroc": float("nan"), "aupr": float("nan"), "fpr95": float("nan")}
    out = curve_metrics(counts[0], counts[1], fpr_rule)  # type: ignore[arg-type]
    return {k: float(out[k]) for k in ("auroc", "aupr", "fpr95")}


@dataclass
class SamplePrediction:
    """One sample's arrays for a panel, all at the label's resolution."""

    sample_id: str
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) ids
    pred: np.ndarray  # (H, W) ids
    confidence: np.ndarray  # (H, W) max softmax probability
    score: np.ndarray  # (H, W) anomaly score


@torch.no_grad()
def predict_sample(model: nn.Module, sample: Mapping[str, Any], scorer: Any, device: torch.device | str, *,
                   transform: Any = None, tta: Any = None) -> SamplePrediction:
    """One forward pass for a raw dataset sample (uint8 image, native label): logits at the size of the label
    the ``transform`` returns (as the evaluation does), prediction, softmax confidence and ``scorer``'s map."""
    from anomalyseg.engine.tta import forward

    image, label = sample["image"], sample["label"]
    # the transform may resize the label too (real-photo sets evaluated at the model resolution)
    x, label = transform(image, label) if transform is not None else (image.float() / 255.0, label)
    model.eval()
    out = forward(model, x[None].to(device), tuple(label.shape[-2:]), tta=tta,
                  return_features=bool(getattr(scorer, "needs_features", False)))
    probs = out.logits.softmax(1)[0]
    conf, pred = probs.max(0)
    score = scorer.score(out)[0]
    img = image.permute(1, 2, 0).cpu().numpy() if image.shape[0] in (3, 4) else image.cpu().numpy()
    return SamplePrediction(
        sample_id=str(sample.get("id", "")), image=np.ascontiguousarray(img[..., :3]).astype(np.uint8),
        label=label.cpu().numpy().astype(np.int64), pred=pred.cpu().numpy().astype(np.int64),
        confidence=conf.float().cpu().numpy(), score=score.float().cpu().numpy())


def safe_name(sample_id: str) -> str:
    """A file-name-safe form of a sample id (``t5/12`` -> ``t5_12``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sample_id) or "sample"
