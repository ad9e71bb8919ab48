"""``anomalyseg evaluate`` and ``anomalyseg fit-scorers`` (single process, or sharded under ``torchrun``):
argument parsing and printing around :func:`anomalyseg.workflows.evaluate.evaluate` and
:func:`anomalyseg.workflows.fit.fit_scorers`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from anomalyseg.argtypes import finite_float, int_at_least, size_wh
from anomalyseg.limits import MAX_BATCH, MAX_COUNT, MAX_WORKERS

EVAL_EPILOG = """\
examples:
  anomalyseg evaluate --checkpoint runs/r50/checkpoints/best.pt --data-root data/streethazards \\
      --scorers all --protocol both --out results/r50.json
  anomalyseg evaluate --checkpoint runs/r50 --data-root data/streethazards --scorers max_logit,energy:temperature=2 \\
      --tta scales=0.5,0.75,1.0,1.25,1.5,flip --out results/r50_tta.json
  anomalyseg evaluate --checkpoint runs/r50 --data-root data/streethazards --scorers sml_full \\
      --protocol pooled --ignore other,unlabeled --size 1024x576 --out results/r50_pooled.json --force
  torchrun --nproc_per_node=4 -m anomalyseg evaluate --checkpoint runs/r50 --data-root data/streethazards \\
      --out results/r50.json
  anomalyseg evaluate --checkpoint enet.pt --dataset anomaly-sets --data-root data/Validation_Dataset \\
      --scorers void,msp,max_logit,energy,entropy --eval-at model --out results/enet.json

Writes NAME.json (config, checkpoint sha256, dataset, protocols, metrics, pooled curves, per-image values,
timings, versions), NAME.csv and NAME.md; existing files are kept unless --force. Scorers that need fitting
(sml, sml_full, heat, mahalanobis) read <checkpoint stem>.scorers.pt written by 'anomalyseg fit-scorers'.
Protocols: per_image = official StreetHazards (mean over images, 'closest' FPR95 rule, every pixel counted);
pooled = one curve over all pixels ('first' rule). mIoU: 13 known classes, anomaly pixels excluded.
Real-photo sets (--dataset road_anomaly,smiyc_ra21,smiyc_ro21,fs_static | anomaly-sets): one NAME_<set>.json
per set, pooled protocol ('interp' rule, label 255 void), preprocessing from the checkpoint's input contract
(see 'anomalyseg import-checkpoint'); --eval-at model resizes image and mask to the contract size.
"""

FIT_EPILOG = """\
examples:
  anomalyseg fit-scorers --checkpoint runs/r50/checkpoints/best.pt --data-root data/streethazards
  anomalyseg fit-scorers --checkpoint runs/r50 --data-root data/streethazards --scorers sml,heat:smoothing=5
  torchrun --nproc_per_node=4 -m anomalyseg fit-scorers --checkpoint runs/r50 --data-root data/streethazards

