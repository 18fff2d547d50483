"""Loggers: real wandb offline runs (one per job, grouped per sweep), TensorBoard directory, Hydra config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from grpolab.tracking.loggers import JobInfo, NoLogger, TensorBoardLogger, WandbLogger

CONF_LOGGER = Path(__file__).resolve().parents[2] / "conf" / "logger"
SWEEP_DIR = "outputs/multirun/2024-05-01/12-00-00"


def test_two_jobs_in_one_process_get_two_grouped_offline_runs_with_their_summaries(
    tmp_path: Path, clean_tracking_env: None, offline_wandb_run: Any
) -> None:
    import wandb

    run_ids = []
    for job_num, lr in enumerate(["1e-3", "1e-2"]):
        run_dir = tmp_path / str(job_num)
        job = JobInfo(overrides=(f"optimizer.lr={lr}", "seed=0"), sweep_dir=SWEEP_DIR, job_num=job_num)
        logger = WandbLogger(project="grpolab-test")
        assert logger.start(run_dir, {"optimizer": {"lr": float(lr)}}, job) == ["wandb"]
        assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(run_dir)
        wandb.log({"train/reward": 0.5})  # what WandbCallback does during training, onto the same run
        status = "completed" if job_num == 0 else "failed"
        logger.finish({"status": status, "eval_after": {"accuracy": 0.25 * (job_num + 1)}, "steps": 3})
        assert wandb.run is None
        assert "WANDB_MODE" not in os.environ and "WANDB_DIR" not in os.environ

        offline = offline_wandb_run(run_dir)
        run_record, summary = offline.run, offline.summary
        run_ids.append(run_record.run_id)
        assert run_record.run_group == "2024-05-01_12-00-00"
        assert run_record.project == "grpolab-test"
        assert list(run_record.tags) == [f"optimizer.lr={lr}", "seed=0"]
        assert summary["eval_after/accuracy"] == 0.25 * (job_num + 1)
        assert summary["status"] == status and summary["steps"] == 3
        assert summary["train/reward"] == 0.5 and "train/reward" in offline.history_keys
        assert offline.exit_code == (0 if status == "completed" else 1)
    assert run_ids[0] != run_ids[1]


def test_single_run_is_ungrouped_and_an_explicit_group_wins(
    tmp_path: Path, clean_tracking_env: None, offline_wandb_run: Any
) -> None:
    single = WandbLogger(project="grpolab-test")
    single.start(tmp_path / "single", {}, JobInfo())
    single.finish({"status": "completed"})
    assert offline_wandb_run(tmp_path / "single").run.run_group == ""

    named = WandbLogger(project="grpolab-test", group="ablation", tags=["baseline"])
    named.start(tmp_path / "named", {}, JobInfo(overrides=("x=1",), sweep_dir=SWEEP_DIR, job_num=0))
    named.finish({"status": "completed"})
    run_record = offline_wandb_run(tmp_path / "named").run
    assert run_record.run_group == "ablation"
    assert list(run_record.tags) == ["baseline", "x=1"]


@pytest.mark.parametrize("silent", [None, False])
def test_an_offline_run_prints_nothing_unless_asked(
    tmp_path: Path, clean_tracking_env: None, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
    silent: bool | None,
) -> None:
    import wandb

    monkeypatch.delenv("WANDB_SILENT", raising=False)
    logger = WandbLogger(project="grpolab-test", silent=silent)
    logger.start(tmp_path, {}, JobInfo())
    wandb.log({"train/reward": 0.5})
    logger.finish({"status": "completed", "eval_after": {"accuracy": 0.5}})
    printed = capfd.readouterr()
    if silent is None:  # offline: no banner, no history/summary block
        assert "wandb" not in printed.out + printed.err
    else:
        assert "Run summary" in printed.err and "offline" in printed.err


def test_tensorboard_logger_points_the_trainer_callback_at_the_run_dir(
    tmp_path: Path, clean_tracking_env: None
) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    logger = TensorBoardLogger()
    assert logger.start(tmp_path, {}, JobInfo()) == ["tensorboard"]
    # the callback transformers builds for report_to=["tensorboard"], constructed as the Trainer would
    callback = TensorBoardCallback()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=["tensorboard"])
    state = TrainerState()
    callback.on_train_begin(args, state, TrainerControl())
    callback.on_log(args, state, TrainerControl(), logs={"reward": 0.5})
    callback.on_train_end(args, state, TrainerControl())
    logger.finish({"status": "completed", "eval_after": {"accuracy": 0.5}, "steps": 2})

    assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2  # training + summary
    assert not (tmp_path / "out" / "runs").exists()


def test_no_logger_reports_to_none(tmp_path: Path) -> None:
    logger = NoLogger()
    assert logger.start(tmp_path, {}, JobInfo()) == ["none"]
    logger.finish({"status": "completed"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "cls"), [("wandb", WandbLogger), ("tensorboard", TensorBoardLogger), ("none", NoLogger)]
)
def test_logger_configs_instantiate(name: str, cls: type) -> None:
    logger = instantiate(OmegaConf.load(CONF_LOGGER / f"{name}.yaml"))
    assert isinstance(logger, cls)
    if isinstance(logger, WandbLogger):
        assert logger.mode == "offline" and logger.entity is None and logger.group is None


@pytest.mark.slow  # a Hydra app in a new interpreter
def test_job_info_from_hydra_in_a_real_multirun(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import json, hydra
            from grpolab.tracking.loggers import JobInfo

            @hydra.main(version_base=None, config_path=None)
            def main(cfg):
                info = JobInfo.from_hydra()
                print("JOBINFO", json.dumps([list(info.overrides), info.sweep_id, info.job_num]))

            main()
            """
        )
    )
    sweep_dir = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    result = subprocess.run(
        [sys.executable, str(app), "-m", "+lr=0.1,0.2", "+seed=3", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=True,
    )
    infos = [json.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("JOBINFO")]
    assert infos == [
        [["+lr=0.1", "+seed=3"], "2024-05-01_12-00-00", 0],
        [["+lr=0.2", "+seed=3"], "2024-05-01_12-00-00", 1],
    ]
    assert JobInfo(overrides=("+lr=0.1", "~x", "a.b=[1,2]")).override_items() == {"lr": "0.1", "x": "", "a.b": "[1,2]"}


def test_job_info_outside_hydra_is_empty() -> None:
    assert JobInfo.from_hydra() == JobInfo()
