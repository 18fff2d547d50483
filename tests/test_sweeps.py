"""Sweeps end to end through the real entry point and Hydra's real plugins, plus the resume and failure bookkeeping.
Sweeps whose jobs run in the launching process (the basic launcher, Optuna's trials) run in this process; the
joblib launcher (its workers are processes) and a sweep killed mid-job go through the CLI in a subprocess. The submitit
launcher's sweeps: tests/test_distributed.py (two-task jobs) and tests/trainer/test_preemption.py (a requeued job)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from grpolab.sweeps import (
    SweepCallback,
    comparable_overrides,
    find_previous_sweep,
    previous_completion,
    reported_sweep,
    sweep_root,
)
from grpolab.tracking.jsonfiles import read_json
from grpolab.tracking.rundir import RunDirectory, read_metrics
from tests_support import LIBRARY_NOISE, train_in_process

# The cheapest settings that still run the whole pipeline (warm start, held-out eval, GRPO, run directory). 30 warm
# start steps make some format rewards non-zero, so GRPO steps have real gradients (the leak test needs them).
TINY = ["trainer.max_steps=3", "trainer.logging_steps=1", "warmstart.steps=30", "data.train_size=64",
        "data.eval_size=16", "batch.prompts_per_step=2", "batch.generations_per_prompt=4"]
TIME_KEYS = {"time_s", "step_time_s", "step_time", "wall_time_s"}


def sweep_environment(cache: Path) -> dict[str, str | None]:
    """No wandb settings from the shell (WANDB_* unset), wandb silent, the warm starts cached in ``cache``."""
    unset = dict.fromkeys(key for key in os.environ if key.startswith("WANDB_"))
    return {**unset, "GRPOLAB_CACHE_DIR": str(cache), "WANDB_SILENT": "true"}


def run_cli(cwd: Path, *arguments: str, cache: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m grpolab.train -m *arguments`` in a subprocess; stderr goes into ``stdout``, interleaved as a
    terminal shows them."""
    environment = {key: value for key, value in {**os.environ, **sweep_environment(cache)}.items() if value is not None}
    return subprocess.run([sys.executable, "-m", "grpolab.train", "-m", *arguments], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=cwd, env=environment, timeout=timeout)


def run_sweep(cwd: Path, *arguments: str, cache: Path) -> subprocess.CompletedProcess:
    """The same command run by this process (``conftest.train_in_process``)."""
    return train_in_process(["-m", *arguments], cwd, sweep_environment(cache))


def only_sweep_dir(cwd: Path) -> Path:
    sweeps = [path.parent for path in (cwd / "outputs" / "multirun").glob("*/*/multirun.yaml")]
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def job_summaries(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    return {path.parent.name: json.loads(path.read_text()) for path in sweep_dir.glob("*/summary.json")}


def comparable_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [{key: value for key, value in row.items() if key not in TIME_KEYS and not key.startswith("timing/")}
            for row in read_metrics(run_dir / "metrics.jsonl", split=None)]


def report_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "report.csv").open() as handle:
        return list(csv.DictReader(handle))


def load_wandb_reader() -> Any:
    path = Path(__file__).parent / "tracking" / "conftest.py"  # shared offline-wandb reader
    spec = importlib.util.spec_from_file_location("tracking_wandb_reader", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.read_offline_wandb_run


# ----------------------------------------------------------------------------------------------- fast: helpers


def test_resume_helpers_match_commands_and_jobs() -> None:
    assert sweep_root("outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}") == (Path("outputs/multirun"), 2)
    assert sweep_root("runs/sweep_${now:%H}") == (Path("runs"), 1)
    assert sweep_root("runs/fixed") is None
    assert comparable_overrides(["seed=0,1", "resume=True", "+x=1"]) == ["seed=0,1", "+x=1"]


def write_sweep(root: Path, name: str, task: list[str], params: Any = None, age: float = 0.0) -> Path:
    sweep = root / "2024-05-01" / name
    sweep.mkdir(parents=True)
    multirun = sweep / "multirun.yaml"
    hydra = {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": params},
             "overrides": {"task": task, "hydra": []}}
    multirun.write_text(yaml.safe_dump({"seed": 0, "hydra": hydra}))
    os.utime(multirun, (time.time() - age, time.time() - age))
    return sweep


def test_find_previous_sweep_takes_the_latest_sweep_of_the_same_command(tmp_path: Path) -> None:
    sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None}
    task = ["optimizer.lr=1e-3,1e-2", "seed=0,1"]
    older = write_sweep(tmp_path, "10-00-00", task, age=300)
    newer = write_sweep(tmp_path, "11-00-00", [*task, "resume=true"], age=200)  # an earlier resume of it
    write_sweep(tmp_path, "12-00-00", ["optimizer.lr=1e-3", "seed=0,1"], age=100)  # another command
    write_sweep(tmp_path, "12-30-00", list(reversed(task)), age=50)  # same values, other job numbering
    write_sweep(tmp_path, "13-00-00", task, params={"seed": "0,1,2"}, age=0)  # another grid in the config
    root = (tmp_path, 2)
    assert find_previous_sweep(root, [*task, "resume=true"], sweeper) == newer
    newer.joinpath("multirun.yaml").unlink()
    assert find_previous_sweep(root, [*task, "resume=true"], sweeper) == older
    assert find_previous_sweep(root, ["seed=0"], sweeper) is None


