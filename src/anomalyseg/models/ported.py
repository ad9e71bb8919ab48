"""What ENet and ERFNet share: architectures written here after their authors' code, trained from scratch
or loaded from those codebases' checkpoints, never from ImageNet weights.

A :class:`PortedModel` takes the normalisation its weights expect (``input_mean`` / ``input_std``; the
upstream ENet / ERFNet trainings use RGB in [0, 1], i.e. mean 0, std 1) and converts the ImageNet-normalised
input every model of the project receives; its features (stride, channels) are listed in
:attr:`PortedModel.FEATURES` with ``encoder`` the default; inputs are padded to a multiple of 8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.errors import UserError
from anomalyseg.models.base import SegmentationModel, check_options


class PortedModel(SegmentationModel):
    """Base of the architectures written here (see the module docstring); subclasses set :attr:`FEATURES`,
    build their modules after ``super().__init__`` and implement ``_forward_net``."""

    #: ``{feature name: (stride w.r.t. the input, channels)}`` in the order they are listed.
    FEATURES: ClassVar[dict[str, tuple[int, int]]] = {}

    def __init__(self, name: str, num_classes: int, aux: bool, features: Sequence[str] | None,
                 input_mean: Sequence[float] = IMAGENET_MEAN, input_std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(
            name=name, num_classes=num_classes,
            feature_strides={key: stride for key, (stride, _) in self.FEATURES.items()},
            feature_channels={key: channels for key, (_, channels) in self.FEATURES.items()},
            default_feature="encoder", features=features, size_divisor=8, aux=aux,
            backbone_mean=tuple(float(v) for v in input_mean), backbone_std=tuple(float(v) for v in input_std),
        )

    @classmethod
    def build(cls, name: str, num_classes: int, pretrained: bool, aux: bool | None, **options: Any) -> PortedModel:
        """Registry factory; options ``features``, ``input_mean``, ``input_std`` (the weights' normalisation)."""
        check_options(name, options, ("features", "input_mean", "input_std"))
        if pretrained:
            raise UserError(f"{name} has no ImageNet weights to download: train it from scratch (pretrained: false) "
                            "or import a trained checkpoint with anomalyseg.checkpoints.import_checkpoint")
        return cls(name, num_classes, bool(aux), options.get("features"),
                   options.get("input_mean", IMAGENET_MEAN), options.get("input_std", IMAGENET_STD))
