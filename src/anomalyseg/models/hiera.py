"""Hiera encoders (timm) with a Semantic-FPN head, at any input size.

Two encoder families, both from timm (``timm.list_models("*hiera*")``):

- ``hiera_<size>_fpn``: Hiera (Ryali et al., ICML 2023), MAE-pretrained then fine-tuned on ImageNet-1k at 224
  (timm ``hiera_<size>_224.mae_in1k_ft_in1k``, CC-BY-NC-4.0). Built for one size: a learned absolute position
  embedding of 56x56 tokens and "unroll" token order sized at creation. Here the position embedding is
  resampled (bicubic) to the token grid of each input and unroll/reroll are rebuilt for it (no parameters),
  so any size runs; inputs are padded to a multiple of 32 (patch stride 4 x three 2x2 poolings; a mask unit
  is 32x32 px at every stage) and the logits cropped back.
- ``sam2_hiera_<size>_fpn``: SAM2's Hiera trunk (HieraDet, Ravi et al. 2024), pretrained inside SAM 2.1 on
  SA-1B at 896-1024 px (timm ``sam2_hiera_<size>.fb_r896_2pt1`` / ``fb_r1024_2pt1``, Apache-2.0). Windowed
  attention with a few global blocks and a position embedding interpolated per input by timm itself: made for
  high-resolution dense inputs. Its windowed position embedding tiles 8x8 tokens, so inputs are padded to 32
  as well.

Which serves road scenes: frames are 1280x720. SAM2's trunk was pretrained for dense masks at ~1k px, so its
position embedding and windows see about the scale they were trained at; Hiera-MAE's 56x56 embedding is
stretched ~3-6x at full resolution and its last two stages attend globally (3680 tokens at stride 16 on a
1280x720 frame: fits, costs more). The SAM2 variants are the recommended ones; the ``hiera_*`` ones reproduce
the seed (Hiera-Base at full resolution). Neither choice is measured on StreetHazards here.

Head: a Semantic-FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019) written here rather
than smp's FPN decoder over a ``tu-`` encoder: smp builds timm encoders with ``features_only`` at the
model's fixed creation size (Hiera's unroll and position embedding would then refuse other sizes), and the
head is ~40 lines with GroupNorm, which keeps batch-1 full-resolution training (the seed's run) sound.

Features (``features`` option): ``stage1``..``stage4`` (strides 4, 8, 16, 32; channels C, 2C, 4C, 8C) and
``decoder`` (the fused FPN map before the classifier, stride 4, 128 channels). ``default_feature`` is
``stage3``: the stride-16 map that holds most of the blocks (the ``layer3`` of a ResNet), the one ``heat`` and
``mahalanobis`` read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.errors import UserError
from anomalyseg.models.base import SegmentationModel, check_options
from anomalyseg.models.pretrained import hub_weights_error

#: Registry name -> (timm architecture, timm pretrained tag).
HIERA_VARIANTS: dict[str, tuple[str, str]] = {
    "hiera_tiny_fpn": ("hiera_tiny_224", "mae_in1k_ft_in1k"),
    "hiera_small_fpn": ("hiera_small_224", "mae_in1k_ft_in1k"),
    "hiera_base_fpn": ("hiera_base_224", "mae_in1k_ft_in1k"),
    "hiera_base_plus_fpn": ("hiera_base_plus_224", "mae_in1k_ft_in1k"),
    "sam2_hiera_tiny_fpn": ("sam2_hiera_tiny", "fb_r896_2pt1"),
    "sam2_hiera_small_fpn": ("sam2_hiera_small", "fb_r896_2pt1"),
    "sam2_hiera_base_plus_fpn": ("sam2_hiera_base_plus", "fb_r896_2pt1"),
    "sam2_hiera_large_fpn": ("sam2_hiera_large", "fb_r1024_2pt1"),
}

#: Input sides are padded to this multiple (patch stride 4 x 2**3 poolings; one mask unit / pos-embed window).
SIZE_DIVISOR = 32
STAGES = ("stage1", "stage2", "stage3", "stage4")


def hiera_weights_repo(arch: str, tag: str) -> str:
    """Hugging Face repo timm downloads ``arch.tag`` from (``timm/<arch>.<tag>``)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
    hub_id = getattr(cfg, "hf_hub_id", None) or "timm/"
    return f"{hub_id}{arch}.{tag}" if hub_id.endswith("/") else hub_id


def _conv_gn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.GroupNorm(32, cout), nn.ReLU(inplace=True)
    )


class SemanticFPN(nn.Module):
    """FPN over 4 stages (strides 4..32), each level brought to stride 4 by conv+2x upsampling, summed."""

    def __init__(self, in_channels: list[int], channels: int = 256, out_channels: int = 128) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_gn_relu(channels, channels, 3) for _ in in_channels)
        self.scale_heads = nn.ModuleList(
            nn.ModuleList(
                _conv_gn_relu(channels if k == 0 else out_channels, out_channels, 3) for k in range(max(1, i))
            )
            for i in range(len(in_channels))
        )
        self.out_channels = out_channels

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + up
        target = laterals[0].shape[-2:]
        fused = None
        for i, (smooth, head) in enumerate(zip(self.smooth, self.scale_heads)):
            x = smooth(laterals[i])
            for block in head:
                x = block(x)
                if x.shape[-2:] != target:
                    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            if x.shape[-2:] != target:  # odd maps: the last 2x step can miss the stride-4 grid by one cell
                x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            fused = x if fused is None else fused + x
        return fused