def write_job(run_dir: Path, status: str, overrides: list[str]) -> RunDirectory:
    job = RunDirectory(run_dir)
    job.write_manifest(seed=0, config={}, overrides=overrides)
    job.write_summary(status=status, eval_after={"accuracy": 0.5})
    job.metrics_path.write_text('{"split": "train", "step": 1, "reward": 0.5}\n')
    return job


def test_previous_completion_skips_only_the_same_completed_job(tmp_path: Path) -> None:
    done = write_job(tmp_path / "0", "completed", ["optimizer.lr=0.001", "seed=0"])
    assert previous_completion(done.path, ["optimizer.lr=0.001", "seed=0", "resume=True"])["eval_after"] == {
        "accuracy": 0.5}
    assert done.summary_path.exists() and done.metrics_path.exists()  # untouched

    failed = write_job(tmp_path / "1", "failed", ["optimizer.lr=0.01", "seed=0"])
    assert previous_completion(failed.path, ["optimizer.lr=0.01", "seed=0", "resume=True"]) is None
    # the failed attempt is kept aside, the new attempt starts from empty files
    assert not failed.summary_path.exists() and not failed.metrics_path.exists()
    assert read_json(failed.path / "summary.attempt-1.json")["status"] == "failed"
    assert (failed.path / "metrics.attempt-1.jsonl").exists()

    other = write_job(tmp_path / "2", "completed", ["optimizer.lr=0.1", "seed=0"])
    assert previous_completion(other.path, ["optimizer.lr=0.001", "seed=0"]) is None
    assert previous_completion(tmp_path / "3", ["seed=0"]) is None  # never ran


def test_callback_records_a_job_that_failed_before_it_was_tracked(tmp_path: Path) -> None:
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / "4")}, "mode": RunMode.MULTIRUN,
                                         "job": {"num": 4}}})
    try:
        raise KeyError("missing interpolation key")
    except KeyError as error:
        job_return = JobReturn(overrides=["seed=4"], status=JobStatus.FAILED, _return_value=error)
    SweepCallback().on_job_end(config, job_return)
    summary = read_json(tmp_path / "4" / "summary.json")
    assert summary["status"] == "failed" and summary["reason"] == "KeyError: 'missing interpolation key'"
    # a completed job is left alone
    SweepCallback().on_job_end(config, JobReturn(overrides=["seed=4"], status=JobStatus.COMPLETED, _return_value=1))
    assert read_json(tmp_path / "4" / "summary.json")["status"] == "failed"


