"""HEAT: the documented definition against an independent numpy implementation; every switch; fitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import HEAT, get_scorer

C, D = 4, 6


def _batch(seed: int, n: int = 4, feat_stride: int = 1) -> tuple[SegOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, C, (n, 8, 12), generator=g)
    label[:, 0] = 255
    logits = torch.randn(n, C, 8, 12, generator=g) * 2 + 3 * F.one_hot(label.clamp(max=C - 1), C).permute(0, 3, 1, 2)
    centres = torch.randn(C, D, generator=g) * 2
    feats = centres[label.clamp(max=C - 1)].permute(0, 3, 1, 2) + torch.randn(n, D, 8, 12, generator=g)
    feats = feats[:, :, ::feat_stride, ::feat_stride].contiguous()
    return SegOutput(logits, features={"layer3": feats}), label


def _lse(z: np.ndarray) -> np.ndarray:
    m = z.max(1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


def _unit(f: np.ndarray) -> np.ndarray:
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _reference(fit: tuple[SegOutput, torch.Tensor], test: SegOutput, t: float, w: float, k: int) -> np.ndarray:
    out, label = fit
    y = label.numpy()
    valid = y != 255
    z = out.logits.numpy().astype(np.float64)
    e_fit = -t * _lse(z / t)
    mu_e, sd_e = e_fit[valid].mean(), e_fit[valid].std()
    u = _unit(out.features["layer3"].numpy().astype(np.float64)).transpose(0, 2, 3, 1)
    protos = np.stack([u[valid & (y == c)].mean(0) for c in range(C)])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    d_fit = 1 - (u @ protos.T).max(-1)
    mu_d, sd_d = d_fit[valid].mean(), d_fit[valid].std()
    zt = test.logits.numpy().astype(np.float64)
    e = (-t * _lse(zt / t) - mu_e) / sd_e
    ut = _unit(test.features["layer3"].numpy().astype(np.float64)).transpose(0, 2, 3, 1)
    d = (1 - (ut @ protos.T).max(-1) - mu_d) / sd_d
    s = (1 - w) * e + w * d
    if k > 1:
        num = np.stack([ndimage.uniform_filter(x, k, mode="constant") for x in s])
        den = np.stack([ndimage.uniform_filter(np.ones_like(x), k, mode="constant") for x in s])
        s = num / den
    return s


@pytest.mark.parametrize(("t", "w", "k"), [(1.0, 0.5, 3), (2.0, 0.3, 0)])
def test_matches_numpy_definition(t: float, w: float, k: int) -> None:
    fit = _batch(0)
    heat = HEAT(temperature=t, feature_weight=w, smoothing=k)
    assert heat.requires_fit and heat.fit_passes == 2
    heat.fit([fit])
    test = _batch(1, n=2)[0]
    np.testing.assert_allclose(heat.score(test).numpy(), _reference(fit, test, t, w, k), rtol=1e-4, atol=1e-4)


def test_prototypes_use_labels_downsampled_to_feature_resolution() -> None:
    out, label = _batch(2, feat_stride=4)
    heat = HEAT().fit([(out, label)])
    y = label[:, ::4, ::4].numpy()  # nearest resampling of an exact 4x downscale picks every 4th pixel
    u = _unit(out.features["layer3"].numpy().astype(np.float64)).transpose(0, 2, 3, 1)
    seen = [c for c in range(C) if (y == c).any()]
    protos = np.stack([u[y == c].mean(0) for c in seen])
    np.testing.assert_allclose(
        heat.prototypes.numpy(), protos / np.linalg.norm(protos, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )
    assert heat.score(out).shape == label.shape  # the feature term is upsampled to the logits' size


def test_ema_statistics_follow_the_seed_recursion() -> None:
    batches = [_batch(s, n=1) for s in range(3)]
    heat = HEAT(use_feature=False, norm_stats="ema", ema_alpha=0.9).fit(batches)
    mean = var = None
    for out, label in batches:
        e = -_lse(out.logits.numpy().astype(np.float64))[label.numpy() != 255]
        if mean is None:
            mean, var = e.mean(), e.var()
        else:
            mean, var = 0.9 * mean + 0.1 * e.mean(), 0.9 * var + 0.1 * e.var()
    np.testing.assert_allclose(heat.energy_stats, (mean, np.sqrt(var)), rtol=1e-6)
    exact = HEAT(use_feature=False).fit(batches)
    all_e = np.concatenate([-_lse(o.logits.numpy().astype(np.float64))[lab.numpy() != 255] for o, lab in batches])
    np.testing.assert_allclose(exact.energy_stats, (all_e.mean(), all_e.std()), rtol=1e-6)


def test_switches_remove_their_component() -> None:
    out, label = _batch(3)
    bare = HEAT(use_energy_norm=False, use_feature=False, smoothing=0)
    assert not bare.requires_fit and bare.name == "heat_noenorm_nofeat_k0"
    plain = SegOutput(out.logits)  # no features needed without the feature term
    torch.testing.assert_close(bare.score(plain), get_scorer("energy").score(plain))
    energy_only = HEAT(use_feature=False, smoothing=0).fit([(plain, label)])
    assert energy_only.fit_passes == 1
    e = get_scorer("energy").score(plain)
    valid = label != 255
    torch.testing.assert_close(
        energy_only.score(plain), (e - e[valid].mean()) / e[valid].std(unbiased=False), rtol=1e-4, atol=1e-4
    )
    with pytest.raises(UserError, match="return_features=True"):
        HEAT().fit([(plain, label)])


def test_two_passes_need_a_reusable_iterable_and_merge_pass_by_pass() -> None:
    out, label = _batch(4)
    with pytest.raises(TypeError, match="2 passes"):
        HEAT().fit(iter([(out, label)]))
    whole = HEAT().fit([(out, label)])
    halves = [
        (SegOutput(out.logits[s], features={"layer3": out.features["layer3"][s]}), label[s])
        for s in (slice(0, 2), slice(2, 4))
    ]
    a, b = HEAT(), HEAT()
    for _ in range(2):  # each pass: update shards, merge (as sync_fit would), finalize everywhere
        a.fit_update(*halves[0])
        b.fit_update(*halves[1])
        a.merge_fit(b).fit_finalize()
        b = HEAT()
        b.load_state_dict(a.state_dict())
    assert a.is_fitted and b.is_fitted
    test = _batch(5, n=1)[0]
    torch.testing.assert_close(a.score(test), whole.score(test), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.score(test), whole.score(test), rtol=1e-5, atol=1e-5)
