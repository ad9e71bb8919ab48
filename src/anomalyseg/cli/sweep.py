"""``anomalyseg sweep``: a grid of training / scoring settings into one results folder and one table
(:func:`anomalyseg.workflows.sweep.sweep`)."""

from __future__ import annotations

import argparse

SWEEP_EPILOG = """\
examples:
  anomalyseg sweep configs/sweeps/energy.yaml --grid scorer.energy.temperature=0.5,1,2,4   # after 'demo --out demo'
  anomalyseg sweep MY_BASE.yaml --grid data.hflip=true,false data.color_jitter=true,false   # trains each point
  anomalyseg sweep MY_BASE.yaml --grid scorer.sml_full.boundary_suppression=true,false \\
      scorer.sml_full.dilated_smoothing=true,false

BASE.yaml is a training config (anomalyseg.config.Config) with an extra 'sweep:' section:
  sweep:
    out: sweeps/augment            # results folder (results/<run>.json, runs/<run>/, table.md/.csv)
    checkpoint: null               # a checkpoint: scoring-only sweep (no training)
    evaluate: {split: test, scorers: max_logit,energy, protocol: both, size: null, batch_size: 1}
    fit_split: val                 # where scorers that need fitting are fitted
Grid keys: training keys (data.*, model.*, optim.*, schedule.*, train.*), scorer.NAME.PARAM (a scorer
setting) and eval.KEY (an evaluate setting). Values split on commas outside brackets, or on '|' when one
is present (e.g. eval.tta=none|scales=0.75,1.0,1.25). Finished runs are skipped on re-run, so an
interrupted sweep resumes (an interrupted training continues from its last checkpoint).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand."""
    fmt = argparse.RawDescriptionHelpFormatter
    s = subparsers.add_parser(
        "sweep", help="run a grid of training / scoring settings into one results folder and one table",
        description="Train (or only evaluate) every combination of the grid values; finished runs are skipped.",
        epilog=SWEEP_EPILOG, formatter_class=fmt)
    s.add_argument("base", metavar="BASE.yaml", help="training config with a 'sweep:' section")
    s.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2", help="grid axes")
    s.add_argument("--out", metavar="DIR", help="results folder (default: sweep.out of BASE.yaml)")
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: train.device of the config)")
    s.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done; run nothing")
    s.set_defaults(func=handle_sweep)


def handle_sweep(args: argparse.Namespace) -> int:
    from anomalyseg.workflows.sweep import sweep

    summary = sweep(args.base, args.grid, out=args.out, device=args.device, dry_run=args.dry_run)
    for run in summary["runs"]:
        print(f"{run['status']:>8}  {run['name']}")
    if not args.dry_run:
        print(f"table: {summary['table']}")
    return 0
