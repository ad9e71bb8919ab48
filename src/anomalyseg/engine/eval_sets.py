"""``anomalyseg evaluate --dataset road_anomaly,...`` (real-photo anomaly sets) and ``anomalyseg import-checkpoint``.

The real-photo sets (:mod:`anomalyseg.data.anomaly_folder`) hold 1 / 0 / 255 anomaly masks and no class
labels: every requested set is evaluated in one command, one results file per set (``NAME_<set>.json``, what
``anomalyseg report`` renders side by side), pooled protocol with the "interp" FPR95 rule (SMIYC validation),
anomaly id 1, no segmentation metrics. The model's input contract (size, normalisation, class names, void
channel; stored in the checkpoint, keys overridable by ``--input-contract``) sets the preprocessing and the
``void`` scorer's channel; ``--eval-at model`` resizes image and mask to the contract size (course protocol),
``--eval-at label`` upsamples the logits to the mask's native size.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

STREETHAZARDS = "streethazards"
ALL_SETS = "anomaly-sets"
FPR_RULE = "interp"

IMPORT_EPILOG = """\
examples:
  anomalyseg import-checkpoint ../shared/models/enet_cityscapes_void20.pth --arch enet \\
      --contract "size=512x1024,norm=none,void=19,classes=cityscapes" --out models/enet.pt
  anomalyseg evaluate --checkpoint models/enet.pt --dataset anomaly-sets --data-root data/Validation_Dataset \\
      --scorers void,msp,max_logit,energy,entropy --eval-at model --out results/enet.json

Loads the weights strictly into the architecture written here (DataParallel 'module.' prefixes removed; a
one-line error lists missing / unexpected keys) and stores the input contract with them, so 'evaluate'
preprocesses correctly without retyping it. An existing --out is kept unless --force.
"""


# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--dataset`` and ``--input-contract`` of ``evaluate`` (torch-free imports: ``--help`` stays fast)."""
    from anomalyseg.data.anomaly_presets import PRESETS
    from anomalyseg.models.contract_syntax import CONTRACT_HELP

    p.add_argument("--dataset", default=STREETHAZARDS, metavar="NAMES",
                   help=f"{STREETHAZARDS} (default), or real-photo sets, comma-separated: {', '.join(PRESETS)}; "
                        f"'{ALL_SETS}' = every one found under --data-root (the folder holding the set folders)")
    p.add_argument("--input-contract", metavar="SPEC",
                   help=f"override keys of the checkpoint's input contract: {CONTRACT_HELP}")


def parse_datasets(text: str) -> list[str] | None:
    """``None`` for StreetHazards, else the requested preset keys (``[]`` = every set present)."""
    from anomalyseg.data.anomaly_presets import PRESETS

    items = [t.strip().lower().replace("-", "_") for t in text.split(",") if t.strip()]
    if not items or items == [STREETHAZARDS]:
        return None
    if items == [ALL_SETS.replace("-", "_")]:
        return []
    bad = [t for t in items if t not in PRESETS]
    if bad:
        raise UserError(f"--dataset: unknown set(s) {', '.join(bad)}; choose {STREETHAZARDS}, {ALL_SETS} or "
                        f"{', '.join(PRESETS)} (StreetHazards cannot be mixed with real-photo sets)")
    return list(dict.fromkeys(items))


def set_results_path(out: str | Path, key: str) -> Path:
    """``results/NAME.json`` -> ``results/NAME_<key>.json``."""
    out = Path(out)
    stem = out.name[: -len(".json")] if out.name.lower().endswith(".json") else out.name
    return out.with_name(f"{stem}_{key}.json")


def set_eval_at(eval_at: str | None, default: str = "label") -> str:
    """``label`` or ``model`` (``input`` is another name for ``model``; None: ``default``)."""
    from anomalyseg.data.anomaly_folder import check_eval_at

    eval_at = default if eval_at is None else eval_at
    return check_eval_at("model" if eval_at == "input" else eval_at)


def open_sets(data_root: str | Path, presets: list[str]) -> dict[str, Any]:
    """``{preset: AnomalyImageFolder}`` for ``parse_datasets``' keys (``[]`` = every set found under
    ``data_root``); with one set, ``data_root`` may also name that set's own folder."""
    from anomalyseg.data.anomaly_folder import PRESETS, AnomalyImageFolder, open_anomaly_sets

    root = Path(data_root)
    if len(presets) == 1 and root.name == PRESETS[presets[0]].folder:  # --data-root names the set itself
        return {presets[0]: AnomalyImageFolder(root, presets[0])}
    return open_anomaly_sets(root, presets or None)


