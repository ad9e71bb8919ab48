"""Benchmark: a real Cityscapes ENet on the real anomaly validation sets (Road Anomaly, SMIYC RA21 / RO21,
Fishyscapes Static), AuPRC and FPR95 per scorer, both evaluation resolutions, and the CPU time it took.

Protocol (the PoliTo course / SegmentMeIfYouCan-validation way): every image is resized to the model input
size of the checkpoint's input contract (512x1024, bilinear, antialiased) and run once; then

* ``eval-at model``: the mask is resized to the same size by nearest neighbour;
* ``eval-at label``: the logits are upsampled (bilinear) to the mask's native size;

and in both cases every non-void pixel of every image of a set is pooled into one curve
(:class:`~anomalyseg.metrics.AnomalyMetrics`, ``pooled``, ignore 255): AuPRC = average precision (anomaly
positive), FPR95 by the "interp" rule (``ood_metrics.fpr_at_95_tpr``). No dependency on the evaluate CLI.

Scorers: ``void`` (softmax probability of the trained void channel, over all 20 outputs), ``msp``,
``max_logit``, ``energy``, ``entropy`` over all outputs, and (``--known``) the same four over the 19 known
classes only (``known_classes=19``, names ``*_K19``).

Run: .venv/bin/python benchmarks/real_photos.py [--data-root ../shared/data/road_anomaly]
     [--checkpoint ../shared/models/enet_cityscapes_void20.pth] [--known] [--limit N] [--threads N] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from anomalyseg.checkpoints.contract import parse_contract
from anomalyseg.checkpoints.foreign import import_checkpoint
from anomalyseg.checkpoints.syntax import CONTRACT_HELP
from anomalyseg.data.anomaly_folder import PRESETS, ModelResize, open_anomaly_sets
from anomalyseg.metrics import AnomalyMetrics
from anomalyseg.models import build_model
from anomalyseg.scoring import Scorer, get_scorer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONTRACT = "size=512x1024,norm=none,void=19,classes=cityscapes"
EVAL_AT = ("model", "label")


def make_scorers(void_index: int | None, known: int | list[int] | None) -> list[Scorer]:
    """void + the four post-hoc scorers over all outputs (+ over the known classes when ``known``)."""
    scorers: list[Scorer] = []
    if void_index is not None:
        scorers.append(get_scorer("void", void_index=void_index, name="void"))
    names = ("msp", "max_logit", "energy", "entropy")
    scorers += [get_scorer(n) for n in names]
    if known is not None:
        scorers += [get_scorer(n, known_classes=known) for n in names]
    return scorers


@torch.no_grad()
def evaluate_set(model: torch.nn.Module, dataset: Any, scorers: list[Scorer], size: tuple[int, int],
                 device: torch.device, limit: int | None) -> dict[str, Any]:
    """One forward pass per image; every scorer at both resolutions; pooled metrics and stage timings."""
    accs = {at: {s.name: AnomalyMetrics("pooled", ignore_index=255, fpr_rule="interp") for s in scorers}
            for at in EVAL_AT}
    resize = ModelResize(size)
    seconds = {"data": 0.0, "forward": 0.0, "score_model": 0.0, "score_label": 0.0}
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        tick = time.perf_counter()
        sample = dataset[i]
        image, mask_model = resize(sample["image"], sample["label"])
        mask_label = sample["label"].to(device)[None]
        mask_model = mask_model.to(device)[None]
        t1 = time.perf_counter()
        out = model(image[None].to(device))
        t2 = time.perf_counter()
        for s in scorers:
            accs["model"][s.name].update(s.score(out), mask_model)
        t3 = time.perf_counter()
        native = out.resized(tuple(mask_label.shape[-2:]))
        for s in scorers:
            accs["label"][s.name].update(s.score(native), mask_label)
        del native, out
        t4 = time.perf_counter()
        for key, dt in zip(seconds, (t1 - tick, t2 - t1, t3 - t2, t4 - t3)):
            seconds[key] += dt
    results = {at: {name: acc.compute() for name, acc in by.items()} for at, by in accs.items()}
    return {"images": n, "seconds": {k: round(v, 2) for k, v in seconds.items()}, "metrics": results}


def print_tables(report: dict[str, Any], scorers: list[Scorer]) -> None:
    sets = list(report["sets"])
    head = "| scorer | " + " | ".join(f"{PRESETS[k].folder} AuPRC | FPR95" for k in sets) + " |"
    for at in EVAL_AT:
        print(f"\neval-at {at} (pooled non-void pixels; AuPRC = average precision, FPR95 'interp'; in %)\n")
        print(head)
        print("|---|" + "---:|---:|" * len(sets))
        for s in scorers:
            cells = []
            for k in sets:
                m = report["sets"][k]["metrics"][at][s.name]
                cells += [f"{100 * m['aupr']:.2f}", f"{100 * m['fpr95']:.2f}"]
            print(f"| {s.name} | " + " | ".join(cells) + " |")
    print()
    for k, entry in report["sets"].items():
        sec = entry["seconds"]
        print(f"{PRESETS[k].folder:>15}: {entry['images']:3d} images, forward {sec['forward']:.1f} s, "
              f"scoring+metrics {sec['score_model'] + sec['score_label']:.1f} s, data {sec['data']:.1f} s")
    print(f"total wall time {report['wall_seconds']:.1f} s, process CPU time {report['process_cpu_seconds']:.1f} s "
          f"on {report['device']} ({report['threads']} threads, {report['cpu']}, {os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "road_anomaly")
    parser.add_argument("--checkpoint", type=Path,
                        default=REPO.parent / "shared" / "models" / "enet_cityscapes_void20.pth")
    parser.add_argument("--arch", default="enet", help="architecture of the checkpoint (default: enet)")
    parser.add_argument("--contract", default=DEFAULT_CONTRACT, help=f"input contract: {CONTRACT_HELP}")
    parser.add_argument("--sets", nargs="+", default=None, help=f"presets (default: all present; {list(PRESETS)})")
    parser.add_argument("--known", action="store_true", help="also score with the known classes only (*_K19)")
    parser.add_argument("--limit", type=int, default=None, help="first N images per set (smoke runs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--out", type=Path, help="also write the full results as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    contract = parse_contract(args.contract)
    if contract.size is None:
        parser.error("the input contract needs size=HxW (the model input size)")
    ckpt = import_checkpoint(args.checkpoint, args.arch, contract)
    model = build_model(args.arch, ckpt["num_classes"], **ckpt["config"]["model"]["options"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    scorers = make_scorers(contract.void_index, contract.known_classes_option() if args.known else None)
    sets = open_anomaly_sets(args.data_root, args.sets)
    report: dict[str, Any] = {
        "checkpoint": {"path": str(args.checkpoint), "sha256": ckpt["imported_from"]["sha256"], "arch": args.arch},
        "input_contract": contract.to_dict(), "eval_at": list(EVAL_AT),
        "protocol": {"aggregation": "pooled", "ignore_index": 255, "fpr_rule": "interp",
                     "aupr": "average precision, anomaly positive"},
        "sets": {}, "device": str(device), "threads": torch.get_num_threads(), "cpu": platform.processor() or
        platform.machine(), "torch": str(torch.__version__),
    }
    for key, dataset in sets.items():
        report["sets"][key] = evaluate_set(model, dataset, scorers, contract.size, device, args.limit)
        print(f"{dataset.info.name}: done ({report['sets'][key]['images']} images)", flush=True)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    report["process_cpu_seconds"] = round(time.process_time() - cpu_start, 1)  # all threads; less load-sensitive
    print_tables(report, scorers)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
