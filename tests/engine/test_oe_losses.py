"""Outlier-exposure losses against hand-written numpy formulas; their gradients raise the matching anomaly
scorer on outlier pixels; pasted-outlier pixels never enter the cross-entropy; paper defaults and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyseg.config import OutlierExposureConfig
from anomalyseg.constants import IGNORE_INDEX, OUTLIER_LABEL
from anomalyseg.engine.factory import SegLoss
from anomalyseg.engine.oe_losses import (
    OutlierExposureLoss,
    energy_hinge_loss,
    entropy_outlier_loss,
    hinge_terms,
    rba_hinge_loss,
    resolve_settings,
)
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer

K = 4
WEIGHTS = [1.0, 2.0, 0.5, 3.0]


def batch(seed: int = 0, outliers: bool = True, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, aux logits (2, K, 6, 7) and a target with known classes, void and (optionally) outlier pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, K, 6, 7, generator=g) * scale
    aux = torch.randn(2, K, 6, 7, generator=g) * scale
    target = torch.randint(0, K, (2, 6, 7), generator=g)
    target[0, 0] = IGNORE_INDEX
    if outliers:
        target[0, 2:5, 1:4] = OUTLIER_LABEL
        target[1, 4:, 5:] = OUTLIER_LABEL
    return logits, aux, target


# ---------------------------------------------------------------------------------------------------
# numpy references, written from the papers' formulas
# ---------------------------------------------------------------------------------------------------
def np_logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


def np_ce(z: np.ndarray, t: np.ndarray, w: np.ndarray) -> float:
    """Class-weighted mean cross-entropy over pixels with t < K (everything else ignored)."""
    logp = z - np_logsumexp(z)[:, None]
    b, h, x = np.nonzero(t < K)
    y = t[b, h, x]
    return float((w[y] * -logp[b, y, h, x]).sum() / w[y].sum())


def np_mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else 0.0


def np_reference(kind: str, z: np.ndarray, aux: np.ndarray, t: np.ndarray, weight: float, m_in: float,
                 m_out: float) -> tuple[float, float, float]:
    """(total, ce, outlier term) by hand."""
    w = np.asarray(WEIGHTS)
    ce = np_ce(z, t, w) + 0.4 * np_ce(aux, t, w)
    inl, out = t < K, t == OUTLIER_LABEL
    if kind == "entropy":
        u_ce = -(z - np_logsumexp(z)[:, None]).mean(1)  # cross-entropy from softmax to uniform
        l_out = np_mean(u_ce, out)
        n_in, n_out = inl.sum(), out.sum()
        return (1 - weight) * n_in / (n_in + n_out) * ce + weight * n_out / (n_in + n_out) * l_out, ce, l_out
    score = -np_logsumexp(z) if kind == "energy" else -np.tanh(z).sum(1)
    l_out = 0.5 * (np_mean(np.maximum(score - m_in, 0) ** 2, inl) + np_mean(np.maximum(m_out - score, 0) ** 2, out))
    return ce + weight * l_out, ce, l_out


@pytest.mark.parametrize("kind,weight,m_in,m_out,shift", [
    ("entropy", 0.9, None, None, 0.0), ("entropy", 0.3, None, None, 0.0),
    ("energy", 0.1, -12.0, -6.0, 6.0), ("energy", 0.5, -4.0, -2.0, 0.0), ("rba", 1.0, 0.0, 5.0, 0.0),
])
@pytest.mark.parametrize("outliers", [True, False])
def test_criterion_matches_numpy(kind, weight, m_in, m_out, shift, outliers):
    logits, aux, target = batch(outliers=outliers)
    logits = logits + shift  # energies on both sides of the PEBAL margins
    cfg = OutlierExposureConfig(enabled=True, loss=kind, weight=weight, margin_in=m_in, margin_out=m_out)
    crit = OutlierExposureLoss.from_config(cfg, SegLoss(K, aux_weight=0.4, class_weights=WEIGHTS))
    z = logits.clone().requires_grad_()
    total = crit(SegOutput(z, aux), target)
    ref_total, ref_ce, ref_out = np_reference(kind, logits.double().numpy(), aux.double().numpy(), target.numpy(),
                                              weight, m_in or 0.0, m_out or 0.0)
    assert total.item() == pytest.approx(ref_total, rel=1e-5, abs=1e-6)
    assert crit.last_terms["loss_ce"].item() == pytest.approx(ref_ce, rel=1e-5)
    assert crit.last_terms["loss_outlier"].item() == pytest.approx(ref_out, rel=1e-5, abs=1e-6)
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in crit.last_terms.values())
    if not outliers:
        assert crit.last_terms["outlier_fraction"].item() == 0.0
        if kind == "entropy":
            assert crit.last_terms["loss_outlier"].item() == 0.0
    total.backward()
    assert torch.isfinite(z.grad).all()


def test_outlier_pixels_never_enter_the_cross_entropy():
    logits, aux, target = batch()
    crit = OutlierExposureLoss.from_config(OutlierExposureConfig(enabled=True, loss="rba"),
                                           SegLoss(K, aux_weight=0.4, class_weights=WEIGHTS))
    crit(SegOutput(logits, aux), target)
    ce = crit.last_terms["loss_ce"]
    as_void = SegLoss(K, aux_weight=0.4, class_weights=WEIGHTS)(SegOutput(logits, aux),
                                                                target.masked_fill(target == OUTLIER_LABEL, 255))
    assert ce.item() == pytest.approx(as_void.item(), rel=1e-6)
    # anything at the outlier pixels, on the main and the aux head, leaves the cross-entropy as it is
    out = (target == OUTLIER_LABEL)[:, None].expand_as(logits)
    crit(SegOutput(torch.where(out, 50.0, logits), torch.where(out, -50.0, aux)), target)
    assert crit.last_terms["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-6)


def test_batch_without_labelled_pixels_is_zero_not_nan():
    logits = torch.randn(1, K, 3, 3, requires_grad=True)
    void = torch.full((1, 3, 3), IGNORE_INDEX)
    for kind in ("entropy", "energy", "rba"):
        crit = OutlierExposureLoss.from_config(OutlierExposureConfig(enabled=True, loss=kind), SegLoss(K))
        loss = crit(SegOutput(logits), void)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("kind,scorer,term", [
    ("entropy", "entropy", lambda z, t: entropy_outlier_loss(z, t)),
    ("energy", "energy", lambda z, t: hinge_terms(-torch.logsumexp(z, 1), t, K, -12.0, -6.0)[1]),
    ("rba", "rba", lambda z, t: hinge_terms(-torch.tanh(z).sum(1), t, K, 0.0, 5.0)[1]),
])
def test_descending_the_outlier_term_raises_the_scorer_on_outlier_pixels(kind, scorer, term):
    logits, _, target = batch(seed=1)
    if kind == "energy":
        logits = logits + 8.0  # E ~ -9 < m_out = -6: the outlier hinge is active
    z = logits.clone().requires_grad_()
    term(z, target).backward()
    stepped = logits - 0.05 * z.grad / z.grad.abs().max()
    score = get_scorer(scorer).score
    before, after = score(SegOutput(logits)), score(SegOutput(stepped))
    out = target == OUTLIER_LABEL
    assert (after[out] > before[out]).all()
    assert torch.equal(after[~out], before[~out])  # the term touches outlier pixels only


@pytest.mark.parametrize("fn,scorer,m_in", [(energy_hinge_loss, "energy", -12.0), (rba_hinge_loss, "rba", -5.0)])
def test_hinge_losses_push_inlier_scores_down(fn, scorer, m_in):
    logits, _, target = batch(seed=2, outliers=False, scale=0.5)  # energies ~ -1.5, rba scores in (-4, 4): > m_in
    z = logits.clone().requires_grad_()
    fn(z, target, margin_in=m_in).backward()
    stepped = logits - 0.05 * z.grad / z.grad.abs().max()
    score = get_scorer(scorer).score
    inl = target < K
    assert (score(SegOutput(stepped))[inl] < score(SegOutput(logits))[inl]).all()


def test_reduced_precision_logits_give_a_float32_loss():
    logits, aux, target = batch()
    crit = OutlierExposureLoss.from_config(OutlierExposureConfig(enabled=True, loss="energy"), SegLoss(K))
    full = crit(SegOutput(logits, aux), target)
    half = crit(SegOutput(logits.bfloat16(), aux.bfloat16()), target)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=0.05)


def test_paper_defaults_and_refused_settings():
    def resolved(**kw):
        return resolve_settings(OutlierExposureConfig(enabled=True, **kw))

    s = resolved(loss="entropy")
    assert (s["weight"], s["margin_in"], s["margin_out"]) == (0.9, None, None)  # meta-ood: pareto_alpha = 0.9
    s = resolved(loss="energy")
    assert (s["weight"], s["margin_in"], s["margin_out"]) == (0.1, -12.0, -6.0)  # PEBAL losses.py / trainer.py
    assert s["paper_defaults"] == ["weight", "margin_in", "margin_out"]
    s = resolved(loss="rba", margin_out=3.0)
    assert (s["weight"], s["margin_in"], s["margin_out"]) == (1.0, 0.0, 3.0)  # RbA released COCO config
    assert s["paper_defaults"] == ["weight", "margin_in"]
    for kw, words in (({"loss": "entropy", "margin_in": 1.0}, "entropy loss has none"),
                      ({"loss": "entropy", "weight": 2.0}, r"in \[0, 1\]"),
                      ({"loss": "rba", "margin_in": 6.0}, "above margin_out")):
        with pytest.raises(UserError, match=words) as exc:
            resolved(**kw)
        assert "\n" not in str(exc.value)
