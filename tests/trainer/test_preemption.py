"""Preemption: a real signal makes training save a checkpoint and stop, the run ends ``status: preempted`` with exit
code 128 + signal, and ``resume=true`` continues it (same wandb run); the handler grpolab replaced (submitit's requeue
handler) gets the signal once the run is recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert [row["step"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == list(
        range(3, 13, 3))
    assert (run_dir / "model" / "model.safetensors").exists()
    offline_runs = sorted(path.name for path in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(name.endswith(f"-{run_id}") for name in offline_runs)


def descendants(pid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            try:
                command = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found.append((child, command))
            queue.append(child)
    return found


@pytest.mark.slow
def test_a_submitit_job_signalled_for_preemption_is_requeued_and_resumes(tmp_path: Path) -> None:
    """submitit's local executor: its preemption signal (USR2) reaches the job process, grpolab saves and stops,
    hands the signal to submitit, which checkpoints the launcher's callable and requeues; the requeued job resumes."""
    command = [sys.executable, "-m", "grpolab.train", "-m", "hydra/launcher=submitit_local",
               *cli(tmp_path / "unused", "warmstart.steps=10")[4:], "seed=0"]
    env = {**os.environ, "GRPOLAB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    with (tmp_path / "sweep.log").open("w") as log:
        sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            job = None
            while sweep.poll() is None:
                job = job or next((tmp_path / "outputs" / "multirun").glob("*/*/0"), None)
                if job is not None and max(logged_steps(job) or [0]) >= 6:
                    task = [pid for pid, line in descendants(sweep.pid) if "submitit.core._submit" in line]
                    assert len(task) == 1, descendants(sweep.pid)
                    os.kill(task[0], signal.SIGUSR2)
                    break
                time.sleep(0.01)
            assert sweep.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        finally:
            if sweep.poll() is None:
                sweep.kill()
    job_log = "".join(path.read_text() for path in job.parent.glob(".submitit/*/*_0_log.*"))
    assert "preemption: SIGUSR2 received; saving a checkpoint" in job_log
    assert "Requeued job" in job_log and "resume: continuing from" in job_log
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert [json.loads(line)["step"] for line in (job / "metrics.jsonl").read_text().splitlines()] == list(
        range(3, 13, 3))
    # The launcher's end of a submitit sweep: the requeued job's result came back through submitit's local executor,
    # and the sweep report was written (the submitit launcher's only test with a one-task job).
    assert list(job.parent.glob(".submitit/*/*_0_result.pkl")) and (job.parent / "report.md").exists()
