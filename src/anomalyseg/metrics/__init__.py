"""Streaming metric accumulators: closed-set segmentation and pixel-level anomaly detection."""

from anomalyseg.metrics.anomaly import AnomalyMetrics
from anomalyseg.metrics.segmentation import SegmentationMetrics

__all__ = ["AnomalyMetrics", "SegmentationMetrics"]
