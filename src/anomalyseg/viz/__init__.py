"""anomalyseg.viz: qualitative panels, comparison grids, palette legends (:mod:`.panels`), PR / ROC and
threshold-sensitivity plots from stored curves (:mod:`.curves`), sample choice (:mod:`.samples`) and the
``anomalyseg visualize`` command (:mod:`.commands`). Matplotlib figures on Agg canvases, no pyplot state."""

from anomalyseg.viz.colors import DETECTION_COLORS, ERROR_COLORS, OUTCOME_COLORS, colorize, outcome_map
from anomalyseg.viz.panels import (
    PANEL_VIEWS,
    Panel,
    PanelData,
    comparison_grid,
    draw_panel,
    palette_legend,
    panel_data,
    panel_figure,
    sample_stats,
    save_figure,
)
from anomalyseg.viz.samples import select_samples

__all__ = [
    "DETECTION_COLORS",
    "ERROR_COLORS",
    "OUTCOME_COLORS",
    "PANEL_VIEWS",
    "Panel",
    "PanelData",
    "colorize",
    "comparison_grid",
    "draw_panel",
    "outcome_map",
    "palette_legend",
    "panel_data",
    "panel_figure",
    "sample_stats",
    "save_figure",
    "select_samples",
]
