"""Joint transforms: image/label alignment, no black padding, variable-crop geometry, eval labels untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from anomalyseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

# 14 well separated, never dark colours: the colour of a pixel encodes its label.
CODE = torch.tensor([[40 + (i * 53) % 200, 60 + (i * 97) % 180, 50 + (i * 151) % 190] for i in range(14)],
                    dtype=torch.uint8)


def coded_pair(h: int = 96, w: int = 160, block: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 14, (h // block + 1, w // block + 1), generator=g)
    label = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w].contiguous()
    image = CODE[label].permute(2, 0, 1).contiguous()
    return image, label


def decode(image: torch.Tensor) -> torch.Tensor:
    """Nearest code colour per pixel of a [0, 1] float image."""
    pix = (image * 255).permute(1, 2, 0).reshape(-1, 1, 3)
    return (pix - CODE.float()).norm(dim=-1).argmin(-1).reshape(image.shape[1:])


def interior(label: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood has a single label (away from resampling blur at edges)."""
    lab = label.float()[None, None]
    hi = nnf.max_pool2d(lab, 3, 1, 1)
    lo = -nnf.max_pool2d(-lab, 3, 1, 1)
    return (hi == lo)[0, 0]


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_alignment(seed: int) -> None:
    torch.manual_seed(seed)
    image, label = coded_pair(seed=seed)
    t = TrainTransform((48, 64), color_jitter=False, blur=False, mean=None, std=None)
    out, lab = t(image, label)
    assert out.shape == (3, 48, 64) and out.dtype == torch.float32
    assert lab.shape == (48, 64) and lab.dtype == torch.int64
    assert set(lab.unique().tolist()) <= set(range(14))  # nearest: no invented ids, no padding
    inner = interior(lab)
    assert inner.float().mean() > 0.3
    agree = (decode(out) == lab)[inner].float().mean()
    assert agree > 0.99


def test_flip_happens_and_stays_aligned() -> None:
    image, label = coded_pair(h=32, w=48)
    t = TrainTransform((32, 48), scale_range=(1.0, 1.0), color_jitter=False, blur=False, mean=None, std=None)
    flipped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out, lab = t(image, label)
        if torch.equal(lab, label.flip(-1)) and not torch.equal(lab, label):
            flipped += 1
        assert torch.equal(lab, label) or torch.equal(lab, label.flip(-1))
        assert torch.equal(decode(out), lab)
    assert 0 < flipped < 12
    no_flip = TrainTransform((32, 48), scale_range=(1.0, 1.0), hflip=False, color_jitter=False, blur=False,
                             mean=None, std=None)
    assert all(torch.equal(no_flip(image, label)[1], label) for _ in range(5))


def test_never_black_padding_even_when_zooming_out() -> None:
    image, label = coded_pair(h=60, w=90)
    t = TrainTransform((80, 80), scale_range=(1.5, 2.0), color_jitter=False, blur=False, mean=None, std=None)
    for seed in range(20):
        torch.manual_seed(seed)
        out, lab = t(image, label)
        assert out.amax(0).min() > 0.15  # every output pixel keeps a bright channel: no black fill
        assert (lab != 255).all()


def test_variable_crop_geometry() -> None:
    """s = 2 on a small image: the window is clamped to the whole image's height (aspect of the crop kept);
    s = 0.5: a window of half the crop size is upsampled (zoom in)."""
    image, label = coded_pair(h=64, w=128, block=4)
    whole = TrainTransform((32, 32), scale_range=(2.0, 2.0), hflip=False, color_jitter=False, blur=False,
                           mean=None, std=None)
    torch.manual_seed(0)
    _, lab = whole(image, label)
    # window 64x64 (clamped from 64x64 = crop*2, fits the height exactly) resized to 32x32 by nearest
    candidates = [label[:, left:left + 64][::2, ::2] for left in range(0, 65)]
    assert any(torch.equal(lab, c) for c in candidates)
    zoom = TrainTransform((32, 32), scale_range=(0.5, 0.5), hflip=False, color_jitter=False, blur=False,
                          mean=None, std=None)
    torch.manual_seed(1)
    _, lab = zoom(image, label)
    windows = [label[top:top + 16, left:left + 16].repeat_interleave(2, 0).repeat_interleave(2, 1)
               for top in range(0, 49) for left in range(0, 113)]
    assert any(torch.equal(lab, w) for w in windows)


def test_full_preset_normalises_and_varies() -> None:
    image, label = coded_pair()
    t = TrainTransform(64)
    torch.manual_seed(0)
    a, la = t(image, label)
    torch.manual_seed(1)
    b, _ = t(image, label)
    assert a.shape == (3, 64, 64) and la.shape == (64, 64)
    assert not torch.equal(a, b)
    assert a.min() < 0  # ImageNet normalisation applied
    assert "ColorJitter" in repr(t) and "GaussianBlur" in repr(t)
    plain = TrainTransform(64, hflip=False, color_jitter=False, blur=False)
    assert "ColorJitter" not in repr(plain) and "GaussianBlur" not in repr(plain)


@pytest.mark.parametrize(("size", "keep", "expected"), [
    (None, True, (96, 160)), ((48, 48), True, (29, 48)), ((48, 48), False, (48, 48)), (48, True, (48, 80)),
])
def test_eval_transform_resizes_image_only(size, keep, expected) -> None:
    image, label = coded_pair()
    t = EvalTransform(size, keep_aspect=keep)
    out, lab = t(image, label)
    assert tuple(out.shape) == (3, *expected)
    assert lab is label  # untouched, native resolution
    if size is None:
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        assert torch.allclose(out, (image.float() / 255 - mean) / std, atol=1e-6)


def test_shape_mismatch_is_refused() -> None:
    image, label = coded_pair()
    with pytest.raises(ValueError, match="same size"):
        TrainTransform(32)(image, label[:-1])
    with pytest.raises(ValueError, match="same size"):
        EvalTransform()(image, label[:, :-1])
