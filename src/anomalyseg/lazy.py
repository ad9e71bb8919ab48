"""Lazy re-exports (PEP 562) for packages whose submodules import torch.

``from anomalyseg.data import StreetHazards`` keeps working, while importing a light submodule such as
``anomalyseg.data.commands`` (all that ``anomalyseg data --help`` needs) no longer runs the package's
torch-heavy imports. Own code: the standard library has no helper and ``lazy_loader`` would be a new
dependency for twenty lines.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``'s ``__init__``. ``exports`` maps each public name to
    ``"module"`` (the same name there) or ``"module:attr"``, where a module starting with a dot is relative
    to ``package``; the module is imported on first access (Python caches it: later accesses are cheap)."""

    def getattr_(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module, package), attr or name)

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return getattr_, dir_
