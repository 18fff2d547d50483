"""Reading run directories back: one ``RunRecord`` per directory holding a ``summary.json`` under a root.

The reader side of the file formats in ``grpolab.tracking.rundir`` (used by ``grpolab.tracking.aggregate``); imports
neither torch nor matplotlib.

    >>> runs = [load_run(path, root) for path in find_run_dirs(root)]  # doctest: +SKIP
    >>> runs[0].value_of("tokenizer_mode"), runs[0].final_reward(last_k=5)  # doctest: +SKIP
    ('ids', 0.43)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from grpolab.tracking.jsonfiles import read_json
from grpolab.tracking.rundir import (
    MANIFEST_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    mean_of_last,
    parse_overrides,
    read_hydra_choices,
    read_metrics,
    read_overrides,
)

# Directories that can hold JSON files of their own but never a grpolab run.
SKIPPED_DIRS = {"wandb", "tensorboard", ".hydra", "completions"}


def as_number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (bools, strings, NaN, missing).

    >>> as_number(3), as_number(True), as_number(float("nan"))
    (3.0, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunRecord:
    """One run directory as read from disk."""

    path: Path
    name: str  # path relative to the report root, "." for the root itself
    overrides: dict[str, str]
    seed: Any
    status: str
    reason: str | None
    summary: dict[str, Any]
    train_rows: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)  # manifest.json's resolved config

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def final_reward(self, last_k: int) -> float | None:
        """Mean of the last ``last_k`` logged train rewards; the summary's value when no metrics were kept."""
        value = mean_of_last([row.get("reward") for row in self.train_rows], last_k)
        return value if value is not None else as_number(self.summary.get("train_reward_final"))

    def final_reward_window(self, last_k: int) -> int | None:
        """How many rewards ``final_reward(last_k)`` actually averaged (fewer than ``last_k`` in a short run)."""
        logged = sum(row.get("reward") is not None for row in self.train_rows)
        if logged:
            return min(logged, last_k)
        window = self.summary.get("train_reward_final_window")
        return window if isinstance(window, int) and self.summary.get("train_reward_final") is not None else None

    def accuracy(self, when: str) -> float | None:
        evaluation = self.summary.get(when)
        return as_number(evaluation.get("accuracy")) if isinstance(evaluation, dict) else None

    def step_time(self) -> float | None:
        value = as_number(self.summary.get("step_time_s"))
        if value is None:
            times = [time for row in self.train_rows if (time := as_number(row.get("step_time_s"))) is not None]
            value = statistics.fmean(times) if times else None
        return value

    def metric_mean(self, key: str) -> float | None:
        """A per-step metric averaged over the run's train rows (rows without it skipped)."""
        values = [value for row in self.train_rows if (value := as_number(row.get(key))) is not None]
        return statistics.fmean(values) if values else None

    @cached_property
    def choices(self) -> dict[str, str]:
        return read_hydra_choices(self.path)

    def value_of(self, key: str) -> str | None:
        """The run's value of ``key``: its override, else its config group option, else its config's scalar there."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return self.choices[key]
        node: Any = self.config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool):
            return str(node).lower()  # as Hydra writes it in an override
        return None if node is None or isinstance(node, (dict, list)) else str(node)


def _natural_key(path: Path) -> list[Any]:
    """Order job dirs 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) holding a ``summary.json``, in natural order."""
    found = [
        summary.parent
        for summary in root.rglob(SUMMARY_FILE)
        if not SKIPPED_DIRS.intersection(summary.relative_to(root).parts[:-1])
    ]
    return sorted(found, key=lambda path: _natural_key(path.relative_to(root)))


def load_run(path: Path, root: Path) -> RunRecord:
    summary = read_json(path / SUMMARY_FILE) or {}
    manifest = read_json(path / MANIFEST_FILE) or {}
    parsed = parse_overrides(read_overrides(path) or [])
    seed = manifest.get("seed", parsed.get("seed"))
    status = summary.get("status") or "running"
    reason = summary.get("reason")
    if status == "running":
        reason = reason or "no final status: the job was killed or is still running"
    name = str(path.relative_to(root)) if path != root else "."
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    return RunRecord(path, name, parsed, seed, status, reason, summary, read_metrics(path / METRICS_FILE), config)
