"""Input contracts: how a set of weights must be fed and read.

An :class:`InputContract` says how a set of weights must be fed and read: the input size it was trained at
(``size``, H x W), the normalisation it expects on RGB in [0, 1] (``mean``/``std``; ``norm=none`` is mean 0,
std 1), the name of every output channel and which channel, if any, is a trained "void" class. It travels
inside the checkpoint (``ckpt["input_contract"]``), or is given once as a string such as
``"size=512x1024,norm=none,void=19,classes=cityscapes"``.

Normalisation is applied inside the model (``input_mean``/``input_std`` build options, stored in the
checkpoint's model config): every model keeps taking ImageNet-normalised images, so one data pipeline
serves all. The size and the void channel are for the evaluation: ``--eval-at model`` resizes the image and
the mask to ``size``; the ``void`` scorer reads ``void_index``; logit scorers take ``known_classes``.

>>> contract = parse_contract("size=512x1024,norm=none,void=19,classes=cityscapes")
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from anomalyseg.checkpoints.syntax import CONTRACT_HELP, CONTRACT_KEYS
from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

CONTRACT_FORMAT = "anomalyseg.input_contract/1"
NO_NORM: tuple[float, float, float] = (0.0, 0.0, 0.0)
UNIT_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)
_NORMS = {"none": (NO_NORM, UNIT_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}



def class_name_presets() -> dict[str, tuple[str, ...]]:
    """Named class lists accepted by ``classes=``: the known classes (void not included) of every registered
    dataset that has class labels (``cityscapes``, ``streethazards``, ...)."""
    from anomalyseg.data.registry import available_datasets, dataset_spec

    specs = (dataset_spec(name) for name in available_datasets())
    return {s.name: s.class_names for s in specs if s.has_class_labels}


@dataclass(frozen=True)
class InputContract:
    """How a set of weights is fed and read.

    Attributes:
        size: ``(H, W)`` the weights were trained at (``--eval-at model`` resizes to it); None = any size.
        mean, std: normalisation the weights expect on RGB scaled to [0, 1]; ``(0,0,0)``/``(1,1,1)`` = none.
        class_names: one name per output channel, the void channel included; empty = unknown.
        void_index: output channel of a trained void / background class (not a known class), or None.
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = ()
    void_index: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise UserError(f"input contract: size must be two positive numbers (H, W), got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserError(f"input contract: mean/std need 3 values each, std > 0; got {self.mean} / {self.std}")
        if self.void_index is not None:
            n = len(self.class_names)
            if self.void_index < 0 or (n and self.void_index >= n):
                raise UserError(f"input contract: void channel {self.void_index} is not one of the "
                                f"{n or 'model'}'s output channels" + (f" (0..{n - 1})" if n else ""))

    # ---- derived --------------------------------------------------------------------------------
    @property
    def normalisation(self) -> str:
        """``"none"``, ``"imagenet"`` or ``"custom"``."""
        for name, (mean, std) in _NORMS.items():
            if _close(self.mean, mean) and _close(self.std, std):
                return name
        return "custom"

    @property
    def num_outputs(self) -> int | None:
        """Number of output channels, when the class names are known."""
        return len(self.class_names) or None

    def known_channels(self, num_outputs: int | None = None) -> list[int]:
        """Output channels of known classes (all but the void channel)."""
        n = num_outputs or self.num_outputs
        if n is None:
            raise UserError("input contract: the number of output channels is unknown (give classes=...)")
        return [c for c in range(n) if c != self.void_index]

    def known_classes_option(self, num_outputs: int | None = None) -> int | list[int] | None:
        """The ``known_classes`` scorer setting that leaves the void channel out (None: no void channel)."""
        if self.void_index is None:
            return None
        channels = self.known_channels(num_outputs)
        return len(channels) if channels == list(range(len(channels))) else channels

    @property
    def known_class_names(self) -> tuple[str, ...]:
        """Class names without the void channel."""
        return tuple(n for i, n in enumerate(self.class_names) if i != self.void_index)

    def model_options(self) -> dict[str, list[float]]:
        """Build options that make a model written here expect this normalisation (``enet``, ``erfnet``)."""
        return {"input_mean": list(self.mean), "input_std": list(self.std)}

    def describe(self) -> str:
        """One line for logs and reports."""
        size = "any size" if self.size is None else f"{self.size[0]}x{self.size[1]} (HxW)"
        norm = self.normalisation if self.normalisation != "custom" else f"mean {list(self.mean)} std {list(self.std)}"
        void = "no void channel" if self.void_index is None else f"void channel {self.void_index}"
        return f"input {size}, normalisation {norm}, {len(self.class_names) or '?'} outputs, {void}"

    # ---- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON- and ``weights_only``-safe)."""
        return {
            "format": CONTRACT_FORMAT,
            "size": list(self.size) if self.size is not None else None,
            "normalisation": self.normalisation,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "void_index": self.void_index,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputContract:
        """Inverse of :meth:`to_dict`; unknown keys are a one-line error."""
        if not isinstance(data, Mapping):
            raise UserError(f"input contract must be a mapping, got {type(data).__name__}")
        known = {"format", "size", "normalisation", "mean", "std", "class_names", "void_index"}
        extra = sorted(set(data) - known)
        if extra:
            raise UserError(f"input contract has unknown key(s) {extra}; known: {sorted(known)}")
        if data.get("format", CONTRACT_FORMAT) != CONTRACT_FORMAT:
            raise UserError(f"input contract format {data.get('format')!r}; this version reads {CONTRACT_FORMAT!r}")
        size = data.get("size")
        return cls(
            size=None if size is None else (int(size[0]), int(size[1])),
            mean=tuple(float(v) for v in data.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
            class_names=tuple(str(n) for n in data.get("class_names", ())),
            void_index=None if data.get("void_index") is None else int(data["void_index"]),
        )


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------
# Command-line strings (syntax and help text: anomalyseg.models.contract_syntax)
# ---------------------------------------------------------------------------------------------------
def parse_contract(text: str, base: InputContract | None = None) -> InputContract:
    """Parse ``"size=512x1024,norm=none,void=19,classes=cityscapes"``; keys not given keep ``base``'s values.

    ``classes`` names the KNOWN classes (a preset, a count N for ``class_0..``, or names joined by ``/``);
    with ``void=K`` a ``"void"`` name is inserted at channel K, so ``classes=cityscapes,void=19`` describes
    20 outputs. ``size`` is height x width (PyTorch order), as the weights' README states it.
    """
    contract = base or InputContract()
    pairs: dict[str, str] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in CONTRACT_KEYS:
            raise UserError(f"input contract item {item!r}: expected {CONTRACT_HELP}")
        if key in pairs:
            raise UserError(f"input contract: {key} given twice")
        pairs[key] = value.strip()
    fields: dict[str, Any] = {}
    if "size" in pairs:
        m = re.fullmatch(r"(\d+)\s*[xX]\s*(\d+)", pairs["size"])
        if not m or min(int(m.group(1)), int(m.group(2))) < 1:
            raise UserError(f"input contract: size must be HxW such as 512x1024, got {pairs['size']!r}")
        fields["size"] = (int(m.group(1)), int(m.group(2)))
    if "norm" in pairs:
        norm = pairs["norm"].lower()
        if norm not in _NORMS:
            raise UserError(f"input contract: norm must be one of {sorted(_NORMS)} (or give mean=/std=), got {norm!r}")
        fields["mean"], fields["std"] = _NORMS[norm]
    for key in ("mean", "std"):
        if key in pairs:
            fields[key] = _triple(key, pairs[key])
    void = contract.void_index
    if "void" in pairs:
        v = pairs["void"].lower()
        if v in ("none", ""):
            void = None
        elif v.isdigit():
            void = int(v)
        else:
            raise UserError(f"input contract: void must be a channel index or none, got {pairs['void']!r}")
        fields["void_index"] = void
    known: tuple[str, ...] | None = None
    if "classes" in pairs:
        known = _class_names(pairs["classes"])
    elif "void" in pairs and contract.class_names:  # move the void name of the base's list
        known = contract.known_class_names
    if known is not None:
        if void is not None:
            if void > len(known):
                raise UserError(f"input contract: void channel {void} is beyond the {len(known)} known classes")
            known = (*known[:void], "void", *known[void:])
        fields["class_names"] = known
    return replace(contract, **fields)


def _triple(key: str, text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split("/"))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UserError(f"input contract: {key} must be three numbers R/G/B, got {text!r}")
    return values  # type: ignore[return-value]


def _class_names(text: str) -> tuple[str, ...]:
    presets = class_name_presets()
    if text.lower() in presets:
        return presets[text.lower()]
    if text.isdigit() and int(text) > 0:
        return tuple(f"class_{i}" for i in range(int(text)))
    names = tuple(n.strip() for n in text.split("/") if n.strip())
    if len(names) < 2:
        raise UserError(f"input contract: classes must be a preset ({', '.join(presets)}), a count, or names "
                        f"joined by '/', got {text!r}")
    return names


# ---------------------------------------------------------------------------------------------------
# Contracts of checkpoints
# ---------------------------------------------------------------------------------------------------
def contract_from_checkpoint(ckpt: Mapping[str, Any]) -> InputContract:
    """The checkpoint's stored contract, or the project default (ImageNet normalisation, any size, no void)
    with the checkpoint's class names."""
    stored = ckpt.get("input_contract")
    if stored is not None:
        return InputContract.from_dict(stored)
    options = ((ckpt.get("config") or {}).get("model") or {}).get("options") or {}
    return InputContract(
        mean=tuple(options.get("input_mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(options.get("input_std", IMAGENET_STD)),  # type: ignore[arg-type]
        class_names=tuple(ckpt.get("class_names") or ()),
    )


def resolve_contract(ckpt: Mapping[str, Any] | None, text: str | None = None) -> InputContract:
    """The contract to evaluate with: the checkpoint's, with the keys of a command-line string on top."""
    base = contract_from_checkpoint(ckpt) if ckpt is not None else InputContract()
    return parse_contract(text, base) if text else base
