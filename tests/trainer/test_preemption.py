"""Preemption: a real signal makes training save a checkpoint and stop, the run ends ``status: preempted`` with exit
code 128 + signal, and ``resume=true`` continues it (same wandb run); the handler grpolab replaced (submitit's requeue
handler) gets the signal once the run is recorded."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_runs import cli, logged_steps, run, start_and_signal
from transformers import TrainerControl

from grpolab.tracking.checkpoints import is_complete
from grpolab.tracking.rundir import RunPreempted
from grpolab.trainer.preemption import PreemptionSignals


def test_a_signal_stops_training_at_the_next_step_end_with_a_checkpoint() -> None:
    handed_over: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: handed_over.append(number))
    try:
        preemption = PreemptionSignals((signal.SIGTERM, signal.SIGUSR1))
        with preemption:
            control, state = TrainerControl(), SimpleNamespace(global_step=6)
            preemption.on_step_end(None, state, control)
            assert not (control.should_save or control.should_training_stop)
            os.kill(os.getpid(), signal.SIGUSR1)  # delivered to the Python handler before the next bytecode
            assert preemption.received == signal.SIGUSR1 and not handed_over
            state.global_step = 7
            preemption.on_step_end(None, state, control)
            assert control.should_save and control.should_training_stop
        assert signal.getsignal(signal.SIGUSR1) is not preemption._note  # restored after training
        with pytest.raises(RunPreempted) as stopped:
            preemption.stop_if_requested(SimpleNamespace(args=SimpleNamespace(output_dir="run")))
        assert stopped.value.code == 128 + signal.SIGUSR1
        assert stopped.value.reason.startswith("SIGUSR1 at step 7: saved run/checkpoint-7; rerun")
        stopped.value.hand_over()  # what the entry point does once the run is recorded
        assert handed_over == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_no_signal_no_stop() -> None:
    preemption = PreemptionSignals()
    with preemption:
        control = TrainerControl()
        preemption.on_step_end(None, SimpleNamespace(global_step=1), control)
    assert not control.should_training_stop
    preemption.stop_if_requested(SimpleNamespace())  # returns: nothing to stop


@pytest.mark.slow
def test_sigterm_mid_training_saves_stops_as_preempted_and_resume_continues_the_same_wandb_run(
        tmp_path: Path) -> None:
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    command = [*cli(run_dir, "warmstart.steps=10"), "logger=wandb"]  # the last logger= wins

    code = start_and_signal(command, cache, tmp_path / "first.log", run_dir,
                            lambda d: max(logged_steps(d) or [0]) >= 6, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, (tmp_path / "first.log").read_text()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted", summary
    stopped_at = summary["steps"]
    assert summary["reason"].startswith(f"SIGTERM at step {stopped_at}: saved {run_dir}/checkpoint-{stopped_at};")
    assert is_complete(run_dir / f"checkpoint-{stopped_at}") and not (run_dir / "model").exists()
    run_id = (run_dir / "wandb" / "grpolab-run-id.txt").read_text().strip()

    assert run([*command, "resume=true"], cache, tmp_path / "second.log") == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 24
    assert [row["step"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == list(
        range(3, 25, 3))
    assert (run_dir / "model" / "model.safetensors").exists()
    offline_runs = sorted(path.name for path in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(name.endswith(f"-{run_id}") for name in offline_runs)
