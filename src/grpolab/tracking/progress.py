"""Progress of the warm start and of GRPO: a live bar on a terminal, one line per logging interval otherwise.

Every interval is also a line in ``train.log``. On a terminal (a single run, stderr a TTY) the bar shows steps,
elapsed time, ETA and the latest interval's numbers; elsewhere (a file, CI, a multirun) the console gets the interval
lines instead of bar frames. ``show_progress(trainer)`` puts GRPO's progress in place of the Trainer's own
``ProgressCallback`` / ``PrinterCallback``, which print every log as a raw dict.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

from tqdm import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from grpolab.tracking.console import NOT_ON_CONSOLE, format_duration, live_bars_allowed
from grpolab.tracking.metrics_file import TRAIN_SUMMARY_KEY

log = logging.getLogger(__name__)

# Timing keys of an evaluation log: not results.
EVAL_TIMING_KEYS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


class Progress:
    """A loop of ``total`` steps: ``advance`` every step, ``report`` once per logging interval, ``close`` at the end.

    >>> with Progress("warm start", 1000, log) as progress:  # doctest: +SKIP
    ...     for step in range(1, 1001):
    ...         progress.advance(step)
    ...         if step % 50 == 0:
    ...             progress.report(step, "loss 2.0361, exact match 0.016 (means over the last 50 steps)")
    """

    def __init__(self, label: str, total: int, logger: logging.Logger = log, initial: int = 0,
                 bar: bool = True) -> None:
        self.label, self.total, self.logger, self.initial = label, total, logger, initial
        self._started = time.perf_counter()
        # A live bar only in a single run, whose lines carry no job prefix: the label alone names it.
        self._bar = tqdm(total=total, initial=initial, desc=label, unit="step", dynamic_ncols=True,
                         file=sys.stderr) if bar and live_bars_allowed() else None

    @property
    def live(self) -> bool:
        return self._bar is not None

    def advance(self, step: int) -> None:
        if self._bar is not None and step > self._bar.n:
            self._bar.update(step - self._bar.n)

    def report(self, step: int, text: str, bar_text: str | None = None) -> str:
        """Log ``<label> <step>/<total> (<percent>, <elapsed> elapsed, ETA <eta>): <text>`` (train.log; the console
        too unless a live bar shows it, with ``bar_text`` or ``text`` after the bar). Returns the line."""
        elapsed = time.perf_counter() - self._started
        done = step - self.initial
        timing = f"{format_duration(elapsed)} elapsed"
        if 0 < done and step < self.total:
            timing += f", ETA {format_duration(elapsed / done * (self.total - step))}"
        percent = math.floor(100 * step / self.total) if self.total else 100
        line = f"{self.label} {step}/{self.total} ({percent}%, {timing}): {text}"
        self.logger.info(line, extra=NOT_ON_CONSOLE if self.live else None)
        if self._bar is not None:
            self.advance(step)
            self._bar.set_postfix_str(bar_text if bar_text is not None else text)
        return line

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def describe_log(logs: dict[str, Any]) -> str:
    """The few numbers of a Trainer log worth a console line: reward and each reward's mean (and KL when logged),
    or the held-out metrics of an evaluation log.

    >>> describe_log({"loss": 0.1, "reward": 0.412, "rewards/accuracy/mean": 0.3, "rewards/accuracy/std": 0.4,
    ...               "rewards/format/mean": 0.95, "entropy": 1.1})
    'reward 0.412 (accuracy 0.300, format 0.950)'
    >>> describe_log({"eval_accuracy": 0.25, "eval_runtime": 3.2})
    'held-out accuracy 0.250'
    >>> describe_log({"loss": 0.0123, "grad_norm": 0.5})
    'loss 0.0123 (no new completions: this step reuses the last rollout)'
    """
    if any(key.startswith("eval_") for key in logs):
        metrics = [f"{key.removeprefix('eval_')} {_number(value)}" for key, value in logs.items()
                   if key.startswith("eval_") and key not in EVAL_TIMING_KEYS and _is_number(value)]
        return "held-out " + ", ".join(metrics)
    parts = [f"reward {_number(logs['reward'])}"] if _is_number(logs.get("reward")) else []
    components = [f"{key.removeprefix('rewards/').removesuffix('/mean')} {_number(value)}"
                  for key, value in logs.items()
                  if key.startswith("rewards/") and key.endswith("/mean") and _is_number(value)]
    if components:
        parts.append(f"({', '.join(components)})")
    if _is_number(logs.get("kl")):
        parts.append(f"kl {logs['kl']:.4f}")
    if not parts and _is_number(logs.get("loss")):  # a step that updates on an earlier step's completions
        parts.append(f"loss {logs['loss']:.4f} (no new completions: this step reuses the last rollout)")
    return " ".join(parts) or "logged"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: float) -> str:
    return f"{value:.3f}"


class TrainingProgressCallback(TrainerCallback):
    """GRPO's progress on the console: a bar (or a line per logging interval) with the step, ETA and rewards.

    Only the main process shows it; ``trainer.disable_tqdm=true`` keeps the lines and drops the bar.
    """

    def __init__(self, label: str = "GRPO") -> None:
        self.label = label
        self.progress: Progress | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress = Progress(self.label, state.max_steps, log, initial=state.global_step,
                                     bar=not args.disable_tqdm)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.advance(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs and TRAIN_SUMMARY_KEY not in logs:
            self.progress.report(state.global_step, describe_log(logs))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.close()
            self.progress = None


def show_progress(trainer: Any) -> None:
    """Replace the Trainer's console output (a tqdm bar with every log dict written under it, or with
    ``disable_tqdm`` a printed dict per log) by ``TrainingProgressCallback``; uses the public callback API."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainingProgressCallback())
