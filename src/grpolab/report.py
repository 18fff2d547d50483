"""Aggregate run directories into ``report.md``, ``report.csv`` and plots (``grpolab-report <dir>``).

``<dir>`` is a Hydra sweep dir (``outputs/multirun/<date>/<time>/`` with jobs ``0/``, ``1/``, ...) or any directory
containing run directories at any depth (found by their ``summary.json``), or a single run directory.

A *configuration* is the set of swept keys -- overrides whose value differs between the runs, ``seed`` excluded --
and each table row aggregates the completed runs of one configuration over seeds: mean and sample std (n-1; empty
with one seed) of the final train reward (mean of the last ``k`` logged rewards), the held-out accuracy after and
before training, and the mean wall time and step time. Failed or unfinished runs are counted and listed with their
reason, never averaged in. Reads only the files described in ``grpolab.tracking.rundir``; imports no torch.

    grpolab-report outputs/multirun/2024-05-01/12-00-00 --last-k 5
    python -m grpolab.report outputs/
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grpolab.tracking.rundir import (
    FINAL_REWARD_WINDOW,
    MANIFEST_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    mean_of_last,
    read_json,
    read_metrics,
)

DEFAULT_EXCLUDED_KEYS = ("seed",)
NOT_OVERRIDDEN = "(default)"
# Directories that can hold JSON files of their own but never a grpolab run.
SKIPPED_DIRS = {"wandb", "tensorboard", ".hydra", "completions"}
REPORT_MD, REPORT_CSV, REWARD_CURVES_PNG = "report.md", "report.csv", "reward_curves.png"


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

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def final_reward(self, last_k: int) -> float | None:
        """Mean of the last ``last_k`` logged train rewards; the summary's value when no metrics were kept."""
        rewards = [row.get("reward") for row in self.train_rows]
        value = mean_of_last(rewards, last_k)
        return value if value is not None else _number(self.summary.get("train_reward_final"))

    def accuracy(self, when: str) -> float | None:
        evaluation = self.summary.get(when)
        return _number(evaluation.get("accuracy")) if isinstance(evaluation, dict) else None

    def step_time(self) -> float | None:
        value = _number(self.summary.get("step_time_s"))
        if value is None:
            times = [row["step_time_s"] for row in self.train_rows if _number(row.get("step_time_s")) is not None]
            value = statistics.fmean(times) if times else None
        return value


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (``std`` None with fewer than two values)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        present = [value for value in values if value is not None]
        return cls(
            mean=statistics.fmean(present) if present else None,
            std=statistics.stdev(present) if len(present) >= 2 else None,
            n=len(present),
        )


@dataclass
class ConfigRow:
    """One configuration: its swept values, its completed and its failed runs, and the aggregates."""

    values: dict[str, str]
    completed: list[RunRecord] = field(default_factory=list)
    failed: list[RunRecord] = field(default_factory=list)
    train_reward_final: Stat = Stat(None, None, 0)
    eval_after_accuracy: Stat = Stat(None, None, 0)
    eval_before_accuracy: Stat = Stat(None, None, 0)
    wall_time_s: Stat = Stat(None, None, 0)
    step_time_s: Stat = Stat(None, None, 0)

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.values.items()) or "all runs"

    @property
    def n_seeds(self) -> int:
        return len(self.completed)


@dataclass
class Report:
    root: Path
    swept_keys: list[str]
    rows: list[ConfigRow]
    runs: list[RunRecord]
    last_k: int
    markdown: str = ""
    written: list[Path] = field(default_factory=list)

    @property
    def unfinished(self) -> list[RunRecord]:
        return [run for run in self.runs if not run.completed]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


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


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """``["optimizer.lr=1e-3", "+x=1"]`` -> ``{"optimizer.lr": "1e-3", "x": "1"}`` (``~key`` -> ``""``).

    >>> parse_overrides(["optimizer.lr=1e-3", "rewards=[accuracy,format]"])
    {'optimizer.lr': '1e-3', 'rewards': '[accuracy,format]'}
    """
    parsed: dict[str, str] = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def load_run(path: Path, root: Path) -> RunRecord:
    summary = read_json(path / SUMMARY_FILE) or {}
    manifest = read_json(path / MANIFEST_FILE) or {}
    overrides: Any = None
    overrides_file = path / ".hydra" / "overrides.yaml"
    if overrides_file.exists():
        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8"))
    if not isinstance(overrides, list):
        overrides = manifest.get("overrides") or []
    parsed = parse_overrides(overrides)
    seed = manifest.get("seed", parsed.get("seed"))
    status = summary.get("status") or "running"
    reason = summary.get("reason")
    if status == "running":
        reason = reason or "no final status: the job was killed or is still running"
    name = str(path.relative_to(root)) if path != root else "."
    return RunRecord(path, name, parsed, seed, status, reason, summary, read_metrics(path / METRICS_FILE))


