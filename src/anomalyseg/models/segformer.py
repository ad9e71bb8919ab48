"""SegFormer B0..B5 (Mix Transformer encoder + all-MLP decoder) from Hugging Face transformers.

transformers is an optional dependency (``anomalyseg[segformer]``). Without ``pretrained`` the model is
built from the published B0..B5 hyper-parameters with no download; ``pretrained`` loads the ImageNet
encoder ``nvidia/mit-bX`` with ``from_pretrained`` (the decode head starts fresh). Module names are the
transformers ones (``segformer``, ``decode_head``), so its state dicts load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from anomalyseg.errors import UserError
from anomalyseg.models.base import SegmentationModel, check_options
from anomalyseg.models.pretrained import hub_weights_error

#: Published SegFormer sizes: (hidden sizes, depths, decoder hidden size).
SEGFORMER_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


def segformer_repo(size: str) -> str:
    """Hugging Face repo of the ImageNet-pretrained Mix Transformer encoder for ``size`` ("b0".."b5")."""
    return f"nvidia/mit-{size}"


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise UserError(
            "SegFormer models need the optional dependency transformers: pip install 'anomalyseg[segformer]' "
            "(or pip install transformers)"
        ) from exc
    return transformers


class HFSegformer(SegmentationModel):
    """SegFormer; logits at stride 4, upsampled to the input size. Any input size works.

    Features: ``stage1``..``stage4`` (strides 4, 8, 16, 32; default ``stage3``) and ``decoder`` (the fused
    MLP map before the classifier, stride 4).
    """

    def __init__(
        self, name: str, size: str, num_classes: int, pretrained: bool, aux: bool,
        features: tuple[str, ...] | None,
    ) -> None:
        transformers = _import_transformers()
        hidden, depths, decoder_hidden = SEGFORMER_SIZES[size]
        config = transformers.SegformerConfig(
            hidden_sizes=list(hidden), depths=list(depths), decoder_hidden_size=decoder_hidden,
            num_labels=num_classes, semantic_loss_ignore_index=255,
        )
        if pretrained:
            repo = segformer_repo(size)
            try:
                net = transformers.SegformerForSemanticSegmentation.from_pretrained(repo, config=config)
            except OSError as exc:
                raise hub_weights_error(name, repo, exc) from exc
        else:
            net = transformers.SegformerForSemanticSegmentation(config)
        strides = {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32, "decoder": 4}
        channels = {f"stage{i + 1}": c for i, c in enumerate(hidden)}
        super().__init__(
            name=name, num_classes=num_classes, feature_strides=strides,
            feature_channels={**channels, "decoder": decoder_hidden}, default_feature="stage3",
            features=features, aux=aux,
        )
        self.segformer = net.segformer
        self.decode_head = net.decode_head

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        hidden = self.segformer(x, output_hidden_states=True, return_dict=True).hidden_states
        feats = {f"stage{i + 1}": h for i, h in enumerate(hidden)}
        captured: list[torch.Tensor] = []
        hook = None
        if "decoder" in want:  # the classifier's input is the fused decoder map
            hook = self.decode_head.classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            logits = self.decode_head(hidden)
        finally:
            if hook is not None:
                hook.remove()
        if captured:
            feats["decoder"] = captured[0]
        return logits, None, {k: feats[k] for k in want}


def build_segformer(size: str):
    """Factory for ``segformer_<size>``."""

    def factory(
        name: str, num_classes: int, pretrained: bool, aux: bool | None, **options: Any
    ) -> SegmentationModel:
        check_options(name, options, ("features",))
        return HFSegformer(name, size, num_classes, pretrained, bool(aux), options.get("features"))

    return factory
