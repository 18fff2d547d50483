"""The console: which log lines reach the terminal, job prefixes, the closing run summary, and the real CLI's output
for a single run (a joblib multirun's: test_sweeps.py, which shares that sweep with its launcher test)."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

import grpolab.tracking.console as console
from grpolab.tracking.console import (
    NOT_ON_CONSOLE,
    ConsoleCallback,
    ConsoleHandler,
    describe_job,
    quiet_libraries,
    summary_lines,
    swept_keys,
)
from tests_support import LIBRARY_NOISE


@pytest.fixture
def console_logger():
    """A logger tree ``<name>`` with only a ConsoleHandler on a string stream, like Hydra's console handler."""
    stream = io.StringIO()
    handler = ConsoleHandler(stream, shown_loggers=["grpolab", "my_rewards"], others_level="ERROR")
    handler.setFormatter(logging.Formatter("%(message)s"))
    loggers = []

    def get(name: str) -> logging.Logger:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        loggers.append(logger)
        return logger

    yield get, stream
    for logger in loggers:
        logger.handlers, logger.propagate = [], True
        logger.setLevel(logging.NOTSET)


def test_console_shows_own_lines_and_errors_and_hides_library_warnings(console_logger) -> None:
    get, stream = console_logger
    get("grpolab.train").info("model: 0.13M parameters")
    get("grpolab.sweeps").warning("resume: other overrides")
    get("my_rewards.scoring").info("a user's reward module, listed in shown_loggers")
    get("py.warnings").warning("UserWarning: 'pin_memory' argument is set as true")
    get("transformers.modeling_utils").warning("`is_gradient_checkpointing` is deprecated")
    get("trl.trainer").info("library info")
    get("datasets.builder").error("library errors still show")
    get("grpolab.tracking.progress").info("GRPO 5/200: shown by a live bar", extra=NOT_ON_CONSOLE)
    assert stream.getvalue().splitlines() == [
        "model: 0.13M parameters",
        "WARNING: resume: other overrides",
        "a user's reward module, listed in shown_loggers",
        "ERROR: library errors still show",
    ]


def test_an_unknown_level_names_the_key() -> None:
    with pytest.raises(ValueError, match="hydra.job_logging.handlers.console.others_level: unknown level 'LOUD'"):
        ConsoleHandler(io.StringIO(), others_level="LOUD")


def test_job_prefix_names_the_job_and_its_swept_values() -> None:
    multirun = OmegaConf.create({"hydra": {
        "overrides": {"task": ["optimizer.lr=1e-4,3e-4", "logger=none", "seed=range(2)", "+trainer.x=1"]},
        "sweeper": {"params": {"trainer.beta": "0,0.04"}},
    }})
    keys = swept_keys(multirun)
    assert keys == ["optimizer.lr", "seed", "trainer.beta"]
    assert describe_job(3, ["optimizer.lr=0.0003", "logger=none", "seed=1", "trainer.beta=0.04"], keys) == (
        "[job 3 optimizer.lr=0.0003 seed=1 trainer.beta=0.04]")
    long = describe_job(12, [f"key{i}.value=12345" for i in range(10)], ())
    assert len(long) == console.PREFIX_MAX_CHARS + 2 and long.endswith("...]")


def job_config(run_dir: Path, mode: RunMode, num: int = 0, overrides=("optimizer.lr=0.001",)):
    return OmegaConf.create({"hydra": {
        "mode": mode, "job": {"num": num}, "overrides": {"task": list(overrides)},
        "runtime": {"output_dir": str(run_dir)},
        "job_logging": {"handlers": {"file": {"filename": str(run_dir / "train.log")}}},
    }})


def write_summary(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "wall_time_s": 125.0, "steps": 200, "train_reward_final": 0.61,
        "train_reward_final_window": 5, "eval_before": {"accuracy": 0.07, "num_samples": 200},
        "eval_after": {"accuracy": 0.57, "num_samples": 200}, **fields}))


@pytest.fixture
def root_console():
    """A ConsoleHandler on the root logger, where Hydra's job logging puts it."""
    handler = ConsoleHandler(io.StringIO())
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def test_the_callback_prefixes_a_multirun_job_and_prints_its_summary_last(tmp_path, monkeypatch, capsys,
                                                                          root_console) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "outputs" / "multirun" / "3"
    write_summary(run_dir)
    (run_dir / "reward_curve.png").write_bytes(b"png")
    (run_dir / "train.log").write_text("")
    callback = ConsoleCallback()
    callback.on_multirun_start(OmegaConf.create({"hydra": {"overrides": {"task": ["optimizer.lr=1e-3,2e-3"]}}}))
    config = job_config(run_dir, RunMode.MULTIRUN, 3, ["optimizer.lr=0.001", "logger=none"])
    callback.on_job_start(config)
    assert root_console.job_prefix == "[job 3 optimizer.lr=0.001] "
    callback.on_job_end(config, JobReturn(status=JobStatus.COMPLETED))
    assert root_console.job_prefix == ""
    assert capsys.readouterr().out.splitlines() == [
        "[job 3 optimizer.lr=0.001] grpolab: run completed in 2 min 05 s",
        "[job 3 optimizer.lr=0.001]   held-out accuracy  0.070 -> 0.570 (before -> after GRPO, 200 problems)",
        "[job 3 optimizer.lr=0.001]   train reward       0.610 (mean of the last 5 logged steps; 200 GRPO steps)",
        "[job 3 optimizer.lr=0.001]   run directory      outputs/multirun/3",
        "[job 3 optimizer.lr=0.001]   plot               outputs/multirun/3/reward_curve.png",
        "[job 3 optimizer.lr=0.001]   log                outputs/multirun/3/train.log",
    ]


