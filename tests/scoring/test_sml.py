"""SML: per-class max-logit statistics against numpy, streaming / merging, scoring formula, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyseg.errors import NotFittedError, UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import SML, get_scorer
from anomalyseg.scoring.spatial import boundary_suppression, dilated_smoothing

C = 5


def _data(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, 10, 12, generator=g) * 3 + torch.arange(C).float()[None, :, None, None]
    label = torch.randint(0, C, (n, 10, 12), generator=g)
    label[:, :2] = 255  # ignored rows are left out of the statistics
    return logits, label


def _numpy_stats(logits: torch.Tensor, label: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    z, y = logits.numpy().astype(np.float64), label.numpy()
    m, pred = z.max(1), z.argmax(1)
    valid = y != 255
    means = np.array([m[valid & (pred == c)].mean() for c in range(C)])
    stds = np.array([m[valid & (pred == c)].std(ddof=1) for c in range(C)])
    return means, stds


def test_fit_matches_numpy_statistics() -> None:
    logits, label = _data()
    sml = get_scorer("sml").fit([(SegOutput(logits), label)])
    means, stds = _numpy_stats(logits, label)
    np.testing.assert_allclose(sml.means.numpy(), means, rtol=1e-5)
    np.testing.assert_allclose(sml.stds.numpy(), stds, rtol=1e-5)


def test_streamed_chunks_and_merged_halves_equal_one_batch() -> None:
    logits, label = _data()
    whole = SML().fit([(SegOutput(logits), label)])
    chunks = SML().fit([(SegOutput(logits[i : i + 2]), label[i : i + 2]) for i in range(0, 6, 2)])
    a, b = SML(), SML()
    a.fit_update(SegOutput(logits[:3]), label[:3])
    b.fit_update(SegOutput(logits[3:]), label[3:])
    a.merge_fit(b).fit_finalize()
    for other in (chunks, a):
        torch.testing.assert_close(other.means, whole.means, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(other.stds, whole.stds, rtol=1e-6, atol=1e-6)


def test_score_formula_and_hand_made_case() -> None:
    logits, label = _data()
    sml = SML().fit([(SegOutput(logits), label)])
    test = _data(seed=1, n=2)[0]
    means, stds = _numpy_stats(logits, label)
    z = test.numpy().astype(np.float64)
    expected = -(z.max(1) - means[z.argmax(1)]) / stds[z.argmax(1)]
    np.testing.assert_allclose(sml.score(SegOutput(test)).numpy(), expected, rtol=1e-4, atol=1e-4)
    # hand-made: class 0 max logits {1, 3} -> mean 2, std sqrt(2); a test pixel with max logit 2 + sqrt(2) scores -1
    fit_logits = torch.tensor([[1.0, 0.0], [3.0, 0.0]]).T.reshape(1, 2, 1, 2)
    hand = SML().fit([(SegOutput(fit_logits), torch.zeros(1, 1, 2, dtype=torch.long))])
    probe = torch.tensor([2 + 2**0.5, 0.0]).reshape(1, 2, 1, 1)
    assert hand.score(SegOutput(probe)).item() == pytest.approx(-1.0, abs=1e-5)
    low = torch.tensor([0.5, 0.0]).reshape(1, 2, 1, 1)  # weaker max logit than usual -> more anomalous
    assert hand.score(SegOutput(low)).item() > hand.score(SegOutput(probe)).item()


def test_full_variant_applies_paper_post_processing() -> None:
    logits, label = _data()
    plain = SML().fit([(SegOutput(logits), label)])
    full = get_scorer("sml_full")
    assert full.name == "sml_full" and full.params["boundary_width"] == 4 and full.params["smoothing_dilation"] == 6
    full.load_state_dict(plain.state_dict())  # statistics do not depend on the post-processing
    test = SegOutput(_data(seed=2, n=1)[0])
    expected = dilated_smoothing(boundary_suppression(plain.score(test), test.logits.argmax(1), 4, 4), 7, 6, 1.0)
    torch.testing.assert_close(full.score(test), expected)


def test_unseen_class_falls_back_to_global_statistics() -> None:
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 0] = torch.arange(16.0).reshape(4, 4)  # class 0 always predicted; classes 1, 2 never
    sml = SML().fit([(SegOutput(logits), torch.zeros(1, 4, 4, dtype=torch.long))])
    m = np.arange(16.0)
    np.testing.assert_allclose(sml.means.numpy(), [m.mean()] * 3, rtol=1e-6)
    np.testing.assert_allclose(sml.stds.numpy(), [m.std(ddof=1)] * 3, rtol=1e-6)


def test_not_fitted_error_names_the_command() -> None:
    with pytest.raises(NotFittedError, match="anomalyseg fit-scorers --checkpoint CKPT --data-root DIR"):
        SML().score(SegOutput(torch.randn(1, C, 4, 4)))


def test_anomaly_label_is_refused() -> None:
    logits, label = _data(n=1)
    label[0, 5, 5] = C  # an anomaly-like id (13 on StreetHazards)
    with pytest.raises(UserError, match="never on anomaly labels"):
        SML().fit_update(SegOutput(logits), label)
    with pytest.raises(ValueError, match="label must be"):
        SML().fit_update(SegOutput(logits), label[0])
    ignored = SML()
    ignored.fit_update(SegOutput(logits), torch.full_like(label, 255))
    with pytest.raises(UserError, match="saw no labelled in-distribution pixel"):
        ignored.fit_finalize()


def test_state_dict_round_trip(tmp_path) -> None:
    logits, label = _data()
    sml = SML().fit([(SegOutput(logits), label)])
    torch.save(sml.state_dict(), tmp_path / "sml.pt")
    again = SML()
    again.load_state_dict(torch.load(tmp_path / "sml.pt", weights_only=True))
    test = SegOutput(_data(seed=3, n=1)[0])
    torch.testing.assert_close(again.score(test), sml.score(test))
    with pytest.raises(ValueError, match="cannot load"):
        get_scorer("heat").load_state_dict(sml.state_dict())
    with pytest.raises(UserError, match="fitted for 5 classes"):
        again.score(SegOutput(torch.randn(1, 7, 4, 4)))
