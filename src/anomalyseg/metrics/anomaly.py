"""Pixel-level anomaly metrics (AUROC, AUPR, FPR95) under the per-image and the pooled protocol.

* ``per_image`` (StreetHazards / hendrycks): exact metrics on each image's pixels, then the arithmetic mean
  over the images that contain both anomaly and normal pixels; the others are skipped and counted.
* ``pooled`` (SegmentMeIfYouCan / Fishyscapes): one curve over all pixels of all images, kept as a
  :class:`~anomalyseg.metrics.histogram.BlockHistogram` over order-preserving integer keys of the float32
  scores: a bin is a contiguous range of floats, so "score >= bin edge" is an exact comparison and no
  score range is needed (max logit, energy and SML are unbounded). ``bits`` sets the resolution: bins of
  relative width ``2**(9 - bits)``. The default 27 (3.8e-6) keeps |dAUROC| <= 1e-6 and |dAUPR|,
  |dFPR95| <= 1e-5 against sklearn on realistic score maps, including energy scores whose spread is small
  next to their offset (about -14 +- 3), where 24 bits gives 1.5e-5 and 26 bits 1.02e-5 on FPR95
  (``tests/metrics/test_anomaly.py``). Exactly equal scores always share a bin, so heavy ties (saturated
  MSP) are exact. Only blocks of bins that scores fall into are stored: memory follows the number of
  score octaves in use (about 100 MB for 55 M N(0,1) scores), never a list of the pixels.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from anomalyseg.metrics.backend import numpy_path
from anomalyseg.metrics.base import Accumulator, distributed_ready
from anomalyseg.metrics.curves import (
    FPR_RULES,
    CurveScan,
    FprRule,
    curve_metrics,
    exact_counts,
    key_to_float,
)
from anomalyseg.metrics.histogram import BlockHistogram

Protocol = Literal["pooled", "per_image"]
PROTOCOLS: tuple[str, ...] = ("pooled", "per_image")
DEFAULT_BITS = 27
_NAN = float("nan")


def check_finite(scores: torch.Tensor, what: str = "scores", hint: str = "fix the scorer before measuring") -> None:
    """Raise ``ValueError`` when ``scores`` hold NaN or inf (numpy on CPU; one host sync on GPU); the message
    names ``what`` holds them and ends with ``hint``."""
    if numpy_path(scores):
        ok = bool(np.isfinite(scores.detach().float().numpy()).all())
    else:
        ok = bool(torch.isfinite(scores).all())
    if not ok:
        n = int((~torch.isfinite(scores)).sum())
        raise ValueError(f"{what} contain {n} non-finite values (NaN or inf); {hint}")


class AnomalyMetrics(Accumulator):
    """Streaming AUROC / AUPR / FPR95 with higher score = more anomalous.

    Args:
        protocol: ``"pooled"`` or ``"per_image"`` (see module docstring).
        ignore_index: target value that is not counted; ``None`` counts every pixel (then the target
            must be 0/1 only).
        fpr_rule: ``"first"`` (highest threshold with TPR >= 0.95), ``"closest"`` (official StreetHazards
            code) or ``"interp"`` (``ood_metrics.fpr_at_95_tpr``); see :mod:`anomalyseg.metrics.curves`.
        bits: histogram resolution of the pooled protocol (16..30).
        keep_per_image: keep each image's values (per-image protocol) for best/worst-N selection.
        validate: check for non-finite scores and bad target values on every update.
    """

    def __init__(
        self,
        protocol: Protocol = "pooled",
        ignore_index: int | None = 255,
        fpr_rule: FprRule = "first",
        bits: int = DEFAULT_BITS,
        keep_per_image: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if fpr_rule not in FPR_RULES:
            raise ValueError(f"fpr_rule must be one of {FPR_RULES}, got {fpr_rule!r}")
        if not 16 <= bits <= 30:
            raise ValueError(f"bits must be in 16..30, got {bits}")
        self.protocol = protocol
        self.ignore_index = ignore_index
        self.fpr_rule = fpr_rule
        self.bits = bits if protocol == "pooled" else 0
        self.keep_per_image = keep_per_image
        self.validate = validate
        self.per_image: list[dict[str, Any]] = []
        # counts[0:4] = images seen, images skipped, positive pixels, negative pixels
        self._add_state("counts", torch.zeros(4, dtype=torch.int64))
        self.hist = BlockHistogram(bits) if protocol == "pooled" else None
        if protocol != "pooled":  # sums of auroc, aupr, fpr95, best_f1 over the images that were scored
            self._add_state("sums", torch.zeros(4, dtype=torch.float64))

    @classmethod
    def streethazards(cls, **kwargs: Any) -> AnomalyMetrics:
        """The official StreetHazards protocol: per image, the "closest" FPR rule, every pixel counted."""
        kwargs = {"protocol": "per_image", "fpr_rule": "closest", "ignore_index": None, **kwargs}
        return cls(**kwargs)

    def _config(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "ignore_index": self.ignore_index, "fpr_rule": self.fpr_rule,
                "bits": self.bits}

    # ---- update ---------------------------------------------------------------------------------
    def _check(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        if scores.shape != target.shape:
            raise ValueError(f"scores {tuple(scores.shape)} and target {tuple(target.shape)} differ in shape")
        if not scores.is_floating_point():
            raise ValueError(f"scores must be floating point, got {scores.dtype}")
        if not self.validate:
            return
        if numpy_path(scores):  # numpy: torch's CPU elementwise kernels are several times slower here
            check_finite(scores)
            tn = target.numpy()
            ok = (tn == 0) | (tn == 1)
            if self.ignore_index is not None:
                ok |= tn == self.ignore_index
            bad_target = not ok.all()
        else:
            ok_target = (target == 0) | (target == 1)
            if self.ignore_index is not None:
                ok_target |= target == self.ignore_index
            bad_score, bad_target = torch.stack([(~torch.isfinite(scores)).any(), (~ok_target).any()]).tolist()
            if bad_score:
                check_finite(scores)
        if bad_target:
            ok_target = (target == 0) | (target == 1)
            if self.ignore_index is not None:
                ok_target |= target == self.ignore_index
            vals = sorted(target[~ok_target].unique().tolist())[:10]
            raise ValueError(
                f"target must hold 1 (anomaly), 0 (normal) or ignore_index={self.ignore_index}; found {vals}"
            )

    @torch.no_grad()
    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``scores`` float ``(B,H,W)`` (or ``(H,W)``), ``target`` ``(B,H,W)`` 1/0/ignore."""
        if scores.dim() == 2:
            scores, target = scores.unsqueeze(0), target.unsqueeze(0)
        self._check(scores, target)
        self._follow(scores.device)
        if self.protocol == "pooled":
            self._update_pooled(scores, target)
        else:
            for s, t in zip(scores, target):
                self._update_image(s.reshape(-1), t.reshape(-1))

    def _valid(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Counted scores and their boolean labels (1-D)."""
        if numpy_path(s):  # numpy masking is several times faster than torch's on CPU here
            sn, tn = s.detach().float().numpy(), t.numpy()
            if self.ignore_index is not None:
                keep = tn != self.ignore_index
                if not keep.all():  # most maps have no ignored pixel: skip two copies
                    sn, tn = sn[keep], tn[keep]
            return torch.from_numpy(sn), torch.from_numpy(tn == 1)
        if self.ignore_index is None:
            return s, t == 1
        keep = t != self.ignore_index
        return s[keep], t[keep] == 1

    def _update_pooled(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        s, y = self._valid(scores.reshape(-1), target.reshape(-1))
        assert self.hist is not None
        self.hist.to(s.device).add(s, y)
        if numpy_path(y):
            npos_host = int(np.count_nonzero(y.numpy()))
            self.counts += torch.tensor([scores.shape[0], 0, npos_host, y.numel() - npos_host], dtype=torch.int64)
            return
        npos = y.sum()
        self.counts += torch.stack([torch.ones_like(npos) * scores.shape[0], torch.zeros_like(npos), npos,
                                    y.numel() - npos])

    def _update_image(self, s: torch.Tensor, t: torch.Tensor) -> None:
        s, y = self._valid(s, t)
        npos = int(np.count_nonzero(y.numpy())) if numpy_path(y) else int(y.sum())
        nneg = y.numel() - npos
        skipped = npos == 0 or nneg == 0
        self.counts += torch.tensor([1, int(skipped), npos, nneg], dtype=torch.int64, device=self.counts.device)
        record: dict[str, Any] = {"index": len(self.per_image), "num_positive": npos, "num_negative": nneg}
        if not skipped:
            tps, fps, _ = exact_counts(s, y, thresholds=False)
            m = curve_metrics(tps, fps, self.fpr_rule)
            self.sums += torch.tensor([m["auroc"], m["aupr"], m["fpr95"], m["best_f1"]],
                                      dtype=torch.float64, device=self.sums.device)
            record.update(m)
        if self.keep_per_image:
            self.per_image.append(record)

    # ---- combine --------------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> AnomalyMetrics:
        super().to(device)
        if self.hist is not None:
            self.hist.to(device)
        return self

    def reset(self) -> None:
        super().reset()
        if self.hist is not None:
            self.hist.reset()
        self.per_image = []

    def _merge_extra(self, other: Accumulator) -> None:
        assert isinstance(other, AnomalyMetrics)
        if self.hist is not None and other.hist is not None:
            self.hist.merge(other.hist)
        self.per_image = _reindex(self.per_image + other.per_image)

    def _sync_extra(self) -> None:
        if self.hist is not None:
            self.hist.sync()
        if self.keep_per_image and self.protocol == "per_image":
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.per_image)
            self.per_image = _reindex([r for part in gathered for r in part])

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        if self.hist is not None:
            out["hist"] = self.hist.state_dict()
        out["per_image"] = [dict(r) for r in self.per_image]
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.hist is not None:
            self.hist.load_state_dict(state["hist"])
        self.per_image = [dict(r) for r in state.get("per_image", [])]

    # ---- results --------------------------------------------------------------------------------
    def _pooled_scan(self, max_points: int = 0) -> CurveScan | None:
        """One pass over the histogram's bins, descending, in chunks; ``None`` if a class is missing."""
        assert self.hist is not None
        num_neg, num_pos = self.hist.totals()
        if num_pos == 0 or num_neg == 0:
            return None
        scan = CurveScan(num_pos, num_neg, self.fpr_rule, max_points=max_points)
        tp = fp = 0.0
        for neg, pos, bin_ids in self.hist.descending():
            tps = np.cumsum(pos, dtype=np.float64) + tp
            fps = np.cumsum(neg, dtype=np.float64) + fp
            thr = key_to_float(self.hist.bin_lower_keys(torch.from_numpy(bin_ids))).numpy()
            scan.add(tps, fps, thr)
            tp, fp = tps[-1], fps[-1]
        return scan

    def compute(self) -> dict[str, Any]:
        """Plain-Python results; metrics are NaN (never an exception) when they are undefined."""
        n_img, n_skip, n_pos, n_neg = self.counts.tolist()
        out: dict[str, Any] = {"auroc": _NAN, "aupr": _NAN, "fpr95": _NAN, "best_f1": _NAN}
        if self.protocol == "pooled":
            scan = self._pooled_scan()
            if scan is not None:
                out.update(scan.result())
        elif n_img - n_skip > 0:
            sums = (self.sums / (n_img - n_skip)).tolist()
            out.update(auroc=sums[0], aupr=sums[1], fpr95=sums[2], best_f1=sums[3])
        out.update(protocol=self.protocol, fpr_rule=self.fpr_rule, ignore_index=self.ignore_index,
                   num_images=int(n_img), num_images_skipped=int(n_skip), num_positive=int(n_pos),
                   num_negative=int(n_neg))
        if self.protocol == "pooled":
            out["resolution_bits"] = self.bits
        return out

    def curve(self, max_points: int = 1024) -> dict[str, list[float]] | None:
        """Downsampled pooled curve (thresholds, tpr, fpr, precision, recall) for plotting, or None."""
        if self.protocol != "pooled":
            raise ValueError("curves are kept by the pooled protocol only; use AnomalyMetrics(protocol='pooled')")
        scan = self._pooled_scan(max_points)
        return None if scan is None else scan.downsampled()


def _reindex(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "index": i} for i, r in enumerate(records)]


__all__ = ["DEFAULT_BITS", "PROTOCOLS", "AnomalyMetrics", "distributed_ready"]
