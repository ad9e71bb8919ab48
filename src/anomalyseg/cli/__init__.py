"""Command-line entry point: ``anomalyseg <command> ...`` (also ``python -m anomalyseg``).

Each module of :data:`COMMAND_MODULES` (one per command group, in this package) adds its subcommands through
``register(subparsers)``; the handler stored as ``func`` on the parsed arguments returns the exit code.
A :class:`~anomalyseg.errors.UserError` becomes one line on stderr and exit code 2; ``--debug`` shows the
traceback instead. Handlers are thin: parse, call ONE library function, print.

Start-up stays fast: the command modules import neither torch nor matplotlib (the library functions they
call do, inside the handler), so ``--help`` of the root and of every command answers at once
(tests/cli/test_startup.py guards it).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from anomalyseg import __version__
from anomalyseg.errors import UserError
from anomalyseg.runtime import tune_cpu_allocator

#: The command modules, in ``--help`` order. Each is torch-free at import and defines ``register(subparsers)``
#: (adding its commands with their one-line helps) and thin handlers that parse, call ONE library function
#: (:mod:`anomalyseg.workflows` and friends, which import torch) and print.
COMMAND_MODULES: tuple[str, ...] = tuple(f"anomalyseg.cli.{m}" for m in (
    "demo", "data", "models", "train", "evaluate", "predict", "checkpoints", "export", "visualize", "report",
    "sweep"))

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

#: OSErrors that say something about the user's files or disk, not about the program: reported in one line
#: naming the path (outputs are also checked before any work, see :func:`anomalyseg.files.check_output`).
_ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                                 errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.EFBIG})


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps example blocks in epilogs as written."""


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command (cheap: the command modules import no torch)."""
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
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
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
    except OSError as exc:  # the file system refused (read-only, full, a file in the way): one line, the path
        if args.debug or exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f": {exc.filename}" if exc.filename is not None else ""
        print(f"anomalyseg: error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