def set_scorers(spec: str, contract: Any, num_outputs: int) -> list[Any]:
    """The scorers of ``spec`` for a model with this contract (void channel from it), checked before any
    forward pass; scorers that need fitting are refused on the real-photo sets."""
    from anomalyseg.scoring import scorers_from_spec

    scorers = scorers_from_spec(spec, void_index=contract.void_index)
    check_void(scorers, contract, num_outputs)
    if any(s.requires_fit for s in scorers):
        raise UserError("scorers that need fitting (" + ", ".join(s.name for s in scorers if s.requires_fit)
                        + ") are not supported on the real-photo sets yet; use post-hoc scorers or void")
    return scorers


# ---------------------------------------------------------------------------------------------------
# Contract, model and scorers
# ---------------------------------------------------------------------------------------------------
def check_void(scorers: list[Any], contract: Any, num_outputs: int) -> None:
    """One line, before any forward pass, when a void scorer has no channel (or a channel out of range)."""
    for s in scorers:
        if not getattr(s, "needs_void_channel", False):
            continue
        index = s.params.get("void_index")
        if index is None:
            raise UserError(f"scorer '{s.name}' needs a void channel but the model's input contract has none: give "
                            "--input-contract void=K or void:void_index=K")
        if not -num_outputs <= int(index) < num_outputs:
            raise UserError(f"scorer '{s.name}': void channel {index} does not exist, the model has {num_outputs} "
                            "outputs")


def streethazards_contract(ckpt: dict[str, Any], text: str | None) -> Any:
    """The contract recorded with a StreetHazards evaluation; only ``void`` / ``classes`` may be overridden
    there (input size and normalisation come from ``--size`` and the checkpoint: refused, not ignored)."""
    from anomalyseg.models.checkpoints import contract_from_checkpoint, resolve_contract

    stored, contract = contract_from_checkpoint(ckpt), resolve_contract(ckpt, text)
    if (contract.size, contract.mean, contract.std) != (stored.size, stored.mean, stored.std):
        raise UserError("--input-contract on StreetHazards takes void= and classes= only (input size: --size; "
                        "normalisation: the checkpoint's)")
    if contract.num_outputs is not None and contract.num_outputs != int(ckpt["num_classes"]):
        raise UserError(f"the input contract names {contract.num_outputs} outputs, the checkpoint predicts "
                        f"{ckpt['num_classes']}")
    return contract


def load_contract_model(ckpt_path: Path, contract_text: str | None, device: Any) -> tuple[Any, dict[str, Any], Any]:
    """``(model on device in eval mode, checkpoint, contract)``: the model expects the contract's
    normalisation (built with its ``input_mean`` / ``input_std`` when they differ from the checkpoint's)."""
    from anomalyseg.config import ModelConfig, config_from_dict
    from anomalyseg.engine.checkpoint import load_checkpoint, load_model_state
    from anomalyseg.engine.factory import build_model_from_config
    from anomalyseg.models.checkpoints import contract_from_checkpoint, resolve_contract

    ckpt = load_checkpoint(ckpt_path)
    contract = resolve_contract(ckpt, contract_text)
    num_outputs = int(ckpt["num_classes"])
    if contract.num_outputs is not None and contract.num_outputs != num_outputs:
        raise UserError(f"the input contract names {contract.num_outputs} classes but {ckpt_path} predicts "
                        f"{num_outputs}")
    cfg = config_from_dict(ModelConfig, (ckpt.get("config") or {}).get("model", {"name": ckpt["model_name"]}))
    cfg.pretrained, cfg.aux = False, False
    stored = contract_from_checkpoint(ckpt)
    if (list(stored.mean), list(stored.std)) != (list(contract.mean), list(contract.std)):
        cfg.options = {**(cfg.options or {}), **contract.model_options()}
    try:
        model = build_model_from_config(cfg, num_outputs)
    except TypeError as exc:
        raise UserError(f"{cfg.name} cannot take the normalisation of the input contract ({exc})") from None
    load_model_state(model, ckpt["model"], source=str(ckpt_path))
    return model.to(device).eval(), ckpt, contract