@pytest.mark.slow  # the report draws its PNGs: ~2 s
def test_an_experiment_groups_the_sweep_report_through_the_callback_keys(compose_cfg: Any, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_cfg(["experiment=text_vs_token", f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    callback = instantiate(cfg.hydra.callbacks.sweep)
    assert callback.group_by == ("tokenizer_mode", "reward_level") and callback.last_k == 5
    assert callback.metrics == ("timing/rewards_s", "tokenizer/calls", "tokenizer/encode_calls",
                                "tokenizer/decode_calls")
    cells = [(mode, level, seed) for mode in ("text", "ids") for level in ("text", "token") for seed in (0, 1)]
    for job, (mode, level, seed) in enumerate(cells):  # what the report reads of the experiment's 8 jobs
        run = RunDirectory(tmp_path / str(job))
        run.write_manifest(seed=seed, config={}, overrides=[f"tokenizer_mode={mode}", f"reward_level={level}",
                                                            f"seed={seed}"])
        run.write_summary(status="completed", eval_after={"accuracy": 0.5})
        decodes, encodes = (0 if level == "token" else 64), (0 if mode == "ids" else 64)
        run.metrics_path.write_text(json.dumps({
            "split": "train", "step": 1, "reward": 0.5 + seed / 10, "timing/rewards_s": 0.1, "tokenizer/calls":
            encodes + decodes, "tokenizer/encode_calls": encodes, "tokenizer/decode_calls": decodes}) + "\n")

    with reported_sweep():
        callback.on_multirun_start(cfg)
        callback.on_multirun_end(cfg)
    assert [(row["tokenizer_mode"], row["reward_level"], row["n_seeds"], row["tokenizer/calls_mean"],
             row["train_reward_final_mean"]) for row in report_rows(tmp_path)] == [
        ("text", "text", "2", "128.0", "0.55"), ("text", "token", "2", "64.0", "0.55"),
        ("ids", "text", "2", "64.0", "0.55"), ("ids", "token", "2", "0.0", "0.55")]
    assert (tmp_path / "reward_curve_ids_token.png").exists()


def test_submitit_slurm_launcher_takes_partition_gpus_time_and_nodes_as_keys(compose_cfg: Any) -> None:
    from hydra.utils import instantiate

    cfg = compose_cfg(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                       "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=90", "hydra.launcher.nodes=2"],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert {key: launcher.params[key] for key in ("partition", "gpus_per_node", "timeout_min", "nodes")} == {
        "partition": "gpu", "gpus_per_node": 2, "timeout_min": 90, "nodes": 2}


# ------------------------------------------------------------------------------------------- slow: real sweeps


@pytest.mark.slow
def test_grid_in_one_process_gives_each_job_its_own_run_and_nothing_leaks(tmp_path: Path, shared_cache: Path) -> None:
    # job 2 repeats job 0 after a job with another learning rate: same process, so any leaked state would show
    # The length reward varies inside every group, so the learning rate visibly changes the second job.
    result = run_sweep(tmp_path, "logger=wandb", *TINY, "seed=0", "rewards=[accuracy,format,length]",
                       "rewards.length.target=5", "optimizer.lr=1e-3,1e-2,1e-3", cache=shared_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    jobs = [sweep_dir / str(num) for num in range(3)]
    read_offline_wandb_run = load_wandb_reader()
    run_ids = set()
    for job in jobs:
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.jsonl", "manifest.json",
                     "reward_curve.png"):
            assert (job / name).exists(), job / name
        assert read_json(job / "summary.json")["status"] == "completed"
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        wandb_run = read_offline_wandb_run(job)
        run_ids.add(wandb_run.run.run_id)
        assert wandb_run.run.run_group == "_".join(sweep_dir.parts[-2:])
        assert list(wandb_run.run.tags) == overrides
        config = {item.key: json.loads(item.value_json) for item in wandb_run.run.config.update}
        assert json.dumps(config).count('"optimizer.lr"') >= 1  # the overrides dict is part of the run config
        assert wandb_run.summary["status"] == "completed"
    assert len(run_ids) == 3

    first, other, repeat = (comparable_rows(job) for job in jobs)
    assert len(first) == 3 and any(row["grad_norm"] > 0 for row in first)  # real updates happened
    assert repeat == first
    assert [row["entropy"] for row in other] != [row["entropy"] for row in first]
    summaries = [read_json(job / "summary.json") for job in jobs]
    assert summaries[2]["eval_after"]["accuracy"] == summaries[0]["eval_after"]["accuracy"]

    for name in ("report.md", "report.csv", "reward_curves.png", "accuracy_vs_optimizer.lr.png"):
        assert (sweep_dir / name).exists(), name
    rows = {row["optimizer.lr"]: row for row in report_rows(sweep_dir)}
    assert rows["0.001"]["n_seeds"] == "2" and rows["0.01"]["n_seeds"] == "1"
    assert float(rows["0.001"]["train_reward_final_std"]) == 0.0


def write_problems(path: Path, count: int = 80) -> None:
    rows = [{"prompt": f"{a}+{a % 7}=", "answer": str(a + a % 7), "solution": f"<answer>{a + a % 7}</answer>"}
            for a in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.mark.slow
def test_failed_jobs_do_not_stop_the_sweep_and_resume_reruns_only_what_is_missing(tmp_path: Path,
                                                                                   shared_cache: Path) -> None:
    # "flaky" is a data option from an extra config dir whose file is missing on the first run: a failure only the job
    # can see (preflight checks the command line, not the file system), fixed before the resume
    flaky = tmp_path / "extra" / "data" / "flaky.yaml"
    flaky.parent.mkdir(parents=True)
    problems = tmp_path / "problems.jsonl"
    flaky.write_text(f"defaults:\n  - jsonl\n  - _self_\npath: {problems}\n")
    command = ["-cd", str(tmp_path / "extra"), "logger=none", *TINY, "seed=0,1", "data=arithmetic,flaky"]

    first = run_sweep(tmp_path, *command, cache=shared_cache)
    assert first.returncode == 1
    sweep_dir = only_sweep_dir(tmp_path)
    assert first.stderr.splitlines()[-1] == (
        f"grpolab: 2 of 4 jobs failed (1, 3); see {sweep_dir.relative_to(tmp_path)}/report.md")
    summaries = job_summaries(sweep_dir)
    assert {num: summary["status"] for num, summary in summaries.items()} == {
        "0": "completed", "1": "failed", "2": "completed", "3": "failed"}
    assert summaries["1"]["reason"] == f"DataError: data.path='{problems}' is not a file"
    report = (sweep_dir / "report.md").read_text()
    assert "## Failed or unfinished runs" in report and "| 3 | data=flaky | 1 | FAILED | DataError:" in report
    assert [(row["data"], row["n_seeds"], row["n_failed"]) for row in report_rows(sweep_dir)] == [
        ("arithmetic", "2", "0"), ("flaky", "0", "2")]

    # the sweep was interrupted before job 2 (simulated), and the config file gets fixed
    completed_files = {name: (sweep_dir / "0" / name).read_bytes() for name in ("summary.json", "metrics.jsonl")}
    completed_mtime = (sweep_dir / "0" / "summary.json").stat().st_mtime_ns
    for path in sorted((sweep_dir / "2").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (sweep_dir / "2").rmdir()
    write_problems(problems)

    resumed = run_sweep(tmp_path, *command, "resume=true", cache=shared_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume=true: continuing the sweep in {sweep_dir.relative_to(tmp_path)}" in resumed.stderr
    assert only_sweep_dir(tmp_path) == sweep_dir  # no new sweep dir
    assert {name: (sweep_dir / "0" / name).read_bytes() for name in completed_files} == completed_files
    assert (sweep_dir / "0" / "summary.json").stat().st_mtime_ns == completed_mtime
    assert {num: summary["status"] for num, summary in job_summaries(sweep_dir).items()} == {
        "0": "completed", "1": "completed", "2": "completed", "3": "completed"}
    assert read_json(sweep_dir / "1" / "summary.attempt-1.json")["status"] == "failed"
    assert [(row["data"], row["n_seeds"], row["n_failed"]) for row in report_rows(sweep_dir)] == [
        ("arithmetic", "2", "0"), ("flaky", "2", "0")]


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory: pytest.TempPathFactory,
                 shared_cache: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """``(cwd, result)`` of a two-job sweep through the joblib launcher (two worker processes), its output interleaved
    as a terminal shows it, its sweep directory ``cwd / 'sweep'``: what the launcher does and what the console shows
    are two tests of one sweep."""
    cwd = tmp_path_factory.mktemp("joblib")
    result = run_cli(cwd, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep", "threads=1",
                     "logger=none", *TINY, "optimizer.lr=1e-3,2e-3", cache=shared_cache)
    assert result.returncode == 0, result.stdout[-3000:]
    return cwd, result


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two busy processes: one such test at a time (pyproject.toml)
def test_joblib_launcher_runs_two_jobs_in_two_worker_processes(joblib_sweep) -> None:
    cwd, result = joblib_sweep
    assert "Joblib.Parallel(n_jobs=2," in result.stdout
    sweep_dir = cwd / "sweep"
    for num in (0, 1):
        hydra_cfg = yaml.safe_load((sweep_dir / str(num) / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["job"]["id"] == f"train_{num}"  # set by the joblib worker (the basic launcher uses num)
        assert hydra_cfg["launcher"]["n_jobs"] == 2
        assert read_json(sweep_dir / str(num) / "summary.json")["status"] == "completed"
        # written in a worker process, which knows the launching command's arguments but not its interpreter options
        assert read_json(sweep_dir / str(num) / "manifest.json")["command"] == result.args
    assert (sweep_dir / "report.md").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two busy processes: one such test at a time (pyproject.toml)
def test_joblib_multirun_lines_carry_the_job_and_its_swept_value(joblib_sweep) -> None:
    # The console of a multirun whose jobs run in other processes (tracking/test_console.py: a single run's).
    cwd, result = joblib_sweep
    lines = result.stdout.splitlines()
    assert not [line for line in lines if LIBRARY_NOISE.search(line)], result.stdout
    for num, lr in ((0, "0.001"), (1, "0.002")):  # the swept value as Hydra gives it to the job, not as typed
        own = [line.removeprefix(f"[job {num} optimizer.lr={lr}] ") for line in lines
               if line.startswith(f"[job {num} optimizer.lr={lr}] ")]
        assert any(f"run directory {cwd / 'sweep' / str(num)};" in line for line in own), own
        assert any(" GRPO 3/3 (100%" in line for line in own), own
        assert own[-7].startswith("grpolab: run completed in "), own
        assert own[-1] == f"  log                sweep/{num}/train.log", own
    # A job's every line carries its prefix. Left unprefixed: Hydra's launcher lines and the sweep report.
    unprefixed = [line for line in lines if not line.startswith("[job ")]
    assert unprefixed and all("[HYDRA]" in line for line in unprefixed), unprefixed


@pytest.mark.slow
def test_optuna_search_runs_three_trials_on_the_optimized_metric(tmp_path: Path, shared_cache: Path) -> None:
    result = run_sweep(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=3", "logger=none", *TINY,
                       cache=shared_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    summaries = job_summaries(sweep_dir)
    assert sorted(summaries) == ["0", "1", "2"]
    trials = {}
    for num in summaries:
        config = yaml.safe_load((sweep_dir / num / ".hydra" / "config.yaml").read_text())
        trials[num] = (config["optimizer"]["lr"], config["trainer"]["temperature"],
                       config["rewards"]["format"]["weight"], summaries[num]["eval_after"]["accuracy"])
        assert 1e-4 <= trials[num][0] <= 1e-2 and 0.7 <= trials[num][1] <= 1.3 and 0 <= trials[num][2] <= 0.5
    assert len({trial[0] for trial in trials.values()}) == 3  # three different proposals
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(trial[3] for trial in trials.values())  # what train() returned, maximised
    assert any((trial[0], trial[3]) == (best["best_params"]["optimizer.lr"], best["best_value"])
               for trial in trials.values())
    assert len(report_rows(sweep_dir)) == 3


@pytest.mark.slow
def test_optuna_search_goes_on_after_a_failed_trial(tmp_path: Path, shared_cache: Path) -> None:
    # a categorical data file, one of them missing (only the job can see that): the seeded sampler proposes both
    # within four trials
    good, missing = tmp_path / "problems.jsonl", tmp_path / "missing.jsonl"
    write_problems(good)
    result = run_sweep(tmp_path, "hparams_search=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.params=null",
                       "data=jsonl", f"data.path=choice({good},{missing})", "hydra.sweeper.n_trials=4", "logger=none",
                       *TINY, cache=shared_cache)
    assert result.returncode == 1
    sweep_dir = only_sweep_dir(tmp_path)
    outcomes = {(read_json(path)["status"], yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())[0])
                for path in sweep_dir.glob("*/summary.json")}
    assert outcomes == {("completed", f"data.path={good}"), ("failed", f"data.path={missing}")}
    assert len(job_summaries(sweep_dir)) == 4  # every trial ran
    failed = sum(summary["status"] == "failed" for summary in job_summaries(sweep_dir).values())
    assert result.stderr.splitlines()[-1].startswith(f"grpolab: {failed} of 4 jobs failed")
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"data.path": str(good)}
    assert "FAILED" in (sweep_dir / "report.md").read_text()


@pytest.mark.slow
def test_resume_continues_a_partially_trained_job_from_its_checkpoint(tmp_path: Path, shared_cache: Path) -> None:
    """The sweep process is killed (SIGKILL) while job 1 trains, after its checkpoint-8: the resumed sweep (in this
    process) skips the completed job 0 and continues job 1 from its checkpoint, every step logged once."""
    command = ["logger=none", "trainer.max_steps=16", "trainer.logging_steps=3", "trainer.save_steps=4",
               "warmstart.steps=10", "data.train_size=16", "data.eval_size=8", "batch.prompts_per_step=4",
               "batch.generations_per_prompt=4", "rewards=[accuracy,format,length]", "rewards.length.target=4",
               "seed=0,1"]
    environment = {**os.environ, "GRPOLAB_CACHE_DIR": str(shared_cache), "WANDB_SILENT": "true"}
    with (tmp_path / "first.log").open("w") as log:
        sweep = subprocess.Popen([sys.executable, "-m", "grpolab.train", "-m", *command], cwd=tmp_path,
                                 env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            while sweep.poll() is None:
                job = next((tmp_path / "outputs" / "multirun").glob("*/*/1"), None)
                if job is not None and (job / "checkpoint-8" / "checkpoint_complete.json").exists() and any(
                        row["step"] >= 9 for row in read_metrics(job / "metrics.jsonl")):
                    sweep.kill()
                    break
                time.sleep(0.01)
            assert sweep.wait(timeout=600) == -9, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            if sweep.poll() is None:
                sweep.kill()
    sweep_dir = only_sweep_dir(tmp_path)
    assert {num: summary["status"] for num, summary in job_summaries(sweep_dir).items()} == {
        "0": "completed", "1": "running"}
    completed = (sweep_dir / "0" / "metrics.jsonl").read_bytes()

    resumed = run_sweep(tmp_path, *command, "resume=true", cache=shared_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already completed; skipping it" in (sweep_dir / "0" / "train.log").read_text()  # the jobs' own logs
    assert f"resume: continuing from {sweep_dir / '1' / 'checkpoint-'}" in (sweep_dir / "1" / "train.log").read_text()
    assert {num: summary["status"] for num, summary in job_summaries(sweep_dir).items()} == {
        "0": "completed", "1": "completed"}
    assert (sweep_dir / "0" / "metrics.jsonl").read_bytes() == completed
    lines = (sweep_dir / "1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [3, 6, 9, 12, 15]
    assert not list(sweep_dir.glob("1/*.attempt-*"))  # continued, not rerun


def test_job_ending_one_line_for_a_config_error_in_a_single_run_a_failed_job_in_a_multirun(capsys) -> None:
    from grpolab.config.validate import ConfigError
    from grpolab.sweeps import job_ending

    with pytest.raises(SystemExit) as stopped, job_ending(multirun=False):
        raise ConfigError("seed=zero must be an integer")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "grpolab: config error: seed=zero must be an integer\n"
    with pytest.raises(ConfigError), job_ending(multirun=True):
        raise ConfigError("seed=zero must be an integer")


def test_job_ending_leaves_a_config_error_of_a_multi_process_job_to_the_main_process(capsys, monkeypatch) -> None:
    import grpolab.sweeps as sweeps
    from grpolab.config.validate import ConfigError

    waited: list[float] = []
    monkeypatch.setattr(sweeps.time, "sleep", waited.append)  # the launcher would stop this process meanwhile
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit), sweeps.job_ending(multirun=False):
        raise ConfigError("seed=zero must be an integer")
    assert waited == [sweeps.REPORTED_BY_MAIN_WAIT_S]  # and only if it outlives that does it say so itself
    assert capsys.readouterr().err == "grpolab: config error: seed=zero must be an integer\n"
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit), sweeps.job_ending(multirun=False):
        raise ConfigError("seed=zero must be an integer")
    assert waited == [sweeps.REPORTED_BY_MAIN_WAIT_S]  # the main process reports at once


def test_job_ending_hands_a_preempted_runs_signal_on() -> None:
    from grpolab.sweeps import job_ending
    from grpolab.tracking.rundir import RunPreempted

    handed: list[bool] = []
    with pytest.raises(RunPreempted) as stopped, job_ending(multirun=False):
        raise RunPreempted("SIGTERM at step 7: saved checkpoint-7", 143, hand_over=lambda: handed.append(True))
    assert handed == [True] and stopped.value.code == 143
