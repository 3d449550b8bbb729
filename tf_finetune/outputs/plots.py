"""Training curves: the panels a run's history gives (data), and a PNG of panels drawn with matplotlib's Agg backend.

Panels are plain data so that what a figure shows can be checked without looking at pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from tf_finetune.core.files import write_atomic

LEARNING_RATE_KEYS = ("learning_rate", "lr")
_NOT_CURVES = ("epoch", "step", *LEARNING_RATE_KEYS)


@dataclass
class Series:
    """One line of a panel: (x, y) points and how to draw them."""

    label: str
    x: list[float]
    y: list[float]
    style: str = "o-"  # a matplotlib format string; "-" for dense per-step lines, "--" for reference levels


@dataclass
class Panel:
    """One plot: a title (the quantity), an x-axis label and its lines."""

    title: str
    series: list[Series] = field(default_factory=list)
    xlabel: str = "epoch"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_names(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-epoch quantities of a history (loss first, then eval_loss, then the others in their order)."""
    names = list(dict.fromkeys(key for row in history for key, value in row.items()
                               if key not in _NOT_CURVES and _number(value)))
    return sorted(names, key=lambda name: (name != "loss", name != "eval_loss"))


def epoch_series(history: Sequence[Mapping[str, Any]], key: str, label: str) -> Series:
    """The per-epoch values of `key` (epochs without it are left out)."""
    rows = [row for row in history if _number(row.get(key))]
    return Series(label, [float(row["epoch"]) for row in rows], [float(row[key]) for row in rows])


def curve_panels(history: Sequence[Mapping[str, Any]], log_history: Sequence[Mapping[str, Any]] = (),
                 baselines: Optional[Mapping[str, float]] = None) -> list[Panel]:
    """A run's panels: the loss (training loss per logging step when `log_history` has it, per epoch, and the
    validation loss), one panel per other per-epoch result (with its baseline level from `baselines`, keyed like the
    result), and the learning rate per logging step when logged."""
    baselines = baselines or {}
    loss = Panel("loss")
    steps = [row for row in log_history if _number(row.get("loss")) and _number(row.get("epoch"))]
    if steps:
        loss.series.append(Series("training loss (per logging step)", [float(r["epoch"]) for r in steps],
                                  [float(r["loss"]) for r in steps], style="-"))
    for key, label in (("loss", "training loss"), ("eval_loss", "validation loss")):
        series = epoch_series(history, key, label)
        if series.x:
            loss.series.append(series)
    panels = [loss] if loss.series else []
    for name in curve_names(history):
        if name in ("loss", "eval_loss"):
            continue
        panel = Panel(name, [epoch_series(history, name, "fine-tuned" if name in baselines else name)])
        if name in baselines and _number(baselines[name]):
            first, last = panel.series[0].x[0], panel.series[0].x[-1]
            panel.series.append(Series("baseline", [first, last], [float(baselines[name])] * 2, style="--"))
        panels.append(panel)
    rates = [row for row in log_history if _number(row.get("learning_rate")) and _number(row.get("step"))]
    if rates:
        panels.append(Panel("learning rate", [Series("learning rate", [float(r["step"]) for r in rates],
                                                     [float(r["learning_rate"]) for r in rates], style="-")],
                            xlabel="step"))
    return panels


def overlaid_panels(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Panel]:
    """One panel per per-epoch quantity found in any of the runs' histories, with one line per run (by name)."""
    names = curve_names([row for history in histories.values() for row in history])
    panels = []
    for name in names:
        series = [epoch_series(history, name, run) for run, history in histories.items()]
        panels.append(Panel(name, [s for s in series if s.x]))
    return panels


def plot_panels(panels: Sequence[Panel], path: str, title: Optional[str] = None) -> None:
    """Draw the panels side by side (up to three a row) into a PNG at `path`, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = max(1, min(3, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(5 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without pyplot's global state
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, panel in zip(axes, panels):
        for series in panel.series:
            axis.plot(series.x, series.y, series.style, label=series.label, markersize=4)
        axis.set_title(panel.title)
        axis.set_xlabel(panel.xlabel)
        if all(float(x).is_integer() for series in panel.series for x in series.x):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, 3, not 1.25
        axis.grid(alpha=0.3)
        if len(panel.series) > 1:
            axis.legend(fontsize="small")
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    if not panels:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no per-epoch results", ha="center", va="center")
        axes[0].set_axis_off()
    if title:
        figure.suptitle(title)
    write_atomic(path, lambda temp_path: figure.savefig(temp_path, format="png", dpi=100))
