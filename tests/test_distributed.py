"""Several processes as one data-parallel run, started the way a user starts them: ``torchrun --nproc_per_node=2 -m
grpolab.train`` and a multirun through the submitit launcher with two tasks per job (its local executor here; SLURM
runs the same job function). CPU, gloo; a few steps each."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOOL_WARM_START

from grpolab.config.validate import validate
from tests_support import free_port

# A length reward gives every group unequal rewards (every step has a gradient); 15 held-out rows do not split evenly.
SHORT_RUN = [
    "trainer.max_steps=3", "trainer.logging_steps=1", "warmstart.steps=10", "warmstart.cache=false",
    "data.train_size=64", "data.eval_size=15", "batch.prompts_per_step=4", "batch.generations_per_prompt=4",
    "rewards=[accuracy,length]", "rewards.length.target=6",
]
GENERATION_BATCH = re.compile(r"GRPOConfig: \d+ steps, (\d+) prompts x (\d+) completions per generation batch on (\d+) "
                              r"process")



def _environment(tmp_path: Path, cache: Path | None = None) -> dict[str, str]:
    return {**os.environ, "GRPOLAB_CACHE_DIR": str(cache or tmp_path / "cache"), "WANDB_MODE": "offline",
            "PYTHONWARNINGS": "ignore"}


def run_processes(tmp_path: Path, count: int, *overrides: str,
                  cache: Path | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={count}",
                f"--master_port={free_port()}"] if count > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "grpolab.train", *overrides], capture_output=True, text=True,
                          cwd=tmp_path, env=_environment(tmp_path, cache), timeout=600)


@pytest.mark.xdist_group("processes")
def test_the_process_tests_run_as_one_xdist_group(request) -> None:
    """Under pytest-xdist's --dist loadgroup (the default addopts) the tests marked xdist_group('processes') run on
    one worker, one at a time; a grouped test's node id then ends with @processes (tests/conftest.py)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by a pytest-xdist worker under --dist loadgroup")
    assert request.node.nodeid.endswith("@processes"), request.node.nodeid


def test_the_batch_means_the_same_global_numbers_at_any_world_size(compose_cfg) -> None:
    cfg = compose_cfg(["batch.prompts_per_step=16", "batch.generations_per_prompt=8", "batch.updates_per_rollout=2"])
    for processes in (1, 2, 4, 8):
        derived = validate(cfg, processes, import_targets=False)
        assert derived["per_device_train_batch_size"] * processes * derived["steps_per_generation"] == 16 * 8
        assert derived["steps_per_generation"] // derived["gradient_accumulation_steps"] == 2


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two busy processes: one such test at a time (pyproject.toml)
def test_two_processes_are_one_data_parallel_run(tmp_path: Path) -> None:
    result = run_processes(tmp_path, 2, *SHORT_RUN, "distributed=ddp", "logger=wandb", "trainer.beta=0.04")
    assert result.returncode == 0, result.stderr[-4000:]
    runs = [path.parent for path in (tmp_path / "outputs").glob("*/*/.hydra")]
    assert len(runs) == 1, runs  # one run directory, chosen once for both processes
    run_dir = runs[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["steps"] == 3
    # Gradients were averaged: both processes end with the same weights, which training did move.
    assert summary["parameters"]["replicas_identical"] is True and summary["parameters"]["tensors_changed"] > 0
    assert summary["eval_before"]["num_samples"] == summary["eval_after"]["num_samples"] == 15  # shards gathered
    assert summary["warmstart"]["steps"] == 10
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]  # one writer
    assert (run_dir / "reference_policy").is_dir() and rows[-1]["kl"] > 0  # saved once, the KL reference of both
    assert (run_dir / "manifest.json").exists() and (run_dir / "reward_curve.png").exists()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one wandb run
    # The global batch of the 1-process run: 4 prompts x 4 completions, now on 2 processes.
    assert GENERATION_BATCH.findall(result.stdout) == [("4", "4", "2")]  # logged by the main process only


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two busy processes: one such test at a time (pyproject.toml)
def test_two_processes_train_lora_adapters(tmp_path: Path) -> None:
    # In ids mode: the batches of ID rows (HostRows) go through accelerate's per-process data loaders too.
    result = run_processes(tmp_path, 2, *SHORT_RUN, "distributed=ddp", "logger=none", "peft=lora", "peft.r=4",
                           "tokenizer_mode=ids", "trainer.beta=0.04", "optimizer.lr=1e-2")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(next((tmp_path / "outputs").glob("*/*/summary.json")).read_text())
    parameters = summary["parameters"]
    assert summary["status"] == "completed" and parameters["replicas_identical"] is True
    assert parameters["tensors_checked"] == parameters["tensors_changed"] > 0  # the adapters, all trained
    assert parameters["trainable_fraction"] == pytest.approx(11264 / 141696)


