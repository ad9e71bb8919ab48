"""Benchmark: cost of every registered scorer per native StreetHazards image (720x1280, 13 classes).

For each scorer: milliseconds per image for ``score`` (median of ``--repeats`` timed calls after one warm-up),
and for fit-able scorers the cost of ``fit_update`` per image, side by side with the cost of the softmax
alone as a yardstick. Features for ``heat`` / ``mahalanobis`` are a ``(D, H/stride, W/stride)`` map
(default D = 256 at stride 8, like ResNet-18 layer3 in a DeepLabV3+ with output stride 8).

Run: .venv/bin/python benchmarks/scoring.py [--device cpu] [--batch 1] [--threads N] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import available_scorers, get_scorer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    for _ in range(2):  # warm-up (first large allocations page-fault on CPU)
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    parser.add_argument("--classes", type=int, default=13)
    parser.add_argument("--feature-dim", type=int, default=256)
    parser.add_argument("--feature-stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    B, C, (H, W) = args.batch, args.classes, args.size
    h, w = H // args.feature_stride, W // args.feature_stride
    logits = (torch.randn(B, C, H, W, generator=g) * 3).to(device)
    feats = torch.randn(B, args.feature_dim, h, w, generator=g).relu().to(device)
    label = logits.argmax(1)
    out = SegOutput(logits, features={"layer3": feats})

    print(
        f"device={device} threads={torch.get_num_threads()} batch={B} logits={C}x{H}x{W} "
        f"features={args.feature_dim}x{h}x{w}"
    )
    base = _time(lambda: torch.softmax(logits, 1), device, args.repeats)
    print(f"{'scorer':<12} {'score ms/img':>13} {'fit_update ms/img':>18}")
    print(f"{'(softmax)':<12} {base * 1000 / B:>13.1f} {'':>18}")
    for name in available_scorers():
        scorer = get_scorer(name)
        fit_ms = ""
        if scorer.requires_fit:

            def update(s=scorer) -> None:
                s.reset_fit()
                s.fit_update(out, label)

            fit_ms = f"{_time(update, device, args.repeats) * 1000 / B:.1f}"
            scorer.reset_fit()
            scorer.fit([(out, label)])
        ms = _time(lambda s=scorer: s.score(out), device, args.repeats) * 1000 / B
        print(f"{name:<12} {ms:>13.1f} {fit_ms:>18}")


if __name__ == "__main__":
    main()
