"""MetricsFileCallback: rows per log, summary fields, final-log handling; with a real Trainer and TRL-shaped logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

from grpolab.tracking.metrics_file import MetricsFileCallback
from grpolab.tracking.rundir import RunDirectory, read_metrics


class TinyRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": ((self.linear(x).squeeze(-1) - y) ** 2).mean()}


def regression_data(n: int) -> Dataset:
    return Dataset.from_dict({"x": [[float(i), 1.0] for i in range(n)], "y": [float(2 * i) for i in range(n)]})


def test_real_trainer_run_writes_train_and_eval_rows_and_training_summary(tmp_path: Path) -> None:
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = MetricsFileCallback(tmp_path)
    trainer = Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=regression_data(8),
        eval_dataset=regression_data(4),
        callbacks=[callback],
    )
    trainer.train()

    train_rows = read_metrics(tmp_path / "metrics.jsonl")
    eval_rows = read_metrics(tmp_path / "metrics.jsonl", split="eval")
    assert [row["step"] for row in train_rows] == [2, 4]
    assert [row["step"] for row in eval_rows] == [2, 4]
    for row in train_rows:
        assert list(row)[:5] == ["split", "step", "time_s", "step_time_s", "loss"]
        assert row["step_time_s"] > 0 and "learning_rate" in row
        assert "train_runtime" not in row
    # eval_* keys lose their prefix (this model has no labels, so evaluation logs only its speed)
    assert all("runtime" in row and "eval_runtime" not in row for row in eval_rows)
    assert train_rows[0]["time_s"] < train_rows[1]["time_s"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and not any("train_runtime" in line for line in lines)

    summary = RunDirectory(tmp_path).read_summary()
    assert summary["steps"] == 4
    assert summary["train_runtime_s"] > 0
    assert summary["train_loss"] == pytest.approx(trainer.state.log_history[-1]["train_loss"])
    assert summary["step_time_s"] > 0
    assert summary["train_reward_final"] is None  # a plain Trainer logs no reward


def trainer_event_arguments(tmp_path: Path) -> tuple[TrainingArguments, TrainerState, TrainerControl]:
    """The (args, state, control) triple the Trainer passes to every callback event."""
    return TrainingArguments(output_dir=str(tmp_path), report_to="none"), TrainerState(), TrainerControl()


def grpo_logs(reward: float, accuracy: float) -> dict[str, float]:
    """The shape of a GRPOTrainer.log call (transformers adds loss/grad_norm/learning_rate, TRL its metrics)."""
    return {
        "loss": 0.01,
        "grad_norm": 0.5,
        "learning_rate": 1e-4,
        "num_tokens": 40.0,
        "completions/mean_length": 6.0,
        "rewards/accuracy/mean": accuracy,
        "rewards/accuracy/std": 0.1,
        "rewards/format/mean": 1.0,
        "rewards/format/std": 0.0,
        "reward": reward,
        "reward_std": 0.2,
        "kl": float("nan"),
        "entropy": 4.6,
        "epoch": 0.5,
    }


def test_grpo_shaped_logs_give_reward_rows_and_a_windowed_final_reward(tmp_path: Path) -> None:
    callback = MetricsFileCallback(RunDirectory(tmp_path), final_reward_window=3)
    args, state, control = trainer_event_arguments(tmp_path)
    state.max_steps = 5
    callback.on_train_begin(args, state, control)
    rewards = [0.0, 0.5, 1.0, 1.5, 2.0]
    for step, reward in enumerate(rewards, start=1):
        state.global_step = step
        callback.on_log(args, state, control, logs=grpo_logs(reward, accuracy=reward / 2))
    state.global_step = 5
    callback.on_log(args, state, control, logs={"train_runtime": 1.5, "train_loss": 0.02, "epoch": 1.0})
    callback.on_train_end(args, state, control)

    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["reward"] for row in rows] == rewards
    assert [row["rewards/accuracy/mean"] for row in rows] == [reward / 2 for reward in rewards]
    assert all(row["rewards/format/mean"] == 1.0 for row in rows)
    assert list(rows[0])[:7] == ["split", "step", "time_s", "step_time_s", "loss", "reward", "reward_std"]
    assert rows[0]["kl"] is None  # NaN is written as null
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5

    summary = RunDirectory(tmp_path).read_summary()
    assert summary["train_reward_final"] == pytest.approx((1.0 + 1.5 + 2.0) / 3, abs=1e-15)
    assert summary["train_reward_final_window"] == 3
    assert summary["steps"] == 5
    assert summary["train_runtime_s"] == 1.5 and summary["train_loss"] == 0.02


def test_only_the_main_process_writes(tmp_path: Path) -> None:
    callback = MetricsFileCallback(tmp_path)
    args, control = TrainingArguments(output_dir=str(tmp_path), report_to="none"), TrainerControl()
    state = TrainerState(is_world_process_zero=False)
    state.global_step = 1
    callback.on_train_begin(args, state, control)
    callback.on_log(args, state, control, logs=grpo_logs(1.0, 1.0))
    assert not (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "summary.json").exists()


def test_resumed_training_continues_the_clock_and_reward_window(tmp_path: Path) -> None:
    earlier = [{"split": "train", "step": s, "time_s": 10.0 * s, "reward": float(s)} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in earlier))
    callback = MetricsFileCallback(tmp_path, final_reward_window=2)
    args, state, control = trainer_event_arguments(tmp_path)
    state.global_step = 2  # resumed from the step-2 checkpoint; step 3 is redone
    callback.on_train_begin(args, state, control)
    state.global_step = 3
    callback.on_log(args, state, control, logs=grpo_logs(5.0, 1.0))

    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["reward"] for row in rows] == [1.0, 2.0, 5.0]
    assert rows[-1]["time_s"] >= 20.0
    assert RunDirectory(tmp_path).read_summary()["train_reward_final"] == 3.5
