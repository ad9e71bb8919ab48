"""Mahalanobis: class means and shared covariance against numpy, streaming / merging, score formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyseg.errors import NotFittedError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import Mahalanobis, get_scorer

C, D = 4, 5


def _batch(seed: int, n: int = 6, stride: int = 2) -> tuple[SegOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, C, (n, 8, 10), generator=g)
    label[:, -1] = 255
    centres = torch.randn(C, D, generator=g) * 3
    mix = torch.randn(D, D, generator=g)
    feats = centres[label.clamp(max=C - 1)] + torch.randn(n, 8, 10, D, generator=g) @ mix
    feats = feats.permute(0, 3, 1, 2)[:, :, ::stride, ::stride].contiguous()
    return SegOutput(torch.randn(n, C, 8, 10, generator=g), features={"layer3": feats}), label


def _numpy_fit(out: SegOutput, label: torch.Tensor, stride: int = 2) -> tuple[np.ndarray, np.ndarray]:
    y = label.numpy()[:, ::stride, ::stride].reshape(-1)
    f = out.features["layer3"].numpy().astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, D)
    f, y = f[y != 255], y[y != 255]
    means = np.stack([f[y == c].mean(0) for c in range(C)])
    centred = f - means[y]
    return means, centred.T @ centred / len(f)


def _numpy_score(means: np.ndarray, cov: np.ndarray, eps: float, feats: np.ndarray) -> np.ndarray:
    shrunk = (1 - eps) * cov + eps * np.trace(cov) / D * np.eye(D)
    prec = np.linalg.inv(shrunk)
    f = feats.astype(np.float64).transpose(0, 2, 3, 1)[..., None, :] - means  # (B, h, w, C, D)
    return np.sqrt(np.einsum("...cd,de,...ce->...c", f, prec, f).min(-1))


def test_fit_matches_numpy_means_and_pooled_covariance() -> None:
    out, label = _batch(0)
    maha = get_scorer("mahalanobis").fit([(out, label)])
    means, cov = _numpy_fit(out, label)
    np.testing.assert_allclose(maha.means.numpy(), means, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(maha.covariance.numpy(), cov, rtol=1e-7, atol=1e-9)


def test_streamed_chunks_and_merged_halves_equal_one_batch() -> None:
    out, label = _batch(1)

    def part(s: slice) -> tuple[SegOutput, torch.Tensor]:
        return SegOutput(out.logits[s], features={"layer3": out.features["layer3"][s]}), label[s]

    whole = Mahalanobis().fit([(out, label)])
    chunks = Mahalanobis().fit([part(slice(i, i + 2)) for i in range(0, 6, 2)])
    a, b = Mahalanobis(), Mahalanobis()
    a.fit_update(*part(slice(0, 3)))
    b.fit_update(*part(slice(3, 6)))
    a.merge_fit(b).fit_finalize()
    for other in (chunks, a):
        torch.testing.assert_close(other.means, whole.means, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(other.covariance, whole.covariance, rtol=1e-10, atol=1e-10)


def test_score_matches_numpy_formula() -> None:
    out, label = _batch(2, stride=1)
    maha = Mahalanobis(eps=0.05).fit([(out, label)])
    test = _batch(3, n=2, stride=1)[0]
    means, cov = _numpy_fit(out, label, stride=1)
    expected = _numpy_score(means, cov, 0.05, test.features["layer3"].numpy())
    np.testing.assert_allclose(maha.score(test).numpy(), expected, rtol=1e-4, atol=1e-4)
    low_res = _batch(3, n=2, stride=2)[0]
    assert maha.score(low_res).shape == (2, 8, 10)  # upsampled to the logits' size


def test_hand_made_case_and_l2_option() -> None:
    # two classes at (0, 0) and (4, 0), each point 1 away from its mean along one axis -> Sigma = I / 2
    f = torch.tensor([[-1.0, 0], [1, 0], [0, -1], [0, 1], [3, 0], [5, 0], [4, -1], [4, 1]])
    label = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1]]])
    out = SegOutput(torch.zeros(1, 2, 1, 8), features={"f": f.T.reshape(1, 2, 1, 8)})
    maha = Mahalanobis(eps=0.0).fit([(out, label)])
    np.testing.assert_allclose(maha.covariance.numpy(), np.eye(2) * 0.5, atol=1e-12)
    probe = torch.tensor([[2.0, 0.0], [0.0, 3.0], [4.0, 0.0]]).T.reshape(1, 2, 1, 3)
    s = maha.score(SegOutput(torch.zeros(1, 2, 1, 3), features={"f": probe}))[0, 0]
    # distance^2 = ||x - mu||^2 / 0.5 to the nearest mean
    np.testing.assert_allclose(s.numpy(), np.sqrt([4 / 0.5, 9 / 0.5, 0.0]), atol=1e-5)
    unit = Mahalanobis(l2_normalize=True, eps=0.1)
    assert unit.name == "mahalanobis_l2_eps0.1"
    out2, label2 = _batch(4)
    unit.fit([(out2, label2)])
    scaled = SegOutput(out2.logits, features={"layer3": out2.features["layer3"] * 7})
    torch.testing.assert_close(unit.score(scaled), unit.score(out2), rtol=1e-4, atol=1e-4)


def test_not_fitted_and_state_round_trip(tmp_path) -> None:
    out, label = _batch(5)
    with pytest.raises(NotFittedError, match="fit-scorers"):
        Mahalanobis().score(out)
    maha = Mahalanobis().fit([(out, label)])
    torch.save(maha.state_dict(), tmp_path / "m.pt")
    again = Mahalanobis(eps=0.2)  # shrinkage is applied when loading, so it may differ
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert again.feature_used == "layer3"
    same = Mahalanobis()
    same.load_state_dict(maha.state_dict())
    torch.testing.assert_close(same.score(out), maha.score(out))
    assert not torch.allclose(again.score(out), maha.score(out))
    with pytest.raises(ValueError, match="fitted with"):
        Mahalanobis(l2_normalize=True).load_state_dict(maha.state_dict())
