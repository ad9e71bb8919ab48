"""``anomalyseg evaluate`` and ``anomalyseg fit-scorers`` (single process, or sharded under ``torchrun``).

Fitted scorer states live beside the checkpoint in ``<checkpoint stem>.scorers.pt``, one entry per scorer
name with where it was fitted, tied to the checkpoint by its sha256 (see :mod:`anomalyseg.engine.scorer_states`);
``evaluate`` loads them automatically.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

from anomalyseg import __version__
from anomalyseg.argtypes import int_at_least, size_wh
from anomalyseg.engine import eval_sets
from anomalyseg.engine.scorer_states import default_states_path as default_states_path  # re-exported (viz)
from anomalyseg.engine.scorer_states import entries_to_keep, write_states
from anomalyseg.engine.scorer_states import load_fitted as load_fitted  # re-exported (viz)
from anomalyseg.errors import UserError
from anomalyseg.lazy import lazy_exports

log = logging.getLogger(__name__)

# Re-exported for eval_sets and viz, imported on first use: their modules import torch, which
# 'anomalyseg evaluate --help' must not pay for (the handlers import what they run).
__getattr__, __dir__ = lazy_exports(__name__, {"resolve_checkpoint": "anomalyseg.engine.checkpoint",
                                               "file_sha256": "anomalyseg.models.checkpoints"})

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
def _common(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or run folder")
    p.add_argument("--data-root", required=True, metavar="DIR", help="StreetHazards root")
    p.add_argument("--split", default=split, help=f"dataset split (default: {split})")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=size_wh, metavar="WxH", help="resize the model input to fit WxH (aspect kept)")
    size.add_argument("--native", action="store_true", help="model input at native resolution (default)")
    p.add_argument("--tta", metavar="SPEC", help="test-time augmentation, e.g. scales=0.5,0.75,1.0,1.25,1.5,flip")
    p.add_argument("--states", metavar="PATH", help="fitted scorer states (default: <checkpoint stem>.scorers.pt)")
    p.add_argument("--batch-size", type=int_at_least(1), default=1, help="images per batch (default: 1)")
    p.add_argument("--workers", type=int, default=2, help="data loader workers (default: 2)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--limit", type=int_at_least(1), metavar="N", help="first N images only (smoke runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` and ``fit-scorers`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "evaluate", help="closed-set mIoU and anomaly metrics of every scorer from one pass",
        description="Evaluate a checkpoint: one forward pass per batch feeds every scorer and every metric.",
        epilog=EVAL_EPILOG, formatter_class=fmt)
    _common(p, "test")
    p.add_argument("--scorers", default="all", help="'all' or NAME[:KEY=VALUE...],... (default: all)")
    p.add_argument("--protocol", choices=("per_image", "pooled", "both"), default=None,
                   help="anomaly protocol(s) (default: both for StreetHazards, pooled for the real-photo sets)")
    p.add_argument("--ignore", default="", metavar="CLASSES",
                   help="known classes left out of the anomaly metrics, names or ids (e.g. other,unlabeled)")
    p.add_argument("--eval-at", choices=("label", "model", "input"), default="label",
                   help="label: upsample logits to the label resolution (official); model (= input): resize "
                        "labels (nearest) to the model input size")
    eval_sets.add_arguments(p)
    p.add_argument("--out", required=True, metavar="NAME.json", help="results file (CSV and Markdown beside it)")
    p.set_defaults(func=handle_evaluate)

    f = subparsers.add_parser(
        "fit-scorers", help="fit scorers (sml, heat, mahalanobis) on in-distribution data",
        description="Stream the validation split through the model and fit every scorer that needs fitting.",
        epilog=FIT_EPILOG, formatter_class=fmt)
    _common(f, "val")
    f.add_argument("--scorers", default=None,
                   help="scorers to fit (default: every registered scorer that needs fitting)")
    f.set_defaults(func=handle_fit)
    eval_sets.register_import(subparsers)


# ---------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    import numpy as np
    import torch

    return {"anomalyseg": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}


def _class_ids(text: str, info: Any) -> list[int]:
    """``other,unlabeled`` / ``3,0`` -> known class ids (names case-insensitive, '_' for spaces)."""
    names = {n.lower().replace(" ", "_"): i for i, n in enumerate(info.class_names)}
    ids: list[int] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        key = raw.lower().replace(" ", "_")
        if key.isdigit() and int(key) < info.num_classes:
            ids.append(int(key))
        elif key in names:
            ids.append(names[key])
        else:
            raise UserError(f"--ignore: {raw!r} is not a known class; choose from {', '.join(names)} "
                            f"(or ids 0..{info.num_classes - 1})")
    return sorted(set(ids))


def _setup(args: argparse.Namespace, split: str, ctx: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Dataset (image resized per --size, labels native), its info, and the checkpoint's model on ctx.device."""
    from torch.utils.data import Subset

    from anomalyseg.data import StreetHazards
    from anomalyseg.data.transforms import EvalTransform
    from anomalyseg.engine.checkpoint import load_model_from_checkpoint, resolve_checkpoint

    size = None if args.size is None else (args.size[1], args.size[0])
    dataset = StreetHazards(args.data_root, split, transform=EvalTransform(size=size), on_error="raise")
    info = dataset.info
    if args.limit is not None and args.limit < len(dataset):
        dataset = Subset(dataset, range(args.limit))
    ckpt_path = resolve_checkpoint(args.checkpoint)
    model, ckpt = load_model_from_checkpoint(ckpt_path, ctx.device, num_classes=info.num_classes)
    names = ckpt.get("class_names")
    if names is not None and list(names) != list(info.class_names):
        raise UserError(f"{ckpt_path} was trained on classes {list(names)}, not the {info.name} classes "
                        f"{list(info.class_names)}")
    return dataset, info, model, ckpt


