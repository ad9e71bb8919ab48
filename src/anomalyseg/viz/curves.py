"""PR / ROC curves of every scorer and threshold-sensitivity plots, drawn from the pooled curves a results
JSON stores (``scorers.<name>.curve``: thresholds, tpr, fpr, precision, recall) -- no re-inference.

The stored curves are downsampled copies of the pooled (all pixels of all images) curve, so the legend
quotes the pooled protocol's AUROC / AUPR / FPR95 (computed on the full curve by the evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from anomalyseg.errors import UserError
from anomalyseg.viz.panels import new_figure

#: Line colours in scorer order (matplotlib's tab10, fixed so figures are comparable across reports).
SCORER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")


def _pct(value: Any) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def stored_curves(results: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """``{scorer: {"thresholds", "tpr", "fpr", "precision", "recall"}}`` for every scorer with a stored curve."""
    out = {}
    for name, entry in (results.get("scorers") or {}).items():
        curve = entry.get("curve")
        if curve and curve.get("tpr"):
            out[name] = {k: np.asarray([np.nan if v is None else v for v in curve[k]], dtype=np.float64)
                         for k in ("thresholds", "tpr", "fpr", "precision", "recall")}
    return out


def _legend_label(name: str, metrics: Mapping[str, Any]) -> str:
    return (f"{name}: AUROC {_pct(metrics.get('auroc'))}, AUPR {_pct(metrics.get('aupr'))}, "
            f"FPR95 {_pct(metrics.get('fpr95'))}")


def pr_roc_figure(results: Mapping[str, Any], title: str | None = None, *, dpi: int = 100) -> Figure:
    """ROC (left) and precision-recall (right) curves of every scorer with a stored pooled curve; the legend
    gives each scorer's pooled AUROC / AUPR / FPR95 (%). The TPR = 95 % line and the PR chance level (the
    anomaly share of the counted pixels) are drawn for reference."""
    curves = stored_curves(results)
    if not curves:
        raise UserError("the results hold no pooled curve (evaluate with --protocol pooled or both)")
    fig = new_figure(12.0, 5.4, dpi)
    roc, pr = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    positives = negatives = None
    for i, (name, c) in enumerate(curves.items()):
        m = results["scorers"][name]["metrics"].get("pooled", {})
        positives, negatives = m.get("num_positive"), m.get("num_negative")
        color = SCORER_COLORS[i % len(SCORER_COLORS)]
        label = _legend_label(name, m)
        roc.plot(np.r_[0.0, c["fpr"]], np.r_[0.0, c["tpr"]], color=color, linewidth=2.0, label=label)
        pr.step(c["recall"], c["precision"], where="post", color=color, linewidth=2.0, label=label)
    roc.axhline(0.95, color="0.5", linestyle="--", linewidth=0.8)
    roc.plot([0, 1], [0, 1], color="0.8", linestyle=":", linewidth=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    if positives and negatives:
        pr.axhline(positives / (positives + negatives), color="0.6", linestyle=":", linewidth=0.8)
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="precision-recall")
    for ax in (roc, pr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is roc else "upper right")
    fig.suptitle(title or "pooled curves (all pixels of all images)", fontsize=11)
    return fig


def sensitivity(curve: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and FPR at each stored threshold (ascending thresholds)."""
    order = np.argsort(curve["thresholds"], kind="stable")
    p, r = curve["precision"][order], curve["recall"][order]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return {"threshold": curve["thresholds"][order], "precision": p, "recall": r, "f1": f1,
            "fpr": curve["fpr"][order]}


def threshold_figure(results: Mapping[str, Any], scorer: str, *, dpi: int = 100) -> Figure:
    """Precision / recall / F1 / FPR of ``scorer``'s detections ``score >= t`` as functions of ``t`` (pooled),
    with the stored TPR-95 % and best-F1 operating points marked."""
    curves = stored_curves(results)
    if scorer not in curves:
        have = ", ".join(curves) or "none"
        raise UserError(f"no pooled curve for scorer {scorer!r} in the results (scorers with curves: {have})")
    s = sensitivity(curves[scorer])
    m = results["scorers"][scorer]["metrics"].get("pooled", {})
    fig = new_figure(8.0, 4.6, dpi)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"precision": "#1f77b4", "recall": "#2ca02c", "f1": "#ff7f0e", "fpr": "#d62728"}
    for key, color in styles.items():
        ax.plot(s["threshold"], s[key], color=color, linewidth=2.0, label=key.upper() if key != "f1" else "F1")
    for key, label, style in (("threshold_fpr95", "TPR 95 %", "--"), ("threshold_best_f1", "best F1", ":")):
        t = m.get(key)
        if t is not None and math.isfinite(t):
            ax.axvline(t, color="0.3", linestyle=style, linewidth=1.2, label=f"{label}: t = {t:.4g}")
    ax.set(xlabel="threshold t (detection: score >= t)", ylabel="rate", ylim=(0, 1.02),
           title=f"threshold sensitivity: {scorer} (pooled)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig
