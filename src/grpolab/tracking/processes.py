"""The processes of one job, which of them is the main one, and the few things they do together.

This is the one place in grpolab that knows about ranks. A job is one process (``python -m grpolab.train``) or
several started by a launcher: ``torchrun --nproc_per_node=N -m grpolab.train``, ``accelerate launch`` (GPUs), or
the submitit launcher with ``hydra.launcher.tasks_per_node=N``. Several processes are one data-parallel run:

- ``launched_processes()`` reads the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; a submitit
  task's own variables are exported under those names first). The batch is derived for its ``world_size``.
- the process of rank 0 is the main process: only it writes the run directory (``RunDirectory`` asks
  ``launched_processes().is_main``), starts the experiment logger and plots; another process records only its own
  failure.
- ``join_before_hydra`` (``grpolab.train.main``, before Hydra composes anything): the processes take rank 0's
  clock as the launch time, which names the run directory (``${grpolab.now:...}`` in ``conf/hydra/default.yaml``),
  so every process resolves the same directory. accelerate forms the process group later, when ``GRPOConfig.device``
  is first read (with ``trainer.use_cpu`` on a machine without GPUs: a gloo group).
- ``main_computes`` (the warm start: computed by the main process, its result and the model's weights sent to the
  others), ``shard`` and ``sum`` (the held-out evaluation: each process decodes its share of the rows, the sums are
  added up), ``agree`` (after training: do the replicas hold the same weights?), ``on_main`` (the KL reference
  policy: saved once) and ``share_from_main``.

With one process every collective is a no-op, so callers never branch on the process count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from grpolab.config.schema import LAUNCH_TIME_VARIABLE

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node).

    >>> Processes(rank=1, world_size=2).shard(5)  # rows 3, 4 and a repeat of 4 (not counted) on the second process
    ([3, 4, 4], 2)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share_from_main(self, value: T) -> T:
        """The main process's ``value`` on every process (a picklable object)."""
        if not self._together():
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, value: Any) -> bool:
        """Whether every process holds an equal ``value`` (a picklable object)."""
        if not self._together():
            return True
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return all(part == gathered[0] for part in gathered)

    def sum(self, values: Mapping[str, float]) -> dict[str, float]:
        """``values`` added up key by key over the processes (every process passes the same keys)."""
        if not self._together():
            return dict(values)
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, dict(values))
        return {key: sum(float(part[key]) for part in gathered) for key in values}

    def shard(self, count: int) -> tuple[list[int], int]:
        """This process's contiguous share of ``count`` rows: its indices and how many of them count.

        Every process gets the same number of indices (the short shards repeat their last row, or the last row of
        all), so every process runs the same number of forward passes: FSDP and ZeRO-3 need all of them in each.
        """
        size = -(-count // self.world_size)
        start = min(self.rank * size, count)
        real = list(range(start, min(start + size, count)))
        padding = [real[-1] if real else count - 1] * (size - len(real))
        return real + padding, len(real)

    def on_main(self, compute: Callable[..., T], *args: Any) -> T:
        """``compute(*args)`` on the main process only (saving a file all processes then read, ...); every process
        gets its result."""
        return self.share_from_main(compute(*args) if self.is_main else None)

    def main_computes(self, compute: Callable[..., T], model: Any, *args: Any) -> T:
        """``compute(model, *args)`` on the main process only, which changes ``model`` in place; every process gets
        its result, and the main process's parameters and buffers are copied into the other processes' ``model``.

        The warm start: computed once, and every process starts GRPO (and the held-out evaluation) from its weights.
        """
        result = compute(model, *args) if self.is_main else None
        if self._together():
            import torch.distributed as dist

            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)
        return self.share_from_main(result)

    def _together(self) -> bool:
        if self.world_size == 1:
            return False
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(f"process {self.rank} of {self.world_size}: the process group is not formed yet "
                               "(accelerate forms it when GRPOConfig.device is first read)")
        return True


def launched_processes() -> Processes:
    """The launcher's view of this process (one process when no launcher set ``WORLD_SIZE``)."""
    _export_submitit_task()
    return Processes(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                     local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def join_before_hydra() -> None:
    """Under a launcher: take rank 0's clock as the launch time of every process, before Hydra starts.

    Hydra resolves the run directory before the job starts, each process with its own clock; with the launch time
    agreed here (``GRPOLAB_LAUNCH_TIME``, read by ``${grpolab.now:...}``) they all resolve rank 0's directory.
    """
    processes = launched_processes()
    if processes.world_size > 1:
        os.environ[LAUNCH_TIME_VARIABLE] = _agreed_launch_time(processes)


def _agreed_launch_time(processes: Processes) -> str:
    import torch.distributed as dist

    now = datetime.now().isoformat()
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun and accelerate launch serve their processes a key-value store: agree through it and leave the
        # process group to accelerate, formed with distributed.ddp_backend and distributed.ddp_timeout.
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timedelta(minutes=10))
        key = f"grpolab/launch_time/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        if processes.is_main:
            store.set(key, now)
        return store.get(key).decode()
    # Another launcher (deepspeed, a hand-set environment): form the process group now, with torch's defaults (gloo
    # on CPU, gloo and NCCL with CUDA; 30 minutes), as a script started by torchrun does at its top; accelerate finds
    # it formed and joins it.
    if not dist.is_initialized():
        dist.init_process_group()
    chosen = [now]
    dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def _export_submitit_task() -> None:
    """A task of a multi-task submitit job (``hydra.launcher.tasks_per_node`` > 1, or several nodes) learns its rank
    from submitit; torch and accelerate read ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``."""
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit
    from submitit.helpers import TorchDistributedEnvironment

    if submitit.JobEnvironment().num_tasks > 1:
        # Every task sees all of its node's GPUs; accelerate picks cuda:LOCAL_RANK.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