def swept_keys(runs: Sequence[RunRecord], excluded: Sequence[str] = DEFAULT_EXCLUDED_KEYS) -> list[str]:
    """Override keys whose value (or presence) differs between runs, in first-seen order, minus ``excluded``."""
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    return [
        key
        for key in keys
        if key not in excluded and len({run.overrides.get(key, NOT_OVERRIDDEN) for run in runs}) > 1
    ]


def _value_order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def aggregate(runs: Sequence[RunRecord], keys: Sequence[str], last_k: int) -> list[ConfigRow]:
    """Group runs by their swept values and aggregate the completed ones over seeds."""
    rows: dict[tuple[str, ...], ConfigRow] = {}
    for run in runs:
        values = tuple(run.overrides.get(key, NOT_OVERRIDDEN) for key in keys)
        row = rows.setdefault(values, ConfigRow(values=dict(zip(keys, values))))
        (row.completed if run.completed else row.failed).append(run)
    for row in rows.values():
        done = row.completed
        row.train_reward_final = Stat.of([run.final_reward(last_k) for run in done])
        row.eval_after_accuracy = Stat.of([run.accuracy("eval_after") for run in done])
        row.eval_before_accuracy = Stat.of([run.accuracy("eval_before") for run in done])
        row.wall_time_s = Stat.of([_number(run.summary.get("wall_time_s")) for run in done])
        row.step_time_s = Stat.of([run.step_time() for run in done])
    return [rows[values] for values in sorted(rows, key=lambda values: [_value_order(v) for v in values])]


CSV_STATS = ("train_reward_final", "eval_after_accuracy", "eval_before_accuracy", "wall_time_s", "step_time_s")


