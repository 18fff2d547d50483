"""PNG plots of run and sweep results.

Uses matplotlib's object API (``Figure`` + Agg canvas) rather than pyplot: no GUI backend, no global figure registry
to leak between the jobs of a multirun. Imports no torch, so ``grpolab-report`` stays fast. Each plot has a
``*_figure`` builder (returns the ``Figure``, for inspection) and a ``plot_*`` function that saves it as a PNG.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from grpolab.tracking.jsonfiles import read_json
from grpolab.tracking.rundir import (
    METRICS_FILE,
    SUMMARY_FILE,
    override_key,
    read_hydra_choices,
    read_metrics,
    read_overrides,
)

REWARD_KEY = "reward"
ACCURACY_KEY = "accuracy"
# TRL's tool calls per completion, logged by runs with tools (environment=...): drawn on the reward panel's right axis.
TOOL_CALLS_KEY = "tools/call_frequency"
# Config groups named in a run plot's title before the overrides: what was trained on what.
TITLE_GROUPS = ("model", "data")
TITLE_WIDTH = 110
# A swept key whose dotted parts contain one of these is plotted on a log axis (when all its values are positive),
# as is any positive numeric key whose values span at least LOG_AXIS_MIN_RATIO.
LOG_SCALE_KEY_PARTS = ("lr", "learning_rate", "beta", "weight_decay")
LOG_AXIS_MIN_RATIO = 3.0
# Up to this many distinct swept values get a tick each, labelled as the value; more get automatic ticks.
MAX_VALUE_TICKS = 12
TICK_LABEL_GAP_PX = 4


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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _series(rows: Sequence[Mapping[str, object]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["step"], value) for row in rows if (value := _number(row.get(key))) is not None]
    return [int(step) for step, _ in points], [value for _, value in points]  # type: ignore[call-overload]


def save_png(figure: Figure, out_png: Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(out_png, dpi=120, bbox_inches="tight")
    return out_png


# ------------------------------------------------------------------------------------------------- one run


def run_title(run_path: Path) -> str:
    """``grpolab run: model=tiny data=arithmetic`` and, below, the job's overrides or ``default config``.

    >>> run_title(Path("outputs/multirun/2024-05-01/12-00-00/3"))  # doctest: +SKIP
    'grpolab run: model=tiny data=arithmetic\\noptimizer.lr=0.0003 seed=1'
    """
    choices = read_hydra_choices(run_path)
    overrides = read_overrides(run_path)
    headline_groups = [group for group in TITLE_GROUPS if group in choices]
    headline = " ".join(f"{group}={choices[group]}" for group in headline_groups)
    if overrides is None:
        detail = f"run directory {run_path.name}"
    else:  # an override of a headline group is already shown there
        detail = " ".join(override for override in overrides
                          if override_key(override) not in headline_groups) or "default config"
    lines = [f"grpolab run: {headline}", detail] if headline else [f"grpolab run: {detail}"]
    return "\n".join(textwrap.fill(line, TITLE_WIDTH) for line in lines)


@dataclass(frozen=True)
class AccuracyPoint:
    step: int
    accuracy: float
    when: str  # "before" (eval_before, step 0), "during" (an eval row of metrics.jsonl), "after" (eval_after)


def held_out_accuracy(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> list[AccuracyPoint]:
    """Held-out accuracy over the run: ``eval_before`` at step 0, every ``split: eval`` row carrying ``accuracy``,
    ``eval_after`` at the last step (``summary["steps"]``, else the last logged step).

    >>> held_out_accuracy([{"split": "eval", "step": 20, "accuracy": 0.4}],
    ...                   {"steps": 40, "eval_before": {"accuracy": 0.1}, "eval_after": {"accuracy": 0.5}})[1]
    AccuracyPoint(step=20, accuracy=0.4, when='during')
    """
    def accuracy_of(evaluation: Any) -> float | None:
        return _number(evaluation.get(ACCURACY_KEY)) if isinstance(evaluation, Mapping) else None

    points = []
    if (before := accuracy_of(summary.get("eval_before"))) is not None:
        points.append(AccuracyPoint(0, before, "before"))
    points += [AccuracyPoint(int(row["step"]), accuracy, "during") for row in rows
               if row.get("split") == "eval" and (accuracy := _number(row.get(ACCURACY_KEY))) is not None]
    if (after := accuracy_of(summary.get("eval_after"))) is not None:
        steps = summary.get("steps")
        last = steps if isinstance(steps, int) else max((int(row["step"]) for row in rows), default=0)
        points.append(AccuracyPoint(last, after, "after"))
    return points


def run_figure(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], title: str) -> Figure:
    """Left: total reward and every per-reward mean per step (train rows), and with tools the tool calls per
    completion (dashed, right axis). Right: held-out accuracy over the run."""
    train = [row for row in rows if row.get("split", "train") == "train"]
    figure = Figure(figsize=(11, 4.4), layout="constrained")  # room for a two-line suptitle
    reward_axes, accuracy_axes = figure.subplots(1, 2, sharex=True, gridspec_kw={"width_ratios": (3, 2)})
    for key in [REWARD_KEY, *per_reward_mean_keys(train)]:
        steps, values = _series(train, key)
        if steps:
            label = "reward (total)" if key == REWARD_KEY else key.removeprefix("rewards/").removesuffix("/mean")
            reward_axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                             linewidth=2.0 if key == REWARD_KEY else 1.2, label=label)
    if not train:
        reward_axes.text(0.5, 0.5, "no train metrics logged", ha="center", va="center",
                         transform=reward_axes.transAxes)
    reward_axes.set(xlabel="step", ylabel="mean reward", title="train reward")
    handles, labels = reward_axes.get_legend_handles_labels()
    steps, calls = _series(train, TOOL_CALLS_KEY)
    if steps:
        tool_axes = reward_axes.twinx()
        tool_axes.plot(steps, calls, color="tab:purple", linestyle="--", linewidth=1.2, label="tool calls / completion")
        tool_axes.set(ylabel="tool calls / completion", ylim=(0, max(1.0, max(calls)) * 1.08))
        more_handles, more_labels = tool_axes.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        reward_axes.legend(handles, labels, fontsize=8)

    points = sorted(held_out_accuracy(rows, summary), key=lambda point: point.step)
    if points:
        accuracy_axes.plot([p.step for p in points], [p.accuracy for p in points], color="tab:green", linewidth=1.4,
                           marker="o", markersize=4, label="held-out accuracy")
        for point in points:
            if point.when != "during":
                accuracy_axes.plot([point.step], [point.accuracy], linestyle="none", markersize=8,
                                   marker="s" if point.when == "before" else "D",
                                   color="tab:gray" if point.when == "before" else "tab:red", label=point.when)
                # before sits at the left edge, after at the right one: align the text inwards
                accuracy_axes.annotate(f"{point.when} {point.accuracy:.3f}", (point.step, point.accuracy),
                                       textcoords="offset points", xytext=(0, 8), fontsize=8,
                                       ha="left" if point.when == "before" else "right")
        accuracy_axes.legend(fontsize=8, loc="best")
    else:
        accuracy_axes.text(0.5, 0.5, "no held-out evaluation recorded", ha="center", va="center",
                           transform=accuracy_axes.transAxes)
    accuracy_axes.set(xlabel="step", ylabel="held-out accuracy", title="held-out accuracy", ylim=(-0.05, 1.08))
    for axes in (reward_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    return figure


def run_dir_figure(run_path: Path) -> Figure:
    """``run_figure`` of a run directory: its ``metrics.jsonl`` (all splits), ``summary.json`` and ``run_title``."""
    run_path = Path(run_path)
    rows = read_metrics(run_path / METRICS_FILE, split=None)
    return run_figure(rows, read_json(run_path / SUMMARY_FILE) or {}, run_title(run_path))


def plot_run(run_path: Path, out_png: Path) -> Path:
    """The run plot (``reward_curve.png``, written at the end of every job) of a run directory.

    >>> run = Path("outputs/2024-05-01/12-00-00")
    >>> plot_run(run, run / "reward_curve.png")  # doctest: +SKIP
    """
    return save_png(run_dir_figure(run_path), out_png)


# ------------------------------------------------------------------------------------------------ sweeps


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


def reward_bands_figure(bands: Sequence[CurveBand], title: str,
                        ylabel: str = "train reward (mean over seeds, band: min-max)") -> Figure:
    """One line per band (its mean) with a shaded min/max envelope; a band of one run is a plain line."""
    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    for band in bands:
        if not band.steps:
            continue
        (line,) = axes.plot(band.steps, band.mean, linewidth=1.6, label=band.label)
        if band.low != band.high:
            axes.fill_between(band.steps, band.low, band.high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set(xlabel="step", ylabel=ylabel, title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best")
    return figure


def plot_reward_bands(bands: Sequence[CurveBand], out_png: Path, title: str,
                      ylabel: str = "train reward (mean over seeds, band: min-max)") -> Path:
    """``reward_bands_figure`` saved as a PNG."""
    return save_png(reward_bands_figure(bands, title, ylabel), Path(out_png))


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def is_log_scale_key(key: str) -> bool:
    """``optimizer.lr``, ``trainer.learning_rate``, ``trainer.beta``, ``optimizer.weight_decay`` are log-scale keys.

    >>> is_log_scale_key("optimizer.lr"), is_log_scale_key("data.train_size")
    (True, False)
    """
    parts = key.lower().split(".")
    return any(part == "lr" or part.endswith("_lr") or part.startswith("lr_")
               or any(name in part for name in LOG_SCALE_KEY_PARTS if name != "lr") for part in parts)


def wants_log_axis(key: str, numbers: Sequence[float]) -> bool:
    """All values positive and either a log-scale key or spanning at least ``LOG_AXIS_MIN_RATIO``.

    >>> wants_log_axis("optimizer.lr", [1e-4, 1.25e-4]), wants_log_axis("batch", [8, 32]), wants_log_axis("x", [0, 1])
    (True, True, False)
    """
    if not numbers or min(numbers) <= 0:
        return False
    return is_log_scale_key(key) or max(numbers) / min(numbers) >= LOG_AXIS_MIN_RATIO


def _scientific(numbers: Sequence[float]) -> bool:
    nonzero = [abs(number) for number in numbers if number != 0]
    return bool(nonzero) and (min(nonzero) < 1e-3 or max(nonzero) >= 1e4)


def _number_label(number: float, scientific: bool, digits: int = 3) -> str:
    if number == 0:
        return "0"
    if not scientific:
        return f"{number:.{digits}g}"
    mantissa, _, exponent = f"{number:.{digits - 1}e}".partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def number_labels(numbers: Sequence[float]) -> list[str]:
    """Short, distinct labels for the numbers of one axis: scientific (``1.25e-4``) when any nonzero one is below
    1e-3 or reaches 1e4, plain (``0.04``) otherwise; as few significant digits as keep distinct numbers apart.

    >>> number_labels([1e-4, 1.25e-4, 1.5e-4, 3e-4])
    ['1e-4', '1.25e-4', '1.5e-4', '3e-4']
    >>> number_labels([0.0, 0.04, 0.1])
    ['0', '0.04', '0.1']
    """
    scientific = _scientific(numbers)
    distinct = len(set(numbers))
    for digits in range(3, 10):
        labels = [_number_label(number, scientific, digits) for number in numbers]
        if len(set(labels)) == distinct:
            break
    return labels


def _thin_overlapping_x_labels(figure: Figure, axes: Axes) -> None:
    """Blank every x tick label that would overlap the one before it (ticks stay), so none ever overlap."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    low, high = sorted(axes.get_xlim())
    ticks = [(location, label) for location, label in zip(axes.xaxis.get_majorticklocs(),
                                                            axes.xaxis.get_majorticklabels())
             if low <= location <= high]
    kept: list[str] = []
    right_edge = -math.inf
    for _, label in ticks:
        box = label.get_window_extent(renderer)
        if label.get_text() and box.x0 >= right_edge + TICK_LABEL_GAP_PX:
            kept.append(label.get_text())
            right_edge = box.x1
        else:
            kept.append("")
    axes.set_xticks([location for location, _ in ticks], labels=kept)


