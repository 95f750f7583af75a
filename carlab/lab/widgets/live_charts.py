"""The dashboard's live learning curves, drawn by the browser: one bqplot figure per panel.

The kernel only computes the numbers (:func:`carlab.lab.widgets.charts.series`, about a millisecond
for the 400 records the lab keeps in view) and sends them as binary arrays; bqplot's JavaScript
draws the lines, axes and legends in the page. The matplotlib picture this replaces cost the kernel
~0.3 s of CPU per refresh, holding the GIL the training thread needs between its jitted calls.

The panels are those of :class:`~carlab.lab.widgets.charts.Charts` (the static PNG of the same
curves): episode return, imagined vs real return, the world model's losses (log scale), the actor's
and critic's losses, — only while non-zero somewhere — the actor's spread and the model's doubt, and
— only for a run with policy checkpoints — the newest actor's and the driver's test laps.
All share one x scale (env steps), so their ranges line up.
"""

from __future__ import annotations

from collections.abc import Sequence

import bqplot
import ipywidgets as widgets
import numpy as np
from matplotlib import ticker

from carlab.lab.widgets import charts as charts_lib

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")  # matplotlib's first four: as in the PNG charts
MARGIN = {"top": 28, "bottom": 22, "left": 52, "right": 46}  # px around each panel's plot area


class LiveCharts:
    """The live charts: :attr:`widget` (a VBox of figures) and :meth:`show`, which hands the browser
    a new history's curves. Made and shown from any thread; :meth:`show` from one at a time."""

    def __init__(self, *, panel_height_px: int = 136):
        """Build the empty panels, each ``panel_height_px`` tall and as wide as its column."""
        self.x_scale = bqplot.LinearScale(min=0.0, max=1.0)  # env steps from 0
        self.lines: dict[str, bqplot.Lines] = {}  # one mark per metric, by its history key
        figures = []
        for title, keys, log in charts_lib.PANELS:
            y_scale = bqplot.LogScale(min=0.1, max=1.0) if log else bqplot.LinearScale(min=0.0, max=1.0)
            legend = len(keys) > 1
            marks = [
                self._line(key, label, y_scale, color, legend=legend)
                for (key, label), color in zip(keys.items(), COLORS)
            ]
            figures.append(
                _figure(title, marks, [_x_axis(self.x_scale), _y_axis(y_scale, log=log)], panel_height_px)
            )
        # Entropy (nats) and disagreement (latent units) share no scale: one y axis each, left and right.
        spread_marks, spread_axes = [], [_x_axis(self.x_scale)]
        for (key, label), color, side in zip(charts_lib.SPREAD.items(), COLORS, ("left", "right")):
            y_scale = bqplot.LinearScale(min=0.0, max=1.0)
            spread_marks.append(self._line(key, label, y_scale, color, legend=True))
            spread_axes.append(_y_axis(y_scale, side=side, color=color))
        self.spread_axes = dict(zip(charts_lib.SPREAD, spread_axes[1:]))
        self.spread_figure = _figure(charts_lib.SPREAD_TITLE, spread_marks, spread_axes, panel_height_px)
        driver_scale = bqplot.LinearScale(min=0.0, max=1.0)
        driver_marks = [
            self._line(key, label, driver_scale, color, legend=True)
            for (key, label), color in zip(charts_lib.DRIVER.items(), COLORS)
        ]
        driver_axes = [_x_axis(self.x_scale), _y_axis(driver_scale)]
        self.driver_figure = _figure(charts_lib.DRIVER_TITLE, driver_marks, driver_axes, panel_height_px)
        self.figures = [*figures, self.spread_figure, self.driver_figure]
        self.axes: dict = {}  # each scale's axes, whose ticks follow its range
        for figure in self.figures:
            for axis in figure.axes:
                self.axes.setdefault(axis.scale, []).append(axis)
        # The spread and driver panels are children only while shown (bqplot lays a hidden figure out
        # at zero size, which draws nothing but errors).
        self.panels = figures  # the panels always shown
        self.widget = widgets.VBox(figures, layout=widgets.Layout(width="100%", margin="0"))
        self.spread: tuple[str, ...] = ()  # the spread metrics drawn now
        self.driver = False  # whether the driver panel is drawn now
        self.shown = 0  # histories handed to the browser

    def _panel_values(self, ys: dict[str, np.ndarray]) -> dict:
        """Every y scale with all the values of the lines drawn on it."""
        values: dict = {}
        for key, line in self.lines.items():
            drawn = values.setdefault(line.scales["y"], [])
            if line.visible:
                drawn.append(ys[key])
        return {scale: np.concatenate(parts) if parts else np.zeros(0) for scale, parts in values.items()}

    def _line(self, key: str, label: str, y_scale, color: str, *, legend: bool) -> bqplot.Lines:
        line = bqplot.Lines(
            x=np.zeros(0),
            y=np.zeros(0),
            scales={"x": self.x_scale, "y": y_scale},
            labels=[label],
            colors=[color],
            stroke_width=1.5,
            display_legend=legend,
        )
        self.lines[key] = line
        return line

    def show(self, history: Sequence[dict], *, discount: float | None = None) -> None:
        """Draw ``history`` (records from :func:`carlab.learn.loop.summarize`; empty: blank panels,
        as after Reset). ``discount``: the run's gamma, for the real return (default: the default
        preset's)."""
        discount = charts_lib.default_discount() if discount is None else discount
        x, ys = charts_lib.series(history, discount=discount)
        spread, driver = charts_lib.spread_keys(history), charts_lib.has_driver_tests(history)
        if spread != self.spread or driver != self.driver:
            self.spread, self.driver = spread, driver
            for key, axis in self.spread_axes.items():
                axis.visible = key in spread
            shown = [self.spread_figure] * bool(spread) + [self.driver_figure] * driver
            self.widget.children = [*self.panels, *shown]
        for key, line in self.lines.items():
            known = np.isfinite(ys[key])  # only the known points: bqplot's scales and paths take no NaN
            with line.hold_sync():  # one message
                line.x, line.y = x[known], ys[key][known]
                line.visible = bool(known.any()) and (key not in charts_lib.SPREAD or key in spread)
        # The ranges are set here, not left to bqplot's autoscaling: it has none for a panel with no
        # points yet (and then draws its ticks at NaN).
        steps = x[np.isfinite(x)]
        ranges = {self.x_scale: (float(steps[0]), float(steps[-1])) if steps.size > 1 else (0.0, 1.0)}
        for scale, values in self._panel_values(ys).items():
            ranges[scale] = _range(values, log=isinstance(scale, bqplot.LogScale))
        for scale, (low, high) in ranges.items():
            with scale.hold_sync():
                scale.min, scale.max = low, high
            ticks = nice_ticks(low, high, log=isinstance(scale, bqplot.LogScale))
            for axis in self.axes.get(scale, ()):
                axis.tick_values = ticks
        self.shown += 1


