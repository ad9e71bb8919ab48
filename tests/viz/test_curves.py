"""PR / ROC and threshold-sensitivity figures drawn from the curves stored in a results record."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc as sklearn_auc
from sklearn.metrics import f1_score, precision_score, recall_score
from tests.report.helpers import fake_data, make_record, scores_for

from anomalyseg.errors import UserError
from anomalyseg.viz.curves import SCORER_COLORS, pr_roc_figure, sensitivity, stored_curves, threshold_figure

SCORERS = {"max_logit": 1.0, "energy": 2.0}


@pytest.fixture(scope="module")
def record():
    return make_record(SCORERS, seed=0)


def test_pr_roc_figure_draws_the_stored_curves(record):
    fig = pr_roc_figure(record)
    roc, pr = fig.axes[:2]
    for i, name in enumerate(SCORERS):
        curve = record["scorers"][name]["curve"]
        m = record["scorers"][name]["metrics"]["pooled"]
        line = next(ln for ln in roc.get_lines() if ln.get_label().startswith(name + ":"))
        np.testing.assert_allclose(line.get_xdata(), [0.0, *curve["fpr"]])
        np.testing.assert_allclose(line.get_ydata(), [0.0, *curve["tpr"]])
        assert line.get_color() == SCORER_COLORS[i]
        label = line.get_label()
        assert f"AUROC {100 * m['auroc']:.1f}" in label and f"AUPR {100 * m['aupr']:.1f}" in label
        assert f"FPR95 {100 * m['fpr95']:.1f}" in label
        assert label in [t.get_text() for t in pr.get_legend().get_texts()]
        # the stored (downsampled) ROC integrates to the full curve's AUROC
        assert sklearn_auc([0.0, *curve["fpr"]], [0.0, *curve["tpr"]]) == pytest.approx(m["auroc"], abs=5e-3)


def test_sensitivity_matches_sklearn_at_stored_thresholds(record):
    """Precision / recall / F1 at a stored threshold t are those of the detections score >= t over the
    pooled pixels (label 255 left out): the histogram bins' lower edges are exact cut points."""
    labels, signals = fake_data(0)
    scores = scores_for(labels, signals, SCORERS["energy"])
    y = np.concatenate([(lab[lab != 255] == 13) for lab in labels]).astype(int)
    s = np.concatenate([sc[lab != 255] for lab, sc in zip(labels, scores)])
    sens = sensitivity(stored_curves(record)["energy"])
    assert np.all(np.diff(sens["threshold"]) > 0)
    for i in np.linspace(5, len(sens["threshold"]) - 5, 6).astype(int):
        d = (s >= sens["threshold"][i]).astype(int)
        assert sens["precision"][i] == pytest.approx(precision_score(y, d), rel=1e-9)
        assert sens["recall"][i] == pytest.approx(recall_score(y, d), rel=1e-9)
        assert sens["f1"][i] == pytest.approx(f1_score(y, d), rel=1e-9)
        assert sens["fpr"][i] == pytest.approx(d[y == 0].mean(), rel=1e-9)


def test_threshold_figure_marks_the_operating_points(record):
    fig = threshold_figure(record, "max_logit")
    ax = fig.axes[0]
    m = record["scorers"]["max_logit"]["metrics"]["pooled"]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels[:4] == ["PRECISION", "RECALL", "F1", "FPR"]
    marks = {ln.get_label().split(":")[0]: ln.get_xdata()[0] for ln in ax.get_lines()[4:]}
    assert marks == {"TPR 95 %": m["threshold_fpr95"], "best F1": m["threshold_best_f1"]}


def test_missing_curves_are_a_clear_error():
    per_image_only = make_record({"msp": 1.0}, protocols=("per_image",))
    with pytest.raises(UserError, match="no pooled curve"):
        pr_roc_figure(per_image_only)
    with pytest.raises(UserError, match="no pooled curve for scorer 'msp'"):
        threshold_figure(per_image_only, "msp")
