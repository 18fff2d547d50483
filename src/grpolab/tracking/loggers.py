"""Experiment loggers selected by ``logger=wandb|tensorboard|none`` (``conf/logger/*.yaml``, built by ``_target_``).

Every logger has the same two calls, made by the composition root around one job::

    report_to = logger.start(run_dir, config, job_info)   # -> GRPOConfig(report_to=report_to, ...)
    ...train...
    logger.finish(summary)                                  # always, also after a failure

The transformers integration callbacks do the per-step logging; these objects own what those callbacks get wrong for
us: one run per Hydra job, its location inside the run directory, grouping the jobs of a sweep, and the final summary.
Process-wide settings (environment variables) are set in ``start`` and restored in ``finish`` so that the jobs of a
multirun executed in one process do not leak into each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from grpolab.tracking.rundir import parse_overrides

WANDB_TAG_MAX_CHARS = 64  # wandb rejects longer tags
WANDB_RUN_ID_FILE = "grpolab-run-id.txt"


@dataclass(frozen=True)
class JobInfo:
    """What a logger needs to know about the Hydra job: its overrides and, in a multirun, its sweep.

    >>> JobInfo(overrides=("optimizer.lr=1e-3", "seed=1"), sweep_dir="outputs/multirun/2024-05-01/12-00-00",
    ...         job_num=3).sweep_id
    '2024-05-01_12-00-00'
    """

    overrides: tuple[str, ...] = ()
    sweep_dir: str | None = None  # set only in a multirun
    job_num: int | None = None
    job_name: str | None = None
    resumed: bool = False  # the job continues a run of its run directory from a checkpoint

    @classmethod
    def from_hydra(cls) -> JobInfo:
        """Read the current Hydra job; an empty JobInfo when not running under ``@hydra.main``."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return cls()
        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        return cls(
            overrides=tuple(hydra_cfg.overrides.task),
            sweep_dir=str(hydra_cfg.sweep.dir) if multirun else None,
            job_num=int(hydra_cfg.job.num) if multirun else None,
            job_name=str(hydra_cfg.job.name),
        )

    @property
    def sweep_id(self) -> str | None:
        """``<date>_<time>`` of ``outputs/multirun/<date>/<time>``: shared by all jobs of one sweep, unique enough."""
        if self.sweep_dir is None:
            return None
        return "_".join(Path(self.sweep_dir).parts[-2:])

    def override_items(self) -> dict[str, str]:
        """``{"optimizer.lr": "1e-3"}`` from ``["optimizer.lr=1e-3"]``; ``+``/``++`` dropped, ``~key`` -> ''."""
        return parse_overrides(self.overrides)


class ExperimentLogger(Protocol):
    """The interface the composition root relies on."""

    def start(self, run_dir: str | os.PathLike[str], config: Mapping[str, Any], job_info: JobInfo) -> list[str]: ...

    def finish(self, summary: Mapping[str, Any]) -> None: ...