# ---------------------------------------------------------------------------------------------------
# evaluate on the real-photo sets
# ---------------------------------------------------------------------------------------------------
def handle_anomaly_sets(args: argparse.Namespace, presets: list[str]) -> int:
    """Evaluate every requested set with one model load; one results file per set."""
    from torch.utils.data import Subset

    from anomalyseg.data.anomaly_folder import eval_at_transform
    from anomalyseg.engine.distributed import barrier, cleanup, init_distributed
    from anomalyseg.engine.eval_cli import _loader, file_sha256, publish, resolve_checkpoint, versions
    from anomalyseg.engine.evaluate import run_evaluation
    from anomalyseg.engine.tta import TTA
    from anomalyseg.report.results import check_writable

    started = time.time()
    if args.ignore:
        raise UserError("--ignore names StreetHazards classes; the real-photo sets have no class labels")
    if args.size is not None:
        raise UserError("--size does not apply to the real-photo sets: the input size comes from the input "
                        "contract (--input-contract size=HxW)")
    eval_at = set_eval_at(args.eval_at)
    tta = TTA.parse(args.tta)
    protocols = ("per_image", "pooled") if args.protocol == "both" else (args.protocol or "pooled",)
    ckpt_path = resolve_checkpoint(args.checkpoint)
    sets = open_sets(args.data_root, presets)
    paths = {k: check_writable(set_results_path(args.out, k), args.force) for k in sets}
    ctx = init_distributed(args.device)
    try:
        model, ckpt, contract = load_contract_model(ckpt_path, args.input_contract, ctx.device)
        num_outputs = int(ckpt["num_classes"])
        scorers = set_scorers(args.scorers, contract, num_outputs)
        transform = eval_at_transform(eval_at, contract.size)  # fails here when eval-at model has no size
        sha = file_sha256(ckpt_path)
        log.info("input contract: %s; evaluating at the %s resolution", contract.describe(), eval_at)
        for key, dataset in sets.items():
            dataset.transform = transform
            info = dataset.info
            data = dataset if args.limit is None or args.limit >= len(dataset) else Subset(dataset, range(args.limit))
            loader = _loader(args, data, ctx)
            results = run_evaluation(
                model, loader, scorers, ctx.device, num_classes=num_outputs, anomaly_ids=(info.anomaly_id,),
                protocols=protocols, tta=tta, eval_at=eval_at, class_names=ckpt.get("class_names"),
                progress=ctx.is_main and not args.no_progress, fpr_rule=FPR_RULE,
                segmentation=info.has_class_labels, void_label=True, desc=info.folder)
            if ctx.is_main:
                record = {
                    "command": "evaluate", "argv": sys.argv[1:],
                    "config": {k: v for k, v in vars(args).items() if k != "func"},
                    "checkpoint": {"path": str(ckpt_path.resolve()), "sha256": sha,
                                   "model_name": ckpt.get("model_name"), "epoch": ckpt.get("epoch"),
                                   "step": ckpt.get("step"), "imported_from": ckpt.get("imported_from")},
                    "input_contract": contract.to_dict(),
                    "scorer_states": None,
                    "dataset": {"name": info.name, "preset": key, "root": str(Path(args.data_root).resolve()),
                                "folder": str(dataset.folder), "split": "validation", "num_images": len(data),
                                "num_listed": len(dataset), "limit": args.limit,
                                "mask_convention": info.mask_convention},
                    "input": {"size_wh": [contract.size[1], contract.size[0]] if contract.size else None,
                              "native": contract.size is None, "tta": args.tta or None, "eval_at": eval_at},
                    **results,
                    "world_size": ctx.world_size, "device": str(ctx.device), "versions": versions(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                    "wall_seconds": round(time.time() - started, 3),
                }
                print(f"{info.name}:")
                publish(record, paths[key]["json"], force=args.force)
        barrier(ctx)
    finally:
        cleanup(ctx)
    return 0


# ---------------------------------------------------------------------------------------------------
# import-checkpoint
# ---------------------------------------------------------------------------------------------------
def register_import(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-checkpoint`` subcommand."""
    from anomalyseg.models.contract_syntax import CONTRACT_HELP

    p = subparsers.add_parser(
        "import-checkpoint", help="convert a PyTorch-ENet / ERFNet checkpoint, with its input contract",
        description="Import a checkpoint saved by another codebase into an anomalyseg checkpoint.",
        epilog=IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="the foreign checkpoint (.pth)")
    p.add_argument("--arch", required=True, choices=("enet", "erfnet"), help="architecture of the weights")
    p.add_argument("--contract", required=True, metavar="SPEC", help=f"input contract: {CONTRACT_HELP}")
    p.add_argument("--out", required=True, metavar="CKPT", help="anomalyseg checkpoint to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(func=handle_import)


def handle_import(args: argparse.Namespace) -> int:
    from anomalyseg.models.checkpoints import import_checkpoint, parse_contract

    contract = parse_contract(args.contract)
    ckpt = import_checkpoint(args.path, args.arch, contract, out=args.out, force=args.force)
    print(f"wrote {args.out} ({args.arch}, {ckpt['num_classes']} outputs; {contract.describe()})")
    return 0
