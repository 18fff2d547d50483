"""Multirun bookkeeping around Hydra's own sweepers and launchers: failed jobs, resume, and the sweep report.

- ``SweepCallback`` (registered under ``hydra.callbacks`` in ``conf/hydra/default.yaml``): records every failed job in
  its ``summary.json`` (``status: failed`` + reason, also for errors raised before the run was tracked) and logs its
  traceback, then writes ``report.md``/``report.csv``/plots into the sweep dir when the multirun ends (its ``group_by``
  and ``metrics`` keys are ``grpolab-report``'s ``--group-by`` and ``--metrics``).
- ``reported_sweep()`` wraps ``hydra_entry()`` in the console entry point. Hydra's basic sweeper runs every job of a
  batch and then re-raises the first job error, so ``on_multirun_end`` never fires; the report is then written here.
  A sweep with a failed job exits with status 1 whatever the sweeper (Optuna tolerates failed trials).
- Resume: ``with_resumed_sweep_dir`` (the preflight hook, via ``find_previous_sweep``) finds the sweep dir of an
  earlier run of the same command, and ``completed_before`` (called at the top of ``grpolab.train.train``; it asks
  ``previous_completion`` about the running job) skips a job that completed there. A job that was partially trained
  (killed, preempted) continues from its newest complete checkpoint (``grpolab.tracking.checkpoints``); a failed or
  missing job without one runs again, the files of the earlier attempt kept as ``*.attempt-<n>.*``.

Imports no torch (preflight uses it before Hydra starts).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from grpolab.config.validate import ConfigError
from grpolab.tracking.aggregate import Report, build_report
from grpolab.tracking.checkpoints import archive_checkpoints, newest_complete_checkpoint
from grpolab.tracking.jsonfiles import read_json
from grpolab.tracking.processes import launched_processes
from grpolab.tracking.rundir import (
    MANIFEST_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    RunDirectory,
    RunPreempted,
    describe_exception,
    override_key,
)

log = logging.getLogger("grpolab.sweeps")
MULTIRUN_FILE = "multirun.yaml"
SWEEP_FAILURE_EXIT_CODE = 1
REPORTED_BY_MAIN_WAIT_S = 60.0  # torchrun stops the other processes within a second of the main one exiting
# Overrides that change how a sweep runs, not what it computes; ignored when matching a sweep or a job for resume.
RESUME_NEUTRAL_KEYS = frozenset({"resume"})


# --------------------------------------------------------------------------------------------------- resume


def comparable_overrides(overrides: Sequence[str]) -> list[str]:
    """Overrides minus the resume-neutral ones, in order (the order fixes the job numbering of a grid).

    >>> comparable_overrides(["optimizer.lr=1e-3,1e-2", "resume=true", "seed=0,1"])
    ['optimizer.lr=1e-3,1e-2', 'seed=0,1']
    """
    return [str(o) for o in overrides if override_key(str(o)) not in RESUME_NEUTRAL_KEYS]


def sweep_root(pattern: str) -> tuple[Path, int] | None:
    """The fixed directory above a ``hydra.sweep.dir`` pattern and the depth of the time-stamped part below it.

    >>> sweep_root("outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}")
    (PosixPath('outputs/multirun'), 2)
    """
    if "${" not in pattern:
        return None  # a fixed sweep dir is the same on every run: nothing to find
    fixed, _, rest = pattern.partition("${")
    root, _, partial = fixed.rpartition("/")
    depth = len((partial + "${" + rest).split("/"))
    return Path(root or "."), depth


def find_previous_sweep(root: tuple[Path, int], task_overrides: Sequence[str],
                        sweeper: Mapping[str, Any]) -> Path | None:
    """Most recent sweep dir under ``root`` made by the same command: same task overrides (resume aside, same order)
    and the same sweeper target and ``params``. ``sweeper`` is the current ``hydra.sweeper`` node, unresolved.

    >>> find_previous_sweep((Path("outputs/multirun"), 2), ["seed=0,1", "resume=true"], {"params": None})  # doctest: +SKIP
    PosixPath('outputs/multirun/2024-05-01/12-00-00-123456')
    """
    directory, depth = root
    wanted = comparable_overrides(task_overrides)
    candidates = sorted(directory.glob("/".join(["*"] * depth + [MULTIRUN_FILE])),
                        key=lambda path: path.stat().st_mtime, reverse=True)
    for multirun_file in candidates:
        try:
            hydra_node = (yaml.safe_load(multirun_file.read_text(encoding="utf-8")) or {}).get("hydra") or {}
        except (OSError, yaml.YAMLError):
            continue
        stored_sweeper = hydra_node.get("sweeper") or {}
        same_sweeper = all(stored_sweeper.get(key) == sweeper.get(key) for key in ("_target_", "params"))
        stored_task = (hydra_node.get("overrides") or {}).get("task") or []
        if same_sweeper and comparable_overrides(stored_task) == wanted:
            return multirun_file.parent
    return None


def with_resumed_sweep_dir(argv: list[str], overrides: Sequence[Override], cfg: DictConfig) -> list[str]:
    """With ``resume=true``, add ``hydra.sweep.dir=<the earlier sweep of this command>`` when there is one (the hook
    ``grpolab.preflight.run_preflight`` calls once a multirun's command line is known to be good)."""
    resume_values = [o.value() for o in overrides if o.key_or_group == "resume" and not o.is_sweep_override()]
    resume = resume_values[-1] if resume_values else OmegaConf.select(cfg, "resume", default=False)
    if resume is not True and str(resume).lower() != "true":
        return argv
    if any(o.key_or_group == "hydra.sweep.dir" for o in overrides):
        return argv  # an explicit sweep dir is already the same on every run
    pattern = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"]
    root = sweep_root(str(pattern))
    if root is None:
        return argv
    task = [str(o.input_line) for o in overrides if not o.is_hydra_override()]
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    previous = find_previous_sweep(root, task, sweeper)
    if previous is None:
        print(f"grpolab: resume=true: no earlier sweep of this command under {root}; starting a new one",
              file=sys.stderr)
        return argv
    print(f"grpolab: resume=true: continuing the sweep in {previous}", file=sys.stderr)
    quoted = str(previous).replace("\\", "\\\\").replace("'", "\\'")
    return [*argv, f"hydra.sweep.dir='{quoted}'"]


def previous_completion(run_dir: str | Path, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The summary of a completed earlier run of this job in ``run_dir``, or None when the job has to run.

    A completed run counts only if its recorded overrides equal this job's (resume aside). A run of this job that
    left a complete checkpoint is continued from it (its files stay). Otherwise the files of an earlier attempt are
    renamed to ``summary.attempt-<n>.json``/``metrics.attempt-<n>.jsonl`` (and ``checkpoint.attempt-<n>-<step>``) so
    the new attempt starts clean and reports do not mix the two.

    >>> previous_completion("outputs/multirun/2024-05-01/12-00-00/3", ["optimizer.lr=0.001", "resume=true"])  # doctest: +SKIP
    {'status': 'completed', 'eval_after': {'accuracy': 0.5}, ...}
    """
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY_FILE)
    if summary is None:
        return None
    recorded = (read_json(run_dir / MANIFEST_FILE) or {}).get("overrides")
    same_job = isinstance(recorded, list) and comparable_overrides(recorded) == comparable_overrides(overrides)
    if summary.get("status") == "completed" and same_job:
        return summary
    if same_job and newest_complete_checkpoint(run_dir) is not None:
        return None  # continued from its checkpoint by the job itself
    if recorded is not None and not same_job:
        log.warning("resume: %s held a run of other overrides (%s); running this job again", run_dir, recorded)
    _archive_attempt(run_dir)
    return None


def completed_before(run_dir: Path) -> dict[str, Any] | None:
    """``previous_completion`` for the current Hydra job (``resume=true``), logging the skip."""
    from hydra.core.hydra_config import HydraConfig

    done = previous_completion(run_dir, HydraConfig.get().overrides.task)
    if done is not None:
        log.info("resume: %s already completed; skipping it", run_dir)
    return done


def _archive_attempt(run_dir: Path) -> None:
    attempt = 1 + len(list(run_dir.glob("summary.attempt-*.json")))
    for name in (SUMMARY_FILE, METRICS_FILE):
        path = run_dir / name
        if path.exists():
            stem, dot, suffix = name.partition(".")
            path.rename(run_dir / f"{stem}.attempt-{attempt}{dot}{suffix}")
    archive_checkpoints(run_dir, attempt)


# ------------------------------------------------------------------------------------------- failures, report


@dataclass
class SweepRecord:
    """The multirun running in this process (the one that launched the jobs)."""

    sweep_dir: Path
    report_enabled: bool
    last_k: int | None = None
    group_by: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    report: Report | None = None  # once written
    ended: bool = False

    def write_report(self) -> None:
        self.report = write_sweep_report(self.sweep_dir, self.last_k, self.group_by, self.metrics)


# The multirun SweepCallback started in this process, for reported_sweep() to finish: Hydra builds the callback from
# the config and hands the entry point around hydra_entry() no reference to it, so no argument can carry it there.
_ACTIVE_SWEEP: SweepRecord | None = None


class SweepCallback(Callback):
    """Hydra callback: failed jobs are recorded and logged; the sweep report is written when the multirun ends.

    ``conf/hydra/default.yaml`` (an experiment sets ``group_by``/``metrics`` under ``hydra.callbacks.sweep``)::

        callbacks:
          sweep:
            _target_: grpolab.sweeps.SweepCallback
            report: true
            last_k: 5
            group_by: []       # e.g. [tokenizer_mode, reward_level]: rows per group instead of per swept config
            metrics: []        # e.g. [timing/rewards_s, tokenizer/calls]: per-step metrics averaged per run
    """

    def __init__(self, report: bool = True, last_k: int | None = None, group_by: Sequence[str] = (),
                 metrics: Sequence[str] = ()) -> None:
        self.report = report
        self.last_k = last_k
        self.group_by = tuple(str(key) for key in group_by)
        self.metrics = tuple(str(metric) for metric in metrics)
        self.sweep: SweepRecord | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _ACTIVE_SWEEP
        # Resolving ${now:...} here caches it on this config, the same object the sweeper reads.
        self.sweep = _ACTIVE_SWEEP = SweepRecord(Path(str(config.hydra.sweep.dir)), self.report, self.last_k,
                                                 self.group_by, self.metrics)
        # Hydra's basic sweeper saves the sweep's config, the Optuna sweeper does not; resume looks sweeps up by it.
        self.sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, self.sweep.sweep_dir / MULTIRUN_FILE)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value  # the property would re-raise it
        run_dir = RunDirectory(config.hydra.runtime.output_dir)
        if run_dir.read_summary().get("status") != "failed":  # raised before (or after) the run was tracked
            run_dir.mark_failed(error)
        if config.hydra.mode == RunMode.MULTIRUN:
            log.error("job #%s failed (%s), the sweep goes on: %s", config.hydra.job.num,
                      " ".join(job_return.overrides or []), describe_exception(error),
                      exc_info=(type(error), error, error.__traceback__))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is not None:
            self.sweep.ended = True
            if self.sweep.report_enabled:
                self.sweep.write_report()


def write_sweep_report(sweep_dir: Path, last_k: int | None = None, group_by: Sequence[str] = (),
                       metrics: Sequence[str] = ()) -> Report | None:
    """``build_report(sweep_dir, ...)``; a report error is logged, never raised over the sweep's result.

    >>> write_sweep_report(Path("outputs/multirun/2024-05-01/12-00-00"), 5, ["tokenizer_mode"])  # doctest: +SKIP
    """
    try:
        report = build_report(sweep_dir, group_by=group_by, metrics=metrics,
                              **({"last_k": last_k} if last_k is not None else {}))
    except Exception as error:
        log.error("could not write the sweep report in %s: %s", sweep_dir, describe_exception(error))
        return None
    done = sum(run.completed for run in report.runs)
    log.info("sweep report: %s (%d runs: %d completed, %d failed or unfinished)",
             sweep_dir / "report.md", len(report.runs), done, len(report.runs) - done)
    return report


@contextmanager
def job_ending(multirun: bool) -> Iterator[None]:
    """Around one job (``hydra_entry``): how it ends once its run directory has recorded the outcome.

    A preempted run passes its signal on to the handler grpolab replaced (e.g. submitit's requeue). A config error is
    one line on stderr and exit 2 in a single run; in a multirun it propagates, so the job counts as failed and the
    sweep goes on. The processes of a multi-process job all meet the same config error: the main process reports it,
    and the others wait up to ``REPORTED_BY_MAIN_WAIT_S`` for the launcher (torchrun) to stop them once it has, so the
    line is printed once rather than once per GPU (and, racing, not sometimes lost to the launcher's kill).
    """
    try:
        yield
    except RunPreempted as preempted:
        preempted.hand_over()
        raise
    except ConfigError as error:
        if multirun:
            raise
        if not launched_processes().is_main:
            time.sleep(REPORTED_BY_MAIN_WAIT_S)  # still alive: the error was this process's own (a node's file)
        print(f"grpolab: config error: {error}", file=sys.stderr)
        sys.exit(2)


@contextmanager
def reported_sweep() -> Iterator[None]:
    """Around ``hydra_entry()``: make sure a multirun leaves its report, and exit 1 if any of its jobs failed
    (judged from that report: with ``hydra.callbacks.sweep.report=false`` the exit status is Hydra's own).

    >>> with reported_sweep():  # doctest: +SKIP
    ...     hydra_entry()
    """
    global _ACTIVE_SWEEP
    failed: list[Any] = []
    try:
        yield
    finally:
        sweep, _ACTIVE_SWEEP = _ACTIVE_SWEEP, None
        if sweep is not None:
            if sweep.report is None and sweep.report_enabled and any(sweep.sweep_dir.glob(f"*/{SUMMARY_FILE}")):
                if not sweep.ended:
                    log.info("the sweeper ended with an error (above); writing the report of the jobs that ran")
                sweep.write_report()
            failed = list(sweep.report.unfinished) if sweep.report is not None else []
            if failed:
                print(f"grpolab: {len(failed)} of {len(sweep.report.runs)} jobs failed "
                      f"({', '.join(run.name for run in failed)}); see {sweep.sweep_dir / 'report.md'}",
                      file=sys.stderr)
    if failed:
        raise SystemExit(SWEEP_FAILURE_EXIT_CODE)
