"""Benchmark: anomalyseg's pooled anomaly metrics vs sklearn on the same pixels, then the streaming scale test.

Part 1 (side by side, same >= 20 M pixels, 1 % anomalies, overlapping Gaussian scores): seconds, peak memory
above the process baseline, and |difference| to sklearn for AUROC / AUPR / FPR95. Each method runs in its
own fresh process so peak memories do not mix.
Part 2: the pooled accumulator alone over the native StreetHazards test-set size (1500 images of 720x1280 =
1.38 G pixels) streamed in 921,600-pixel images: seconds and peak RSS.

Run: .venv/bin/python benchmarks/metrics.py [--pixels 20000000] [--images 1500] [--no-malloc-tuning]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_data(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.01).astype(np.int8)
    s = np.where(y == 1, rng.normal(1.5, 1.0, n), rng.normal(0.0, 1.0, n)).astype(np.float32)
    np.save(path / "scores.npy", s)
    np.save(path / "labels.npy", y)


def _tune(enabled: bool) -> bool:
    from anomalyseg.runtime import tune_cpu_allocator

    return tune_cpu_allocator() if enabled else False


def _worker(method: str, path: Path, tuning: bool) -> dict:
    import torch  # imported before the baseline so both methods pay for it

    _tune(tuning)

    s = np.load(path / "scores.npy")
    y = np.load(path / "labels.npy")
    base = _rss_mb()
    t0 = time.perf_counter()
    if method == "sklearn":
        from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

        auroc = roc_auc_score(y, s)
        aupr = average_precision_score(y, s)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        fpr95 = float(fpr[np.searchsorted(tpr, 0.95)])
    else:
        from anomalyseg.metrics import AnomalyMetrics

        m = AnomalyMetrics("pooled", fpr_rule="first")
        st, yt = torch.from_numpy(s), torch.from_numpy(y)
        step = 921_600
        for i in range(0, len(s), step):
            m.update(st[i : i + step].view(1, -1), yt[i : i + step].view(1, -1))
        r = m.compute()
        auroc, aupr, fpr95 = r["auroc"], r["aupr"], r["fpr95"]
    seconds = time.perf_counter() - t0
    return {"method": method, "seconds": seconds, "peak_above_baseline_mb": _peak_mb() - base,
            "auroc": auroc, "aupr": aupr, "fpr95": fpr95}


def _stream_worker(images: int, tuning: bool) -> dict:
    import torch

    from anomalyseg.metrics import AnomalyMetrics

    _tune(tuning)

    torch.manual_seed(0)
    m = AnomalyMetrics("pooled", fpr_rule="first", keep_per_image=False)
    base = _rss_mb()
    gen = upd = 0.0
    for _ in range(images):
        t0 = time.perf_counter()
        target = (torch.rand(1, 720, 1280) < 0.0103).to(torch.int64)
        scores = torch.randn(1, 720, 1280) + 1.5 * target
        t1 = time.perf_counter()
        m.update(scores, target)
        upd += time.perf_counter() - t1
        gen += t1 - t0
    t0 = time.perf_counter()
    r = m.compute()
    comp = time.perf_counter() - t0
    return {"images": images, "pixels": images * 921_600, "update_seconds": upd, "compute_seconds": comp,
            "data_generation_seconds": gen, "rss_after_import_mb": base, "peak_rss_mb": _peak_mb(),
            "histogram_mb": m.hist.nbytes() / 2**20, "auroc": r["auroc"]}


def _run(args: list[str], tuning: bool) -> dict:
    flag = [] if tuning else ["--no-malloc-tuning"]
    out = subprocess.run([sys.executable, __file__, *args, *flag], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=int, default=20_000_000)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc malloc as it is (the CLI tunes it, see anomalyseg.runtime)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "stream":
        print(json.dumps(_stream_worker(args.images, not args.no_malloc_tuning)))
        return
    if args.worker:
        print(json.dumps(_worker(args.worker, Path(args.data), not args.no_malloc_tuning)))
        return

    tuning = not args.no_malloc_tuning
    print(f"glibc malloc tuning (anomalyseg.runtime, as the CLI): {'on' if tuning else 'off'}")
    with tempfile.TemporaryDirectory() as tmp:
        _make_data(Path(tmp), args.pixels)
        ours = _run(["--worker", "anomalyseg", "--data", tmp], tuning)
        ref = _run(["--worker", "sklearn", "--data", tmp], tuning)
    print(f"Part 1: {args.pixels / 1e6:.1f} M pixels, 1 % anomalies, overlapping Gaussians (FPR95 rule 'first')")
    print(f"{'method':<12}{'seconds':>10}{'peak MB':>10}{'AUROC':>12}{'AUPR':>12}{'FPR95':>12}")
    for r in (ours, ref):
        print(f"{r['method']:<12}{r['seconds']:>10.2f}{r['peak_above_baseline_mb']:>10.0f}"
              f"{r['auroc']:>12.7f}{r['aupr']:>12.7f}{r['fpr95']:>12.7f}")
    print(f"speed-up vs sklearn: {ref['seconds'] / ours['seconds']:.1f}x;  "
          f"|dAUROC| {abs(ours['auroc'] - ref['auroc']):.1e}  |dAUPR| {abs(ours['aupr'] - ref['aupr']):.1e}  "
          f"|dFPR95| {abs(ours['fpr95'] - ref['fpr95']):.1e}")
    print("(torchmetrics' exact mode: not installed in this environment, not measured)")

    st = _run(["--worker", "stream", "--images", str(args.images)], tuning)
    print(f"\nPart 2: pooled accumulator over {st['pixels'] / 1e9:.2f} G pixels in {st['images']} images of 921,600")
    print(f"update {st['update_seconds']:.1f} s + compute {st['compute_seconds']:.2f} s "
          f"(score generation {st['data_generation_seconds']:.1f} s, not counted); "
          f"{st['pixels'] / st['update_seconds'] / 1e6:.0f} M pixels/s")
    print(f"RSS after importing torch {st['rss_after_import_mb']:.0f} MB, peak RSS {st['peak_rss_mb']:.0f} MB, "
          f"peak above baseline {st['peak_rss_mb'] - st['rss_after_import_mb']:.0f} MB, "
          f"histogram {st['histogram_mb']:.0f} MB")


if __name__ == "__main__":
    main()
