"""anomalyseg: road-scene semantic segmentation and pixel-level anomaly segmentation.

One batch travels: ``data`` (disk -> tensors) -> ``models`` (one forward pass -> :class:`SegOutput`)
-> ``scoring`` (every anomaly scorer reads the same output) -> ``metrics`` (streaming accumulators)
-> ``report`` / ``viz`` (tables and pictures). ``engine`` holds the training and evaluation loops.
"""

__version__ = "0.1.0"