def _numeric_x_axis(axes: Axes, key: str, numbers: Sequence[float]) -> None:
    """Log or linear scale from the values; a tick per value (labelled as the value) when they are few."""
    log = wants_log_axis(key, numbers)
    if log:
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # matplotlib labels minor ticks on short log ranges
    distinct = sorted(set(numbers))
    if len(distinct) <= MAX_VALUE_TICKS:
        axes.set_xticks(distinct, labels=number_labels(distinct))
        return
    if log:
        decades = math.log10(max(distinct) / min(distinct))
        subs = (1.0,) if decades >= 3 else (1.0, 2.0, 5.0) if decades >= 1 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    scientific = _scientific(distinct)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda number, _: _number_label(number, scientific)))


def metric_vs_value_figure(points: Sequence[tuple[str, str, float]], key: str, ylabel: str, title: str) -> Figure:
    """Scatter of a metric against one swept key's values with the per-value mean joined by a line.

    ``points`` are ``(series label, value as written in the override, metric)``; one series per combination of the
    other swept keys. Numeric values get a numeric axis (log-scaled per ``wants_log_axis``, readable tick labels
    that never overlap), anything else a categorical one in first-seen order.
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
    if numeric:
        _numeric_x_axis(axes, key, list(position.values()))
    else:
        axes.set_xticks(list(position.values()), labels=values, rotation=30, ha="right")
    axes.set(xlabel=key, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    if any(label for label, _, _ in points):
        axes.legend(fontsize=7)
    if numeric:
        _thin_overlapping_x_labels(figure, axes)
    return figure


def plot_metric_vs_value(points: Sequence[tuple[str, str, float]], out_png: Path, key: str, ylabel: str,
                         title: str) -> Path:
    """``metric_vs_value_figure`` saved as a PNG.

    >>> points = [("", "1e-4", 0.5), ("", "3e-4", 0.7)]
    >>> plot_metric_vs_value(points, Path("acc.png"), "optimizer.lr", "accuracy", "")  # doctest: +SKIP
    """
    return save_png(metric_vs_value_figure(points, key, ylabel, title), Path(out_png))
