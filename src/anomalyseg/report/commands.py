"""``anomalyseg report`` (tables, curves, HTML page from results files) and ``anomalyseg sweep`` (a grid of
training or scoring settings into one results folder and one table)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

REPORT_EPILOG = """\
examples:
  anomalyseg report results/*.json --out reports/main
  anomalyseg report results/ --out reports/main --sensitivity-scorer sml_full --force
  anomalyseg report results/r50.json results/r101.json --panels figures/r50_worst --out reports/r50_vs_r101

Writes report.html (self-contained: figures embedded), summary.md, segmentation.csv, anomaly.csv,
per_class.csv, tables.tex (booktabs) and figures/*.png. Rows: one per model (segmentation) and per
model x scorer (anomaly); columns: FPR95 / AUROC / AUPR per protocol. Results measured under different
protocols (rule, ignored ids, resolution, split) get separate, numbered column groups explained below the
table. Panels (panels.json of `anomalyseg visualize`) beside the results files or in --panels folders are
included. Existing report files are kept unless --force.
"""

SWEEP_EPILOG = """\
examples:
  anomalyseg sweep sweeps/augment.yaml --grid data.hflip=true,false data.color_jitter=true,false
  anomalyseg sweep sweeps/energy.yaml --grid scorer.energy.temperature=0.5,1,2,4
  anomalyseg sweep sweeps/sml.yaml --grid scorer.sml_full.boundary_suppression=true,false \\
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
    """Add the ``report`` and ``sweep`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "report", help="tables (Markdown, CSV, LaTeX), curves and an HTML page from results files",
        description="Compare results files of `anomalyseg evaluate`: tables, PR / ROC curves, threshold "
                    "sensitivity, panels; one self-contained HTML page.", epilog=REPORT_EPILOG, formatter_class=fmt)
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results JSON files, folders or glob patterns")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--title", default="anomalyseg report", help="page title")
    p.add_argument("--sensitivity-scorer", metavar="NAME", help="scorer of the threshold-sensitivity plots "
                   "(default: each file's best pooled AUPR)")
    p.add_argument("--panels", nargs="*", default=[], metavar="DIR", help="more folders written by visualize")
    p.add_argument("--max-panels", type=int, default=6, help="single panels per panels folder (default: 6)")
    p.add_argument("--force", action="store_true", help="overwrite existing report files")
    p.set_defaults(func=handle_report)

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


def handle_report(args: argparse.Namespace) -> int:
    from anomalyseg.report.build import write_report

    written = write_report(args.results, args.out, title=args.title, sensitivity_scorer=args.sensitivity_scorer,
                           panels=args.panels, max_panels=args.max_panels, force=args.force)
    figures = sum(k.startswith(("curves", "threshold")) for k in written)
    print(f"wrote {written['html']} (+ summary.md, tables.tex, CSV tables, {figures} figure(s))")
    return 0


def handle_sweep(args: argparse.Namespace) -> int:
    from anomalyseg.engine.sweep import load_sweep, run_sweep

    spec = load_sweep(args.base, args.grid, out=args.out, device=args.device)
    summary = run_sweep(spec, dry_run=args.dry_run)
    for run in summary["runs"]:
        print(f"{run['status']:>8}  {run['name']}")
    if not args.dry_run:
        print(f"table: {summary['table']}")
    return 0