def write_csv(report: Report, path: Path) -> None:
    header = [*report.swept_keys, "n_seeds", "n_failed", "seeds"]
    for name in CSV_STATS:
        header += [f"{name}_mean", f"{name}_std"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in report.rows:
            cells: list[Any] = [*row.values.values(), row.n_seeds, len(row.failed)]
            cells.append(";".join(str(run.seed) for run in row.completed))
            for name in CSV_STATS:
                stat: Stat = getattr(row, name)
                cells += ["" if stat.mean is None else repr(stat.mean), "" if stat.std is None else repr(stat.std)]
            writer.writerow(cells)


def _fmt(stat: Stat, digits: int = 4, with_std: bool = True) -> str:
    if stat.mean is None:
        return "—"
    text = f"{stat.mean:.{digits}f}"
    return text + (f" ± {stat.std:.{digits}f}" if with_std and stat.std is not None else "")


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(report: Report) -> str:
    columns = [*(report.swept_keys or ["config"]), "seeds", "failed", f"final reward (last {report.last_k})",
               "accuracy after", "accuracy before", "wall time (s)", "step time (s)"]
    lines = ["| " + " | ".join(_md_cell(column) for column in columns) + " |", "|" + "---|" * len(columns)]
    for row in report.rows:
        key_cells = list(row.values.values()) if report.swept_keys else [row.label]
        failed = f"**{len(row.failed)}**" if row.failed else "0"
        cells = [*key_cells, row.n_seeds, failed, _fmt(row.train_reward_final), _fmt(row.eval_after_accuracy),
                 _fmt(row.eval_before_accuracy), _fmt(row.wall_time_s, 1, False), _fmt(row.step_time_s, 3, False)]
        lines.append("| " + " | ".join(_md_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def render_markdown(report: Report, plots: Sequence[Path]) -> str:
    completed = sum(run.completed for run in report.runs)
    parts = [
        f"# grpolab report: `{report.root}`",
        "",
        f"{len(report.runs)} runs: {completed} completed, {len(report.unfinished)} failed or unfinished. "
        f"Swept: {', '.join(f'`{key}`' for key in report.swept_keys) or 'nothing (one configuration)'}. "
        f"Final reward = mean of the last {report.last_k} logged train rewards; accuracy = held-out `accuracy`; "
        "± = sample std over seeds; failed runs are not averaged in.",
        "",
        markdown_table(report),
    ]
    if report.unfinished:
        parts += ["", "## Failed or unfinished runs", "", "| run | configuration | seed | status | reason |",
                  "|---|---|---|---|---|"]
        for row in report.rows:
            for run in row.failed:
                cells = [run.name, row.label, run.seed, run.status.upper(), run.reason or ""]
                parts.append("| " + " | ".join(_md_cell(cell) for cell in cells) + " |")
    if plots:
        parts += ["", "## Plots", ""] + [f"![{plot.stem}]({plot.name})" for plot in plots]
    return "\n".join(parts) + "\n"


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "value"


def write_plots(report: Report) -> list[Path]:
    from grpolab.tracking.plots import aggregate_curves, plot_metric_vs_value, plot_reward_bands

    bands = [aggregate_curves(row.label, [run.train_rows for run in row.completed]) for row in report.rows]
    title = "train reward: " + "/".join(report.root.resolve().parts[-2:])
    written = [plot_reward_bands(bands, report.root / REWARD_CURVES_PNG, title=title)]
    for key in report.swept_keys:
        points = []
        for row in report.rows:
            series = ", ".join(f"{other}={value}" for other, value in row.values.items() if other != key)
            points += [(series, row.values[key], acc) for run in row.completed
                       if (acc := run.accuracy("eval_after")) is not None]
        if points:
            written.append(plot_metric_vs_value(
                points, report.root / f"accuracy_vs_{_safe_filename(key)}.png", xlabel=key,
                ylabel="held-out accuracy after training", title=f"accuracy vs {key}"))
    return written


def build_report(
    root: str | Path,
    last_k: int = FINAL_REWARD_WINDOW,
    excluded_keys: Sequence[str] = DEFAULT_EXCLUDED_KEYS,
    plots: bool = True,
) -> Report:
    """Read every run under ``root``, write ``report.md``, ``report.csv`` and the PNGs into ``root``.

    >>> report = build_report("outputs/multirun/2024-05-01/12-00-00", last_k=3)  # doctest: +SKIP
    >>> report.rows[0].eval_after_accuracy.mean  # doctest: +SKIP
    0.62
    """
    root = Path(root)
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise FileNotFoundError(f"no run directories (with {SUMMARY_FILE}) under {root}")
    runs = [load_run(path, root) for path in run_dirs]
    keys = swept_keys(runs, excluded_keys)
    report = Report(root=root, swept_keys=keys, rows=aggregate(runs, keys, last_k), runs=runs, last_k=last_k)
    plot_paths = write_plots(report) if plots else []
    report.markdown = render_markdown(report, plot_paths)
    (root / REPORT_MD).write_text(report.markdown, encoding="utf-8")
    write_csv(report, root / REPORT_CSV)
    report.written = [root / REPORT_MD, root / REPORT_CSV, *plot_paths]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpolab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="sweep dir, directory of runs, or a single run dir")
    parser.add_argument("--last-k", type=int, default=FINAL_REWARD_WINDOW,
                        help="final train reward = mean of the last K logged rewards (default: %(default)s)")
    parser.add_argument("--exclude", action="append", default=[], metavar="KEY",
                        help="another override key not to treat as a configuration key (repeatable; seed always is)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.directory, args.last_k, (*DEFAULT_EXCLUDED_KEYS, *args.exclude),
                              plots=not args.no_plots)
    except (FileNotFoundError, ValueError) as error:
        print(f"grpolab-report: {error}", file=sys.stderr)
        return 1
    print(report.markdown)
    print("written: " + ", ".join(str(path) for path in report.written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
