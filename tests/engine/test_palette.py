"""One colour lookup (``anomalyseg.data.palette``) behind the engine's TensorBoard panels and ``viz`` maps."""

from __future__ import annotations

import numpy as np
import torch

from anomalyseg.data import palette as P
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.engine import rundir
from anomalyseg.viz import colors

PALETTE = [(10, 20, 30), (40, 50, 60, 99)]  # a 4th channel is dropped
IDS = [[0, 1, 2], [255, -1, 300]]
# id 0, id 1, no entry (black) / ignore (white), clipped to 0, clipped to 255 (ignore)
EXPECTED = np.array([[(10, 20, 30), (40, 50, 60), (0, 0, 0)],
                     [(255, 255, 255), (10, 20, 30), (255, 255, 255)]], dtype=np.uint8)


def test_one_lookup_gives_the_same_colours_to_numpy_and_torch_callers():
    np.testing.assert_array_equal(P.colorize(np.array(IDS), PALETTE), EXPECTED)
    np.testing.assert_array_equal(colors.colorize(np.array(IDS), PALETTE), EXPECTED)
    np.testing.assert_array_equal(colors.colorize(torch.tensor([IDS]), PALETTE), EXPECTED)  # (1,H,W) torch
    chw = rundir.colorize(torch.tensor(IDS), PALETTE)
    assert chw.dtype == torch.uint8 and chw.shape == (3, 2, 3)
    np.testing.assert_array_equal(chw.permute(1, 2, 0).numpy(), EXPECTED)
    assert colors.IGNORE_COLOR == P.IGNORE_COLOR


def test_other_ignore_index_and_default_palette():
    out = P.colorize(np.array([[0, 1, 255]]), PALETTE, ignore_index=1)
    assert out[0].tolist() == [[10, 20, 30], [255, 255, 255], [0, 0, 0]]
    default = colors.colorize(np.arange(14)[None])  # viz's default: the official StreetHazards colours
    assert default[0].tolist() == [list(c) for c in STREETHAZARDS.palette]


def test_prediction_panel_is_image_truth_prediction_at_label_size():
    image = torch.zeros(3, 2, 2)  # ImageNet-normalised zeros = the mean colour, upsampled to the label size
    label = torch.tensor([[0, 1, 1, 0], [255, 0, 1, 1]])
    pred = torch.ones(2, 4, dtype=torch.long)
    panel = rundir.prediction_panel((image, label, pred), PALETTE)
    assert panel.shape == (3, 2, 12) and panel.dtype == torch.uint8
    assert panel[:, 0, 0].tolist() == [124, 116, 104]  # round(255 * IMAGENET_MEAN)
    assert panel[:, 1, 4].tolist() == [255, 255, 255] and panel[:, 0, 5].tolist() == [40, 50, 60]
    assert (panel[:, :, 8:] == torch.tensor([40, 50, 60], dtype=torch.uint8).view(3, 1, 1)).all()
