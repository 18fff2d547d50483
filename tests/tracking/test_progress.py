"""Progress on the console: a line per interval off a terminal, a live bar on one, and the Trainer's own printing
callbacks replaced."""

from __future__ import annotations

import io
import logging
import re

import pytest
import torch
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerControl, TrainerState, TrainingArguments

from grpolab.tracking.progress import Progress, TrainingProgressCallback, show_progress


def test_off_a_terminal_each_interval_is_one_console_line_with_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="grpolab")
    with Progress("warm start", 100, logging.getLogger("grpolab.trainer.warmstart")) as progress:
        assert not progress.live  # pytest's stderr is not a terminal
        for step in range(1, 101):
            progress.advance(step)
            if step % 50 == 0:
                progress.report(step, f"loss {1 / step:.4f}")
    records = [record for record in caplog.records if record.name == "grpolab.trainer.warmstart"]
    assert len(records) == 2
    assert re.fullmatch(r"warm start 50/100 \(50%, \d+\.\d s elapsed, ETA \d+\.\d s\): loss 0\.0200",
                        records[0].getMessage())
    assert re.fullmatch(r"warm start 100/100 \(100%, \d+\.\d s elapsed\): loss 0\.0100", records[1].getMessage())
    assert all(getattr(record, "console", True) for record in records)  # for the console as well as train.log


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_live_bar_shows_the_interval_and_the_line_goes_to_the_log_file_only(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    caplog.set_level(logging.INFO, logger="grpolab")
    with Progress("GRPO", 4) as progress:
        assert progress.live
        for step in range(1, 5):
            progress.advance(step)
            if step % 2 == 0:
                progress.report(step, f"reward 0.{step}00 (accuracy 0.{step}00)", bar_text=f"reward 0.{step}00")
    final_frame = terminal.getvalue().split("\r")[-1]
    assert final_frame.startswith("GRPO: 100%") and "4/4" in final_frame and "reward 0.400" in final_frame
    assert [record.console for record in caplog.records if record.name == "grpolab.tracking.progress"] == [False, False]


def event_arguments(tmp_path, **args):
    return (TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **args), TrainerState(),
            TrainerControl())


def test_the_training_callback_reports_each_train_log_and_skips_the_end_of_training_summary(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="grpolab")
    args, state, control = event_arguments(tmp_path)
    state.max_steps = 10
    callback = TrainingProgressCallback()
    callback.on_train_begin(args, state, control)
    for step in (5, 10):
        state.global_step = step
        callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 0.1, "reward": step / 10, "rewards/accuracy/mean": 0.25,
                                                    "rewards/accuracy/std": 0.4, "kl": 0.0123})
    callback.on_log(args, state, control, logs={"train_runtime": 3.0, "train_loss": 0.1})
    callback.on_train_end(args, state, control)
    lines = [record.getMessage() for record in caplog.records if record.name == "grpolab.tracking.progress"]
    assert len(lines) == 2
    assert lines[0].startswith("GRPO 5/10 (50%, ") and lines[0].endswith(": reward 0.500 (accuracy 0.250) kl 0.0123")
    assert lines[1].startswith("GRPO 10/10 (100%, ")


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_show_progress_replaces_the_trainers_printing_callbacks(tmp_path, disable_tqdm: bool) -> None:
    args, _, _ = event_arguments(tmp_path, disable_tqdm=disable_tqdm)
    trainer = Trainer(model=torch.nn.Linear(2, 2), args=args)
    before = {type(callback) for callback in trainer.callback_handler.callbacks}
    assert (PrinterCallback if disable_tqdm else ProgressCallback) in before
    show_progress(trainer)
    after = {type(callback) for callback in trainer.callback_handler.callbacks}
    assert after == (before - {PrinterCallback, ProgressCallback}) | {TrainingProgressCallback}
