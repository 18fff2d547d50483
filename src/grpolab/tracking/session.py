"""One context manager that brackets a training job with all run-directory bookkeeping, in the right order.

Used by the composition root (``grpolab.train``)::

    with tracked_run(run_dir, config=cfg_dict, seed=cfg.seed, logger=instantiate(cfg.logger)) as run:
        args = GRPOConfig(..., output_dir=str(run.run_dir.path), report_to=run.report_to)
        trainer = GRPOTrainer(..., callbacks=[*run.callbacks])
        run.run_dir.write_summary(eval_before=evaluate(...))
        trainer.train()
        run.run_dir.write_summary(eval_after=evaluate(...))
    return lookup_metric(run.summary, cfg.optimized_metric)

Whatever raises inside (or in the manifest/logger start), ``summary.json`` ends with ``status: failed`` and the
reason, the logger is finished (one wandb run per job, closed also on failure) and the exception propagates. In a
multi-process job only the main process writes the manifest, starts the logger and plots (``RunDirectory``
decides which process that is); every process ends with the main process's summary.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from grpolab.tracking.loggers import ExperimentLogger, JobInfo, NoLogger
from grpolab.tracking.processes import launched_processes
from grpolab.tracking.rundir import FINAL_REWARD_WINDOW, RunDirectory


@dataclass
class TrackedRun:
    """Handles the composition root needs while a job runs; ``summary`` is filled when the block exits."""

    run_dir: RunDirectory
    report_to: list[str]
    callbacks: list[Any]
    summary: dict[str, Any] = field(default_factory=dict)

    def record(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``summary.json`` (e.g. ``eval_before=...``) and return the whole summary."""
        return self.run_dir.write_summary(**fields)

    def record_once(self, name: str, compute: Callable[[], Any]) -> Any:
        """``summary.json``'s ``name`` as an earlier attempt of this run recorded it (a resumed run keeps the
        held-out evaluation before GRPO of its first attempt), else ``compute()``, recorded."""
        if (earlier := self.run_dir.read_summary().get(name)) is not None:
            return earlier
        return self.record(**{name: compute()})[name]


@contextmanager
def tracked_run(
    run_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any],
    seed: int | None,
    logger: ExperimentLogger | None = None,
    job_info: JobInfo | None = None,
    final_reward_window: int = FINAL_REWARD_WINDOW,
    plot: bool = True,
    resumed: bool = False,
) -> Iterator[TrackedRun]:
    """Write the manifest, start the logger, yield; then record the outcome, finish the logger, plot the run.

    ``job_info`` defaults to ``JobInfo.from_hydra()`` (overrides, sweep id). The yielded ``callbacks`` contain the
    ``MetricsFileCallback`` that fills ``metrics.jsonl`` and the training fields of ``summary.json``. ``resumed``: the
    job continues a run of this directory from a checkpoint (the logger continues that run's record).

    >>> with tracked_run("outputs/run", config={"seed": 0}, seed=0) as run:  # doctest: +SKIP
    ...     run.run_dir.write_summary(eval_after={"accuracy": 1.0})
    """
    directory = RunDirectory(run_dir)
    if not directory.main_process:  # the main process tells the story; the others only warn
        logging.getLogger("grpolab").setLevel(logging.WARNING)
    logger = logger if logger is not None else NoLogger()
    job_info = replace(job_info if job_info is not None else JobInfo.from_hydra(), resumed=resumed)
    logger_started = False
    tracked: TrackedRun | None = None
    failing = False
    try:
        with directory.record_outcome():
            # Imported here (transformers) so an import error is recorded as a failure like any other.
            from grpolab.tracking.metrics_file import MetricsFileCallback

            directory.write_manifest(seed=seed, config=config, overrides=list(job_info.overrides))
            directory.write_summary(world_size=launched_processes().world_size)
            # One experiment-logger run per job: the main process's (the others report to no integration).
            report_to = logger.start(directory.path, config, job_info) if directory.main_process else ["none"]
            logger_started = directory.main_process
            callback = MetricsFileCallback(directory, final_reward_window)
            tracked = TrackedRun(run_dir=directory, report_to=report_to, callbacks=[callback])
            yield tracked
    except BaseException:
        failing = True
        raise
    finally:
        # record_outcome has already written completed/failed, so the logger sees the final status.
        summary = directory.read_summary()
        if tracked is not None:
            # Every process returns the main process's summary (what a sweeper of a multi-process job optimises).
            tracked.summary = summary if failing else launched_processes().share_from_main(summary)
        if logger_started:
            _run_cleanup(lambda: logger.finish(summary), "finish the logger", failing)
        if plot and directory.main_process and directory.metrics_path.exists():
            _run_cleanup(lambda: _plot(directory), "plot the reward curve", failing)


def _plot(directory: RunDirectory) -> None:
    """``reward_curve.png``: train reward and held-out accuracy, titled from the run's config choices and overrides
    (read back from the run directory, like every other reader of it)."""
    from grpolab.tracking.plots import plot_run

    plot_run(directory.path, directory.reward_curve_path)


def _run_cleanup(action: Any, what: str, failing: bool) -> None:
    """Run a cleanup step; while an exception is propagating, report a cleanup error instead of replacing it."""
    try:
        action()
    except Exception as error:
        if not failing:
            raise
        print(f"grpolab: could not {what} after the failure: {error!r}", file=sys.stderr)
