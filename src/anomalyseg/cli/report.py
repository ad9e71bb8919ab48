"""``anomalyseg report``: tables, curves and an HTML page from results files
(:func:`anomalyseg.report.build.write_report`)."""

from __future__ import annotations

import argparse
import logging

from anomalyseg.argtypes import int_at_least

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

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
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
    p.add_argument("--max-panels", type=int_at_least(0, 1000), default=6,
                   help="single panels per panels folder (default: 6)")
    p.add_argument("--force", action="store_true", help="overwrite existing report files")
    p.set_defaults(func=handle_report)


def handle_report(args: argparse.Namespace) -> int:
    from anomalyseg.report.build import write_report

    written = write_report(args.results, args.out, title=args.title, sensitivity_scorer=args.sensitivity_scorer,
                           panels=args.panels, max_panels=args.max_panels, force=args.force)
    figures = sum(k.startswith(("curves", "threshold")) for k in written)
    print(f"wrote {written['html']} (+ summary.md, tables.tex, CSV tables, {figures} figure(s))")
    return 0
