"""Re-score the maps of ``anomalyseg evaluate --save-scores DIR`` independently and compare with the results.

For every dataset folder and scorer under DIR: pooled AuPRC (sklearn ``average_precision_score``), FPR95
(``ood_metrics.fpr_at_95_tpr``, the course code's rule) and, where the results hold component metrics, the
SegmentMeIfYouCan sIoU / PPV / mean F1 computed here from the benchmark's definition with
``scipy.ndimage.label`` (no anomalyseg code is used for any number). Prints the differences.

Run: .venv/bin/python benchmarks/rescore_saved.py DIR RESULTS.json [--skip-images-without-anomaly]
(RESULTS.json: the --out of that evaluate; NAME_<set>.json files beside it are read for several sets.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ood_metrics import fpr_at_95_tpr
from scipy import ndimage
from sklearn.metrics import average_precision_score

TAUS = np.linspace(0.25, 0.75, 11)
SIZES = {"anomaly": (500, 100), "obstacle": (50, 10)}


def frame_components(pred: np.ndarray, target: np.ndarray, min_pred: int, min_gt: int) -> tuple[list, list]:
    """(sIoU per gt component, PPV per predicted component) of one frame, by the benchmark's definition."""
    eight = np.ones((3, 3), int)
    gt, n_gt = ndimage.label(target == 1, eight)
    pr, n_pr = ndimage.label(pred & (target != 255), eight)
    for j in range(1, n_pr + 1):
        if np.count_nonzero(pr == j) < min_pred:
            pr[pr == j] = 0
    t = target.copy()
    for k in range(n_gt + 1):
        if np.count_nonzero(gt == k) < min_gt:
            t[gt == k] = 255
    roi = t != 255
    g, q = gt[roi], pr[roi]
    sious = []
    for k in np.unique(g[g > 0]):
        on_k = g == k
        p_k = np.isin(q, np.unique(q[on_k & (q > 0)])) & (q > 0)
        inter = np.count_nonzero(on_k & p_k)
        sious.append(inter / (np.count_nonzero(p_k) + np.count_nonzero(on_k) - inter
                              - np.count_nonzero(p_k & (g > 0) & ~on_k)))
    ppvs = [np.count_nonzero((q == j) & (g > 0)) / np.count_nonzero(q == j) for j in np.unique(q[q > 0])]
    return sious, ppvs


def rescore(folder: Path, scorer: str, skip: bool, components: dict | None) -> dict[str, float]:
    ys, ss, sious, ppvs = [], [], [], []
    for target_file in sorted((folder / "_target").rglob("*.npy")):
        rel = target_file.relative_to(folder / "_target")
        target, score = np.load(target_file), np.load(folder / scorer / rel)
        if components is not None:
            s, p = frame_components(score > components["threshold"], target, *SIZES[components["track"]])
            sious += s
            ppvs += p
        if skip and not (target == 1).any():
            continue
        keep = target != 255
        ys.append(target[keep])
        ss.append(score[keep])
    y, s = np.concatenate(ys), np.concatenate(ss)
    out = {"aupr": average_precision_score(y, s), "fpr95": fpr_at_95_tpr(s, y)}
    if components is not None:
        tp = np.array([sum(v >= t for v in sious) for t in TAUS])
        fn = len(sious) - tp
        fp = np.array([sum(v < t for v in ppvs) for t in TAUS])
        out.update(siou_gt=float(np.mean(sious)), ppv=float(np.mean(ppvs)),
                   f1_mean=float(np.mean(2 * tp / (2 * tp + fn + fp))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--skip-images-without-anomaly", action="store_true")
    args = parser.parse_args()
    worst = 0.0
    for folder in sorted(p for p in args.scores.iterdir() if p.is_dir()):
        path = args.results.with_name(f"{args.results.stem}_{folder.name}.json")
        record = json.loads((path if path.is_file() else args.results).read_text())
        for scorer, entry in record["scorers"].items():
            m = entry["metrics"]
            mine = rescore(folder, scorer, args.skip_images_without_anomaly, m.get("components"))
            ref = {"aupr": m["pooled"]["aupr"], "fpr95": m["pooled"]["fpr95"],
                   **{k: m["components"][k] for k in ("siou_gt", "ppv", "f1_mean") if "components" in m}}
            diffs = {k: abs(mine[k] - ref[k]) for k in mine}
            worst = max(worst, *diffs.values())
            print(f"{folder.name:>14} {scorer:>10}  " + "  ".join(
                f"{k} {100 * mine[k]:.4f} (|d| {100 * d:.1e})" for k, d in diffs.items()))
    print(f"largest |difference|: {100 * worst:.2e} percentage points")


if __name__ == "__main__":
    main()
