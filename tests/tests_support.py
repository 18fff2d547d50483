"""Helpers several test modules share (a free port, run directories as jobs leave them), and reward callables that
misbehave on purpose (importable by the CLI subprocesses the tests start)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous port of a two-process group a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------- run directories as jobs leave them (the report's tests)

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
    per_step: Callable[[int], dict[str, float]] = lambda step: {},
    config: dict[str, Any] | None = None,
    choices: dict[str, str | None] | None = None,
) -> Path:
    """A run directory as a real job leaves it: .hydra/overrides.yaml (and hydra.yaml with the config group
    ``choices``), manifest (with ``config``), metrics.jsonl (``per_step(step)`` adds metrics to a train row),
    summary."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {override}\n" for override in overrides))
    if choices is not None:
        hydra_node = {"hydra": {"mode": "RUN", "runtime": {"choices": choices, "output_dir": str(run_dir)}}}
        (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_node))
    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), None)
    (run_dir / "manifest.json").write_text(json.dumps({"seed": seed, "overrides": overrides, "config": config or {}}))
    rows = [
        {"split": "train", "step": step, "time_s": step * step_time_s, "step_time_s": step_time_s, "loss": 0.0,
         "reward": reward, "rewards/accuracy/mean": reward, **per_step(step)}
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


def write_sweep(tmp_path: Path) -> Path:
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


COST_METRICS = ["timing/rewards_s", "tokenizer/calls", "tokenizer/encode_calls", "tokenizer/decode_calls"]


def write_study(tmp_path: Path) -> Path:
    """experiment=text_vs_token's sweep: tokenizer_mode x reward_level x seeds 0, 1, with the per-step cost metrics
    the trainer logs; one more job (ids/token, seed 2) failed."""
    root = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    job = 0
    cells = (("text", "text", 256), ("text", "token", 256), ("ids", "text", 128), ("ids", "token", 0))
    for mode, level, calls in cells:
        reward_s = 0.01 if level == "token" else 0.3
        for seed in (0, 1, 2) if (mode, level) == ("ids", "token") else (0, 1):
            make_run(root / str(job), [f"tokenizer_mode={mode}", f"reward_level={level}", f"seed={seed}",
                                       "experiment=text_vs_token"],
                     [0.2 + seed / 10, 0.4 + seed / 10], eval_after=0.25 * (seed + 1), step_time_s=0.2 + seed / 10,
                     status="failed" if seed == 2 else "completed", reason="RewardError: boom" if seed == 2 else None,
                     per_step=lambda step, calls=calls, reward_s=reward_s: {
                         "timing/rewards_s": reward_s * step, "tokenizer/calls": calls,
                         "tokenizer/encode_calls": calls / 2, "tokenizer/decode_calls": calls / 2})
            job += 1
    return root


class FailingReward:
    """Divides by zero on problems with an even answer: a reward bug that should name itself and the sample."""

    def __call__(self, prompts, completions, completion_ids, answer, **kwargs):
        return [1.0 / (int(gold) % 2) for gold in answer]


class ShortReward:
    """Returns one reward too few."""

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        return [0.0] * (len(completions) - 1)


from grpolab.rewards.base import Reward  # noqa: E402


class NeedsDifficulty(Reward):
    """A reward that reads a dataset column the default task does not have."""

    text_columns = frozenset({"difficulty"})

    def score_text(self, completions, difficulty, **columns):
        return [float(d) for d in difficulty]
