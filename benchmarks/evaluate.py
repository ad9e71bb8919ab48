"""Benchmark: one evaluation pass feeding K scorers vs K single-scorer passes (the seed's way), at native
StreetHazards resolution (1280x720), same data and model, side by side in one run.

Prints: wall seconds of (a) one pass with all K scorers, (b) one pass with a single scorer (the first), (c) the
K single-scorer passes summed; the ratios a/b (floor: <= 1.3 for K = 6) and c/a (speed-up over the seed's
way); and where the time of the one-pass run goes (inference vs scoring vs metrics, per scorer and protocol).
Metric work runs on the device of the logits, so ``--device cuda`` measures what a GPU user gets.

Data: synthetic StreetHazards-format images written at 1280x720 into a temporary folder (or --data-root).

Run: .venv/bin/python benchmarks/evaluate.py [--images 8] [--model deeplabv3plus_resnet18] [--device cpu]
     [--scorers max_logit,msp,energy,entropy,rba,gen] [--protocol both|per_image|pooled] [--threads N]
     [--repeats 1] [--no-malloc-tuning]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from anomalyseg.data import StreetHazards, collate_samples
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.engine.evaluate import EvalPlan, run_evaluation
from anomalyseg.models import build_model
from anomalyseg.runtime import tune_cpu_allocator
from anomalyseg.scoring import scorers_from_spec

DEFAULT_SCORERS = "max_logit,msp,energy,entropy,rba,gen"


def _timed(model, loader, scorers, device, protocols) -> tuple[float, dict]:
    start, cpu = time.perf_counter(), time.process_time()
    res = run_evaluation(model, loader, scorers, device, EvalPlan(protocols=protocols))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    res["cpu_seconds"] = time.process_time() - cpu  # all threads of this process
    return time.perf_counter() - start, res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8,
                        help="test images (synthetic, 1280x720); the last batch's metric work overlaps no next batch,"
                             " so few images overstate its share")
    parser.add_argument("--data-root", help="existing StreetHazards tree (default: write a synthetic one)")
    parser.add_argument("--model", default="deeplabv3plus_resnet18")
    parser.add_argument("--scorers", default=DEFAULT_SCORERS)
    parser.add_argument("--protocol", choices=("both", "per_image", "pooled"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each configuration; the fastest counts")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc malloc as it is (the CLI tunes it, see anomalyseg.runtime)")
    args = parser.parse_args()
    tuned = False if args.no_malloc_tuning else tune_cpu_allocator()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    protocols = ("per_image", "pooled") if args.protocol == "both" else (args.protocol,)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_root) if args.data_root else write_synthetic(
            Path(tmp) / "sh", train=0, val=0, test=args.images, size=(1280, 720), seed=0, workers=2)
        ds = StreetHazards(root, "test", transform=EvalTransform())
        if args.data_root:
            ds = torch.utils.data.Subset(ds, range(min(args.images, len(ds))))
        loader = DataLoader(ds, batch_size=1, collate_fn=collate_samples, num_workers=0)
        torch.manual_seed(0)
        model = build_model(args.model, 13, pretrained=False).to(device).eval()
        scorers = scorers_from_spec(args.scorers)
        K = len(scorers)
        with torch.no_grad():  # warm-up: first large allocations, cuDNN / oneDNN kernel selection
            model(ds[0]["image"][None].to(device))
        t_all, singles, res = float("inf"), {s.name: float("inf") for s in scorers}, {}
        cpu_one = float("inf")
        for _ in range(args.repeats):  # interleaved, best of N: a busy machine slows runs, never speeds them
            seconds, run = _timed(model, loader, scorers, device, protocols)
            if seconds < t_all:
                t_all, res = seconds, run
            for scorer in scorers:
                seconds, run = _timed(model, loader, [scorer], device, protocols)
                if scorer is scorers[0] and seconds < singles[scorer.name]:
                    cpu_one = run["cpu_seconds"]
                singles[scorer.name] = min(singles[scorer.name], seconds)

    first = scorers[0].name
    t_one, t_sum = singles[first], sum(singles.values())
    n = len(ds)
    tm = res["timings"]
    print(f"\n{args.model} on {device} ({torch.get_num_threads()} threads, malloc tuning {'on' if tuned else 'off'}), "
          f"{n} images at 1280x720, "
          f"protocols {', '.join(protocols)}, K = {K} scorers: {', '.join(s.name for s in scorers)}\n")
    print(f"{'run':<44}{'seconds':>10}{'s/image':>10}")
    print(f"{'(a) one pass, all ' + str(K) + ' scorers':<44}{t_all:>10.2f}{t_all / n:>10.2f}")
    print(f"{'(b) one pass, ' + first + ' only':<44}{t_one:>10.2f}{t_one / n:>10.2f}")
    print(f"{'(c) ' + str(K) + ' single-scorer passes (seed way)':<44}{t_sum:>10.2f}{t_sum / n:>10.2f}")
    print(f"\na / b = {t_all / t_one:.2f}  (floor: <= 1.30 for K = 6);  CPU seconds (all threads): "
          f"a {res['cpu_seconds']:.2f}, b {cpu_one:.2f}, ratio {res['cpu_seconds'] / cpu_one:.2f}")
    print(f"c / a = {t_sum / t_all:.2f}  (speed-up of one pass over the seed's K passes)\n")
    busy = tm["inference_s"] + tm["scoring_s"] + tm["metrics_s"]
    print("where the one-pass run (a) spends its time:")
    for key in ("data", "inference", "scoring", "metrics"):
        share = f"{100 * tm[key + '_s'] / busy:6.1f} %" if key != "data" else "        "
        print(f"  {key:<12}{tm[key + '_s']:>8.2f} s  {1000 * tm[key + '_s'] / n:>8.0f} ms/image  {share}")
    print(f"  scoring + metrics = {100 * (tm['scoring_s'] + tm['metrics_s']) / busy:.1f} % of "
          f"inference + scoring + metrics")
    d = tm["detail"]
    print(f"\n  {'per scorer (ms/image)':<24}{'score':>8}{'metrics':>9}")
    for s in scorers:
        print(f"  {s.name:<24}{1000 * d.get('scoring/' + s.name, 0) / n:>8.0f}"
              f"{1000 * d.get('metrics/' + s.name, 0) / n:>9.0f}")
    print(f"  {'segmentation (mIoU)':<24}{'':>8}{1000 * d.get('metrics_segmentation', 0) / n:>9.0f}")
    for s in scorers:
        print(f"  single pass {s.name:<14} {singles[s.name]:.2f} s")


if __name__ == "__main__":
    main()
