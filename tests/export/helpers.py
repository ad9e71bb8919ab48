"""Checkpoints for the export tests: the engine tests' tiny net (offline, any size), with fitted scorer states
written beside it the way ``anomalyseg fit-scorers`` writes them."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.engine.tiny_model import build

from anomalyseg.checkpoints.io import FORMAT, file_sha256, save_checkpoint
from anomalyseg.checkpoints.scorer_states import default_states_path, write_states
from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.data import STREETHAZARDS
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import scorers_from_spec

NUM_CLASSES = 13


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """The tiny net (13 classes, no input size in its contract) in anomalyseg's checkpoint format."""
    torch.manual_seed(seed)
    model = build(NUM_CLASSES, aux=False, width=6, dropout=0.0).eval()
    config = {"model": {"name": "tiny", "aux": False, "options": {"width": 6, "dropout": 0.0}}}
    return save_checkpoint(path, {"format": FORMAT, "model_name": "tiny", "num_classes": NUM_CLASSES,
                                  "class_names": list(STREETHAZARDS.class_names), "model": model.state_dict(),
                                  "config": config})


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB -> what every model here takes (ImageNet-normalised), as the data pipeline does."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def fit_states(checkpoint: Path, model: torch.nn.Module, spec: str, size: tuple[int, int] = (32, 48)) -> Path:
    """Fit the scorers of ``spec`` on random labelled images and write ``<checkpoint>.scorers.pt``."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 3, *size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (4, *size), generator=gen)
    made = [s for s in scorers_from_spec(spec) if s.requires_fit]
    with torch.no_grad():
        out = model(normalise(images), return_features=True)
    for s in made:
        batches = [(SegOutput(out.logits, features=dict(out.features)), labels)]
        s.fit(batches)
    entries = {s.name: {"state": s.state_dict(), "split": "random"} for s in made}
    return write_states(default_states_path(checkpoint), checkpoint, file_sha256(checkpoint), entries)
