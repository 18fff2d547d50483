"""Plots: PNGs from run directories, seed aggregation, readable sweep axes, and no torch import.

Figures are inspected through matplotlib's own objects (axes, lines, tick labels) after they were saved.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from grpolab.tracking.plots import (
    aggregate_curves,
    metric_vs_value_figure,
    number_labels,
    per_reward_mean_keys,
    plot_run,
    reward_bands_figure,
    run_dir_figure,
    save_png,
    wants_log_axis,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, rows: list[dict], summary: dict | None = None, overrides: list[str] | None = None,
              choices: dict | None = None) -> Path:
    """A run directory as a job leaves it: metrics.jsonl, summary.json, manifest.json, .hydra/hydra.yaml."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if overrides is not None:
        (run_dir / "manifest.json").write_text(json.dumps({"seed": 0, "overrides": overrides, "config": {}}))
    if choices is not None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    return run_dir


def x_tick_texts(figure: Figure) -> list[str]:
    return [label.get_text() for label in figure.axes[0].get_xticklabels()]


def assert_no_overlapping_x_labels(figure: Figure) -> None:
    renderer = figure.canvas.get_renderer()
    boxes = sorted((label.get_window_extent(renderer) for label in figure.axes[0].get_xticklabels()
                    if label.get_text()), key=lambda box: box.x0)
    assert boxes, "no x tick label at all"
    for left, right in itertools.pairwise(boxes):
        assert left.x1 <= right.x0, f"tick labels overlap: {left} / {right}"


# ------------------------------------------------------------------------------------------------- run plot

CHOICES = {"model": "tiny", "data": "arithmetic", "tokenizer_mode": "text", "experiment": None,
           "hydra/launcher": "basic"}
TRAIN = [{"split": "train", "step": step, "reward": 0.1 * step, "rewards/accuracy/mean": 0.05 * step,
          "rewards/format/mean": 1.0} for step in range(1, 41)]


def test_run_plot_has_a_titled_reward_panel_and_a_held_out_accuracy_panel(tmp_path: Path) -> None:
    rows = [*TRAIN[:20], {"split": "eval", "step": 20, "accuracy": 0.4, "reward": 9.0}, *TRAIN[20:],
            {"split": "eval", "step": 30, "loss": 1.0}]  # an eval row without accuracy is not a point
    summary = {"status": "completed", "steps": 40, "eval_before": {"accuracy": 0.1, "format": 0.0},
               "eval_after": {"accuracy": 0.5}}
    run_dir = write_run(tmp_path / "run", rows, summary, ["optimizer.lr=0.0003", "seed=1"], CHOICES)

    out = plot_run(run_dir, run_dir / "reward_curve.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    figure = run_dir_figure(run_dir)
    save_png(figure, tmp_path / "inspected.png")
    assert figure.get_suptitle() == "grpolab run: model=tiny data=arithmetic\noptimizer.lr=0.0003 seed=1"
    reward_axes, accuracy_axes = figure.axes
    assert [line.get_label() for line in reward_axes.get_lines()] == ["reward (total)", "accuracy", "format"]
    total = reward_axes.get_lines()[0]
    assert list(total.get_xdata()) == list(range(1, 41)) and total.get_ydata()[-1] == pytest.approx(4.0)
    accuracy_line = accuracy_axes.get_lines()[0]
    assert accuracy_line.get_label() == "held-out accuracy"
    assert list(accuracy_line.get_xdata()) == [0, 20, 40] and list(accuracy_line.get_ydata()) == [0.1, 0.4, 0.5]
    markers = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
               for line in accuracy_axes.get_lines()[1:]}
    assert markers == {"before": ([0], [0.1]), "after": ([40], [0.5])}
    assert [text.get_text() for text in accuracy_axes.texts] == ["before 0.100", "after 0.500"]
    assert accuracy_axes.get_ylim() == pytest.approx((-0.05, 1.08))