Fits on in-distribution data only: the test split, and any split whose labels hold the anomaly id, are
refused. Writes <checkpoint stem>.scorers.pt beside the checkpoint (or --states PATH); entries that exist
are only replaced with --force (other scorers' entries are kept).
"""


# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, split: str | None) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or run folder")
    p.add_argument("--data-root", required=True, metavar="DIR",
                   help="dataset root (for several anomaly sets: the folder holding their folders)")
    p.add_argument("--split", default=split, help="dataset split (default: the dataset's evaluation split for "
                   "evaluate, its in-distribution split (val) for fit-scorers)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=size_wh, metavar="WxH", help="resize the model input to fit WxH (aspect kept)")
    size.add_argument("--native", action="store_true", help="model input at native resolution (default)")
    p.add_argument("--tta", metavar="SPEC", help="test-time augmentation, e.g. scales=0.5,0.75,1.0,1.25,1.5,flip")
    p.add_argument("--states", metavar="PATH", help="fitted scorer states (default: <checkpoint stem>.scorers.pt)")
    p.add_argument("--batch-size", type=int_at_least(1, MAX_BATCH), default=1, help="images per batch (default: 1)")
    p.add_argument("--workers", type=int_at_least(0, MAX_WORKERS), default=2, help="data loader workers (default: 2)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--limit", type=int_at_least(1, MAX_COUNT), metavar="N", help="first N images only (smoke runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` and ``fit-scorers`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "evaluate", help="closed-set mIoU and anomaly metrics of every scorer from one pass",
        description="Evaluate a checkpoint: one forward pass per batch feeds every scorer and every metric.",
        epilog=EVAL_EPILOG, formatter_class=fmt)
    _common(p, None)
    inference_arguments(p)
    p.add_argument("--scorers", default="all", help="'all' or NAME[:KEY=VALUE...],... (default: all)")
    p.add_argument("--protocol", choices=("per_image", "pooled", "both"), default=None,
                   help="anomaly protocol(s) (default: both for StreetHazards, pooled for the real-photo sets)")
    p.add_argument("--fpr-rule", metavar="RULE", help="FPR95 rule of the pooled protocol: first (SegmentMeIfYouCan), "
                   "closest (official StreetHazards), interp (course code, ood_metrics) (default: the dataset's)")
    p.add_argument("--skip-images-without-anomaly", action="store_true",
                   help="pooled protocol: leave out images without an anomaly pixel (the course evaluation code)")
    p.add_argument("--components", metavar="TRACK", help="SegmentMeIfYouCan component metrics (sIoU, PPV, F1): "
                   "anomaly, obstacle or off (default: the dataset's; the SMIYC sets pick their track)")
    p.add_argument("--component-threshold", type=finite_float(), metavar="T",
                   help="binarise score > T for components (default: each scorer's pooled best-F1 threshold)")
    p.add_argument("--save-scores", metavar="DIR", help="write every score map as DIR/<dataset>/<scorer>/<id>.npy "
                   "(float32, evaluation resolution; the uint8 1/0/255 target in DIR/<dataset>/_target/); an "
                   "existing non-empty DIR needs --force")
    p.add_argument("--save-scores-format", default="npy", metavar="FORMAT",
                   help="npy (default) or smiyc: the SegmentMeIfYouCan benchmark's layout, "
                        "DIR/anomaly_p/<scorer>/<set>/<id>.hdf5 (float16 'value'; needs anomalyseg[smiyc])")
    p.add_argument("--ignore", default="", metavar="CLASSES",
                   help="known classes left out of the anomaly metrics, names or ids (e.g. other,unlabeled)")
    p.add_argument("--eval-at", choices=("label", "model", "input"), default="label",
                   help="label: upsample logits to the label resolution (official); model (= input): resize "
                        "labels (nearest) to the model input size")
    dataset_arguments(p)
    p.add_argument("--out", required=True, metavar="NAME.json", help="results file (CSV and Markdown beside it)")
    p.set_defaults(func=handle_evaluate)

    f = subparsers.add_parser(
        "fit-scorers", help="fit scorers (sml, heat, mahalanobis) on in-distribution data",
        description="Stream the validation split through the model and fit every scorer that needs fitting.",
        epilog=FIT_EPILOG, formatter_class=fmt)
    _common(f, None)
    dataset_arguments(f, contract=False)
    f.add_argument("--scorers", default=None,
                   help="scorers to fit (default: every registered scorer that needs fitting)")
    f.set_defaults(func=handle_fit)


def inference_arguments(p: argparse.ArgumentParser) -> None:
    """``--inference``, ``--tile``, ``--overlap``, ``--blend`` (evaluate, predict)."""
    p.add_argument("--inference", choices=("whole", "resize", "slide"), default=None,
                   help="whole: one pass at native (or --size) resolution; resize: one pass stretched to --tile / "
                        "the contract size (default when the contract has a size); slide: native image in "
                        "overlapping tiles of --tile / the contract size, logits blended")
    p.add_argument("--tile", metavar="HxW", help="tile / resize size (default: the input contract's size)")
    p.add_argument("--overlap", type=finite_float(0.0, 0.95), default=0.33,
                   help="slide: fraction of a tile shared with its neighbour (default: 0.33)")
    p.add_argument("--blend", choices=("mean", "gaussian"), default="mean",
                   help="slide: weights of overlapping tiles' logits (default: mean)")


def dataset_arguments(p: argparse.ArgumentParser, contract: bool = True) -> None:
    """``--dataset`` and ``--input-contract`` (torch-free imports: ``--help`` stays fast)."""
    from anomalyseg.checkpoints.syntax import CONTRACT_HELP
    from anomalyseg.data.registry import ALL_ANOMALY_SETS, available_datasets

    p.add_argument("--dataset", default="streethazards", metavar="NAMES",
                   help=f"a registered dataset: {', '.join(available_datasets())} (default: streethazards); "
                        f"anomaly sets may be joined by commas; '{ALL_ANOMALY_SETS}' = every anomaly set found under "
                        "--data-root")
    if contract:
        p.add_argument("--input-contract", metavar="SPEC",
                       help=f"override keys of the checkpoint's input contract: {CONTRACT_HELP}")


def handle_evaluate(args: argparse.Namespace) -> int:
    from anomalyseg.workflows.evaluate import evaluate

    outputs = evaluate(
        args.checkpoint, args.data_root, args.out, dataset=args.dataset, split=args.split, scorers=args.scorers,
        protocol=args.protocol, fpr_rule=args.fpr_rule, skip_images_without_anomaly=args.skip_images_without_anomaly,
        components=args.components, component_threshold=args.component_threshold, save_scores=args.save_scores,
        save_scores_format=args.save_scores_format, ignore=args.ignore, eval_at=args.eval_at, size=args.size,
        tta=args.tta, inference=args.inference, tile=args.tile, overlap=args.overlap, blend=args.blend,
        input_contract=args.input_contract, states=args.states, batch_size=args.batch_size,
        workers=args.workers, device=args.device, limit=args.limit, progress=not args.no_progress, force=args.force,
        argv=sys.argv[1:])
    for output in outputs:
        if len(outputs) > 1:
            print(f"{output.record['dataset']['name']}:")
        _summary(output.record)
        paths = output.paths
        print(f"wrote {paths['json']}, {paths['csv'].name}, {paths['md'].name}")
    return 0


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f}"


def _summary(record: dict[str, Any]) -> None:
    """A few lines on stdout; the files hold everything."""
    seg = record["segmentation"]
    print(f"mIoU {_pct(seg.get('miou'))} over" if seg is not None else "anomaly metrics over",
          f"{record['num_images']} images")
    for name, entry in record["scorers"].items():
        metrics = dict(entry["metrics"])
        components = metrics.pop("components", None)
        parts = [f"{p}: " + " ".join(f"{k}={_pct(m.get(k))}" for k in ("auroc", "aupr", "fpr95"))
                 for p, m in metrics.items()]
        if components is not None:
            parts.append(f"components ({components['track']}): " + " ".join(
                f"{k}={_pct(components.get(k))}" for k in ("siou_gt", "ppv", "f1_mean")))
        print(f"{name:>14}  " + " | ".join(parts))


def handle_fit(args: argparse.Namespace) -> int:
    from anomalyseg.workflows.fit import fit_scorers

    output = fit_scorers(
        args.checkpoint, args.data_root, dataset=args.dataset, split=args.split, scorers=args.scorers,
        size=args.size, tta=args.tta, states=args.states, batch_size=args.batch_size, workers=args.workers,
        device=args.device, limit=args.limit, progress=not args.no_progress, force=args.force)
    print(f"wrote {output.states_path} ({', '.join(output.scorers)})")
    return 0
