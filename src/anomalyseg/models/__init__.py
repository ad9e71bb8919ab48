"""Segmentation models behind one factory; every model returns a :class:`SegOutput`."""

from anomalyseg.models.outputs import SegOutput

__all__ = ["SegOutput"]
