"""What a job prints on the terminal, and the summary it ends with.

Wired in ``conf/hydra/default.yaml``, plus two calls: ``quiet_libraries()`` with its heavy imports
(``grpolab.train``), and ``grpolab.tracking.progress.show_progress(trainer)`` once the trainer exists
(``grpolab.trainer.build``):

- ``ConsoleHandler`` is Hydra's console log handler (``hydra.job_logging.handlers.console``). It shows the lines of
  grpolab's own loggers and errors from anywhere; library warnings and logs (transformers, TRL, datasets, Python
  ``warnings``) reach only Hydra's file handler, ``<run_dir>/train.log``, which keeps everything. In a multirun every
  line it prints starts with the job's number and swept values, e.g. ``[job 3 optimizer.lr=0.001]``.
- ``ConsoleCallback`` (``hydra.callbacks.console``) gives the handler the running job's prefix and prints the run
  summary (held-out accuracy before and after, wall time, where the run directory, model, plots and log are) when the
  job ends: the last thing a single run prints.
- ``quiet_libraries()`` makes library output log records (for ``train.log``) instead of direct prints.
- Progress of the warm start and of GRPO is ``grpolab.tracking.progress`` (a live bar on a terminal, else a line per
  logging interval), which asks ``live_bars_allowed()``.

Imports nothing heavy: Hydra builds the handler before the job's config is checked.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from grpolab.tracking.jsonfiles import read_json
from grpolab.tracking.rundir import (
    FINAL_MODEL_DIR,
    FINAL_REWARD_WINDOW,
    SUMMARY_FILE,
    describe_exception,
    override_key,
)

log = logging.getLogger(__name__)

#: A job prefix longer than this is cut (a sweep over many keys): the console line should still show its message.
PREFIX_MAX_CHARS = 60
#: A record logged with ``extra=NOT_ON_CONSOLE`` goes to train.log only (e.g. a progress line while a bar shows it).
NOT_ON_CONSOLE = {"console": False}


def live_bars_allowed() -> bool:
    """Live progress bars only for a single run on a terminal: jobs running side by side (joblib) would draw over each
    other's bars, and a file or CI log wants one line per interval, not carriage-return frames. Outside a Hydra job
    (a test, a notebook) it is the terminal alone that decides."""
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return not in_multirun and sys.stderr is not None and sys.stderr.isatty()


def describe_job(job_num: int, overrides: Sequence[str], swept_keys: Collection[str]) -> str:
    """The label of a multirun job: its number and the values it was given for the swept keys (all its overrides when
    the swept keys are unknown).

    >>> describe_job(3, ["optimizer.lr=0.001", "logger=none"], {"optimizer.lr"})
    '[job 3 optimizer.lr=0.001]'
    >>> describe_job(0, ["seed=1"], ())
    '[job 0 seed=1]'
    """
    shown = [o for o in overrides if override_key(o) in swept_keys] if swept_keys else list(overrides)
    text = " ".join([f"job {job_num}", *shown])
    if len(text) > PREFIX_MAX_CHARS:
        text = text[: PREFIX_MAX_CHARS - 3] + "..."
    return f"[{text}]"


def swept_keys(multirun_config: DictConfig) -> list[str]:
    """The keys a multirun varies: command-line sweeps (``optimizer.lr=1e-4,3e-4``, ``seed=range(3)``) and the
    sweeper's ``params`` (an experiment's grid, an Optuna search space)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(multirun_config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    params = OmegaConf.select(multirun_config, "hydra.sweeper.params")
    if isinstance(params, DictConfig):
        keys += [str(key) for key in params]
    return list(dict.fromkeys(keys))


class ConsoleHandler(logging.StreamHandler):
    """Hydra's console handler for grpolab jobs (``conf/hydra/default.yaml``, ``job_logging.handlers.console``).

    Prints records of the loggers named in ``shown_loggers`` (and their children) and records of any other logger
    at ``others_level`` or above; warnings get their level in front, multirun lines the ``job_prefix`` that
    ``ConsoleCallback`` sets while a job runs. Records logged with ``extra=NOT_ON_CONSOLE`` are skipped (they are meant
    for ``train.log``). Writes around live tqdm bars.

    >>> handler = ConsoleHandler(sys.stdout, shown_loggers=["grpolab", "my_rewards"], others_level="ERROR")
    """

    def __init__(self, stream: TextIO | None = None, shown_loggers: Iterable[str] = ("grpolab",),
                 others_level: str | int = "ERROR") -> None:
        super().__init__(stream)
        self.job_prefix = ""  # "[job 3 optimizer.lr=0.001] " while a multirun job runs
        self.shown_loggers = tuple(shown_loggers)
        self.others_level = logging.getLevelName(others_level) if isinstance(others_level, str) else others_level
        if not isinstance(self.others_level, int):
            raise ValueError(f"hydra.job_logging.handlers.console.others_level: unknown level {others_level!r}; "
                             f"use DEBUG, INFO, WARNING, ERROR or CRITICAL")

    def shows(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        own = any(record.name == name or record.name.startswith(name + ".") for name in self.shown_loggers)
        return own or record.levelno >= self.others_level

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            record = logging.makeLogRecord({**record.__dict__, "msg": f"{record.levelname}: {record.getMessage()}",
                                            "args": None})
        return "\n".join(self.job_prefix + line for line in super().format(record).splitlines())

    def emit(self, record: logging.LogRecord) -> None:
        if not self.shows(record):
            return
        with tqdm.external_write_mode(file=self.stream):  # clears a live bar, writes the line, redraws the bar
            super().emit(record)


def quiet_libraries() -> None:
    """Library output as log records: the console shows grpolab's lines, ``train.log`` keeps the libraries' too.

    Python warnings (``pin_memory`` without an accelerator, deprecations) become ``py.warnings`` records; the
    transformers and datasets loggers lose their own stderr handlers and propagate to Hydra's handlers; datasets'
    ``Map:``/``Saving the dataset`` bars and transformers' ``Writing model shards``/``Loading weights`` bars are off
    (the Trainer's own step bar is ``trainer.disable_tqdm``'s). Safe to call once per job.
    """
    import datasets
    import transformers

    # Off, then on: a warnings.catch_warnings block that began before an earlier call put the original showwarning
    # back when it ended, and logging, still believing it captures, would ignore a plain captureWarnings(True).
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    datasets_logger = logging.getLogger("datasets")
    for handler in list(datasets_logger.handlers):
        if type(handler) is logging.StreamHandler:  # the one datasets adds for stderr; records still propagate
            datasets_logger.removeHandler(handler)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def fields(mapping: Mapping[str, Any]) -> str:
    """A dict as a log line that reads like text and keeps ``summary.json``'s key names.

    >>> fields({"steps": 60, "cached": False, "final_loss": 1.318996458, "wall_time_s": 2.27})
    'steps 60, cached False, final_loss 1.319, wall_time_s 2.27'
    """
    return ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in mapping.items())


# ------------------------------------------------------------------------------------------------ run summary


def format_duration(seconds: float) -> str:
    """Seconds as people read them.

    >>> [format_duration(s) for s in (4.25, 75, 3725)]
    ['4.2 s', '1 min 15 s', '1 h 02 min']
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (what the user typed from), else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def summary_lines(run_dir: Path, summary: Mapping[str, Any], log_file: Path | None = None) -> list[str]:
    """The run summary printed when a job ends, from its ``summary.json`` (and what exists in ``run_dir``).

    >>> summary_lines(Path("run"), {"status": "completed", "wall_time_s": 75, "steps": 200,
    ...     "eval_before": {"accuracy": 0.07, "num_samples": 200}, "eval_after": {"accuracy": 0.57},
    ...     "train_reward_final": 0.61, "train_reward_final_window": 5})[:3]  # doctest: +NORMALIZE_WHITESPACE
    ['grpolab: run completed in 1 min 15 s',
     '  held-out accuracy  0.070 -> 0.570 (before -> after GRPO, 200 problems)',
     '  train reward       0.610 (mean of the last 5 logged steps; 200 GRPO steps)']
    """
    status = summary.get("status") or "unknown"
    wall = summary.get("wall_time_s")
    lines = [f"grpolab: run {status}" + (f" in {format_duration(wall)}" if isinstance(wall, (int, float)) else "")]
    if status == "failed" and summary.get("reason"):
        lines.append(f"  reason             {_one_line(str(summary['reason']))}")
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    if "accuracy" in before or "accuracy" in after:
        problems = before.get("num_samples") or after.get("num_samples")
        lines.append(f"  held-out accuracy  {_number(before.get('accuracy'))} -> {_number(after.get('accuracy'))} "
                     f"(before -> after GRPO" + (f", {problems} problems)" if problems else ")"))
    if isinstance(summary.get("train_reward_final"), (int, float)):
        window = summary.get("train_reward_final_window") or FINAL_REWARD_WINDOW
        lines.append(f"  train reward       {summary['train_reward_final']:.3f} (mean of the last {window} logged "
                     f"steps; {summary.get('steps')} GRPO steps)")
    lines.append(f"  run directory      {shown_path(run_dir)}")
    if (run_dir / FINAL_MODEL_DIR).is_dir():
        lines.append(f"  model              {shown_path(run_dir / FINAL_MODEL_DIR)}")
    for plot in sorted(run_dir.glob("*.png")):
        lines.append(f"  plot               {shown_path(plot)}")
    if log_file is not None and log_file.exists():
        traceback = " (with the traceback)" if status == "failed" else ""
        lines.append(f"  log                {shown_path(log_file)}{traceback}")
    return lines


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _one_line(text: str, limit: int = 200) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= limit else first[: limit - 3] + "..."


class ConsoleCallback(Callback):
    """Hydra callback (``hydra.callbacks.console``, listed first so that its ``on_job_end`` runs last): gives the
    console handlers the running job's ``job_prefix`` and prints the run summary when the job ends (``summary: false``
    to skip it).

    The summary goes to stdout and, through the ``grpolab.tracking.console`` logger, to ``train.log``. A job stopped
    by a config error in a single run exits with its one-line message instead, before this callback's turn.
    """

    def __init__(self, summary: bool = True) -> None:
        self.summary = summary
        self.swept_keys: list[str] = []
        self.job_prefix = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Stored on the callback, which the joblib launcher pickles into its workers with the launch.
        self.swept_keys = swept_keys(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            label = describe_job(int(config.hydra.job.num), list(config.hydra.overrides.task), self.swept_keys)
            self._show_job(label + " ")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        try:
            if self.summary:
                self._print_summary(config, job_return)
        finally:
            self._show_job("")

    def _show_job(self, prefix: str) -> None:
        """Hand the job's prefix to the console handlers of this job's logging (Hydra configures it for every job,
        on the root logger, before ``on_job_start``)."""
        self.job_prefix = prefix
        for handler in logging.getLogger().handlers:
            if isinstance(handler, ConsoleHandler):
                handler.job_prefix = prefix

    def _print_summary(self, config: DictConfig, job_return: JobReturn) -> None:
        run_dir = Path(str(config.hydra.runtime.output_dir))
        summary = read_json(run_dir / SUMMARY_FILE) or {}
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the property would re-raise it
            if summary.get("status") != "failed":
                summary = {**summary, "status": "failed", "reason": describe_exception(error)}
            if config.hydra.mode != RunMode.MULTIRUN:  # a multirun's SweepCallback logs it; Hydra prints it after us
                log.error("the job failed", exc_info=(type(error), error, error.__traceback__), extra=NOT_ON_CONSOLE)
        log_file = OmegaConf.select(config, "hydra.job_logging.handlers.file.filename", default=None)
        lines = summary_lines(run_dir, summary, Path(str(log_file)) if log_file else None)
        log.info("\n".join(lines), extra=NOT_ON_CONSOLE)
        with tqdm.external_write_mode(file=sys.stdout):
            print("\n".join(self.job_prefix + line for line in lines), flush=True)