def _loader(args: argparse.Namespace, dataset: Any, ctx: Any) -> Any:
    from anomalyseg.data import collate_samples
    from anomalyseg.engine.loaders import make_eval_loader

    if len(dataset) < ctx.world_size:
        raise UserError(f"{len(dataset)} image(s) cannot be shared by {ctx.world_size} processes")
    return make_eval_loader(dataset, batch_size=args.batch_size, workers=max(0, args.workers), rank=ctx.rank,
                            world_size=ctx.world_size, collate_fn=collate_samples,
                            pin_memory=ctx.device.type == "cuda")


def _dataset_record(args: argparse.Namespace, dataset: Any, split: str, info: Any) -> dict[str, Any]:
    base = getattr(dataset, "dataset", dataset)
    return {"name": info.name, "root": str(Path(args.data_root).resolve()), "split": split,
            "split_dir": str(getattr(base, "split_dir", "")), "list": str(getattr(base, "source", "")),
            "num_images": len(dataset), "num_listed": getattr(base, "num_listed", None), "limit": args.limit}


def _input_record(args: argparse.Namespace) -> dict[str, Any]:
    return {"size_wh": list(args.size) if args.size else None, "native": args.size is None,
            "tta": args.tta or None}


# ---------------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------------
def handle_evaluate(args: argparse.Namespace) -> int:
    from anomalyseg.data import STREETHAZARDS
    from anomalyseg.engine.checkpoint import resolve_checkpoint
    from anomalyseg.engine.distributed import barrier, cleanup, init_distributed
    from anomalyseg.engine.evaluate import run_evaluation
    from anomalyseg.engine.tta import TTA
    from anomalyseg.models.checkpoints import file_sha256
    from anomalyseg.report.results import check_writable
    from anomalyseg.scoring import scorers_from_spec

    presets = eval_sets.parse_datasets(args.dataset)
    if presets is not None:
        return eval_sets.handle_anomaly_sets(args, presets)
    started = time.time()
    paths = check_writable(args.out, args.force)
    tta = TTA.parse(args.tta)
    scorers = scorers_from_spec(args.scorers)
    protocols = ("per_image", "pooled") if args.protocol in ("both", None) else (args.protocol,)
    ignore_ids = _class_ids(args.ignore, STREETHAZARDS)
    ckpt_path = resolve_checkpoint(args.checkpoint)
    ctx = init_distributed(args.device)
    try:
        dataset, info, model, ckpt = _setup(args, args.split, ctx)
        contract = eval_sets.streethazards_contract(ckpt, args.input_contract)
        if contract.void_index is not None:
            scorers = scorers_from_spec(args.scorers, void_index=contract.void_index)
        eval_sets.check_void(scorers, contract, int(ckpt["num_classes"]))
        sha = file_sha256(ckpt_path)
        states_path = Path(args.states) if args.states else default_states_path(ckpt_path)
        used = load_fitted(scorers, states_path, sha)
        for name, entry in used.items():
            if entry.get("input") != _input_record(args):
                log.warning("scorer %s was fitted with input %s, evaluated with %s: its statistics may not match",
                            name, entry.get("input"), _input_record(args))
        loader = _loader(args, dataset, ctx)
        log.info("evaluating %d %s images on %s x%d: %s", len(dataset), args.split, ctx.device, ctx.world_size,
                 ", ".join(s.name for s in scorers) or "segmentation only")
        results = run_evaluation(
            model, loader, scorers, ctx.device, num_classes=info.num_classes, anomaly_ids=(info.anomaly_id,),
            ignore_ids=ignore_ids, protocols=protocols, tta=tta, eval_at=args.eval_at, class_names=info.class_names,
            progress=ctx.is_main and not args.no_progress,
        )
        if ctx.is_main:
            record = {
                "command": "evaluate",
                "argv": sys.argv[1:],
                "config": {k: v for k, v in vars(args).items() if k != "func"},
                "checkpoint": {"path": str(ckpt_path.resolve()), "sha256": sha, "model_name": ckpt.get("model_name"),
                               "epoch": ckpt.get("epoch"), "step": ckpt.get("step")},
                "scorer_states": {"path": str(states_path), "used": used} if used else None,
                "dataset": _dataset_record(args, dataset, args.split, info),
                "input": _input_record(args),
                "input_contract": contract.to_dict(),
                **results,
                "world_size": ctx.world_size,
                "device": str(ctx.device),
                "versions": versions(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "wall_seconds": round(time.time() - started, 3),
            }
            publish(record, paths["json"], force=args.force)
        barrier(ctx)
    finally:
        cleanup(ctx)
    return 0


def publish(record: dict[str, Any], json_path: Path, force: bool) -> None:
    """Write the results JSON / CSV / Markdown, print the summary table and where they went."""
    from anomalyseg.report.results import write_results

    written = write_results(record, json_path, force=force)
    _summary(record)
    print(f"wrote {written['json']}, {written['csv'].name}, {written['md'].name}")


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f}"


