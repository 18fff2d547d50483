"""PNG plots of run and sweep results.

Uses matplotlib's object API (``Figure`` + Agg canvas) rather than pyplot: no GUI backend, no global figure registry
to leak between the jobs of a multirun. Imports no torch, so ``grpolab-report`` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from grpolab.tracking.rundir import read_metrics

REWARD_KEY = "reward"


def per_reward_mean_keys(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """TRL's per-reward-function mean keys (``rewards/<name>/mean``) present in ``rows``, in first-seen order.

    >>> per_reward_mean_keys([{"reward": 1.0, "rewards/accuracy/mean": 1.0, "rewards/accuracy/std": 0.0}])
    ['rewards/accuracy/mean']
    """
    keys: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith("rewards/") and key.endswith("/mean"):
                keys[key] = None
    return list(keys)


def _series(rows: Sequence[Mapping[str, object]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), (int, float))]
    return [int(step) for step, _ in points], [float(value) for _, value in points]  # type: ignore[arg-type]


def _save(figure: Figure, out_png: Path) -> Path:
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(out_png, dpi=120, bbox_inches="tight")
    return out_png


def plot_reward_curve(metrics_jsonl: Path, out_png: Path, title: str) -> Path:
    """Total reward and every per-reward mean of one run against the optimizer step.

    >>> plot_reward_curve(Path("run/metrics.jsonl"), Path("run/reward_curve.png"), "lr=1e-3 seed=0")  # doctest: +SKIP
    """
    rows = read_metrics(Path(metrics_jsonl))
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for key in [REWARD_KEY, *per_reward_mean_keys(rows)]:
        steps, values = _series(rows, key)
        if steps:
            label = "reward (total)" if key == REWARD_KEY else key.removeprefix("rewards/").removesuffix("/mean")
            axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                      linewidth=2.0 if key == REWARD_KEY else 1.2, label=label)
    if not rows:
        axes.text(0.5, 0.5, "no train metrics logged", ha="center", va="center", transform=axes.transAxes)
    axes.set(xlabel="step", ylabel="mean reward", title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    return _save(figure, Path(out_png))


@dataclass(frozen=True)
class CurveBand:
    """A reward curve aggregated over seeds: mean and min/max envelope per step."""

    label: str
    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


def aggregate_curves(label: str, runs: Sequence[Sequence[Mapping[str, object]]], key: str = REWARD_KEY) -> CurveBand:
    """Mean and min/max over seeds at each step; a step counts the seeds that logged it (runs may stop early).

    >>> aggregate_curves("a", [[{"step": 1, "reward": 0.0}], [{"step": 1, "reward": 1.0}]]).mean
    [0.5]
    """
    by_step: dict[int, list[float]] = {}
    for rows in runs:
        for step, value in zip(*_series(rows, key)):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return CurveBand(
        label=label,
        steps=steps,
        mean=[sum(by_step[step]) / len(by_step[step]) for step in steps],
        low=[min(by_step[step]) for step in steps],
        high=[max(by_step[step]) for step in steps],
    )


def plot_reward_bands(bands: Sequence[CurveBand], out_png: Path, title: str) -> Path:
    """One line per configuration (mean over seeds) with a shaded min/max band."""
    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    for band in bands:
        if not band.steps:
            continue
        (line,) = axes.plot(band.steps, band.mean, linewidth=1.6, label=band.label)
        axes.fill_between(band.steps, band.low, band.high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set(xlabel="step", ylabel="train reward (mean over seeds, band: min-max)", title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best")
    return _save(figure, Path(out_png))


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def plot_metric_vs_value(
    points: Sequence[tuple[str, str, float]],
    out_png: Path,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """Scatter of a metric against one swept value with the per-value mean joined by a line.

    ``points`` are ``(series label, swept value as written in the override, metric)``; one series per combination
    of the other swept keys. Numeric values get a numeric axis (log-scaled when they span a decade or more),
    anything else a categorical one in first-seen order.

    >>> points = [("", "1e-3", 0.5), ("", "1e-2", 0.7)]
    >>> plot_metric_vs_value(points, Path("acc.png"), "lr", "accuracy", "")  # doctest: +SKIP
    """
    values = list(dict.fromkeys(value for _, value, _ in points))
    numbers = [_as_number(value) for value in values]
    numeric = all(number is not None for number in numbers)
    if numeric:
        position = {value: number for value, number in zip(values, numbers)}
    else:
        position = {value: float(index) for index, value in enumerate(values)}

    figure = Figure(figsize=(6.5, 4))
    axes = figure.add_subplot()
    for label in dict.fromkeys(series for series, _, _ in points):
        series_points = [(position[value], metric) for series, value, metric in points if series == label]
        xs = sorted({x for x, _ in series_points})
        means = [sum(m for x, m in series_points if x == at) / sum(1 for x, _ in series_points if x == at) for at in xs]
        (line,) = axes.plot(xs, means, marker="o", label=label or None)
        axes.scatter([x for x, _ in series_points], [m for _, m in series_points], color=line.get_color(),
                     alpha=0.4, s=14)
    positive = [number for number in numbers if number is not None and number > 0]
    if numeric and len(positive) == len(numbers) and max(positive) / min(positive) >= 10:
        axes.set_xscale("log")
    if not numeric:
        axes.set_xticks(list(position.values()), labels=values, rotation=30, ha="right")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    if any(label for label, _, _ in points):
        axes.legend(fontsize=7)
    return _save(figure, Path(out_png))