def test_a_single_run_has_no_prefix_and_names_the_model_once_saved(tmp_path, capsys, root_console) -> None:
    run_dir = tmp_path / "run"
    write_summary(run_dir)
    callback = ConsoleCallback()
    config = job_config(run_dir, RunMode.RUN)
    callback.on_job_start(config)
    assert root_console.job_prefix == ""
    callback.on_job_end(config, JobReturn(status=JobStatus.COMPLETED))
    assert not any(line.lstrip().startswith("model ") for line in capsys.readouterr().out.splitlines())
    (run_dir / "model").mkdir()
    assert f"  model              {(run_dir / 'model').resolve()}" in summary_lines(run_dir, json.loads(
        (run_dir / "summary.json").read_text()))


def test_a_failed_job_says_why_even_without_a_summary_file(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("Traceback ...")
    callback = ConsoleCallback()
    config = job_config(run_dir, RunMode.MULTIRUN, 1)
    callback.on_job_start(config)
    failed = JobReturn(status=JobStatus.FAILED)
    failed.return_value = FileNotFoundError("data.path: /no/such/file.jsonl")
    callback.on_job_end(config, failed)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[job 1 optimizer.lr=0.001] grpolab: run failed"
    assert lines[1] == ("[job 1 optimizer.lr=0.001]   reason             "
                        "FileNotFoundError: data.path: /no/such/file.jsonl")
    assert lines[-1].endswith("train.log (with the traceback)")


def test_a_failed_single_run_leaves_its_traceback_in_the_log_file(tmp_path, capsys, caplog) -> None:
    run_dir = tmp_path / "run"
    write_summary(run_dir, status="failed", reason="RewardError: rewards.broken raised ZeroDivisionError")
    callback = ConsoleCallback()
    config = job_config(run_dir, RunMode.RUN)
    callback.on_job_start(config)
    failed = JobReturn(status=JobStatus.FAILED)
    try:
        raise ZeroDivisionError("float division by zero")
    except ZeroDivisionError as error:
        failed.return_value = error
    callback.on_job_end(config, failed)
    assert capsys.readouterr().out.startswith("grpolab: run failed in 2 min 05 s\n  reason             RewardError:")
    [record] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert record.exc_info[1] is failed._return_value and record.console is False  # Hydra prints it on the console


@pytest.fixture
def restore_library_logging():
    import datasets
    import transformers

    datasets_handlers = list(logging.getLogger("datasets").handlers)
    yield
    logging.captureWarnings(False)
    transformers.utils.logging.disable_propagation()
    transformers.utils.logging.enable_default_handler()
    logging.getLogger("datasets").handlers = datasets_handlers
    datasets.enable_progress_bars()


def test_quiet_libraries_turns_library_output_into_log_records(restore_library_logging, capfd) -> None:
    import datasets
    import transformers

    records: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = records.append
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        quiet_libraries()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("'pin_memory' argument is set as true but no accelerator is found", UserWarning)
        transformers.utils.logging.get_logger("transformers.modeling_utils").warning("deprecated, use X")
        logging.getLogger("datasets.arrow_dataset").warning("a datasets warning")
        datasets.Dataset.from_dict({"x": list(range(5))}).map(lambda row: row)
    finally:
        root.removeHandler(collector)
    assert {record.name for record in records} >= {"py.warnings", "transformers.modeling_utils",
                                                    "datasets.arrow_dataset"}
    printed = capfd.readouterr()
    assert printed.out + printed.err == ""  # no stderr handler of their own, no Map: bar


# ------------------------------------------------------------------------------------------------ real CLI


@pytest.mark.slow
def test_a_single_run_prints_progress_lines_and_ends_with_the_summary(run_cli, tiny_run, tmp_path) -> None:
    # wandb (offline) is the default logger, which TINY_RUN turns off: this run keeps it, and the ids mode's
    # dataset preparation, to show that neither prints.
    result = run_cli(*[o for o in tiny_run if o != "logger=none"], "tokenizer_mode=ids", merged_output=True)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    assert not [line for line in lines if LIBRARY_NOISE.search(line)], result.stdout
    assert len(lines) <= 30, result.stdout
    # one line per logging interval: the 10 warm-start steps are one interval, GRPO logs every step (logging_steps=1)
    assert len([line for line in lines if " warm start 10/10 (100%, " in line]) == 1, result.stdout
    grpo = [line for line in lines if re.search(r" GRPO \d/3 \(", line)]
    assert len(grpo) == 3 and "ETA" in grpo[0] and re.search(r"reward \d\.\d{3} \(accuracy ", grpo[0]), grpo
    summary_start = next(i for i, line in enumerate(lines) if line.startswith("grpolab: run completed in "))
    block = lines[summary_start:]
    assert block[2:] == ["  train reward       " + block[2].split(maxsplit=2)[2], "  run directory      run",
                         "  model              run/model", "  plot               run/reward_curve.png",
                         "  log                run/train.log"], block
    assert re.fullmatch(r"  held-out accuracy  \d\.\d{3} -> \d\.\d{3} \(before -> after GRPO, 16 problems\)",
                        block[1]), block

    log = (tmp_path / "run" / "train.log").read_text()
    for detail in ("[py.warnings][WARNING]", "pin_memory", "GRPO 3/3", "warm start 10/10", "run completed in"):
        assert detail in log, detail
    assert (tmp_path / "run" / "wandb").is_dir()  # the wandb run was written, just not announced