def _summary(record: dict[str, Any]) -> None:
    """A few lines on stdout; the files hold everything."""
    seg = record["segmentation"]
    print(f"mIoU {_pct(seg.get('miou'))} over" if seg is not None else "anomaly metrics over",
          f"{record['num_images']} images")
    for name, entry in record["scorers"].items():
        parts = [f"{p}: " + " ".join(f"{k}={_pct(m.get(k))}" for k in ("auroc", "aupr", "fpr95"))
                 for p, m in entry["metrics"].items()]
        print(f"{name:>14}  " + " | ".join(parts))


def handle_fit(args: argparse.Namespace) -> int:
    from anomalyseg.engine.checkpoint import resolve_checkpoint
    from anomalyseg.engine.distributed import barrier, cleanup, init_distributed
    from anomalyseg.engine.evaluate import fit_scorers
    from anomalyseg.engine.guards import assert_no_anomaly, check_split_allowed
    from anomalyseg.engine.tta import TTA
    from anomalyseg.models.checkpoints import file_sha256
    from anomalyseg.scoring import available_scorers, get_scorer, scorers_from_spec

    check_split_allowed(args.split, "fitting scorers")
    tta = TTA.parse(args.tta)
    if args.scorers:
        requested = scorers_from_spec(args.scorers)
        scorers = [s for s in requested if s.requires_fit]
        if not scorers:
            raise UserError(f"none of {args.scorers!r} needs fitting (post-hoc scorers work as they are)")
        if len(scorers) < len(requested):
            log.info("skipping post-hoc scorers (nothing to fit): %s",
                     ", ".join(s.name for s in requested if not s.requires_fit))
    else:  # every fit-able registered scorer, one per distinct fit (sml's statistics serve sml_full)
        scorers, seen = [], set()
        for name in available_scorers():
            s = get_scorer(name)
            key = (s.kind, repr(sorted(s.fit_config().items())))
            if s.requires_fit and key not in seen:
                seen.add(key)
                scorers.append(s)
    ckpt_path = resolve_checkpoint(args.checkpoint)
    states_path = Path(args.states) if args.states else default_states_path(ckpt_path)
    sha = file_sha256(ckpt_path)
    kept = entries_to_keep(states_path, [s.name for s in scorers], sha, args.force)
    ctx = init_distributed(args.device)
    try:
        dataset, info, model, _ = _setup(args, args.split, ctx)
        assert_no_anomaly(dataset, args.split, anomaly_id=info.anomaly_id, purpose="fitting scorers",
                          workers=max(0, args.workers))
        loader = _loader(args, dataset, ctx)
        log.info("fitting %s on %d %s images", ", ".join(s.name for s in scorers), len(dataset), args.split)
        fit_scorers(model, loader, scorers, ctx.device, tta=tta, progress=ctx.is_main and not args.no_progress)
        if ctx.is_main:
            provenance = {"split": args.split, "data_root": str(Path(args.data_root).resolve()),
                          "num_images": len(dataset), "input": _input_record(args), "anomalyseg": __version__,
                          "fitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
            entries = {**kept, **{s.name: {"state": s.state_dict(), **provenance} for s in scorers}}
            write_states(states_path, ckpt_path, sha, entries)
            print(f"wrote {states_path} ({', '.join(s.name for s in scorers)})")
        barrier(ctx)
    finally:
        cleanup(ctx)
    return 0
