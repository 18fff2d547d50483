"""The run directory and its file formats: the contract between training (writer) and ``grpolab.report`` (reader).

A run directory is Hydra's job output dir (``outputs/<date>/<time>/`` or ``outputs/multirun/<date>/<time>/<job>/``).
Besides Hydra's ``.hydra/`` (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``: a YAML list of ``key=value``
strings) it holds the files below. All JSON is strict (no NaN/Infinity: non-finite numbers are written as ``null``).

``summary.json`` -- one JSON object, rewritten atomically (tmp + rename) and merged key by key (shallow) so it can be
filled in stages. Always contains every key of ``SUMMARY_FIELDS`` (``null`` until known):

- ``status``: ``"running" | "completed" | "failed" | "preempted"``. A job killed without a chance to clean up stays
  ``"running"``; ``"preempted"``: SIGTERM/SIGUSR1 made it save a checkpoint and stop (``resume=true`` continues it).
- ``reason``: ``null``, or for failures ``"<ExceptionType>: <message>"``, or what preempted the run.
- ``steps``: int, optimizer steps done (``TrainerState.global_step``).
- ``wall_time_s``: float, seconds from entering ``RunDirectory.record_outcome()`` to leaving it.
- ``eval_before`` / ``eval_after``: ``{metric: float}`` on the held-out split before / after training; both contain
  ``accuracy`` (fraction in [0, 1]) when evaluation ran.
- ``train_reward_final``: float, mean of the last ``train_reward_final_window`` logged train ``reward`` values.
- ``train_reward_final_window``: int, the window used for ``train_reward_final``.
- ``step_time_s``: float, mean wall seconds per optimizer step over the logged train intervals (evaluation excluded).
- ``started_at`` / ``finished_at``: ISO-8601 UTC strings (``...Z``); ``updated_at``: time of the last write.
- ``train_runtime_s``, ``train_loss``: from the Trainer's end-of-training log, when training finished.
- ``world_size``: int, the job's processes (1, or N under ``torchrun --nproc_per_node=N``; written by the main
  process, the only one that writes this directory).
- anything else the composition root passes (e.g. ``optimized_metric``, ``optimized_value``).

``manifest.json`` -- one JSON object written once at job start: ``seed`` (int | null), ``config`` (the resolved
config as a dict), ``overrides`` (list[str], Hydra task overrides), ``git`` (``{"commit": str | null, "dirty": bool |
null, "root": str | null}`` for the grpolab checkout), ``versions`` (``{"python": str, "torch": str | null,
"transformers": ..., "trl", "accelerate", "datasets", "hydra-core", "omegaconf", "wandb", "math-verify", "grpolab"}``,
``null`` when not installed), ``lock`` (``{"file": str | null, "sha256": str | null, "differs": {package: {"locked":
str, "installed": str | null}}}``: the version lock ``constraints.txt`` of the grpolab checkout and the pinned
packages whose installed version differs from it), ``hostname``, ``platform``, ``command`` (list[str], the command as
typed: ``python -m grpolab.train ...`` or ``grpolab-train ...``), ``command_line`` (the same, shell-quoted),
``started_at`` (ISO-8601 UTC). ``grpolab.tracking.provenance`` collects ``git``, ``versions``, ``lock`` and ``command``.

``metrics.jsonl`` -- one JSON object per line, appended per Trainer log call (never the end-of-training summary log):

- ``split``: ``"train"`` or ``"eval"``; eval rows carry the Trainer's ``eval_*`` keys with the ``eval_`` prefix removed.
- ``step``: int (``global_step``); ``time_s``: float, wall seconds since training began;
- ``step_time_s``: float | null, seconds per step since the previous train log (train rows only);
- then every scalar the Trainer logged, under TRL's own names: ``loss``, ``reward``, ``reward_std``,
  ``rewards/<reward name>/mean`` and ``rewards/<reward name>/std`` per reward function, ``kl``, ``entropy``,
  ``learning_rate``, ``grad_norm``, ``completions/mean_length``, ``epoch``, ... (absent keys were not logged).

Readers must tolerate a truncated last line (a job killed mid-write) and repeated steps: the last row for a (split,
step) wins. ``read_metrics`` implements both. A resumed run first cuts the file back to where its checkpoint left it
(``grpolab.tracking.checkpoints.prepare_resume``), so after a kill and a resume every step is in it exactly once.

``reward_curve.png`` -- written by ``grpolab.tracking.plots.plot_run`` at the end of a job: train reward per step and
held-out accuracy (``eval_before`` at step 0, ``split: eval`` rows with ``accuracy``, ``eval_after`` at the last step).

``model/`` -- the trained policy as ``from_pretrained`` loads it, saved at the end of a completed run
(``grpolab.trainer.final_model``).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from grpolab.tracking.jsonfiles import read_json, utc_now_iso, write_json_atomic
from grpolab.tracking.provenance import (
    git_state,
    lock_state,
    package_versions,
    typed_command,
)

SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
REWARD_CURVE_FILE = "reward_curve.png"
FINAL_MODEL_DIR = "model"

STATUSES = ("running", "completed", "failed", "preempted")
SUMMARY_FIELDS = (
    "status",
    "reason",
    "steps",
    "wall_time_s",
    "eval_before",
    "eval_after",
    "train_reward_final",
    "train_reward_final_window",
    "step_time_s",
)
# Mean over the last few logs rather than the very last one: with small GRPO batches one log is noisy.
FINAL_REWARD_WINDOW = 5


def read_metrics(path: Path, split: str | None = "train") -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` in step order, one per (split, step) (the last written wins, as after a resume).

    Skips unparsable lines (a truncated last line). ``split=None`` returns every split.

    >>> read_metrics(Path("run/metrics.jsonl"))  # doctest: +SKIP
    [{'split': 'train', 'step': 1, 'reward': 0.25, ...}, ...]
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            continue
        row_split = row.get("split", "train")
        if split is None or row_split == split:
            by_key[(row_split, row["step"])] = row
    return [by_key[key] for key in sorted(by_key, key=lambda key: (key[1], key[0]))]


def read_overrides(run_path: Path) -> list[str] | None:
    """The job's overrides: ``.hydra/overrides.yaml`` (written before the job starts, so also there for a job that
    failed before it was tracked), else ``manifest.json``'s; None when neither is there.

    >>> read_overrides(Path("outputs/multirun/2024-05-01/12-00-00/3"))  # doctest: +SKIP
    ['optimizer.lr=0.0003', 'seed=1']
    """
    try:
        overrides = yaml.safe_load((run_path / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        overrides = None
    if not isinstance(overrides, list):
        overrides = (read_json(run_path / MANIFEST_FILE) or {}).get("overrides")
    return [str(override) for override in overrides] if isinstance(overrides, list) else None


def override_key(override: str) -> str:
    """The key an override sets, as ``overrides.yaml`` records it: ``"+trainer.beta=0.1"`` -> ``"trainer.beta"``.

    >>> override_key("~resume")
    'resume'
    """
    return override.partition("=")[0].lstrip("+~")


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """``["optimizer.lr=1e-3", "+x=1"]`` -> ``{"optimizer.lr": "1e-3", "x": "1"}`` (``~key`` -> ``""``).

    >>> parse_overrides(["optimizer.lr=1e-3", "rewards=[accuracy,format]", "~x"])
    {'optimizer.lr': '1e-3', 'rewards': '[accuracy,format]', 'x': ''}
    """
    return {override_key(str(override)): str(override).partition("=")[2] for override in overrides}


def read_hydra_choices(run_path: Path) -> dict[str, str]:
    """The config group options the job ran with (``hydra.runtime.choices`` in ``.hydra/hydra.yaml``), without Hydra's
    own groups (``hydra/...``) and unselected ones; empty when the run was not started by Hydra.

    >>> read_hydra_choices(Path("outputs/2024-05-01/12-00-00"))  # doctest: +SKIP
    {'model': 'tiny', 'data': 'arithmetic', 'tokenizer_mode': 'text', ...}
    """
    try:
        hydra_file = yaml.safe_load((run_path / ".hydra" / "hydra.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    node: Any = hydra_file
    for key in ("hydra", "runtime", "choices"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return {}
    return {str(group): str(option) for group, option in node.items()
            if option is not None and not str(group).startswith("hydra")}


def mean_of_last(values: list[float | None], k: int) -> float | None:
    """Mean of the last ``k`` non-null values (fewer if there are fewer); None if there are none.

    >>> mean_of_last([0.0, None, 1.0, 0.5], 2)
    0.75
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    present = [value for value in values if value is not None]
    tail = present[-k:]
    return sum(tail) / len(tail) if tail else None