@pytest.mark.slow
def test_one_process_takes_the_same_global_batch(run_job) -> None:
    # A job in this process (no launcher, so no RANK or WORLD_SIZE): what a plain `python -m grpolab.train` runs.
    result = run_job(*SHORT_RUN, "distributed=ddp", "logger=none")
    assert result.returncode == 0, result.stderr[-4000:]
    assert GENERATION_BATCH.findall(result.stdout) == [("4", "4", "1")]


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two busy processes: one such test at a time (pyproject.toml)
def test_a_config_error_stops_every_process_in_one_line(tmp_path: Path) -> None:
    result = run_processes(tmp_path, 2, "logger=none", "warmstart=none", "data=jsonl", "data.path=missing.jsonl")
    assert result.returncode != 0
    # Said once, by the main process, however the two processes race to the error; then torchrun stops both.
    assert result.stderr.count("grpolab: config error: data.path='missing.jsonl' is not a file") == 1
    summary = json.loads(next((tmp_path / "outputs").glob("*/*/summary.json")).read_text())
    assert summary["status"] == "failed" and "missing.jsonl" in summary["reason"]


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two busy processes: one such test at a time (pyproject.toml)
def test_a_multirun_of_two_task_jobs_through_submitit(tmp_path: Path) -> None:
    # hydra/launcher=submitit_slurm with tasks_per_node=N (and gpus_per_node=N) runs the same job function on SLURM.
    command = [sys.executable, "-m", "grpolab.train", "-m", "hydra/launcher=submitit_local",
               "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10", *SHORT_RUN, "trainer.max_steps=2",
               "distributed=ddp", "logger=none", "seed=0,1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=_environment(tmp_path),
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/[01]"))
    assert [job.name for job in jobs] == ["0", "1"]
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["world_size"] == 2
        assert summary["parameters"]["replicas_identical"] is True
    assert (jobs[0].parent / "report.md").exists()


def test_a_slurm_sweep_of_eight_process_jobs_composes(compose_cfg) -> None:
    # One SLURM job per sweep job, one task (process) per GPU: what the SLURM recipe of docs/scaling.md types.
    cfg = compose_cfg(["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=8",
                       "hydra.launcher.gpus_per_node=8", "hydra.launcher.cpus_per_task=10", "distributed=fsdp",
                       "model=qwen2_5_7b", "warmstart=none"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    derived = validate(cfg, 16, import_targets=False)  # 2 nodes x 8 tasks: the batch split over 16 processes
    assert derived["per_device_train_batch_size"] * 16 * derived["steps_per_generation"] == 16 * 8


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # two busy processes: one such test at a time (pyproject.toml)
def test_two_processes_run_the_tool_loop_as_one_run(tmp_path: Path, shared_cache: Path) -> None:
    # Each process runs TRL's tool loop on its share of the completions; the tool metrics are gathered over both.
    # The warm start is the tool tests' shared one (conftest.TOOL_WARM_START; trained once, whichever test comes first,
    # the other waiting on the cache's lock); 15 held-out problems split 8 + 7.
    result = run_processes(tmp_path, 2, *TOOL_WARM_START, "distributed=ddp", "logger=none", "trainer.max_steps=2",
                           "trainer.logging_steps=1", "batch.prompts_per_step=4", "batch.generations_per_prompt=4",
                           cache=shared_cache)
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = next((tmp_path / "outputs").glob("*/*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert summary["parameters"]["replicas_identical"] is True and summary["parameters"]["tensors_changed"] > 0
    assert summary["eval_after"]["num_samples"] == 15 and summary["eval_after"]["tool_call_frequency"] > 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and all(row["tools/call_frequency"] > 0 for row in rows)
    # Gathered over the 16 completions of both processes: a multiple of 1/16.
    assert all((row["tools/call_frequency"] * 16) % 1 == 0 for row in rows)
