"""``metrics.jsonl`` and the training fields of ``summary.json``, written from the Trainer's logs."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from grpolab.tracking.jsonfiles import to_json_safe
from grpolab.tracking.rundir import FINAL_REWARD_WINDOW, RunDirectory, mean_of_last, read_metrics

# Keys of the Trainer's end-of-training log (`Trainer._finalize_training`); it is a run summary, not a step.
TRAIN_SUMMARY_KEY = "train_runtime"
# Column order of a metrics row: the keys people look at first, then whatever else was logged in logged order.
LEADING_KEYS = ("split", "step", "time_s", "step_time_s", "loss", "reward", "reward_std")


class MetricsFileCallback(TrainerCallback):
    """Append one JSON row per Trainer log to ``metrics.jsonl`` and keep ``summary.json``'s training fields current.

    After every train log the summary gets ``steps``, ``train_reward_final`` (mean of the last
    ``final_reward_window`` rewards) and ``step_time_s``, so even a job that dies mid-training reports how far it got.
    The end-of-training log (``train_runtime``, ``train_loss``, ...) goes to the summary, not to ``metrics.jsonl``.

    The console shows training through ``grpolab.tracking.progress``, not through this callback.

    >>> trainer = GRPOTrainer(..., callbacks=[MetricsFileCallback(run_dir)])  # doctest: +SKIP
    """

    def __init__(
        self,
        run_dir: RunDirectory | str | os.PathLike[str],
        final_reward_window: int = FINAL_REWARD_WINDOW,
    ) -> None:
        if final_reward_window < 1:
            raise ValueError(f"final_reward_window must be >= 1, got {final_reward_window}")
        self.run_dir = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
        self.final_reward_window = final_reward_window
        self._clock_start: float | None = None
        self._time_offset_s = 0.0
        self._last_log_time: float | None = None
        self._last_log_step = 0
        self._timed_seconds = 0.0
        self._timed_steps = 0
        self._rewards: list[float | None] = []

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # On resume the file already holds earlier rows: continue their clock and reward history.
        earlier = [row for row in read_metrics(self.run_dir.metrics_path) if row["step"] <= state.global_step]
        self._time_offset_s = float(earlier[-1].get("time_s") or 0.0) if earlier else 0.0
        self._rewards = [row.get("reward") for row in earlier]
        self._clock_start = self._last_log_time = time.perf_counter()
        self._last_log_step = state.global_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if self._clock_start is None:  # logging outside train() (a standalone evaluate()) still gets a clock
            self.on_train_begin(args, state, control)
        if TRAIN_SUMMARY_KEY in logs:
            self._record_train_end_log(logs)
        elif any(key.startswith("eval_") for key in logs):
            self._append_eval_row(state, logs)
        else:
            self._append_train_row(state, logs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            self.run_dir.write_summary(steps=state.global_step)

    def _elapsed_s(self, now: float) -> float:
        assert self._clock_start is not None
        return self._time_offset_s + now - self._clock_start

    def _append_train_row(self, state: TrainerState, logs: dict[str, Any]) -> None:
        now = time.perf_counter()
        steps_since_last = state.global_step - self._last_log_step
        step_time_s = None
        if steps_since_last > 0 and self._last_log_time is not None:
            interval_s = now - self._last_log_time
            step_time_s = interval_s / steps_since_last
            self._timed_seconds += interval_s
            self._timed_steps += steps_since_last
        self._last_log_time, self._last_log_step = now, state.global_step

        row = self._row("train", state.global_step, self._elapsed_s(now), step_time_s, logs)
        self._write_row(row)
        self._rewards.append(row.get("reward"))
        self.run_dir.write_summary(
            steps=state.global_step,
            train_reward_final=mean_of_last(self._rewards, self.final_reward_window),
            train_reward_final_window=self.final_reward_window,
            step_time_s=self._timed_seconds / self._timed_steps if self._timed_steps else None,
        )

    def _append_eval_row(self, state: TrainerState, logs: dict[str, Any]) -> None:
        now = time.perf_counter()
        stripped = {key.removeprefix("eval_"): value for key, value in logs.items()}
        self._write_row(self._row("eval", state.global_step, self._elapsed_s(now), None, stripped))
        # Evaluation runs between two train logs; restarting the interval keeps it out of step_time_s.
        self._last_log_time = now

    def _record_train_end_log(self, logs: dict[str, Any]) -> None:
        self.run_dir.write_summary(train_runtime_s=logs.get(TRAIN_SUMMARY_KEY), train_loss=logs.get("train_loss"))

    @staticmethod
    def _row(
        split: str, step: int, time_s: float, step_time_s: float | None, logs: dict[str, Any]
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"split": split, "step": step, "time_s": time_s, "step_time_s": step_time_s}
        for key, value in logs.items():
            if key in row:
                continue
            if isinstance(value, (int, float)) or value is None:
                row[key] = value
            elif hasattr(value, "item"):  # a 0-d tensor slipped through
                row[key] = value.item()
        leading = {key: row.pop(key) for key in LEADING_KEYS if key in row}
        return to_json_safe({**leading, **row})

    def _write_row(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, allow_nan=False)
        # One write of one line per call, flushed: a crash leaves at most one truncated line, which readers skip.
        with self.run_dir.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
