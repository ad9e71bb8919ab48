"""Sliding-window inference: a per-pixel model (1x1 convolutions) gives the whole-image logits exactly; with
overlap a spatial model shows no seams; the options are checked in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomalyseg.engine.slide import Window, resolve_inference, slide_logits
from anomalyseg.engine.tta import TTA, forward
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput


class PerPixel(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, return_features: bool = False) -> SegOutput:
        return SegOutput(self.conv(x))


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize("tile, overlap", [((16, 24), 0.0), ((16, 24), 0.33), ((20, 30), 0.5), ((64, 64), 0.33)])
def test_per_pixel_model_slide_equals_whole(tile, overlap, blend):
    torch.manual_seed(0)
    model = PerPixel(nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 5, 1))).eval()
    x = torch.randn(2, 3, 50, 77)
    with torch.no_grad():
        whole = forward(model, x).logits
        slid = forward(model, x, window=Window(tile, overlap, blend)).logits
        flipped = forward(model, x, tta=TTA((1.0,), True), window=Window(tile, overlap, blend)).logits
    torch.testing.assert_close(slid, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(flipped, whole, rtol=0, atol=1e-6)
    if overlap == 0.0 and blend == "mean":
        assert torch.equal(slid, whole)  # every pixel from exactly one tile


def test_overlap_leaves_no_seams():
    """A 3x3 convolution sees zero padding at tile borders; with overlap the blended map stays close to the
    whole-image one everywhere, gaussian weights closer at the old tile borders than none."""
    torch.manual_seed(0)
    model = PerPixel(nn.Conv2d(3, 4, 3, padding=1)).eval()
    x = torch.randn(1, 3, 48, 96)
    with torch.no_grad():
        whole = model(x).logits
        hard = slide_logits(model, x, Window((24, 48), 0.0))
        soft = slide_logits(model, x, Window((24, 48), 0.5, "gaussian"))
    seam = (hard - whole).abs()[..., 23:25, :].max()
    assert seam > 0.05  # without overlap the tile border shows
    assert (soft - whole).abs()[..., 23:25, :].max() < seam / 2


def test_options_checked():
    assert resolve_inference(None, None, 0.33, "mean", (512, 1024))[:2] == ("resize", (512, 1024))
    assert resolve_inference(None, None, 0.33, "mean", None)[:2] == ("whole", None)
    mode, size, window = resolve_inference("slide", "256x512", 0.25, "gaussian", None)
    assert (mode, size, window.tile, window.stride) == ("slide", None, (256, 512), (192, 384))
    with pytest.raises(UserError, match="needs a tile size"):
        resolve_inference("slide", None, 0.33, "mean", None)
    with pytest.raises(UserError, match="--tile must be HxW"):
        resolve_inference("slide", "big", 0.33, "mean", None)
    with pytest.raises(UserError, match="--overlap"):
        Window((8, 8), 1.0)
    with pytest.raises(UserError, match="feature-based"):
        forward(PerPixel(nn.Conv2d(3, 2, 1)), torch.zeros(1, 3, 8, 8), return_features=True, window=Window((4, 4)))