def test_a_run_with_tools_draws_its_tool_calls_per_completion_on_the_right_axis(tmp_path: Path) -> None:
    rows = [{**row, "tools/call_frequency": 0.02 * row["step"], "tools/failure_frequency": 0.0} for row in TRAIN]
    figure = run_dir_figure(write_run(tmp_path / "run", rows, {"steps": 40}, [], CHOICES))
    reward_axes, accuracy_axes, tool_axes = figure.axes
    [calls] = tool_axes.get_lines()
    assert calls.get_label() == "tool calls / completion" and calls.get_ydata()[-1] == pytest.approx(0.8)
    assert tool_axes.get_ylabel() == "tool calls / completion" and tool_axes.get_ylim()[1] == pytest.approx(1.08)
    legend = [text.get_text() for text in reward_axes.get_legend().get_texts()]
    assert legend == ["reward (total)", "accuracy", "format", "tool calls / completion"]


def test_default_run_title_and_a_run_without_evaluation(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "12-00-00-000001", TRAIN[:3], {"status": "failed", "steps": 3}, [], CHOICES)
    figure = run_dir_figure(run_dir)
    assert figure.get_suptitle() == "grpolab run: model=tiny data=arithmetic\ndefault config"
    accuracy_axes = figure.axes[1]
    assert not accuracy_axes.get_lines()
    assert [text.get_text() for text in accuracy_axes.texts] == ["no held-out evaluation recorded"]

    overridden = write_run(tmp_path / "other", TRAIN[:3], {}, ["model=smollm2", "experiment=dapo"],
                           {**CHOICES, "model": "smollm2", "experiment": "dapo"})
    assert run_dir_figure(overridden).get_suptitle() == "grpolab run: model=smollm2 data=arithmetic\nexperiment=dapo"