class HieraFPN(SegmentationModel):
    """A timm Hiera / SAM2-Hiera encoder (``encoder``), a Semantic-FPN (``decoder``) and a 1x1 classifier
    (``segmentation_head``); logits at stride 4, upsampled to the input size. Any input size (padded to 32)."""

    def __init__(
        self, name: str, arch: str, tag: str, num_classes: int, pretrained: bool, aux: bool,
        features: tuple[str, ...] | None, drop_path_rate: float = 0.0,
    ) -> None:
        import timm

        model_name = f"{arch}.{tag}" if pretrained else arch
        try:
            encoder = timm.create_model(model_name, pretrained=pretrained, drop_path_rate=float(drop_path_rate))
        except Exception as exc:
            if not pretrained:
                raise
            raise hub_weights_error(name, hiera_weights_repo(arch, tag), exc) from exc
        encoder.head = nn.Identity()  # classifier (and its norm) unused: no parameters without gradients
        channels = [int(info["num_chs"]) for info in encoder.feature_info]
        decoder = SemanticFPN(channels)
        super().__init__(
            name=name, num_classes=num_classes,
            feature_strides={**{s: 4 * 2**i for i, s in enumerate(STAGES)}, "decoder": 4},
            feature_channels={**dict(zip(STAGES, channels)), "decoder": decoder.out_channels},
            default_feature="stage3", features=features, size_divisor=SIZE_DIVISOR, aux=aux,
        )
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(decoder.out_channels, num_classes, 1))
        self._mae_hiera = hasattr(encoder, "unroll")  # original Hiera (fixed-size unroll) vs HieraDet

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self._mae_hiera:
            return list(self.encoder.forward_intermediates(x, intermediates_only=True))
        return _hiera_stages(self.encoder, x)

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        stages = self._stages(x)
        fused = self.decoder(stages)
        logits = self.segmentation_head(fused)
        named = dict(zip(STAGES, stages))
        return logits, None, {k: fused if k == "decoder" else named[k] for k in want}


def _hiera_stages(enc: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The 4 stage maps (NCHW) of a timm ``Hiera`` for an input of any size divisible by 32.

    timm's Hiera fixes the token grid at creation (position embedding, ``Unroll``/``Reroll``); here they are
    sized for this input: the position embedding resampled bicubically, unroll/reroll rebuilt (no weights).
    """
    from timm.models.hiera import Reroll, Unroll

    size = tuple(x.shape[-2:])
    tokens = [s // p for s, p in zip(size, enc.patch_stride)]
    x = enc.patch_embed(x)  # (B, N, C), raster order
    x = x + _hiera_pos_embed(enc, tokens)
    schedule = [enc.q_stride] * len(enc.stage_ends[:-1])
    x = Unroll(size, enc.patch_stride, schedule)(x)
    reroll = Reroll(size, enc.patch_stride, schedule, enc.stage_ends, enc.q_pool)
    out = []
    for i, blk in enumerate(enc.blocks):
        x = blk(x)
        if i in enc.stage_ends:
            out.append(reroll(x, i).permute(0, 3, 1, 2))
    return out


def _hiera_pos_embed(enc: nn.Module, tokens: list[int]) -> torch.Tensor:
    """Hiera's absolute position embedding for a ``tokens`` grid, as (1, N, C) in raster order."""
    if enc.pos_embed_win is not None:  # "abswin" variants: global embedding + per-mask-unit window embedding
        grid = [t // m for t, m in zip(tokens, enc.mask_unit_size)]
        win = enc.pos_embed_win.tile(grid)
        pos = F.interpolate(enc.pos_embed, size=win.shape[-2:], mode="bicubic", antialias=True) + win
        return pos.flatten(2).transpose(1, 2)
    pos = enc.pos_embed  # (1, N0, C) for the creation grid
    h0, w0 = enc.tokens_spatial_shape
    if [h0, w0] == list(tokens):
        return pos
    grid = pos.reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(tokens), mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def build_hiera(arch: str, tag: str):
    """Factory for ``hiera_<size>_fpn`` / ``sam2_hiera_<size>_fpn`` (options: ``features``,
    ``drop_path_rate``, default 0)."""

    def factory(
        name: str, num_classes: int, pretrained: bool, aux: bool | None, **options: Any
    ) -> SegmentationModel:
        check_options(name, options, ("features", "drop_path_rate"))
        rate = options.get("drop_path_rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0 \
                or math.isnan(float(rate)):
            raise UserError(f"model {name!r}: drop_path_rate must be a number in [0, 1), got {rate!r}")
        return HieraFPN(name, arch, tag, num_classes, pretrained, bool(aux), options.get("features"), float(rate))

    return factory