def nice_ticks(low: float, high: float, *, log: bool = False) -> np.ndarray:
    """Round tick positions inside [low, high] (matplotlib's locators): 20k, 40k, 60k rather than
    bqplot's evenly spaced 2.41754k, 17.7088k...; on a log scale decades, or 1-2-5 steps within one."""
    if log:  # powers of ten (every k-th, at most 5), else 1-2-5 or 1-9 steps within a decade or two
        powers = 10.0 ** np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
        for steps in ((1.0,), (1.0, 2.0, 5.0), tuple(range(1, 10))):
            ticks = (powers[:, None] * np.asarray(steps, dtype=float)).ravel()
            inside = ticks[(ticks >= low) & (ticks <= high)]
            if inside.size >= 2:
                return inside[:: -(-inside.size // 5)]
        return inside
    ticks = ticker.MaxNLocator(nbins=4).tick_values(low, high)
    return ticks[(ticks >= low) & (ticks <= high)]


def _range(values: np.ndarray, *, log: bool) -> tuple[float, float]:
    """A y range showing every finite value (positive ones on a log scale) with a little room."""
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    if not values.size:
        return (0.1, 1.0) if log else (0.0, 1.0)
    low, high = float(values.min()), float(values.max())
    if log:
        return low / 1.2, high * 1.2
    room = 0.05 * (high - low) or max(abs(high), 1.0) * 0.05
    return low - room, high + room


def _figure(title: str, marks: list, axes: list, height_px: int) -> bqplot.Figure:
    return bqplot.Figure(
        marks=marks,
        axes=axes,
        title=title,
        title_style={"font-size": "12px"},
        legend_location="top-right",
        legend_text={"font-size": "9px"},
        legend_style={"stroke-width": 0, "fill-opacity": 0.7},
        fig_margin=dict(MARGIN),
        animation_duration=0,  # a refresh replaces the lines; no tweening for the browser to run
        padding_x=0.0,
        layout=widgets.Layout(width="100%", height=f"{height_px}px", margin="0", min_width="0"),
        min_aspect_ratio=0.0,
        max_aspect_ratio=100.0,
    )


def _x_axis(scale) -> bqplot.Axis:
    return bqplot.Axis(scale=scale, tick_format="~s", num_ticks=5, grid_lines="dashed")  # 20k, 40k


def _y_axis(scale, *, log: bool = False, side: str = "left", color: str | None = None) -> bqplot.Axis:
    axis = bqplot.Axis(
        scale=scale,
        orientation="vertical",
        side=side,
        tick_format=".0e" if log else ".3~g",  # 2e-3; 0.44, 13 (no SI "m" for milli)
        num_ticks=4,
        grid_lines="dashed" if side == "left" else "none",
    )
    if color is not None:
        axis.color = color
    return axis
