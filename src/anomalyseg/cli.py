"""Command-line entry point: ``anomalyseg <command> ...`` (also ``python -m anomalyseg``).

Each stage contributes its subcommands through a ``register(subparsers)`` function in its own
``commands`` module, listed in :data:`COMMANDS`; the handler stored as ``func`` on the parsed
arguments returns the exit code. A :class:`~anomalyseg.errors.UserError` becomes one line on stderr and
exit code 2; ``--debug`` shows the traceback instead.

Start-up stays fast: ``--help``, ``--version`` and a bare ``anomalyseg`` read the one-line helps of
:data:`COMMANDS` and import no stage; ``anomalyseg <command> ...`` imports only the module that registers
``<command>``, and those modules import torch, torchvision and matplotlib (seconds) inside their handlers,
so ``anomalyseg <command> --help`` is fast too.
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
from anomalyseg.runtime import tune_cpu_allocator

#: ``(command, module whose register() adds it, its one-line help)`` in ``--help`` order. The help is a
#: copy of the one the module registers (tests/cli keeps the two equal), so that ``--help`` imports nothing.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("demo", "anomalyseg.demo_cli",
     "run the whole workflow on generated data (data, train, score, evaluate, report)"),
    ("data", "anomalyseg.data.commands", "download, check or synthesise StreetHazards data"),
    ("models", "anomalyseg.models.commands", "list the segmentation models"),
    ("train", "anomalyseg.engine.train_cli", "train a segmentation model from a YAML config"),
    ("evaluate", "anomalyseg.engine.eval_cli", "closed-set mIoU and anomaly metrics of every scorer from one pass"),
    ("fit-scorers", "anomalyseg.engine.eval_cli", "fit scorers (sml, heat, mahalanobis) on in-distribution data"),
    ("import-checkpoint", "anomalyseg.engine.eval_cli",
     "convert a PyTorch-ENet / ERFNet checkpoint, with its input contract"),
    ("visualize", "anomalyseg.viz.commands",
     "qualitative panels: prediction, anomaly score, detection outcome per sample"),
    ("report", "anomalyseg.report.commands",
     "tables (Markdown, CSV, LaTeX), curves and an HTML page from results files"),
    ("sweep", "anomalyseg.report.commands",
     "run a grid of training / scoring settings into one results folder and one table"),
)

#: Modules that define ``register(subparsers)``; the order is the order in ``--help``.
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(module for _, module, _ in COMMANDS))

ROOT_EPILOG = """\
examples:
  anomalyseg demo --quick --out demo_quick       # the whole workflow on generated data, about 2 minutes on CPU
  anomalyseg data check --root data/streethazards
  anomalyseg train configs/streethazards/deeplabv3plus_r101_recommended.yaml data.root=data/streethazards
  anomalyseg fit-scorers --checkpoint runs/deeplabv3plus_r101_recommended --data-root data/streethazards
  anomalyseg evaluate --checkpoint runs/deeplabv3plus_r101_recommended --data-root data/streethazards \\
      --scorers all --out results/r101.json
  anomalyseg report results/ --out reports/main

'anomalyseg COMMAND --help' shows each command's options and more examples.
"""

log = logging.getLogger("anomalyseg")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps example blocks in epilogs as written."""


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. By default every module of :data:`COMMAND_MODULES` registers its subcommands in full;
    with ``only``, just those modules do and every other command is a bare entry (name and one-line help)
    that costs no import."""
    parser = argparse.ArgumentParser(
        prog="anomalyseg",
        description="Road-scene semantic segmentation and pixel-level anomaly segmentation.",
        epilog=ROOT_EPILOG,
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
        if only is not None and name not in only:
            for command, owner, help_text in COMMANDS:
                if owner == name and command not in sub.choices:
                    sub.add_parser(command, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a stage not built yet must not break the others
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The first argument that is not a root option (nor ``--log-level``'s value): the command, if any."""
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if not word.startswith("-"):
            return word
        if len(word) > 2 and "=" not in word and "--log-level".startswith(word):  # argparse allows prefixes
            next(words, None)
    return None


def _parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Only what ``argv`` needs: one stage for one command, none for the root help, ``--version`` or a word
    that is no command (argparse lists the choices); every stage when a module outside the table is listed."""
    command = _command_word(argv)
    module = next((m for c, m, _ in COMMANDS if c == command), None)
    if module in COMMAND_MODULES:
        return build_parser(only=(module,))
    if set(COMMAND_MODULES) <= {m for _, m, _ in COMMANDS}:
        return build_parser(only=())
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser_for(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    tune_cpu_allocator()  # large CPU tensors reuse heap memory instead of fresh mmaps (see anomalyseg.runtime)
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
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