def test_run_plot_of_a_directory_with_nothing_logged(tmp_path: Path) -> None:
    figure = run_dir_figure(tmp_path / "empty")
    assert figure.get_suptitle() == "grpolab run: run directory empty"
    assert [text.get_text() for text in figure.axes[0].texts] == ["no train metrics logged"]
    assert plot_run(tmp_path / "empty", tmp_path / "curve.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------------------------- sweep plots


def test_aggregate_curves_over_seeds_of_unequal_length() -> None:
    seed_a = [{"step": 1, "reward": 0.0}, {"step": 2, "reward": 1.0}, {"step": 3, "reward": 0.5}]
    seed_b = [{"step": 1, "reward": 0.5}, {"step": 2, "reward": None}]  # stopped early, one null
    band = aggregate_curves("lr=0.1", [seed_a, seed_b])
    assert band.steps == [1, 2, 3]
    assert band.mean == [0.25, 1.0, 0.5]
    assert band.low == [0.0, 1.0, 0.5] and band.high == [0.5, 1.0, 0.5]
    assert per_reward_mean_keys([{"reward": 1.0, "rewards/format/mean": 1.0, "rewards/format/std": 0.0}]) == [
        "rewards/format/mean"]


def test_reward_bands_shade_a_seed_envelope_and_draw_single_runs_as_lines() -> None:
    seeds = [[{"step": 1, "reward": 0.0}, {"step": 2, "reward": 0.4}], [{"step": 1, "reward": 0.2}, {"step": 2,
                                                                                                     "reward": 0.6}]]
    figure = reward_bands_figure([aggregate_curves("lr=0.1", seeds)], "over seeds")
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["lr=0.1"]
    assert sum(isinstance(item, PolyCollection) for item in figure.axes[0].collections) == 1

    per_seed = reward_bands_figure([aggregate_curves(f"seed {n}", [rows]) for n, rows in enumerate(seeds)], "per seed")
    assert [line.get_label() for line in per_seed.axes[0].get_lines()] == ["seed 0", "seed 1"]
    assert list(per_seed.axes[0].get_lines()[1].get_ydata()) == [0.2, 0.6]
    assert not per_seed.axes[0].collections  # nothing to shade around one run


def test_learning_rates_get_a_log_axis_with_one_readable_label_per_value(tmp_path: Path) -> None:
    # as Hydra writes swept floats into the job overrides
    points = [("", "0.0001", 0.1), ("", "0.000125", 0.2), ("", "0.00015", 0.25), ("", "0.0003", 0.3),
              ("", "0.0003", 0.4)]
    figure = metric_vs_value_figure(points, "optimizer.lr", "accuracy", "accuracy vs optimizer.lr")
    save_png(figure, tmp_path / "lr.png")
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and axes.get_xlabel() == "optimizer.lr"
    assert list(axes.get_xticks()) == pytest.approx([1e-4, 1.25e-4, 1.5e-4, 3e-4])
    assert x_tick_texts(figure) == ["1e-4", "1.25e-4", "1.5e-4", "3e-4"]
    assert not any(label.get_text() for label in axes.get_xticklabels(minor=True))  # no "2x10^-4" in between
    assert_no_overlapping_x_labels(figure)
    mean_line = axes.get_lines()[0]
    assert list(mean_line.get_ydata()) == pytest.approx([0.1, 0.2, 0.25, 0.35])


def test_crowded_and_many_values_never_overlap(tmp_path: Path) -> None:
    crowded = [("", str(1e-4 * (1 + index / 100)), 0.1 * index) for index in range(10)]  # 1e-4 ... 1.09e-4
    figure = metric_vs_value_figure(crowded, "optimizer.lr", "accuracy", "")
    save_png(figure, tmp_path / "crowded.png")
    assert figure.axes[0].get_xscale() == "log"
    texts = x_tick_texts(figure)
    assert texts[0] == "1e-4" and 1 <= sum(bool(text) for text in texts) < 10  # some blanked, never overlapping
    assert_no_overlapping_x_labels(figure)

    searched = [("", str(10 ** (-5 + 2 * index / 39)), 0.5) for index in range(40)]  # an Optuna search, 1e-5..1e-3
    figure = metric_vs_value_figure(searched, "optimizer.lr", "accuracy", "")
    save_png(figure, tmp_path / "searched.png")
    assert figure.axes[0].get_xscale() == "log"
    assert [text for text in x_tick_texts(figure) if text] == ["1e-5", "2e-5", "5e-5", "1e-4", "2e-4", "5e-4", "1e-3"]
    assert_no_overlapping_x_labels(figure)


def test_linear_axis_for_values_that_are_not_all_positive_or_close_together(tmp_path: Path) -> None:
    figure = metric_vs_value_figure([("", "0.0", 0.1), ("", "0.04", 0.2), ("", "0.1", 0.3)], "trainer.beta", "acc", "")
    save_png(figure, tmp_path / "beta.png")
    assert figure.axes[0].get_xscale() == "linear" and x_tick_texts(figure) == ["0", "0.04", "0.1"]

    figure = metric_vs_value_figure([("", "64", 0.1), ("", "128", 0.2)], "data.train_size", "acc", "")
    save_png(figure, tmp_path / "size.png")
    assert figure.axes[0].get_xscale() == "linear" and x_tick_texts(figure) == ["64", "128"]

    assert wants_log_axis("optimizer.weight_decay", [0.01, 0.02]) and wants_log_axis("trainer.beta", [0.01, 0.02])
    assert wants_log_axis("batch.prompts_per_step", [4, 16]) and not wants_log_axis("data.train_size", [64, 128])
    assert not wants_log_axis("flower", [1.0, 1.1])  # "lr" only as a whole part of the key
    assert number_labels([1.2341e-4, 1.2342e-4]) == ["1.2341e-4", "1.2342e-4"]  # as many digits as keep them apart


def test_categorical_values_keep_their_first_seen_order(tmp_path: Path) -> None:
    points = [("beta=0", "sgd", 0.4), ("beta=0.1", "adamw", 0.2), ("beta=0", "adamw", 0.3)]
    figure = metric_vs_value_figure(points, "optimizer", "accuracy", "")
    save_png(figure, tmp_path / "categorical.png")
    assert x_tick_texts(figure) == ["sgd", "adamw"]
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["beta=0", "beta=0.1"]


@pytest.mark.slow  # a new interpreter
def test_plots_do_not_import_torch() -> None:
    code = "import sys, grpolab.tracking.plots; assert 'torch' not in sys.modules, 'plots imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
