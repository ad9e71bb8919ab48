"""anomalyseg.viz: qualitative panels, comparison grids, palette legends (:mod:`.panels`; real-photo sets
with a normal / anomaly / void ground truth: :mod:`.binary`), PR / ROC and threshold-sensitivity plots from
stored curves (:mod:`.curves`) and sample choice (:mod:`.samples`); the ``visualize`` workflow that draws them
is :func:`anomalyseg.workflows.visualize.visualize`. Matplotlib figures on Agg canvases, no pyplot state.

The names below are imported on first use (:mod:`anomalyseg.lazy`): they import matplotlib and torch, which
``anomalyseg visualize --help`` must not pay for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyseg.lazy import lazy_exports

if TYPE_CHECKING:
    from anomalyseg.viz.binary import BinaryPanelData, binary_legend, binary_panel_data, draw_binary_panel
    from anomalyseg.viz.colors import (
        ANOMALY_GT_COLORS,
        DETECTION_COLORS,
        ERROR_COLORS,
        OUTCOME_COLORS,
        class_palette,
        colorize,
        outcome_map,
    )
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

_EXPORTS = {
    **dict.fromkeys(("BinaryPanelData", "binary_legend", "binary_panel_data", "draw_binary_panel"), ".binary"),
    **dict.fromkeys(("ANOMALY_GT_COLORS", "DETECTION_COLORS", "ERROR_COLORS", "OUTCOME_COLORS", "class_palette",
                     "colorize", "outcome_map"), ".colors"),
    **dict.fromkeys(("PANEL_VIEWS", "Panel", "PanelData", "comparison_grid", "draw_panel", "palette_legend",
                     "panel_data", "panel_figure", "sample_stats", "save_figure"), ".panels"),
    "select_samples": ".samples",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ANOMALY_GT_COLORS",
    "DETECTION_COLORS",
    "ERROR_COLORS",
    "OUTCOME_COLORS",
    "PANEL_VIEWS",
    "BinaryPanelData",
    "Panel",
    "PanelData",
    "binary_legend",
    "binary_panel_data",
    "class_palette",
    "colorize",
    "comparison_grid",
    "draw_binary_panel",
    "draw_panel",
    "outcome_map",
    "palette_legend",
    "panel_data",
    "panel_figure",
    "sample_stats",
    "save_figure",
    "select_samples",
]
