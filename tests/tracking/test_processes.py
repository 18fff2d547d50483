"""The processes of a job: shares of the held-out rows, and the collectives on a real two-process gloo group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from grpolab.tracking.processes import Processes, launched_processes
from tests_support import free_port


@pytest.mark.parametrize("count", [0, 1, 2, 5, 15, 16, 17])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shards_cover_every_row_once_with_equal_lengths(count: int, world_size: int) -> None:
    shards = [Processes(rank, world_size).shard(count) for rank in range(world_size)]
    counted = [index for indices, real in shards for index in indices[:real]]
    assert counted == list(range(count))
    assert len({len(indices) for indices, _ in shards}) == 1  # the same number of forward passes everywhere
    assert all(0 <= index < count for indices, _ in shards for index in indices)


def test_one_process_needs_no_process_group() -> None:
    one = Processes()
    model = torch.nn.Linear(2, 2)
    assert one.is_main and one.share_from_main("x") == "x" and one.agree(1) and one.sum({"a": 2.0}) == {"a": 2.0}
    assert one.main_computes(lambda m, value: value + 1, model, 1) == 2 and one.on_main(str, 3) == "3"


def test_the_launchers_environment_names_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_processes() == Processes(rank=1, world_size=2, local_rank=1)
    assert not launched_processes().is_main
    with pytest.raises(RuntimeError, match="process 1 of 2: the process group is not formed yet"):
        launched_processes().agree(1)



def _collectives(rank: int, port: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        processes = Processes(rank=rank, world_size=2)
        torch.manual_seed(rank)  # the replicas start different
        model = torch.nn.Linear(3, 2)

        def warm_start(network: torch.nn.Module, shift: float) -> dict:
            with torch.no_grad():
                for param in network.parameters():
                    param.add_(shift)
            return {"trained_on": rank}

        outcome = processes.main_computes(warm_start, model, 1.0)
        weights = [param.detach().clone() for param in model.parameters()]
        results[rank] = {
            "outcome": outcome,
            "weights": weights,
            "sum": processes.sum({"correct": float(rank + 1), "rows": 2.0}),
            "agree_same": processes.agree([1.0, 2.0]),
            "agree_different": processes.agree(rank),
            "shared": processes.share_from_main(f"from {rank}"),
            "saved": processes.on_main(lambda who: f"saved by {who}", rank),
        }
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_collectives_on_a_real_two_process_group() -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_collectives, args=(free_port(), results), nprocs=2, join=True)
        first, second = results[0], results[1]
    assert first["outcome"] == second["outcome"] == {"trained_on": 0}  # computed once, by the main process
    assert all(torch.equal(a, b) for a, b in zip(first["weights"], second["weights"], strict=True))
    assert first["sum"] == second["sum"] == {"correct": 3.0, "rows": 4.0}
    assert first["agree_same"] and second["agree_same"]
    assert not first["agree_different"] and not second["agree_different"]
    assert first["shared"] == second["shared"] == "from 0"
    assert first["saved"] == second["saved"] == "saved by 0"


@pytest.mark.slow
def test_torchrun_processes_resolve_one_run_directory(tmp_path: Path) -> None:
    # Hydra resolves hydra.run.dir in each process before the job starts; rank 0's launch time makes them equal.
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
         "-m", "grpolab.train", "--cfg", "hydra", "--resolve", "--package", "hydra.run"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    directories = [line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("dir:")]
    assert len(directories) == 2 and directories[0] == directories[1], result.stdout
    assert directories[0].startswith("outputs/")
