"""grpolab.report over run directories written in the documented file format (see grpolab.tracking.rundir)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from grpolab.report import build_report, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SQRT2 = math.sqrt(2)


def make_run(
    run_dir: Path,
    overrides: list[str],
    rewards: list[float],
    status: str = "completed",
    reason: str | None = None,
    eval_after: float | None = None,
    eval_before: float | None = 0.1,
    wall_time_s: float = 10.0,
    step_time_s: float = 1.0,
) -> Path:
    """A run directory as a real job leaves it: .hydra/overrides.yaml, manifest, metrics.jsonl, summary."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {override}\n" for override in overrides))
    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), None)
    (run_dir / "manifest.json").write_text(json.dumps({"seed": seed, "overrides": overrides, "config": {}}))
    rows = [
        {"split": "train", "step": step, "time_s": step * step_time_s, "step_time_s": step_time_s, "loss": 0.0,
         "reward": reward, "rewards/accuracy/mean": reward}
        for step, reward in enumerate(rewards, start=1)
    ]
    rows.append({"split": "eval", "step": len(rewards), "time_s": 99.0, "reward": 123.0})  # must be ignored
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary: dict[str, Any] = {
        "status": status, "reason": reason, "steps": len(rewards), "wall_time_s": wall_time_s,
        "eval_before": None if eval_before is None else {"accuracy": eval_before},
        "eval_after": None if eval_after is None else {"accuracy": eval_after, "format": 1.0},
        "train_reward_final": rewards[-1] if rewards else None, "train_reward_final_window": 1,
        "step_time_s": step_time_s,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A 3-value lr sweep over seeds: one failed job, one killed job (still 'running'), a constant override."""
    root = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    lr = "optimizer.lr"
    make_run(root / "0", [f"{lr}=0.1", "seed=0", "model=tiny"], [0.0, 0.2, 0.4, 0.6], eval_after=0.5,
             wall_time_s=10.0, step_time_s=1.0)
    make_run(root / "1", [f"{lr}=0.1", "seed=1", "model=tiny"], [0.1, 0.3, 0.5, 0.8], eval_after=0.7,
             wall_time_s=12.0, step_time_s=1.5)
    make_run(root / "2", [f"{lr}=0.01", "seed=0", "model=tiny"], [0.0, 0.0, 0.1, 0.2], eval_after=0.2,
             eval_before=0.0, wall_time_s=9.0, step_time_s=0.5)
    make_run(root / "3", [f"{lr}=0.01", "seed=1", "model=tiny"], [0.9], status="failed",
             reason="RuntimeError: out of memory", eval_after=None)
    make_run(root / "4", [f"{lr}=0.01", "seed=2", "model=tiny"], [0.0, 0.1, 0.3, 0.3], eval_after=0.4,
             eval_before=0.2, wall_time_s=11.0, step_time_s=0.7)
    make_run(root / "10", [f"{lr}=1.0", "seed=0", "model=tiny"], [0.0], status="running", eval_after=None)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["optimizer.lr"]: row for row in csv.DictReader(handle)}


def test_sweep_table_means_stds_and_failed_jobs(sweep: Path) -> None:
    report = build_report(sweep, last_k=2)

    assert report.swept_keys == ["optimizer.lr"]  # seed excluded, model=tiny constant
    rows = {row.values["optimizer.lr"]: row for row in report.rows}
    assert [row.values["optimizer.lr"] for row in report.rows] == ["0.01", "0.1", "1.0"]

    high = rows["0.1"]  # seeds 0 and 1; final reward = mean of the last 2 logged rewards
    assert high.n_seeds == 2 and not high.failed
    assert high.train_reward_final.mean == pytest.approx((0.5 + 0.65) / 2, abs=1e-15)
    assert high.train_reward_final.std == pytest.approx(0.15 / SQRT2, abs=1e-15)
    assert high.eval_after_accuracy.mean == pytest.approx(0.6, abs=1e-15)
    assert high.eval_after_accuracy.std == pytest.approx(0.2 / SQRT2, abs=1e-15)
    assert high.eval_before_accuracy.mean == pytest.approx(0.1) and high.eval_before_accuracy.std == 0.0
    assert high.wall_time_s.mean == 11.0 and high.step_time_s.mean == 1.25

    low = rows["0.01"]  # seeds 0 and 2 completed; seed 1 failed and is not averaged in
    assert low.n_seeds == 2 and [run.name for run in low.failed] == ["3"]
    assert low.train_reward_final.mean == pytest.approx((0.15 + 0.3) / 2, abs=1e-15)
    assert low.train_reward_final.std == pytest.approx(0.15 / SQRT2, abs=1e-15)
    assert low.eval_after_accuracy.mean == pytest.approx(0.3, abs=1e-15)
    assert low.eval_before_accuracy.mean == pytest.approx(0.1, abs=1e-15)
    assert low.wall_time_s.mean == 10.0 and low.step_time_s.mean == pytest.approx(0.6)

    killed = rows["1.0"]
    assert killed.n_seeds == 0 and killed.failed[0].status == "running"
    assert killed.train_reward_final.mean is None and killed.eval_after_accuracy.mean is None

    table = csv_rows(sweep / "report.csv")
    assert float(table["0.1"]["train_reward_final_mean"]) == high.train_reward_final.mean
    assert float(table["0.1"]["eval_after_accuracy_std"]) == high.eval_after_accuracy.std
    assert (table["0.01"]["n_seeds"], table["0.01"]["n_failed"], table["0.01"]["seeds"]) == ("2", "1", "0;2")
    assert table["1.0"]["eval_after_accuracy_mean"] == "" and table["1.0"]["n_failed"] == "1"

    markdown = (sweep / "report.md").read_text()
    assert "| optimizer.lr | seeds | failed | final reward (last 2) |" in markdown
    assert "| 0.1 | 2 | 0 | 0.5750 ± 0.1061 | 0.6000 ± 0.1414 | 0.1000 ± 0.0000 | 11.0 | 1.250 |" in markdown
    assert "| 0.01 | 2 | **1** | 0.2250 ± 0.1061 | 0.3000 ± 0.1414 |" in markdown
    assert "| 1.0 | 0 | **1** | — | — |" in markdown
    assert "| 3 | optimizer.lr=0.01 | 1 | FAILED | RuntimeError: out of memory |" in markdown
    assert "| 10 | optimizer.lr=1.0 | 0 | RUNNING | no final status" in markdown

    for name in ("reward_curves.png", "accuracy_vs_optimizer.lr.png"):
        assert (sweep / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in markdown


def test_final_reward_falls_back_to_the_summary_without_metrics(sweep: Path) -> None:
    (sweep / "0" / "metrics.jsonl").unlink()  # e.g. deleted to save space: the summary value is used
    report = build_report(sweep, last_k=1, plots=False)
    high = next(row for row in report.rows if row.values["optimizer.lr"] == "0.1")
    assert high.train_reward_final.mean == pytest.approx((0.6 + 0.8) / 2, abs=1e-15)
    assert not (sweep / "reward_curves.png").exists()


def test_two_swept_keys_and_a_directory_of_single_runs_found_recursively(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    values = [("adamw", "0.0", 0, 0.5), ("adamw", "0.1", 0, 0.6), ("sgd", "0.0", 0, 0.1), ("sgd", "0.0", 1, 0.3)]
    for index, (optimizer, beta, seed, accuracy) in enumerate(values):
        make_run(root / "2024-05-01" / f"12-00-0{index}", [f"optimizer={optimizer}", f"trainer.beta={beta}",
                 f"seed={seed}"], [0.0, accuracy], eval_after=accuracy)
    make_run(root / "2024-05-01" / "12-00-09" / "wandb" / "stray", ["seed=0"], [0.0], eval_after=0.0)  # ignored

    report = build_report(root, last_k=1)
    assert len(report.runs) == 4
    assert report.swept_keys == ["optimizer", "trainer.beta"]
    sgd = next(row for row in report.rows if row.values == {"optimizer": "sgd", "trainer.beta": "0.0"})
    assert sgd.n_seeds == 2 and sgd.eval_after_accuracy.mean == pytest.approx(0.2, abs=1e-15)
    assert (root / "accuracy_vs_optimizer.png").exists() and (root / "accuracy_vs_trainer.beta.png").exists()


def test_a_single_run(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", ["seed=3"], [0.25, 0.75], eval_after=0.5)
    report = build_report(run_dir, last_k=2)
    assert report.swept_keys == [] and len(report.rows) == 1
    row = report.rows[0]
    assert row.n_seeds == 1 and row.train_reward_final.mean == 0.5 and row.train_reward_final.std is None
    markdown = (run_dir / "report.md").read_text()
    assert "| all runs | 1 | 0 | 0.5000 | 0.5000 | 0.1000 | 10.0 | 1.000 |" in markdown
    assert (run_dir / "reward_curves.png").exists() and (run_dir / "report.csv").exists()


def test_cli_prints_the_table_without_importing_torch(sweep: Path) -> None:
    code = (
        "import sys; from grpolab.report import main; code = main([sys.argv[1], '--last-k', '2']); "
        "assert 'torch' not in sys.modules, 'report imported torch'; sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(sweep)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| 0.1 | 2 | 0 | 0.5750 ± 0.1061 |" in result.stdout
    assert "report.csv" in result.stdout


def test_cli_module_entry_point_fails_cleanly_without_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "grpolab.report", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "no run directories" in result.stderr
    assert main([str(tmp_path), "--last-k", "0"]) == 1
