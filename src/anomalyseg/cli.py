"""Command-line entry point: ``anomalyseg <command> ...`` (also ``python -m anomalyseg``).

Each stage contributes its subcommands through a ``register(subparsers)`` function in its own
``commands`` module, listed in :data:`COMMAND_MODULES`; the handler stored as ``func`` on the parsed
arguments returns the exit code. A :class:`~anomalyseg.errors.UserError` becomes one line on stderr and
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from anomalyseg import __version__
from anomalyseg.errors import UserError

#: Modules that define ``register(subparsers)``; the order is the order in ``--help``.
COMMAND_MODULES: tuple[str, ...] = (
    "anomalyseg.demo_cli",
    "anomalyseg.data.commands",
    "anomalyseg.models.commands",
    "anomalyseg.engine.train_cli",
    "anomalyseg.engine.eval_cli",
    "anomalyseg.viz.commands",
    "anomalyseg.report.commands",
)

log = logging.getLogger("anomalyseg")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps example blocks in epilogs as written."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="anomalyseg",
        description="Road-scene semantic segmentation and pixel-level anomaly segmentation.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"anomalyseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument(
        "--log-level", default=os.environ.get("ANOMALYSEG_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a stage not built yet must not break the others
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"anomalyseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anomalyseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
