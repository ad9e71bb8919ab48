"""Data-layer throughput: synthetic generation, the training input pipeline and ``data check``.

Measured on a synthetic StreetHazards tree at full resolution (1280x720 by default):

* synth: images/s of ``write_synthetic`` at 480x270 on one core (goal: >= 20) and at the benchmark size;
* train pipeline: images/s of decode + TrainTransform (512 crops, every augmentation on) + collate through a
  DataLoader with 0, 1, 2 workers (steady state after the first batch, and including worker start-up);
* check: images/s of ``check_split`` (decode image + label, bincount) with 1 and 2 processes.

Run: ``.venv/bin/python benchmarks/data.py [--images 48] [--size 1280x720] [--epochs 2]`` (about 1-2 min).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from anomalyseg.data import StreetHazards, collate_samples
from anomalyseg.data.check import check_split
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.data.transforms import TrainTransform


def _synth_rate(out: Path, n: int, size: tuple[int, int], workers: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process — meaningful for workers=1)."""
    start, cpu = time.perf_counter(), time.process_time()
    write_synthetic(out, train=n, val=0, test=0, size=size, seed=0, workers=workers)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def _pipeline_rate(root: Path, workers: int, epochs: int, batch: int, crop: int) -> tuple[float, float]:
    torch.manual_seed(0)
    ds = StreetHazards(root, "train", transform=TrainTransform(crop), on_error="skip")
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_samples,
                        persistent_workers=workers > 0, drop_last=True)
    start = time.perf_counter()
    first = None
    seen = 0
    for _ in range(epochs):
        for b in loader:
            if first is None:
                first = time.perf_counter()
                seen = 0
            seen += b["image"].shape[0]
    end = time.perf_counter()
    total = epochs * (len(ds) // batch) * batch
    return seen / (end - first), total / (end - start)


def _check_rate(root: Path, workers: int) -> float:
    start = time.perf_counter()
    report = check_split(root, "train", workers=workers, progress=False)
    assert not report.bad, report.bad[:3]
    return report.num_checked / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="training images in the benchmark tree")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the benchmark tree")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to compare")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    print(f"cores: {os.cpu_count()}, torch threads in the main process: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        wall, per_cpu = _synth_rate(tmp_path / "small", 40, (480, 270), workers=1)
        print(f"load average: {os.getloadavg()[0]:.1f} (figures drop when other work shares the cores)")
        print(f"synth 480x270, 1 process:    {wall:7.1f} images/s wall, {per_cpu:7.1f} per CPU second "
              "(goal >= 20)")
        wall, _ = _synth_rate(tmp_path / "big", args.images, (width, height), workers=2)
        print(f"synth {width}x{height}, 2 processes: {wall:7.1f} images/s wall")
        root = tmp_path / "big"
        print(f"\ntraining pipeline: decode {width}x{height} PNG + TrainTransform({args.crop}) + collate, "
              f"batch {args.batch}, {args.images} images x {args.epochs} epochs")
        print("  workers   steady images/s   incl. start-up images/s")
        for workers in (int(w) for w in args.workers.split(",")):
            steady, overall = _pipeline_rate(root, workers, args.epochs, args.batch, args.crop)
            print(f"  {workers:>7}   {steady:15.1f}   {overall:23.1f}")
        print("\ndata check (decode image + label, value histogram):")
        for workers in (1, 2):
            print(f"  {workers} process(es): {_check_rate(root, workers):7.1f} images/s")


if __name__ == "__main__":
    main()
