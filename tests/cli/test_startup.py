"""Fast start-up: ``anomalyseg --help`` / ``--version`` and every ``COMMAND --help`` import no torch: the command
modules (:mod:`anomalyseg.cli`) are torch-free, the library functions they call import it in the handlers."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys

import pytest

from anomalyseg import cli


def _commands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str | None]]:
    """Top-level subcommands in order: name -> (subparser, one-line help)."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in action._choices_actions}
    return {name: (child, helps.get(name)) for name, child in action.choices.items()}


def _command_names() -> list[str]:
    return list(_commands(cli.build_parser()))


def test_every_command_module_registers_and_is_thin():
    """Each command module registers at least one command with a one-line help and handlers; no help table
    is kept anywhere else (the root help is the modules' own registrations)."""
    full = _commands(cli.build_parser())
    assert {"demo", "data", "models", "train", "evaluate", "fit-scorers", "predict", "import-checkpoint", "export",
            "visualize", "report", "sweep"} == set(full)
    for name, (parser, help_text) in full.items():
        assert help_text and "\n" not in help_text, name
        assert callable(parser.get_default("func")), name


def test_root_help_and_version_import_no_stage():
    """In a fresh interpreter: the root help lists every command and the examples, and neither it nor
    --version imports torch, numpy, matplotlib or any stage module."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from anomalyseg import cli\n"
        "outs = []\n"
        "for argv in (['--help'], ['--version'], []):\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            code = cli.main(argv)\n"
        "        except SystemExit as exc:\n"
        "            code = exc.code\n"
        "    outs.append([code, buf.getvalue()])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'matplotlib', 'PIL')\n"
        "               or m.startswith(('anomalyseg.models.', 'anomalyseg.engine', 'anomalyseg.workflows.',\n"
        "                                'anomalyseg.viz', 'anomalyseg.report')))\n"
        "print(json.dumps({'outs': outs, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["heavy"] == []
    (help_code, help_text), (version_code, version_text), (bare_code, bare_text) = report["outs"]
    assert help_code == 0 and version_code == 0 and bare_code == 2
    assert version_text.strip() == f"anomalyseg {cli.__version__}"
    assert bare_text == help_text
    listed = [ln.split()[0] for ln in help_text.split("commands:")[1].split("examples:")[0].splitlines()[2:]
              if ln.startswith("    ") and not ln.startswith("     ")]
    assert listed == _command_names()
    examples = help_text.split("examples:")[1]
    for command in ("demo", "data check", "train", "fit-scorers", "evaluate", "report"):
        assert f"  anomalyseg {command} " in examples, command


def _root_examples() -> list[list[str]]:
    text = cli.ROOT_EPILOG.split("examples:")[1].split("\n\n")[0].replace("\\\n", " ")
    return [shlex.split(ln, comments=True)[1:] for ln in text.splitlines() if ln.strip()]


@pytest.mark.parametrize("argv", _root_examples(), ids=lambda a: " ".join(a[:2]))
def test_root_examples_parse(argv):
    """Every example of the root help is a valid command line."""
    args = cli.build_parser().parse_args(argv)
    assert callable(args.func)


def test_typo_lists_the_commands_without_importing_them(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["evalute", "--checkpoint", "a.pt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice: 'evalute'" in err and "'evaluate'" in err


_HELP_PROBE = """\
import contextlib, io, json, sys
from anomalyseg import cli
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    try:
        code = cli.main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm', 'matplotlib'))
print(json.dumps({'code': code, 'help': buf.getvalue(), 'heavy': heavy}))
"""


def _help_argvs() -> list[list[str]]:
    """``COMMAND --help`` for every command of the table, and every nested action of ``data`` / ``models``."""
    argvs = [[c, "--help"] for c in _command_names()]
    for command, (parser, _) in _commands(cli.build_parser()).items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        argvs += [[command, action, "--help"] for n in nested for action in n.choices]
    return argvs


def test_help_argvs_cover_nested_actions():
    argvs = [" ".join(a[:-1]) for a in _help_argvs()]
    assert {"data check", "data synth", "models list"} <= set(argvs)
    assert [a for a in argvs if " " not in a] == _command_names()


@pytest.mark.parametrize("argv", _help_argvs(), ids=lambda a: " ".join(a[:-1]))
def test_command_help_imports_no_torch(argv):
    """In a fresh interpreter, ``anomalyseg COMMAND --help`` prints the command's help with its examples and
    imports neither torch nor matplotlib: the stage modules import them inside their handlers."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", _HELP_PROBE, *argv], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["code"] == 0
    assert report["help"].startswith(f"usage: anomalyseg {' '.join(argv[:-1])}")
    assert "examples:" in report["help"]
    assert report["heavy"] == [], f"{' '.join(argv)} imported {report['heavy'][:5]}"


_LAZY_PACKAGES = ("anomalyseg.data", "anomalyseg.models", "anomalyseg.viz", "anomalyseg.checkpoints")


@pytest.mark.parametrize("package", _LAZY_PACKAGES)
def test_lazy_package_import_loads_none_of_its_reexport_modules(package):
    """``import anomalyseg.data`` alone imports neither torch nor any module its names come from; using a
    name does (checked in-process below)."""
    probe = (
        "import importlib, importlib.util, json, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "targets = {importlib.util.resolve_name(t.partition(':')[0], pkg.__name__) for t in pkg._EXPORTS.values()}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in targets or m.split('.')[0] == 'torch')))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


@pytest.mark.parametrize("package", _LAZY_PACKAGES)
def test_lazy_reexports_are_the_defining_modules_objects(package):
    """Every name of ``__all__`` resolves to the very object of the module it comes from, ``from ... import *``
    and ``dir()`` see them all, and an unknown name is an ordinary AttributeError."""
    pkg = importlib.import_module(package)
    assert sorted(pkg.__all__) == sorted(pkg._EXPORTS)
    for name, target in pkg._EXPORTS.items():
        module, _, attr = target.partition(":")
        assert getattr(pkg, name) is getattr(importlib.import_module(module, package), attr or name), name
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)  # the star import is what is tested
    assert set(pkg.__all__) <= set(namespace)
    assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError, match="no_such_name"):
        pkg.no_such_name  # noqa: B018
