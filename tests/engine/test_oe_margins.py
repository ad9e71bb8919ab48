"""``auto`` outlier-loss margins: the rule against numpy's quantile of the registry scorers, the RbA cap, the
config forms, refused combinations, and that calibrating touches neither the model's mode nor any RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.engine.tiny_model import TinySeg

from anomalyseg.config import OutlierExposureConfig, load_config
from anomalyseg.constants import IGNORE_INDEX, OUTLIER_LABEL
from anomalyseg.engine.factory import SegLoss
from anomalyseg.engine.oe_losses import OutlierExposureLoss, resolve_settings
from anomalyseg.engine.oe_margins import AUTO_QUANTILE, auto_margins, calibrate_margins, inlier_scores
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer

K = 13


def val_batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    """Batches of 2 images (24x32) whose labels hold known classes, void, the anomaly id K and pasted outliers."""
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n):
        label = torch.randint(0, K, (2, 24, 32), generator=g)
        label[0, :4] = IGNORE_INDEX
        label[1, 10:14, 3:9] = K  # an anomaly id: not a known class
        label[1, 0:3, 20:30] = OUTLIER_LABEL
        out.append({"image": torch.randn(2, 3, 24, 32, generator=g), "label": label})
    return out


def tiny_model() -> TinySeg:
    torch.manual_seed(0)
    model = TinySeg(K, width=6)
    with torch.no_grad():
        model.classifier.bias.add_(torch.linspace(-1.0, 1.0, K))  # known classes on different scales
    return model


@pytest.mark.parametrize("loss,scorer", [("energy", "energy"), ("rba", "rba")])
def test_auto_margin_in_is_the_quantile_of_the_registry_scorer_over_val_inlier_pixels(loss, scorer):
    model, batches = tiny_model(), val_batches()
    model.train()
    rng_before = torch.get_rng_state()
    m_in, m_out, notes = calibrate_margins(model, batches, loss, K, torch.device("cpu"), "auto", "auto")
    assert model.training and torch.equal(torch.get_rng_state(), rng_before)  # mode back, no RNG drawn

    model.eval()  # the reference: eval-mode logits (no dropout), registry scorer, known-class pixels, numpy
    with torch.no_grad():
        ref = np.concatenate([get_scorer(scorer).score(SegOutput(model(b["image"]).logits)).numpy()[
            b["label"].numpy() < K] for b in batches])
    assert ref.size == 3 * 2 * 24 * 32 - 3 * (4 * 32 + 4 * 6 + 3 * 10)
    assert m_in == pytest.approx(float(np.quantile(ref, AUTO_QUANTILE)), rel=1e-5, abs=1e-5)
    assert m_out == pytest.approx(m_in + {"energy": 6.0, "rba": 5.0}[loss])  # the papers' gaps
    assert f"over {ref.size} pixels of 6 images" in notes["margin_in"]
    assert notes["margin_out"].startswith("auto: margin_in + ")


def test_inlier_scores_reads_a_bounded_number_of_batches_and_subsamples_evenly():
    model, batches = tiny_model(), val_batches(4)
    full, images = inlier_scores(model, batches, "energy", K, torch.device("cpu"), max_batches=2)
    assert images == 4 and full.size == 2 * (2 * 24 * 32 - (4 * 32 + 4 * 6 + 3 * 10))
    few, _ = inlier_scores(model, batches, "energy", K, torch.device("cpu"), max_batches=2, max_pixels_per_batch=50)
    per_batch = full.size // 2
    evenly = np.linspace(0, per_batch - 1, 50).astype(int)
    assert np.array_equal(few, np.concatenate([full[:per_batch][evenly], full[per_batch:][evenly]]))


def test_numeric_margin_in_needs_no_data_and_rba_margin_out_is_capped_below_k():
    assert auto_margins(None, "energy", K, -8.0, "auto") == (-8.0, -2.0, {"margin_out": "auto: margin_in + 6"})
    scores = np.linspace(0.0, 10.0, 1001)  # q0.95 = 9.5; + 5 = 14.5 > K - 1 = 12
    m_in, m_out, notes = auto_margins(scores, "rba", K, "auto", "auto")
    assert (m_in, m_out) == (pytest.approx(9.5), 12.0)
    assert notes["margin_out"] == "auto: margin_in + 5, capped at K-1 = 12"
    assert auto_margins(scores, "rba", K, "auto", 11.0)[:2] == (pytest.approx(9.5), 11.0)  # a number: as given
    with pytest.raises(UserError, match="capped at K-1 = 12") as exc:
        auto_margins(scores + 3.0, "rba", K, "auto", "auto")  # margin_in 12.5: nothing above it below the cap
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="no known-class pixels"):
        auto_margins(np.zeros(0), "energy", K, "auto", "auto")


def test_auto_margin_in_above_a_numeric_margin_out_is_refused_by_the_criterion():
    crit = OutlierExposureLoss.from_config(OutlierExposureConfig(enabled=True, loss="energy", margin_in="auto",
                                                                 margin_out=-5.0), SegLoss(K))
    assert crit.pending_margins == ["margin_in"]
    with pytest.raises(RuntimeError, match="set_margins"):  # never trains on an unresolved margin
        crit(SegOutput(torch.randn(1, K, 2, 2)), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(UserError, match=r"margin_in=-4 is above margin_out=-5 \(margin_in auto\)"):
        crit.set_margins(-4.0, -5.0, {"margin_in": "auto: ..."})
    crit.set_margins(-6.0, -5.0, {"margin_in": "auto: q0.95 of val inlier energy over 9 pixels of 1 images"})
    assert crit.pending_margins == []
    assert ("margin_in -6 (auto: q0.95 of val inlier energy over 9 pixels of 1 images), margin_out -5"
            in crit.describe())


def test_config_takes_auto_or_a_number_and_entropy_refuses_auto(tmp_path):
    cfg = load_config(None, ["outlier_exposure.margin_in=auto", "outlier_exposure.margin_out=3.5"])
    assert (cfg.outlier_exposure.margin_in, cfg.outlier_exposure.margin_out) == ("auto", 3.5)
    path = tmp_path / "oe.yaml"
    path.write_text("outlier_exposure:\n  loss: rba\n  margin_in: 3.5\n  margin_out: auto\n")
    cfg = load_config(path)
    assert (cfg.outlier_exposure.margin_in, cfg.outlier_exposure.margin_out) == (3.5, "auto")
    s = resolve_settings(OutlierExposureConfig(enabled=True, loss="rba", margin_in=3.5, margin_out="auto"))
    assert (s["margin_in"], s["margin_out"], s["auto"]) == (3.5, "auto", {})
    for override, words in (("outlier_exposure.margin_in=1e5", "must be >= -10000 and <= 10000"),
                            ("outlier_exposure.margin_out=automatic", "expected float or 'auto' or null, got str"),
                            ("outlier_exposure.margin_in=nan", "expected a finite number")):
        with pytest.raises(UserError, match=words) as exc:
            load_config(None, [override])
        assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="entropy loss has none") as exc:
        resolve_settings(OutlierExposureConfig(enabled=True, loss="entropy", margin_out="auto"))
    assert "\n" not in str(exc.value)
