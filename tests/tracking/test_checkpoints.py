"""Which checkpoints count as complete, which one a resume continues from, and how the run directory is brought back
to it (torch-free: ``grpolab.tracking.checkpoints``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpolab.tracking.checkpoints import (
    COMPLETE_MARKER,
    GRPOLAB_STATE_FILE,
    archive_checkpoints,
    checkpoint_dirs,
    cut_metrics_file,
    is_complete,
    mark_complete,
    newest_complete_checkpoint,
    prepare_resume,
    resume_requested,
    unmark,
)
from grpolab.tracking.rundir import METRICS_FILE, RunDirectory, read_metrics


def write_checkpoint(run_dir: Path, step: int, complete: bool = True, metrics_bytes: int | None = None) -> Path:
    """A checkpoint directory laid out like the Trainer's plus grpolab's files."""
    checkpoint = run_dir / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"w" * (100 + step))
    (checkpoint / "optimizer.pt").write_bytes(b"o" * 50)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (checkpoint / GRPOLAB_STATE_FILE).write_text(json.dumps({"format": 1, "metrics_file_bytes": metrics_bytes}))
    if complete:
        mark_complete(checkpoint)
    return checkpoint


def metrics_line(step: int) -> str:
    return json.dumps({"split": "train", "step": step, "loss": 0.1 * step}) + "\n"


def test_a_checkpoint_is_complete_only_with_its_marker_and_every_listed_file_at_its_size(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path, 5)
    assert is_complete(checkpoint)
    marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    assert marker["step"] == 5 and marker["files"]["optimizer.pt"] == 50 and COMPLETE_MARKER not in marker["files"]

    (checkpoint / "optimizer.pt").write_bytes(b"o" * 10)  # overwritten by a save a kill interrupted
    assert not is_complete(checkpoint)
    mark_complete(checkpoint)
    (checkpoint / "model.safetensors").unlink()  # the Trainer's rotation was deleting it
    assert not is_complete(checkpoint)

    unfinished = write_checkpoint(tmp_path, 10, complete=False)
    assert not is_complete(unfinished)
    (unfinished / COMPLETE_MARKER).write_text('{"step": 10, "files": {"model.safe')  # torn marker
    assert not is_complete(unfinished)
    mark_complete(unfinished)
    unmark(unfinished)  # a step saved again is incomplete until marked again
    assert not is_complete(unfinished)


def test_the_newest_complete_checkpoint_wins_by_step_not_by_name(tmp_path: Path) -> None:
    assert newest_complete_checkpoint(tmp_path / "missing") is None
    write_checkpoint(tmp_path, 9)
    write_checkpoint(tmp_path, 10)
    write_checkpoint(tmp_path, 12, complete=False)
    (tmp_path / "checkpoint-final").mkdir()
    assert [path.name for path in checkpoint_dirs(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-12"]
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_prepare_resume_deletes_incomplete_checkpoints_and_cuts_metrics_back_to_the_checkpoint(tmp_path: Path) -> None:
    kept = "".join(metrics_line(step) for step in (1, 2, 3, 4))
    after = "".join(metrics_line(step) for step in (5, 6)) + '{"split": "train", "st'  # then killed mid-write
    (tmp_path / METRICS_FILE).write_text(kept + after)
    write_checkpoint(tmp_path, 4, metrics_bytes=len(kept.encode()))
    write_checkpoint(tmp_path, 6, complete=False)

    assert prepare_resume(tmp_path) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    assert (tmp_path / METRICS_FILE).read_text() == kept
    assert [row["step"] for row in read_metrics(tmp_path / METRICS_FILE)] == [1, 2, 3, 4]
    assert prepare_resume(tmp_path / "elsewhere") is None


def test_a_metrics_file_not_as_the_checkpoint_left_it_is_only_repaired(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    path.write_text(metrics_line(1) + metrics_line(2) + '{"split": "tr')
    cut_metrics_file(path, 10_000)  # longer than the file: never cut mid-row, only the torn tail goes
    assert path.read_text() == metrics_line(1) + metrics_line(2)
    cut_metrics_file(path, 5)  # not a row boundary
    assert path.read_text() == metrics_line(1) + metrics_line(2)
    cut_metrics_file(path, len(metrics_line(1)))
    assert path.read_text() == metrics_line(1)
    path.write_text('{"no newline at all"')
    cut_metrics_file(path, 10_000)
    assert path.read_text() == ""


def test_a_requeued_job_resumes_without_being_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("SLURM_RESTART_COUNT", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(variable, raising=False)
    assert (resume_requested(False, tmp_path), resume_requested(True, tmp_path)) == (False, True)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert not resume_requested(False, tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")  # Slurm requeued it
    assert resume_requested(False, tmp_path)
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    RunDirectory(tmp_path).write_summary(status="preempted")
    assert not resume_requested(False, tmp_path)  # a preempted run outside submitit waits for resume=true
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")  # submitit's local executor requeues without a count
    assert resume_requested(False, tmp_path)
    RunDirectory(tmp_path).write_summary(status="failed")
    assert not resume_requested(False, tmp_path)


def test_archived_checkpoints_are_out_of_the_resume_lookup(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 3)
    archive_checkpoints(tmp_path, attempt=1)
    assert newest_complete_checkpoint(tmp_path) is None
    assert (tmp_path / "checkpoint.attempt-1-3" / COMPLETE_MARKER).exists()
