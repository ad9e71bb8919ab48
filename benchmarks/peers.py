"""Benchmark: anomalyseg's anomaly metrics side by side with the peers, on the same pixels.

Pooled (one curve over every pixel) and per-image (mean over images) AUROC / AUPR / FPR95 of
  anomalyseg     ``anomalyseg.metrics.AnomalyMetrics`` (pooled histogram; exact per-image curves), FPR95 rule 'first'
  sklearn        ``roc_auc_score``, ``average_precision_score``, ``roc_curve`` (the reference; all pixels at once)
  pytorch-ood    ``OODSegmentationMetrics`` / ``OODPerImageSegmentationMetrics`` (keeps every pixel until compute)
  torchmetrics   ``BinaryAUROC`` + ``BinaryAveragePrecision`` + ``BinarySpecificityAtSensitivity(0.95)`` in one
                 ``MetricCollection`` (shared state), exact (``thresholds=None``) and binned (``thresholds=N``);
                 per image: the collection computed and reset after every image
on the generator of ``benchmarks/metrics.py`` (default 20 M pixels, 1 % anomalies, overlapping Gaussians), fed in
images of 921,600 pixels (720x1280; the last one shorter) as an evaluation loop would. Each (method, protocol) runs
in its own fresh process, so peak memories do not mix: seconds and peak RSS above the baseline measured after the
imports and the data loading (imports are not counted). Δ is the absolute difference to sklearn on the same protocol.

Definitions differ slightly, and that shows in Δ: pytorch-ood's AUPR is the trapezoidal area under the PR curve
(``sklearn.metrics.auc(recall, precision)``), not average precision; torchmetrics turns scores outside [0, 1] into
probabilities with a float32 sigmoid (which merges nearly equal high scores) and its binned mode puts N thresholds
evenly on [0, 1] of those probabilities. A package that is not installed prints "not installed" and is skipped
(``pip install "anomalyseg[bench]"``); a run that would not fit in the available memory (estimated from the
measured bytes per pixel), that runs over ``--max-seconds`` or that is killed prints why and is skipped.

Run: .venv/bin/python benchmarks/peers.py [--pixels 20000000] [--bins 1000] [--max-seconds 150]
     [--only anomalyseg,sklearn,...] [--no-malloc-tuning]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

IMAGE = 921_600  # pixels of one 720x1280 image
HERE = Path(__file__).resolve().parent


def _bench_metrics() -> Any:
    """``benchmarks/metrics.py`` (data generator, RSS readers, malloc tuning), loaded by path."""
    spec = importlib.util.spec_from_file_location("_anomalyseg_bench_metrics", HERE / "metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chunks(n: int) -> Iterator[slice]:
    for i in range(0, n, IMAGE):
        yield slice(i, min(i + IMAGE, n))


def _first_rule(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95)])


# ---------------------------------------------------------------------------------------------------
# One function per (method, protocol): (scores, labels) -> {auroc, aupr, fpr95}; imports happen in ``prepare``
# ---------------------------------------------------------------------------------------------------
def _anomalyseg(protocol: str) -> Callable[..., dict[str, float]]:
    import torch

    from anomalyseg.metrics import AnomalyMetrics

    def run(s: np.ndarray, y: np.ndarray, bins: int) -> dict[str, float]:
        m = AnomalyMetrics(protocol, fpr_rule="first")
        st, yt = torch.from_numpy(s), torch.from_numpy(y)
        for c in _chunks(len(s)):
            m.update(st[c].view(1, -1), yt[c].view(1, -1))
        r = m.compute()
        return {k: r[k] for k in ("auroc", "aupr", "fpr95")}

    return run


def _sklearn(protocol: str) -> Callable[..., dict[str, float]]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    def one(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
        return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s)),
                "fpr95": _first_rule(y, s)}

    def run(s: np.ndarray, y: np.ndarray, bins: int) -> dict[str, float]:
        if protocol == "pooled":
            return one(y, s)
        values = [one(y[c], s[c]) for c in _chunks(len(s))]
        return {k: float(np.mean([v[k] for v in values])) for k in ("auroc", "aupr", "fpr95")}

    return run


def _pytorch_ood(protocol: str) -> Callable[..., dict[str, float]]:
    import torch
    from pytorch_ood.metrics import OODPerImageSegmentationMetrics, OODSegmentationMetrics

    def run(s: np.ndarray, y: np.ndarray, bins: int) -> dict[str, float]:
        cls = OODSegmentationMetrics if protocol == "pooled" else OODPerImageSegmentationMetrics
        m = cls(device="cpu")
        st, labels = torch.from_numpy(s), -torch.from_numpy(y)  # pytorch-ood: label < 0 = OOD
        for c in _chunks(len(s)):
            m.update(st[c].view(1, -1), labels[c].view(1, -1))
        r = m.compute()
        return {"auroc": r["AUROC"], "aupr": r["AUPR-OUT"], "fpr95": r["FPR95TPR"]}

    return run


def _torchmetrics(protocol: str, binned: bool) -> Callable[..., dict[str, float]]:
    import torch
    from torchmetrics import MetricCollection
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinarySpecificityAtSensitivity

    def run(s: np.ndarray, y: np.ndarray, bins: int) -> dict[str, float]:
        thresholds = bins if binned else None
        m = MetricCollection({"auroc": BinaryAUROC(thresholds=thresholds),
                              "aupr": BinaryAveragePrecision(thresholds=thresholds),
                              "spec": BinarySpecificityAtSensitivity(0.95, thresholds=thresholds)})
        st, yt = torch.from_numpy(s), torch.from_numpy(y)
        sums = {"auroc": 0.0, "aupr": 0.0, "fpr95": 0.0}
        count = 0
        for c in _chunks(len(s)):
            m.update(st[c], yt[c])
            if protocol == "per_image":
                r = m.compute()
                m.reset()
                sums["auroc"] += float(r["auroc"])
                sums["aupr"] += float(r["aupr"])
                sums["fpr95"] += 1.0 - float(r["spec"][0])
                count += 1
        if protocol == "pooled":
            r = m.compute()
            return {"auroc": float(r["auroc"]), "aupr": float(r["aupr"]), "fpr95": 1.0 - float(r["spec"][0])}
        return {k: v / count for k, v in sums.items()}

    return run


#: (row name, package it needs, factory(protocol) -> run)
METHODS: tuple[tuple[str, str, Callable[[str], Callable[..., dict[str, float]]]], ...] = (
    ("anomalyseg", "anomalyseg", _anomalyseg),
    ("sklearn", "sklearn", _sklearn),
    ("pytorch-ood", "pytorch_ood", _pytorch_ood),
    ("torchmetrics exact", "torchmetrics", lambda p: _torchmetrics(p, binned=False)),
    ("torchmetrics binned", "torchmetrics", lambda p: _torchmetrics(p, binned=True)),
)
PROTOCOLS = ("pooled", "per_image")
#: Peak bytes per pixel above the baseline of the methods that keep every pixel (pooled; measured at 20 M pixels:
#: sklearn 1358 MB, pytorch-ood 2497 MB, torchmetrics exact 1659 MB), rounded up, plus the 5 B/pixel of the data.
BYTES_PER_PIXEL = {"sklearn": 75, "pytorch-ood": 135, "torchmetrics exact": 90}


def _available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _too_big(name: str, protocol: str, pixels: int) -> str | None:
    """Why a run would not fit in memory (it is skipped rather than left to the OOM killer), else None."""
    per_pixel = BYTES_PER_PIXEL.get(name) if protocol == "pooled" else None
    if per_pixel is None:
        return None
    need, have = (per_pixel + 5) * pixels / 2**20, _available_mb()
    if need > 0.8 * have:
        return f"skipped: needs ~{need / 1024:.1f} GB, {have / 1024:.1f} GB available"
    return None


def _worker(method: str, protocol: str, data: Path, bins: int, tuning: bool) -> dict[str, Any]:
    import torch  # noqa: F401  (every method pays for it before the baseline)

    bm = _bench_metrics()
    bm._tune(tuning)
    factory = next(f for name, _, f in METHODS if name == method)
    run = factory(protocol)  # the package's imports, before the baseline
    s = np.load(data / "scores.npy")
    y = np.load(data / "labels.npy")
    base = bm._rss_mb()
    t0 = time.perf_counter()
    values = run(s, y, bins)
    seconds = time.perf_counter() - t0
    return {"method": method, "protocol": protocol, "seconds": seconds,
            "peak_above_baseline_mb": bm._peak_mb() - base, **values}


def _run(method: str, protocol: str, data: Path, bins: int, tuning: bool, max_seconds: float) -> dict[str, Any]:
    """One fresh process; a dict with ``skipped`` (the reason) when it did not finish."""
    cmd = [sys.executable, __file__, "--worker", method, "--protocol", protocol, "--data", str(data),
           "--bins", str(bins), *([] if tuning else ["--no-malloc-tuning"])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds)
    except subprocess.TimeoutExpired:
        return {"skipped": f"stopped after --max-seconds {max_seconds:.0f} s"}
    if out.returncode != 0:
        killed = out.returncode in (-9, 137)
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"skipped": "killed (out of memory?)" if killed else f"failed: {tail[:120]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=int, default=20_000_000)
    parser.add_argument("--bins", type=int, default=1000, help="thresholds of torchmetrics' binned mode")
    parser.add_argument("--max-seconds", type=float, default=150.0, help="per (method, protocol) run")
    parser.add_argument("--only", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc malloc as it is (the CLI tunes it, see anomalyseg.runtime)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tuning = not args.no_malloc_tuning
    if args.worker:
        print(json.dumps(_worker(args.worker, args.protocol, Path(args.data), args.bins, tuning)))
        return

    only = {o.strip() for o in args.only.split(",") if o.strip()}
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    load = os.getloadavg()[0]
    print(f"{args.pixels / 1e6:.1f} M pixels, 1 % anomalies, overlapping Gaussians, images of {IMAGE:,} pixels; "
          f"FPR95 rule 'first'; torchmetrics binned: {args.bins} thresholds; {os.cpu_count()} CPUs, "
          f"load average {load:.2f} at start; malloc tuning {'on' if tuning else 'off'}")
    results: dict[str, list[tuple[str, dict[str, Any]]]] = {p: [] for p in protocols}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _bench_metrics()._make_data(Path(tmp), args.pixels)
        for protocol in protocols:
            for name, package, _ in METHODS:
                if only and name not in only:
                    continue
                if not _installed(package):
                    results[protocol].append((name, {"skipped": f"{package} not installed"}))
                    continue
                reason = _too_big(name, protocol, args.pixels)
                if reason:
                    results[protocol].append((name, {"skipped": reason}))
                    continue
                print(f"  running {name} ({protocol}) ...", file=sys.stderr, flush=True)
                results[protocol].append((name, _run(name, protocol, Path(tmp), args.bins, tuning,
                                                     args.max_seconds)))
    cols = ["protocol", "method", "seconds", "peak MB", "AUROC", "AUPR", "FPR95", "ΔAUROC", "ΔAUPR", "ΔFPR95"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|")
    for protocol, rows in results.items():
        ref = next((r for n, r in rows if n == "sklearn" and "skipped" not in r), None)
        for name, r in rows:
            if "skipped" in r:
                print(f"| {protocol} | {name} | {r['skipped']} |" + " |" * (len(cols) - 3))
                continue
            deltas = [abs(r[k] - ref[k]) if ref else None for k in ("auroc", "aupr", "fpr95")]
            cells = [protocol, name, f"{r['seconds']:.2f}", f"{r['peak_above_baseline_mb']:.0f}",
                     *(f"{r[k]:.7f}" for k in ("auroc", "aupr", "fpr95")), *(_fmt(d, ".1e") for d in deltas)]
            print("| " + " | ".join(cells) + " |")
    print("Δ: absolute difference to sklearn on the same protocol; seconds and peak MB: compute only (imports and "
          "data loading not counted), peak RSS above the baseline, each row its own process")
    print(f"total wall time {time.perf_counter() - started:.0f} s (data generation and process starts included); "
          f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