def lookup_metric(summary: Mapping[str, Any], dotted_key: str) -> Any:
    """Value at a dotted path in a summary, e.g. the ``optimized_metric`` ``eval_after.accuracy``.

    >>> lookup_metric({"eval_after": {"accuracy": 0.5}}, "eval_after.accuracy")
    0.5
    """
    value: Any = summary
    for part in dotted_key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"{dotted_key!r} not in summary (missing {part!r}); keys: {sorted(summary)}")
        value = value[part]
    return value


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: bad lr"``; the type alone when the message is empty."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__

class RunPreempted(SystemExit):
    """Raised once a preempted run has saved its checkpoint: recorded as ``status: preempted`` with ``reason`` (the
    signal and the checkpoint), then the process exits with ``code`` (128 + the signal number, as a shell reports a
    process the signal ended), without a traceback. ``hand_over()`` (called by the entry point once the run is
    recorded) passes the signal on to the handler grpolab's replaced, e.g. submitit's requeue."""

    def __init__(self, reason: str, code: int, hand_over: Callable[[], None] = lambda: None) -> None:
        super().__init__(code)
        self.reason = reason
        self.hand_over = hand_over


@contextmanager
def failures_recorded(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Record an error raised in the block (a config error before the run is tracked) as ``status: failed``."""
    try:
        yield
    except Exception as error:
        RunDirectory(run_dir).mark_failed(error)
        raise


class RunDirectory:
    """Writer for one run directory (see the module docstring for the file formats).

    The processes of a multi-process job (torchrun) share one run directory and only the main process writes it
    (``main_process``; by default ``grpolab.tracking.processes.launched_processes().is_main``): elsewhere
    ``write_summary`` returns what the summary would hold without writing it, ``write_manifest`` writes nothing, and
    only a failure is recorded, naming the process it happened in.

    >>> run_dir = RunDirectory("outputs/2024-05-01/12-00-00")  # doctest: +SKIP
    >>> with run_dir.record_outcome():                         # doctest: +SKIP
    ...     run_dir.write_manifest(seed=0, config=config_dict, overrides=["optimizer.lr=1e-3"])
    ...     run_dir.write_summary(eval_before={"accuracy": 0.1})
    """

    def __init__(self, path: str | os.PathLike[str], main_process: bool | None = None) -> None:
        from grpolab.tracking.processes import launched_processes

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        processes = launched_processes()
        self.main_process = processes.is_main if main_process is None else main_process
        self._failure_note = "" if self.main_process else f" (process {processes.rank} of {processes.world_size})"
        self._unwritten: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def reward_curve_path(self) -> Path:
        return self.path / REWARD_CURVE_FILE

    def read_summary(self) -> dict[str, Any]:
        """The current summary (every ``SUMMARY_FIELDS`` key present), empty fields as None."""
        return {**dict.fromkeys(SUMMARY_FIELDS), **(read_json(self.summary_path) or {})}

    def write_summary(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``summary.json`` (top-level keys replace) and return the merged summary.

        >>> run_dir.write_summary(status="completed", eval_after={"accuracy": 0.75})  # doctest: +SKIP
        """
        status = fields.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if not self.main_process:
            self._unwritten.update(fields)
            return {**self.read_summary(), **self._unwritten}
        return self._merge_into_summary(fields)

    def _merge_into_summary(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        summary = {**self.read_summary(), **fields, "updated_at": utc_now_iso()}
        write_json_atomic(self.summary_path, summary)
        return summary

    def write_manifest(self, seed: int | None, config: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
        """Write ``manifest.json`` (provenance: code version, packages, machine, command) and return it.

        >>> run_dir.write_manifest(seed=1, config={"seed": 1}, overrides=["seed=1"])  # doctest: +SKIP
        """
        if not self.main_process:
            return {}
        import grpolab  # the checkout whose commit matters is the one the code was imported from

        command = typed_command()
        manifest = {
            "seed": seed,
            "config": dict(config),
            "overrides": list(overrides),
            "git": git_state(Path(grpolab.__file__).resolve().parent),
            "versions": package_versions(),
            "lock": lock_state(),
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "command": command,
            "command_line": shlex.join(command),
            "started_at": utc_now_iso(),
        }
        write_json_atomic(self.manifest_path, manifest)
        return manifest

    def mark_failed(self, exc: BaseException, **fields: Any) -> dict[str, Any]:
        """Record a failure: ``status: failed`` and ``reason: "<Type>: <message>"``; any process records its own."""
        return self._merge_into_summary({"status": "failed", "reason": describe_exception(exc) + self._failure_note,
                                         **fields})

    @contextmanager
    def record_outcome(self) -> Iterator[RunDirectory]:
        """Bracket a job: ``running`` on entry; ``completed``, ``preempted`` or ``failed`` (with the reason) on exit.

        Any exception, including KeyboardInterrupt, is recorded and re-raised; ``wall_time_s`` and ``finished_at`` are
        written either way. Fields written inside the block are kept.
        """
        started = time.perf_counter()
        self.write_summary(status="running", reason=None, started_at=utc_now_iso(), finished_at=None)
        try:
            yield self
        except RunPreempted as preempted:
            self.write_summary(status="preempted", reason=preempted.reason,
                               wall_time_s=time.perf_counter() - started, finished_at=utc_now_iso())
            raise
        except BaseException as exc:
            try:
                self.mark_failed(exc, wall_time_s=time.perf_counter() - started, finished_at=utc_now_iso())
            except Exception as write_error:  # never let bookkeeping hide the real error
                print(f"grpolab: could not record the failure in {self.summary_path}: {write_error}", file=sys.stderr)
            raise
        self.write_summary(
            status="completed", reason=None, wall_time_s=time.perf_counter() - started, finished_at=utc_now_iso()
        )
