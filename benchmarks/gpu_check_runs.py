"""The processes of ``benchmarks/gpu_check.py``: each row's run is a process of its own (its peak memory is its own),
started, stopped or killed here, and the figures read back from what it wrote."""

from __future__ import annotations

import filecmp
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Wall-clock keys (they differ between any two runs) and per-mode bookkeeping (tokenizer calls differ by design
#: between text and ids mode): every other metric must be equal for two runs to count as identical.
TIME_KEYS = frozenset({"time_s", "step_time_s", "step_time", "wall_time_s", "epoch"})
BOOKKEEPING_PREFIXES = ("tokenizer/", "timing/")
#: How long a run may take to finish its step and checkpoint once asked to stop, before it is killed.
STOP_GRACE_S = 180.0


@dataclass
class Outcome:
    """One process of a row: how it ended and what it left behind."""

    exit_code: int | None
    wall_s: float
    run_dir: Path
    log: Path
    stopped: bool = False  # asked to stop (SIGTERM) when its time was up
    peak: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        # 143 (128 + SIGTERM): asked to stop at its time share, grpolab saved a checkpoint and stopped.
        return self.exit_code == 0 or (self.stopped and self.exit_code == 128 + signal.SIGTERM)

    def metrics(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [row for row in map(json.loads, lines) if row.get("split") == "train"]

    def summary(self) -> dict[str, Any]:
        path = self.run_dir / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def failure(self) -> str:
        """The last error-looking line of the process's log, for the table."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        errors = [line for line in lines if "Error" in line or "error:" in line or "grpolab:" in line]
        return (errors or lines or ["no output"])[-1].strip().replace("|", "/")[:160]


def _child(job: dict[str, Any]) -> None:
    """The body of a row's process: run it, then record the process's peak memory whatever happened."""
    os.environ.update(job["env"])
    with open(job["log"], "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    code = 0
    try:
        if job["kind"] == "trl":
            import gpu_check_trl

            # Stopped at its time share, the TRL script ends as grpolab does (exit 143) and still records its peak.
            signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))

            gpu_check_trl.main(Path(job["argv"][0]), Path(job["argv"][1]))
        else:
            # grpolab's Hydra entry point: what `python -m grpolab.train` runs once its command-line preflight has
            # passed (skipped here: ~2 s of CPU per process for the rows' 30-odd overrides, which are known good).
            from grpolab.train import hydra_entry

            sys.argv = ["grpolab.train", *job["argv"]]
            hydra_entry()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except BaseException:  # noqa: BLE001  (the traceback goes to the row's log; the table names its last line)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        Path(job["peak"]).write_text(json.dumps(peak_memory()))
    sys.exit(code)


def peak_memory() -> dict[str, Any]:
    """This process's peak resident set size and, once it used CUDA, ``torch.cuda.max_memory_allocated``."""
    import resource

    import torch

    peak: dict[str, Any] = {"rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak.update(gpu_bytes=torch.cuda.max_memory_allocated(), device=torch.cuda.get_device_name(0))
    return peak


class Runner:
    """Starts the row processes and keeps the time budget.

    On CUDA every process is a fresh interpreter (``spawn``): nothing that has initialised CUDA, or might have, is
    ever forked. On CPU they fork from a server that imported torch, transformers and TRL once (``forkserver``):
    importing them per row would be most of the reduced check's time.
    """

    def __init__(self, device: str, budget_s: float | None, out: Path) -> None:
        self.budget_s, self.out = budget_s, out
        self.started = time.perf_counter()
        if device == "cuda":
            self.context = multiprocessing.get_context("spawn")
        else:
            self.context = multiprocessing.get_context("forkserver")
            self.context.set_forkserver_preload([
                "torch", "transformers", "trl", "peft", "datasets", "math_verify", "grpolab.train",
                "grpolab.trainer.build", "grpolab.tracking.plots", "grpolab.models.tiny", "grpolab.models.vision",
                "gpu_check_trl"])
        self.env = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "GRPOLAB_CACHE_DIR": str(out / "cache")}
        # A SIGKILLed row cannot release its semaphores; multiprocessing's resource tracker (started with this
        # interpreter's -W options) releases them at exit and warns that it did: expected here, not a leak.
        sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()

    def run(self, name: str, kind: str, argv: list[str], run_dir: Path, env: dict[str, str],
            kill_when: Callable[[Path], bool] | None = None, stop_after_s: float | None = None) -> Outcome:
        """Run one process to its end; SIGKILL it once ``kill_when(run_dir)`` holds; SIGTERM it (grpolab: finish the
        step, checkpoint, stop) after ``stop_after_s``; SIGKILL it when it outlives the budget by a minute."""
        log, peak = self.out / f"{name}.log", self.out / f"{name}.peak.json"
        peak.unlink(missing_ok=True)
        job = {"kind": kind, "argv": argv, "log": str(log), "peak": str(peak), "env": {**self.env, **env}}
        process = self.context.Process(target=_child, args=(job,), name=name)
        started = time.perf_counter()
        process.start()
        deadline = started + self.remaining() + 60.0
        if stop_after_s is not None:
            deadline = min(deadline, started + stop_after_s + STOP_GRACE_S)
        stopped = killed = False
        while process.is_alive():
            now = time.perf_counter()
            if not killed and (kill_when is not None and kill_when(run_dir) or now >= deadline):
                killed = _send(process.pid, signal.SIGKILL)
            elif stop_after_s is not None and not stopped and now - started >= stop_after_s:
                stopped = _send(process.pid, signal.SIGTERM)
            process.join(timeout=0.05 if kill_when is not None else 0.5)
        outcome = Outcome(process.exitcode, time.perf_counter() - started, run_dir, log, stopped)
        if peak.exists():
            outcome.peak = json.loads(peak.read_text())
        print(f"gpu_check: {name}: exit {outcome.exit_code}{' (stopped at its time share)' if stopped else ''} after "
              f"{outcome.wall_s:.0f} s ({self.elapsed():.0f} s elapsed)", file=sys.stderr, flush=True)
        return outcome


def _send(pid: int, number: int) -> bool:
    """Signal a row's process (on CPU a forkserver's child: it may be gone, reaped there, before we learn it ended)."""
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass
    return True


def prune(run_dir: Path) -> None:
    """Drop the weights a finished row leaves (final model, checkpoints, KL reference): GBs per row at 0.5B."""
    for path in [run_dir / "model", run_dir / "reference_policy", *run_dir.glob("checkpoint-*")]:
        shutil.rmtree(path, ignore_errors=True)


def step_figures(rows: list[dict[str, Any]], completions_per_step: int) -> tuple[float | None, float | None]:
    """Median seconds per step and generated tokens per second, the first step left out when there are others
    (it pays for CUDA kernels' first launches and the allocator's growth).

    >>> step_figures([{"step_time_s": 9.0, "completions/mean_length": 512.0},
    ...               {"step_time_s": 2.0, "completions/mean_length": 512.0},
    ...               {"step_time_s": 4.0, "completions/mean_length": 256.0}], 16)
    (3.0, 2048.0)
    """
    timed = [row for row in rows if row.get("step_time_s")]
    timed = timed[1:] if len(timed) > 1 else timed
    if not timed:
        return None, None
    times = sorted(row["step_time_s"] for row in timed)
    middle = len(times) // 2
    median = times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2
    tokens = sum(row.get("completions/mean_length", 0.0) * completions_per_step for row in timed)
    return median, tokens / sum(row["step_time_s"] for row in timed)


def compared(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> tuple[float, str, int]:
    """``(max |difference|, where it is, metrics compared)`` between two runs' train rows, paired by step; a missing
    step or metric is an infinite difference.

    >>> compared([{"step": 1, "loss": 0.5, "time_s": 1.0}], [{"step": 1, "loss": 0.5, "time_s": 2.0}])
    (0.0, '', 1)
    >>> compared([{"step": 1, "loss": 0.5, "kl": 0.1}], [{"step": 1, "loss": 0.25}])
    (inf, 'kl at step 1', 2)
    >>> compared([{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}], [{"step": 1, "loss": 0.5}])
    (inf, 'steps [1, 2] vs [1]', 0)
    """
    if [row["step"] for row in expected] != [row["step"] for row in actual]:
        return math.inf, f"steps {[r['step'] for r in expected]} vs {[r['step'] for r in actual]}", 0
    worst, where, keys = 0.0, "", set()
    for want, got in zip(expected, actual):
        for key in sorted((set(want) | set(got)) - TIME_KEYS - {"split", "step"}):
            if key.startswith(BOOKKEEPING_PREFIXES):
                continue
            keys.add(key)
            difference = _difference(want.get(key, _MISSING), got.get(key, _MISSING))
            if difference > worst:
                worst, where = difference, f"{key} at step {want['step']}"
    return worst, where, len(keys)


_MISSING = object()


def _difference(a: Any, b: Any) -> float:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if numbers and math.isnan(a) and math.isnan(b):
        return 0.0
    if numbers:
        return abs(a - b)
    return 0.0 if a == b else math.inf


def has_teeth(rows: list[dict[str, Any]]) -> bool:
    """A comparison means something only if the policy moved and the rewards differed within groups."""
    return any(row.get("loss") for row in rows) and any(row.get("reward_std") for row in rows)


def same_weights(first: Path, second: Path) -> bool | None:
    """Whether two runs' final weights are byte for byte equal (None: a run saved none)."""
    a, b = first / "model" / "model.safetensors", second / "model" / "model.safetensors"
    if not (a.exists() and b.exists()):
        return None
    return filecmp.cmp(a, b, shallow=False)
