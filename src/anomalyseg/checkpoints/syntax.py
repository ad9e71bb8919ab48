"""The ``KEY=VALUE,...`` syntax of an input contract string (parsed by
:func:`anomalyseg.checkpoints.contract.parse_contract`), kept free of torch so that command-line helps can quote
it without importing the checkpoint code."""

from __future__ import annotations

CONTRACT_KEYS: tuple[str, ...] = ("size", "norm", "mean", "std", "classes", "void")
CONTRACT_HELP = ("KEY=VALUE,...: size=HxW (height first, e.g. 512x1024), norm=none|imagenet, mean=R/G/B, "
                 "std=R/G/B, classes=cityscapes|N|name/name/..., void=INDEX|none")
