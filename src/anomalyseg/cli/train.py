"""``anomalyseg train CONFIG.yaml [key.sub=value ...] [--resume RUN_DIR | --init-from CKPT] [--device DEV]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  anomalyseg train configs/demo/synthetic_cpu.yaml
  anomalyseg train configs/streethazards/deeplabv3plus_r101_recommended.yaml data.root=/data/streethazards
  anomalyseg train configs/demo/synthetic_cpu.yaml train.epochs=2 optim.lr=3e-4 data.crop_size=[144,256]
  anomalyseg train --resume runs/demo_synthetic            # continue a run exactly where it stopped
  anomalyseg train configs/demo/demo_oe.yaml --init-from runs/demo_synthetic  # fine-tune its weights (new run)
  torchrun --nproc_per_node=4 -m anomalyseg train configs/streethazards/deeplabv3_r50_multiscale.yaml

Overrides use dotted keys of the config schema (anomalyseg.config.Config); values are YAML
(e.g. true, 0.01, [512,512], null). A run writes <out_dir>/<run_name>/ with config.yaml, train.log,
metrics.jsonl, checkpoints/{best,last}.pt and TensorBoard events in tb/; an existing folder is never
overwritten (a _1, _2, ... suffix is added).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train", help="train a segmentation model from a YAML config",
        description="Train a closed-set segmentation model (single process, or DDP under torchrun).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("items", nargs="*", metavar="CONFIG.yaml | key.sub=value",
                   help="the config file (optional with --resume), then overrides")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from the weights of CKPT (a checkpoint file or run folder, same model and classes): "
                        "fine-tuning with a fresh optimizer, schedule and epoch count (sets model.init_from)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: train.device of the config)")
    p.set_defaults(func=handle)


def split_items(items: list[str]) -> tuple[str | None, list[str]]:
    """The config path (first item without '=') and the overrides."""
    config, overrides = None, []
    for i, item in enumerate(items):
        if "=" in item:
            overrides.append(item)
        elif i == 0:
            config = item
        else:
            raise UserError(f"unexpected argument {item!r}: overrides look like key.sub=value")
    return config, overrides


def handle(args: argparse.Namespace) -> int:
    from anomalyseg.config import Config, load_config
    from anomalyseg.workflows.train import train

    config_path, overrides = split_items(args.items)
    if args.resume and args.init_from:
        raise UserError("--init-from starts a new run from a checkpoint's weights, --resume continues a run with "
                        "its own: give one of them")
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"--resume {run_dir}: no config.yaml there (is it a run folder?)")
        cfg = load_config(config_path or run_dir / "config.yaml", overrides, Config)
    else:
        if config_path is None:
            raise UserError("give a config file (e.g. configs/demo/synthetic_cpu.yaml) or --resume RUN_DIR")
        cfg = load_config(config_path, overrides, Config)
    if args.init_from:
        cfg.model.init_from = args.init_from
    run_dir = train(cfg, device=args.device, resume=args.resume)
    log.info("run finished: %s", run_dir)
    return 0
