"""``anomalyseg visualize``: argument parsing and printing around :func:`anomalyseg.workflows.visualize.visualize`
(panels of chosen samples, a comparison grid and a colour legend)."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalyseg.argtypes import int_at_least, size_wh
from anomalyseg.cli.evaluate import dataset_arguments
from anomalyseg.limits import MAX_DPI, MAX_SEED

EPILOG = """\
examples:
  anomalyseg visualize --checkpoint runs/r50/checkpoints/best.pt --data-root data/streethazards \\
      --scorer max_logit --num-samples 6 --out figures/r50_max_logit
  anomalyseg visualize --checkpoint runs/r50 --data-root data/streethazards --scorer sml_full \\
      --results results/r50.json --threshold best_f1 --select worst --num-samples 4 --out figures/r50_worst
  anomalyseg visualize --checkpoint runs/r50 --data-root data/streethazards --scorer energy \\
      --ids t5/12 t6/1028 --threshold 0.5 --out figures/picked
  anomalyseg visualize --checkpoint enet.pt --dataset anomaly-sets --data-root data/Validation_Dataset \\
      --scorer void --results results/enet.json --select worst --num-samples 3 --out results/panels

Writes panel_<id>.png (3x3: input, ground truth, prediction / overlay, confidence, errors / anomaly
score, detection, TP-FP-FN-TN), grid.png (all samples), legend.png (colours) and panels.json (what was
drawn, with each sample's mIoU and detection precision / recall / F1). --threshold tpr95 / best_f1 take
the pooled operating point of the scorer from --results; without --results each image gets its own.
Colours: official StreetHazards palette (anomaly cyan, ignore white); TP green, FP red, FN blue, TN
dark grey. Existing files are kept unless --force.
Real-photo sets (--dataset road_anomaly,smiyc_ra21,... | anomaly-sets, as for evaluate): one folder per
set, OUT/<set>/, with a 2x3 panel per sample (input photo, prediction in the model's palette -- Cityscapes
colours, void channel black --, anomaly mask normal / anomaly / void, score, detection, TP-FP-FN-TN; void
white and not counted), titled with the image's AUPR / FPR95; preprocessing from the checkpoint's input
contract, --eval-at as in the results. --results takes evaluate's --out (NAME.json: NAME_<set>.json is read).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``visualize`` subcommand."""
    p = subparsers.add_parser(
        "visualize", help="qualitative panels: prediction, anomaly score, detection outcome per sample",
        description="Draw a 3x3 panel per sample, a comparison grid and a palette legend.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or run folder")
    p.add_argument("--data-root", required=True, metavar="DIR",
                   help="StreetHazards root, or the folder holding the real-photo set folders")
    p.add_argument("--split", default=None, help="dataset split (default: the dataset's evaluation split)")
    dataset_arguments(p)
    p.add_argument("--eval-at", choices=("label", "model", "input"), default=None,
                   help="real-photo sets: label (logits upsampled to the mask) or model (image and mask at the "
                        "contract size; input = model); default: as in --results, else label")
    p.add_argument("--scorer", default="max_logit", metavar="NAME[:KEY=VALUE]",
                   help="anomaly scorer (default: max_logit)")
    p.add_argument("--num-samples", type=int_at_least(1, 1000), default=4, metavar="N",
                   help="samples to draw (default: 4)")
    p.add_argument("--ids", nargs="+", metavar="ID", help="draw these sample ids (e.g. t5/12) instead")
    p.add_argument("--select", choices=("random", "worst", "best"), default="random",
                   help="random (seeded), or worst / best per-image AUPR from --results (default: random)")
    p.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0, help="seed of the random choice (default: 0)")
    p.add_argument("--threshold", default="tpr95", metavar="tpr95|best_f1|FLOAT",
                   help="detection threshold (default: tpr95)")
    p.add_argument("--results", metavar="RESULTS.json", help="results of `anomalyseg evaluate` (thresholds, "
                   "per-image AUPR, input size)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=size_wh, metavar="WxH", help="model input size (default: as in --results, "
                      "else native)")
    size.add_argument("--native", action="store_true", help="model input at native resolution")
    p.add_argument("--tta", metavar="SPEC", help="test-time augmentation (default: as in --results)")
    p.add_argument("--states", metavar="PATH", help="fitted scorer states (default: <checkpoint stem>.scorers.pt)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dpi", type=int_at_least(10, MAX_DPI), default=100,
                   help=f"figure resolution, 10 .. {MAX_DPI} (default: 100)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing figures")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from anomalyseg.workflows.visualize import visualize

    manifests = visualize(
        args.checkpoint, args.data_root, args.out, dataset=args.dataset, split=args.split, scorer=args.scorer,
        num_samples=args.num_samples, ids=args.ids, select=args.select, seed=args.seed, threshold=args.threshold,
        results=args.results, eval_at=args.eval_at, size=args.size, native=args.native,
        input_contract=args.input_contract, tta=args.tta, states=args.states, device=args.device, dpi=args.dpi,
        force=args.force)
    for key, m in manifests.items():
        where = Path(args.out) / key if len(manifests) > 1 or m.get("kind") == "binary_gt" else Path(args.out)
        print(f"{key}: wrote {len(m['samples'])} panel(s), {m['grid']} and {m['legend']} to {where}")
    return 0
