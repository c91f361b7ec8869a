"""The evaluation's figures, drawn from boxes and curves as `evaluation` collects them
(the report's figures are tested in test_report.py through its commands)."""

from __future__ import annotations

import numpy as np
from test_report import colours, has_colour
from tumbletrain import plots


def test_pr_curves_draw_each_class_where_precision_is_defined(tmp_path):
    precision = np.full((10, 101), -1.0)
    precision[0, :81] = np.linspace(1.0, 0.6, 81)  # IoU 0.5, recall up to 0.8
    png = tmp_path / "pr.png"
    plots.plot_pr_curves({"cat": precision, "dog": np.full((10, 101), -1.0)}, png)
    assert has_colour(png, (31, 119, 180), tolerance=10)  # matplotlib's first line colour
    plots.plot_pr_curves({}, tmp_path / "none.png")
    assert colours(tmp_path / "none.png") > 2


def test_detections_draw_true_boxes_and_detections_on_their_image(tmp_path):
    blue = np.zeros((60, 80, 3), np.uint8)
    blue[..., 2] = 200
    png = tmp_path / "grid.png"
    plots.plot_detections(
        {7: blue},
        [(7, (10.0, 10.0, 50.0, 40.0))],
        [(7, "cat", 0.9, (12.0, 12.0, 52.0, 42.0)), (8, "dog", 0.9, (0.0, 0.0, 5.0, 5.0))],
        png,
    )
    assert has_colour(png, (0, 255, 0), tolerance=30)  # the true box
    assert has_colour(png, (255, 0, 0), tolerance=30)  # the detection
    # Without boxes, neither colour.
    plots.plot_detections({7: blue}, [], [], tmp_path / "bare.png")
    assert not has_colour(tmp_path / "bare.png", (0, 255, 0), tolerance=30)
    assert not has_colour(tmp_path / "bare.png", (255, 0, 0), tolerance=30)
