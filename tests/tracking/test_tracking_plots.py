"""Plots: PNGs from metrics files, seed aggregation, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from grpolab.tracking.plots import aggregate_curves, per_reward_mean_keys, plot_metric_vs_value, plot_reward_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_reward_curve_png_from_metrics_with_per_reward_means(tmp_path: Path) -> None:
    rows = [
        {"split": "train", "step": step, "reward": 0.1 * step, "rewards/accuracy/mean": 0.05 * step,
         "rewards/format/mean": 1.0}
        for step in range(1, 6)
    ]
    metrics = write_metrics(tmp_path / "metrics.jsonl", [*rows, {"split": "eval", "step": 5, "reward": 9.0}])
    out = plot_reward_curve(metrics, tmp_path / "plots" / "reward_curve.png", title="lr=0.1")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5_000
    assert per_reward_mean_keys(rows) == ["rewards/accuracy/mean", "rewards/format/mean"]


def test_reward_curve_png_for_an_empty_metrics_file(tmp_path: Path) -> None:
    out = plot_reward_curve(tmp_path / "missing.jsonl", tmp_path / "curve.png", title="nothing logged")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_aggregate_curves_over_seeds_of_unequal_length() -> None:
    seed_a = [{"step": 1, "reward": 0.0}, {"step": 2, "reward": 1.0}, {"step": 3, "reward": 0.5}]
    seed_b = [{"step": 1, "reward": 0.5}, {"step": 2, "reward": None}]  # stopped early, one null
    band = aggregate_curves("lr=0.1", [seed_a, seed_b])
    assert band.steps == [1, 2, 3]
    assert band.mean == [0.25, 1.0, 0.5]
    assert band.low == [0.0, 1.0, 0.5] and band.high == [0.5, 1.0, 0.5]


def test_metric_vs_value_png_numeric_and_categorical(tmp_path: Path) -> None:
    numeric = [("", "1e-4", 0.1), ("", "1e-2", 0.5), ("", "1e-2", 0.7)]
    categorical = [("beta=0", "adamw", 0.4), ("beta=0.1", "sgd", 0.2)]
    for name, points in (("numeric", numeric), ("categorical", categorical)):
        out = plot_metric_vs_value(points, tmp_path / f"{name}.png", "x", "accuracy", name)
        assert out.read_bytes()[:8] == PNG_MAGIC


def test_plots_do_not_import_torch() -> None:
    code = "import sys, grpolab.tracking.plots; assert 'torch' not in sys.modules, 'plots imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
