"""tracked_run: the job bracket the composition root uses (status, manifest, logger lifecycle, reward curve)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from grpolab.tracking.loggers import JobInfo
from grpolab.tracking.metrics_file import MetricsFileCallback
from grpolab.tracking.rundir import RunDirectory
from grpolab.tracking.session import tracked_run

JOB = JobInfo(overrides=("optimizer.lr=0.1", "seed=1"))


class RecordingLogger:
    """A logger collaborator that remembers the calls made to it."""

    def __init__(self, fail_on_start: bool = False) -> None:
        self.fail_on_start = fail_on_start
        self.started_with: tuple[Path, Mapping[str, Any], JobInfo] | None = None
        self.finished_with: dict[str, Any] | None = None

    def start(self, run_dir: Path, config: Mapping[str, Any], job_info: JobInfo) -> list[str]:
        if self.fail_on_start:
            raise ConnectionError("wandb unreachable")
        self.started_with = (Path(run_dir), config, job_info)
        return ["recording"]

    def finish(self, summary: Mapping[str, Any]) -> None:
        self.finished_with = dict(summary)


def write_train_rows(run_dir: RunDirectory, rewards: list[float]) -> None:
    with run_dir.metrics_path.open("a") as handle:
        for step, reward in enumerate(rewards, start=1):
            handle.write(json.dumps({"split": "train", "step": step, "reward": reward}) + "\n")


def test_successful_job_is_completed_and_the_logger_sees_the_final_summary(tmp_path: Path) -> None:
    logger = RecordingLogger()
    with tracked_run(tmp_path, config={"seed": 1}, seed=1, logger=logger, job_info=JOB) as run:
        assert run.report_to == ["recording"]
        assert [type(callback) for callback in run.callbacks] == [MetricsFileCallback]
        assert run.run_dir.read_summary()["status"] == "running"
        write_train_rows(run.run_dir, [0.0, 1.0])
        run.run_dir.write_summary(eval_after={"accuracy": 0.5})

    assert logger.started_with == (tmp_path, {"seed": 1}, JOB)
    assert logger.finished_with is not None and logger.finished_with["status"] == "completed"
    assert run.summary["status"] == "completed" and run.summary["eval_after"] == {"accuracy": 0.5}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["overrides"] == ["optimizer.lr=0.1", "seed=1"]
    assert (tmp_path / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failure_inside_the_job_is_recorded_then_reraised_and_the_logger_finished(tmp_path: Path) -> None:
    logger = RecordingLogger()
    with pytest.raises(ValueError, match="shape mismatch"):
        with tracked_run(tmp_path, config={}, seed=0, logger=logger, job_info=JOB) as run:
            write_train_rows(run.run_dir, [0.5])
            raise ValueError("shape mismatch")

    summary = RunDirectory(tmp_path).read_summary()
    assert summary["status"] == "failed" and summary["reason"] == "ValueError: shape mismatch"
    assert logger.finished_with is not None
    assert logger.finished_with["status"] == "failed"
    assert logger.finished_with["reason"] == "ValueError: shape mismatch"
    assert (tmp_path / "reward_curve.png").exists()  # the partial curve is still worth a look


def test_failure_to_start_the_logger_is_recorded_and_finish_is_not_called(tmp_path: Path) -> None:
    logger = RecordingLogger(fail_on_start=True)
    with pytest.raises(ConnectionError):
        with tracked_run(tmp_path, config={}, seed=0, logger=logger, job_info=JOB):
            pytest.fail("the body must not run when the logger cannot start")
    summary = RunDirectory(tmp_path).read_summary()
    assert summary["status"] == "failed" and summary["reason"] == "ConnectionError: wandb unreachable"
    assert logger.finished_with is None
    assert (tmp_path / "manifest.json").exists()


def test_a_failing_logger_finish_does_not_hide_the_job_error(tmp_path: Path) -> None:
    class BrokenFinish(RecordingLogger):
        def finish(self, summary: Mapping[str, Any]) -> None:
            raise OSError("disk full")

    with pytest.raises(KeyError, match="answer"):
        with tracked_run(tmp_path, config={}, seed=0, logger=BrokenFinish(), job_info=JOB):
            raise KeyError("answer")
    assert RunDirectory(tmp_path).read_summary()["status"] == "failed"


def test_another_process_starts_no_logger_and_writes_no_manifest(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")  # the second process of a torchrun job; its failure is recorded, nothing else
    monkeypatch.setenv("WORLD_SIZE", "2")
    logger = RecordingLogger()
    with pytest.raises(ValueError), tracked_run(tmp_path, config={}, seed=0, logger=logger, job_info=JOB) as run:
        assert run.report_to == ["none"]
        raise ValueError("diverged")
    assert logger.started_with is None and logger.finished_with is None
    assert not (tmp_path / "manifest.json").exists() and not (tmp_path / "reward_curve.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["reason"] == "ValueError: diverged (process 1 of 2)"


def test_the_summary_records_the_world_size(tmp_path: Path) -> None:
    with tracked_run(tmp_path, config={}, seed=0, logger=RecordingLogger(), job_info=JOB, plot=False) as run:
        pass
    assert run.summary["world_size"] == 1
