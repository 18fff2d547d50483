"""Training runs for the checkpoint, resume and preemption tests: through the real CLI in a subprocess where the run
is signalled or killed at a chosen point, in this process (``conftest.train_in_process``) otherwise; compare two
runs' metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from grpolab.tracking.rundir import read_metrics
from tests_support import train_in_process

#: Cheap settings in which the resume has something to get wrong: rewards that vary (the length reward), 6 epochs of
#: 4 steps (the data order of a resumed epoch), a log window open at every checkpoint (logging every 3, saving every
#: 4), and a warm start.
RESUMABLE_RUN = [
    "logger=none", "trainer.max_steps=12", "trainer.logging_steps=3", "trainer.save_steps=4", "warmstart.steps=150",
    "data.train_size=16", "data.eval_size=16", "batch.prompts_per_step=4", "batch.generations_per_prompt=4",
    "rewards=[accuracy,format,length]", "rewards.length.target=4",
]
#: Arithmetic with mostly tagged demonstrations: a short warm start then scores held-out format above zero.
TAGGED = "data.untagged_solution_rate=0.3"
#: Wall-clock measurements: the only keys allowed to differ between two runs of one command.
TIME_KEYS = frozenset({"time_s", "step_time_s", "step_time", "timing/rewards_s", "wall_time_s"})


def cli(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "grpolab.train", f"hydra.run.dir={run_dir}", *RESUMABLE_RUN, *overrides]


def cli_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "GRPOLAB_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}


def run(command: list[str], cache: Path, log: Path) -> int:
    """Run ``command`` (a ``cli`` command line) to its end in this process; its output goes to ``log``."""
    assert command[:3] == [sys.executable, "-m", "grpolab.train"], command
    environment = {"GRPOLAB_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}
    result = train_in_process(command[3:], Path.cwd(), environment, merged_output=True)
    log.write_text(result.stdout)
    return result.returncode


def start_and_signal(command: list[str], cache: Path, log: Path, run_dir: Path, ready: Callable[[Path], bool],
                     number: int) -> int:
    """Start a training process, send it ``number`` once ``ready(run_dir)`` holds; its exit code."""
    with log.open("w") as output:
        process = subprocess.Popen(command, env=cli_env(cache), stdout=output, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None and not ready(run_dir):
                time.sleep(0.01)
            assert process.poll() is None, f"the run ended before it could be signalled:\n{log.read_text()[-3000:]}"
            os.kill(process.pid, number)
            return process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()


def logged_steps(run_dir: Path) -> list[int]:
    return [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")]


def max_differences(expected: list[dict], actual: list[dict]) -> dict[str, float]:
    """Per metric, the largest absolute difference between two runs' rows (time keys aside); rows pair by order."""
    assert [(row["split"], row["step"]) for row in actual] == [(row["split"], row["step"]) for row in expected]
    differences: dict[str, float] = {}
    for want, got in zip(expected, actual):
        assert set(got) == set(want)
        for key in set(want) - TIME_KEYS:
            if isinstance(want[key], (int, float)) and want[key] is not None and got[key] is not None:
                differences[key] = max(differences.get(key, 0.0), abs(want[key] - got[key]))
            else:
                assert got[key] == want[key], key
    return differences


def all_rows(run_dir: Path) -> list[dict]:
    """Every line of metrics.jsonl as written (no de-duplication: a step twice would show)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