class _ScopedEnvironment:
    """Set environment variables for one job and put the previous values back afterwards."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, **variables: str) -> None:
        for name, value in variables.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()


def flatten(mapping: Mapping[str, Any], prefix: str = "", separator: str = "/") -> Iterator[tuple[str, Any]]:
    """Nested dict -> ``("eval_after/accuracy", 0.5)`` pairs, the layout dashboards group by.

    >>> dict(flatten({"eval_after": {"accuracy": 0.5}, "steps": 3}))
    {'eval_after/accuracy': 0.5, 'steps': 3}
    """
    for key, value in mapping.items():
        name = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, name, separator)
        else:
            yield name, value


class NoLogger:
    """``logger=none``: no integration; ``metrics.jsonl`` and ``summary.json`` are still written by grpolab."""

    def start(self, run_dir: str | os.PathLike[str], config: Mapping[str, Any], job_info: JobInfo) -> list[str]:
        return ["none"]

    def finish(self, summary: Mapping[str, Any]) -> None:
        return None


class TensorBoardLogger:
    """``logger=tensorboard``: event files in ``<run_dir>/<subdir>``.

    transformers 5 dropped ``TrainingArguments.logging_dir``; its ``TensorBoardCallback`` reads the directory from
    ``TENSORBOARD_LOGGING_DIR`` when the trainer is built (else ``<output_dir>/runs/<date>_<host>``). ``start`` sets
    that variable for the job, ``finish`` restores it and adds the final summary scalars.

    >>> TensorBoardLogger(subdir="tensorboard").start("outputs/run", {}, JobInfo())  # doctest: +SKIP
    ['tensorboard']
    """

    def __init__(self, subdir: str = "tensorboard") -> None:
        self.subdir = subdir
        self.log_dir: Path | None = None
        self._environment = _ScopedEnvironment()

    def start(self, run_dir: str | os.PathLike[str], config: Mapping[str, Any], job_info: JobInfo) -> list[str]:
        self.log_dir = Path(run_dir) / self.subdir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._environment.set(TENSORBOARD_LOGGING_DIR=str(self.log_dir))
        return ["tensorboard"]

    def finish(self, summary: Mapping[str, Any]) -> None:
        try:
            if self.log_dir is not None:
                self._write_summary_scalars(summary)
        finally:
            self._environment.restore()
            self.log_dir = None

    def _write_summary_scalars(self, summary: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # torch is loaded anyway in a training job

        step = summary.get("steps") if isinstance(summary.get("steps"), int) else 0
        writer = SummaryWriter(log_dir=str(self.log_dir))
        try:
            for name, value in flatten(summary):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"summary/{name}", value, step)
            writer.add_text("summary/status", str(summary.get("status")), step)
        finally:
            writer.close()


class WandbLogger:
    """``logger=wandb``: exactly one wandb run per Hydra job, stored under ``<run_dir>/wandb``.

    We create the run before the trainer exists; transformers' ``WandbCallback.setup`` then finds ``wandb.run`` set
    and reuses it (it calls ``wandb.init`` only when ``wandb.run is None``) and TRL logs its completion tables to it.
    ``finish`` closes it, so the next job of a multirun in the same process starts a fresh run; ``reinit=
    "finish_previous"`` also closes a run a crashed predecessor might have left open.

    ``group=None`` means: the sweep id in a multirun (all its jobs side by side), ungrouped for a single run.
    Tags are the job's overrides; the config is the resolved job config plus ``overrides`` as a dict.
    ``silent=None`` means: silent unless ``mode="online"`` (no banner, no history/summary block after the run: the
    run directory holds both; online, wandb prints the run's URL).
    A resumed job (``job_info.resumed``) continues the wandb run its run directory started (same run id,
    ``resume="allow"``; the id is kept in ``<run_dir>/wandb/grpolab-run-id.txt``) instead of starting a new one.

    >>> logger = WandbLogger(project="grpolab", mode="offline")
    >>> logger.start("outputs/run", cfg_dict, JobInfo.from_hydra())  # doctest: +SKIP
    ['wandb']
    """

    def __init__(
        self,
        project: str = "grpolab",
        entity: str | None = None,
        group: str | None = None,
        mode: str = "offline",
        tags: Sequence[str] = (),
        name: str | None = None,
        job_type: str | None = "train",
        silent: bool | None = None,
    ) -> None:
        if mode not in ("online", "offline", "disabled"):
            raise ValueError(f"wandb mode must be online, offline or disabled, got {mode!r}")
        self.project = project
        self.entity = entity
        self.group = group
        self.mode = mode
        self.tags = list(tags)
        self.name = name
        self.job_type = job_type
        self.silent = silent if silent is not None else mode != "online"
        self.run: Any = None
        self._environment = _ScopedEnvironment()

    def start(self, run_dir: str | os.PathLike[str], config: Mapping[str, Any], job_info: JobInfo) -> list[str]:
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / "wandb" / WANDB_RUN_ID_FILE
        previous_id = id_file.read_text(encoding="utf-8").strip() if job_info.resumed and id_file.exists() else None
        # For code that reads the environment instead of our run (WandbCallback's fallback init, wandb subprocesses).
        self._environment.set(WANDB_MODE=self.mode, WANDB_DIR=str(run_dir), WANDB_PROJECT=self.project)
        try:
            self.run = wandb.init(
                **({"id": previous_id, "resume": "allow"} if previous_id else {}),
                project=self.project,
                entity=self.entity,
                group=self.group if self.group is not None else job_info.sweep_id,
                name=self.name if self.name is not None else self._default_name(job_info),
                job_type=self.job_type,
                tags=self._tags(job_info),
                config={**dict(config), "overrides": job_info.override_items()},
                dir=str(run_dir),
                mode=self.mode,
                reinit="finish_previous",
                settings=wandb.Settings(silent=self.silent),
            )
        except BaseException:
            self._environment.restore()
            raise
        # wandb's terminal messages follow the settings of the process's first wandb.setup, not this run's: without
        # this TRL's model card (``wandb.run.url`` of an offline run) prints "URL not available" at every save.
        wandb.termsetup(self.run.settings, None)
        if self.run is not None and getattr(self.run, "id", None):
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(f"{self.run.id}\n", encoding="utf-8")
        return ["wandb"]

    def finish(self, summary: Mapping[str, Any]) -> None:
        run, self.run = self.run, None
        try:
            if run is not None:
                run.summary.update(dict(flatten(summary)))
                run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        finally:
            self._environment.restore()

    def _tags(self, job_info: JobInfo) -> list[str]:
        tags = [*self.tags, *job_info.overrides]
        return list(dict.fromkeys(tag[:WANDB_TAG_MAX_CHARS] for tag in tags if tag))

    @staticmethod
    def _default_name(job_info: JobInfo) -> str | None:
        if not job_info.overrides:
            return None
        prefix = f"{job_info.job_num}:" if job_info.job_num is not None else ""
        return (prefix + ",".join(job_info.overrides))[:128]
