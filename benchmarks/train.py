"""Training throughput: the input pipeline alone, the model step alone, and both together (images/s).

The input pipeline is the training one (StreetHazards reader + multi-scale crop / flip / jitter / blur +
collate, per-sample seeding, N workers); the model step is forward + loss + backward + optimizer step on a
batch already on the device. Floor: the pipeline is >= 2x faster than the model step it feeds.

    python benchmarks/train.py                                   # small model, CPU, synthetic 480x270 data
    python benchmarks/train.py --model deeplabv3_resnet50 --crop 512 512 --batch 8 --device cuda --amp bf16 \
        --channels-last --size 1280x720 --workers 8               # the seed's model on a GPU
    python benchmarks/train.py --model hiera_base_fpn --compare deeplabv3plus_resnet50 --crop 512 512 --batch 1 \
        --steps 3                                                 # model step time next to another model's
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from anomalyseg.config import ModelConfig
from anomalyseg.data.samples import collate_samples
from anomalyseg.data.streethazards import StreetHazards
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.data.transforms import TrainTransform
from anomalyseg.engine.factory import SegLoss, build_model_from_config
from anomalyseg.engine.loaders import make_train_loader
from anomalyseg.engine.train import autocast, train_one_epoch


class _NoSchedule:
    def step(self) -> None:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_pipeline(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # worker start-up and first decode are not throughput
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += next(it)["image"].shape[0]
    return n / (time.perf_counter() - start)


def bench_model(model, criterion, optimizer, batch, device, amp, channels_last, steps: int) -> float:
    images, labels = batch["image"].to(device), batch["label"].to(device)
    if channels_last and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()

    def step() -> None:
        with autocast(device, amp):
            out = model(images)
        loss = criterion(out, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * images.shape[0] / (time.perf_counter() - start)


def bench_both(model, criterion, optimizer, loader, device, amp, channels_last, steps: int) -> float:
    train_one_epoch(model, criterion, optimizer, loader, _NoSchedule(), device, 0, num_batches=1, amp=amp,
                    channels_last=channels_last, progress=False, log_every=0)  # warm-up (workers, kernels)
    _sync(device)
    start = time.perf_counter()
    train_one_epoch(model, criterion, optimizer, loader, _NoSchedule(), device, 0, num_batches=steps, amp=amp,
                    channels_last=channels_last, progress=False, log_every=0)
    _sync(device)
    return steps * loader.batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="StreetHazards(-format) root; default: a synthetic tree in a temp dir")
    p.add_argument("--size", default="480x270", help="synthetic image size WxH (default 480x270)")
    p.add_argument("--model", default="deeplabv3plus_efficientnet_lite0")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--crop", type=int, nargs=2, default=(144, 256), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="batches timed per measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                   help="also time the model step of these models on the same batch (same crop, batch, device)")
    args = p.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            w, h = (int(v) for v in args.size.lower().split("x"))
            n = max(args.batch * (3 * args.steps + 4), 32)
            t0 = time.perf_counter()
            root = write_synthetic(Path(tmp) / "synth", train=n, val=1, test=1, size=(w, h), seed=0,
                                   workers=max(1, args.workers))
            print(f"wrote {n} synthetic {w}x{h} training images in {time.perf_counter() - t0:.1f} s")
        ds = StreetHazards(root, "train", transform=TrainTransform(crop_size=tuple(args.crop)), on_error="skip")
        loader, _ = make_train_loader(ds, batch_size=args.batch, workers=args.workers, seed=0,
                                      collate_fn=collate_samples, pin_memory=device.type == "cuda")
        model = build_model_from_config(ModelConfig(name=args.model, pretrained=args.pretrained), 13).to(device)
        if args.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        criterion = SegLoss(13).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = next(iter(loader))

        pipe = bench_pipeline(loader, args.steps)
        step = bench_model(model, criterion, optimizer, batch, device, args.amp, args.channels_last, args.steps)
        both = bench_both(model, criterion, optimizer, loader, device, args.amp, args.channels_last, args.steps)
        steps = {args.model: step}
        for name in args.compare:
            other = build_model_from_config(ModelConfig(name=name, pretrained=args.pretrained), 13).to(device)
            other_opt = torch.optim.AdamW(other.parameters(), lr=1e-4)
            steps[name] = bench_model(other, criterion, other_opt, batch, device, args.amp, args.channels_last,
                                      args.steps)
            del other, other_opt

    print(f"\n{args.model} on {device} ({torch.get_num_threads()} threads), crop {args.crop[0]}x{args.crop[1]}, "
          f"batch {args.batch}, {args.workers} workers, amp {args.amp}")
    print(f"{'input pipeline':>16} {'model step':>12} {'together':>10} {'pipeline/model':>16}")
    print(f"{pipe:13.1f} im/s {step:7.1f} im/s {both:5.1f} im/s {pipe / step:15.1f}x")
    print("floor: pipeline >= 2x the model step:", "met" if pipe >= 2 * step else "NOT met")
    if args.compare:
        print(f"\nmodel step (forward + loss + backward + AdamW), crop {args.crop[0]}x{args.crop[1]}, "
              f"batch {args.batch}:")
        for name, rate in steps.items():
            print(f"{name:>34} {args.batch / rate:8.2f} s/step {rate:7.2f} im/s")


if __name__ == "__main__":
    main()
