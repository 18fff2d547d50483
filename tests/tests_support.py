"""Helpers several test modules share (a training job run in this process, a free port, run directories as jobs
leave them), and reward callables that misbehave on purpose (importable by the CLI subprocesses the tests start).
Import them from here, not from ``conftest``: that name is taken by every folder's conftest.py."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


#: What libraries print that a user of the CLI should not see on the terminal (it goes to train.log): the console tests
#: of a single run (tracking/test_console.py) and of a joblib multirun (test_sweeps.py).
LIBRARY_NOISE = re.compile(r"\{'loss'|Warning|warnings\.warn|pin_memory|gradient_checkpointing|Map:|Saving the "
                           r"dataset|wandb:|it/s\]|\x1b\[|\r")


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


#: Signals a training job may take over (preemption handling); restored after an in-process job.
_JOB_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def train_in_process(arguments: Sequence[str], cwd: Path, env: Mapping[str, str | None],
                     merged_output: bool = False) -> subprocess.CompletedProcess:
    """``python -m grpolab.train *arguments`` run by this process (:func:`module_in_process`)."""
    return module_in_process("grpolab.train", arguments, cwd, env, merged_output)


def module_in_process(module: str, arguments: Sequence[str], cwd: Path, env: Mapping[str, str | None],
                      merged_output: bool = False) -> subprocess.CompletedProcess:
    """``python -m <module> *arguments`` (``grpolab.train``, ``grpolab.evaluate``) run by this process: the same entry
    point (the module's ``main``: for training preflight, Hydra, its callbacks and logging, the job), without an
    interpreter start and the imports of torch, transformers and TRL (seconds per run). Returns what
    ``subprocess.run`` would: the exit status (``sys.exit``'s code; 1 for an exception that escapes, its traceback in
    ``stderr``) and the text printed on stdout and stderr.

    The job starts from what a new process would give it: no Hydra job config and grpolab's loggers at their
    default level (a job of another process rank, or a test, may have raised it). What a job changes in the process is
    put back afterwards: the working directory, ``os.environ``, ``sys.argv``, the root logger's handlers (Hydra's
    file handler, or the one ``logging.basicConfig`` adds, is closed), grpolab's logger levels, warning capture, signal
    handlers, Hydra's global state and job config, and torch's thread count if torch was imported before (a job that
    fails before it trains, or ``--help``, does not import it here)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    entry = importlib.import_module(module)

    saved_argv, saved_environ, saved_cwd = list(sys.argv), dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_captures_warnings = logging._warnings_showwarning is not None  # noqa: SLF001 (no public getter)
    torch = sys.modules.get("torch")
    saved_threads = torch.get_num_threads() if torch is not None else None
    saved_signals = {number: signal.getsignal(number) for number in _JOB_SIGNALS}
    saved_hydra_config = HydraConfig.instance().cfg
    own_loggers = [logging.getLogger(name) for name in ["grpolab", *logging.root.manager.loggerDict]
                   if name == "grpolab" or name.startswith("grpolab.")]
    saved_levels = {logger: logger.level for logger in own_loggers}
    stdout = io.StringIO()
    stderr = stdout if merged_output else io.StringIO()
    code: int | str | None = 0
    try:
        for name, value in env.items():
            if value is None:  # unset
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.chdir(cwd)
        sys.argv = [entry.__file__, *arguments]
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        for logger in own_loggers:
            logger.setLevel(logging.NOTSET)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                entry.main()
            except SystemExit as exit_:
                code = exit_.code
                if isinstance(code, str):  # sys.exit("message"): printed on stderr, status 1
                    print(code, file=sys.stderr)
                    code = 1
            except BaseException:  # noqa: BLE001 (what an uncaught exception does to a process)
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = saved_hydra_config
        for logger, level in saved_levels.items():
            logger.setLevel(level)
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.captureWarnings(saved_captures_warnings)
        if saved_threads is not None:
            torch.set_num_threads(saved_threads)
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.argv = saved_argv
    command = [sys.executable, "-m", module, *arguments]
    return subprocess.CompletedProcess(command, code or 0, stdout.getvalue(),
                                       None if merged_output else stderr.getvalue())


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
