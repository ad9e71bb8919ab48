"""Streaming metric accumulators: closed-set segmentation, pixel-level anomaly detection and
SegmentMeIfYouCan component-level anomaly segmentation."""

from anomalyseg.metrics.anomaly import AnomalyMetrics
from anomalyseg.metrics.components import ComponentMetrics
from anomalyseg.metrics.segmentation import SegmentationMetrics

__all__ = ["AnomalyMetrics", "ComponentMetrics", "SegmentationMetrics"]
