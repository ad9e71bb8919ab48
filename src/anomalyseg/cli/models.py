"""``anomalyseg models list``: the model names (built-in, registered, entry points) with sizes and whether their
weights are here offline."""

from __future__ import annotations

import argparse
import json

_EXAMPLES = """examples:
  anomalyseg models list
  anomalyseg models list --small
  anomalyseg models list --json > models.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command and its ``list`` subcommand."""
    parser = subparsers.add_parser(
        "models", help="list the segmentation models", epilog=_EXAMPLES,
        description="Segmentation models that `anomalyseg train` and friends accept as model.name.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    lister = sub.add_parser(
        "list", help="names, parameter counts, offline pretrained weights", epilog=_EXAMPLES,
        description="List the models (built-in, registered with register_model, and installed packages' "
                    "anomalyseg.models entry points) with parameter counts (for --num-classes classes) and whether "
                    "pretrained=true would find its weights on this machine without a download.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lister.add_argument("--num-classes", type=int, default=13, help="classes of the head, 1 .. 1000 (default: 13)")
    lister.add_argument("--small", action="store_true", help="only the small, CPU-friendly models")
    lister.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lister.set_defaults(func=run_list)
    parser.set_defaults(func=lambda args: _no_subcommand(parser))


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_list(args: argparse.Namespace) -> int:
    """Print the model table (or JSON)."""
    from anomalyseg.models.registry import model_rows

    rows = model_rows(args.num_classes, args.small)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "params", "small", "offline", "source", "pretrained weights")
    table = [
        (r["name"], "n/a" if r["params"] is None else f"{r['params'] / 1e6:.1f}M",
         "yes" if r["small"] else "no", "yes" if r["offline"] else "no", r["source"], r["pretrained"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in (header, *table)) for i in range(len(header) - 1)]
    for row in (header, *table):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    print(f"\nparams for {args.num_classes} classes; offline = pretrained: true needs no download here; "
          "small = fast enough for CPU training and the demo; source = built-in, register_model (your code) "
          "or entry point (an installed package's anomalyseg.models entry point)")
    return 0
