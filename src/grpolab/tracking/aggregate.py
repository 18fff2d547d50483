"""Run directories aggregated into ``report.md``, ``report.csv`` and plots: ``build_report``, which the
``grpolab-report`` CLI (``grpolab.report``) and the end of a sweep (``grpolab.sweeps``) call.

The root is a Hydra sweep dir (``outputs/multirun/<date>/<time>/`` with jobs ``0/``, ``1/``, ...) or any directory
containing run directories at any depth (found by their ``summary.json``), or a single run directory.

One table row per *configuration*: by default the swept keys -- overrides whose value differs between the runs,
``seed`` excluded; with ``group_by`` the given keys instead, where a run's value of a key is its override, else the
config group option it ran with (``.hydra/hydra.yaml``), else that dotted path of its recorded config
(``manifest.json``). A row aggregates its completed runs over seeds: mean and sample std (n-1; empty with one seed)
of the final train reward (mean of the last ``k`` logged rewards), the held-out accuracy after and before training,
wall time, step time, and each ``metrics`` column (a per-step metric of ``metrics.jsonl``, e.g.
``timing/rewards_s``, averaged over the run's train rows); for runs with tools (``environment=...``) also TRL's tool
calls per completion and failed calls per call (train, averaged over steps) and the held-out tool calls after. Failed
or unfinished runs are counted and listed with their reason, never averaged in. Plots: the reward curves of all rows
(mean over seeds, min-max band), held-out accuracy against each key and, with ``group_by``, one reward curve per group with a line per seed. Reads only the files
described in ``grpolab.tracking.rundir``; imports no torch.
"""

from __future__ import annotations

import csv
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpolab.tracking.rundir import FINAL_REWARD_WINDOW, METRICS_FILE, SUMMARY_FILE
from grpolab.tracking.runs import RunRecord, as_number, find_run_dirs, load_run

DEFAULT_EXCLUDED_KEYS = ("seed",)
NOT_OVERRIDDEN = "(default)"
NOT_SET = "(not set)"
REPORT_MD, REPORT_CSV, REWARD_CURVES_PNG = "report.md", "report.csv", "reward_curves.png"


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


@dataclass(frozen=True)
class Column:
    """One aggregated quantity: CSV name (``<name>_mean``/``<name>_std``), table title, how to read it from a run,
    and digits to print (None: 4, or 1 when the column holds a mean of 10 or more)."""

    name: str
    title: str
    read: Callable[[RunRecord], float | None]
    digits: int | None = 4


#: TRL's per-step tool metrics (``tools/call_frequency``: calls per completion; ``tools/failure_frequency``: failed
#: calls per call), reported whenever a run logged them.
TOOL_METRICS = {"tools/call_frequency": "tool calls / completion", "tools/failure_frequency": "failed calls / call"}


def report_columns(last_k: int, window: str, metrics: Sequence[str], tools: bool = False) -> list[Column]:
    """The fixed columns, the tool columns for runs with tools, then one per requested per-step metric."""
    tool_columns = [
        *(Column(metric, f"{title} (train)", lambda run, metric=metric: run.metric_mean(metric))
          for metric, title in TOOL_METRICS.items() if metric not in metrics),
        Column("eval_after_tool_call_frequency", "tool calls / completion after (held-out)",
               lambda run: _held_out(run, "eval_after", "tool_call_frequency")),
    ] if tools else []
    return [
        Column("train_reward_final", f"final reward (last {window})", lambda run: run.final_reward(last_k)),
        Column("eval_after_accuracy", "accuracy after", lambda run: run.accuracy("eval_after")),
        Column("eval_before_accuracy", "accuracy before", lambda run: run.accuracy("eval_before")),
        Column("wall_time_s", "wall time (s)", lambda run: as_number(run.summary.get("wall_time_s")), 1),
        Column("step_time_s", "step time (s)", RunRecord.step_time, 3),
        *tool_columns,
        *(Column(metric, f"{metric} / step", lambda run, metric=metric: run.metric_mean(metric), None)
          for metric in metrics),
    ]


def _held_out(run: RunRecord, when: str, key: str) -> float | None:
    evaluation = run.summary.get(when)
    return as_number(evaluation.get(key)) if isinstance(evaluation, dict) else None


@dataclass
class ConfigRow:
    """One configuration (or group): its key values, its completed and failed runs, and one Stat per column."""

    values: dict[str, str]
    completed: list[RunRecord] = field(default_factory=list)
    failed: list[RunRecord] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)

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
    group_by: list[str]  # empty: rows are the swept configurations
    metrics: list[str]  # the per-step metric columns asked for
    columns: list[Column]
    rows: list[ConfigRow]
    runs: list[RunRecord]
    last_k: int
    window: str  # how many rewards the final reward averaged, e.g. "5" or "3-5"
    markdown: str = ""
    written: list[Path] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """The keys that make a row: ``group_by``, or the swept keys."""
        return self.group_by or self.swept_keys

    @property
    def unfinished(self) -> list[RunRecord]:
        return [run for run in self.runs if not run.completed]


def swept_keys(runs: Sequence[RunRecord], excluded: Sequence[str] = DEFAULT_EXCLUDED_KEYS) -> list[str]:
    """Override keys whose value (or presence) differs between runs, in first-seen order, minus ``excluded``."""
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    return [
        key
        for key in keys
        if key not in excluded and len({run.overrides.get(key, NOT_OVERRIDDEN) for run in runs}) > 1
    ]


def check_request(runs: Sequence[RunRecord], group_by: Sequence[str], metrics: Sequence[str]) -> None:
    """A group-by key no run sets, or a metric no run logged, is a typo: say so rather than print a column of —."""
    for key in group_by:
        if all(run.value_of(key) is None for run in runs):
            overridden = sorted({name for run in runs for name in run.overrides})
            raise ValueError(f"group-by key {key!r} is set in no run (as an override, a config group or a config "
                             f"key); overridden keys: {', '.join(overridden) or 'none'}")
    logged = {key for run in runs for row in run.train_rows
              for key, value in row.items() if as_number(value) is not None}
    for metric in metrics:
        if logged and metric not in logged:
            raise ValueError(f"metric {metric!r} is in no run's train rows of {METRICS_FILE}; logged: "
                             f"{', '.join(sorted(logged - {'step'}))}")


def aggregate(runs: Sequence[RunRecord], keys: Sequence[str], columns: Sequence[Column],
              value_of: Callable[[RunRecord, str], str]) -> list[ConfigRow]:
    """Group runs by their values of ``keys`` and aggregate the completed ones over seeds, one Stat per column.

    Rows are ordered by their values: numbers by size, anything else in the order the runs first use it.
    """
    rows: dict[tuple[str, ...], ConfigRow] = {}
    for run in runs:
        values = tuple(value_of(run, key) for key in keys)
        row = rows.setdefault(values, ConfigRow(values=dict(zip(keys, values))))
        (row.completed if run.completed else row.failed).append(run)
    for row in rows.values():
        row.stats = {column.name: Stat.of([column.read(run) for run in row.completed]) for column in columns}
    first_seen = {value: index for index, value in enumerate(dict.fromkeys(v for values in rows for v in values))}

    def order(value: str) -> tuple[int, float]:
        try:
            return (0, float(value))
        except ValueError:
            return (1, first_seen[value])

    return [rows[values] for values in sorted(rows, key=lambda values: [order(value) for value in values])]


def window_text(runs: Sequence[RunRecord], last_k: int) -> str:
    """``"5"``; ``"3"`` or ``"3-5"`` when some runs logged fewer than ``last_k`` rewards (those average all)."""
    windows = {window for run in runs if (window := run.final_reward_window(last_k)) is not None} or {last_k}
    return str(min(windows)) if len(windows) == 1 else f"{min(windows)}-{max(windows)}"


def write_csv(report: Report, path: Path) -> None:
    header = [*report.keys, "n_seeds", "n_failed", "seeds"]
    for column in report.columns:
        header += [f"{column.name}_mean", f"{column.name}_std"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in report.rows:
            cells: list[Any] = [*row.values.values(), row.n_seeds, len(row.failed)]
            cells.append(";".join(str(run.seed) for run in row.completed))
            for column in report.columns:
                stat = row.stats[column.name]
                cells += ["" if stat.mean is None else repr(stat.mean), "" if stat.std is None else repr(stat.std)]
            writer.writerow(cells)


def _fmt(stat: Stat, digits: int) -> str:
    if stat.mean is None:
        return "—"
    text = f"{stat.mean:.{digits}f}"
    return text + (f" ± {stat.std:.{digits}f}" if stat.std is not None else "")


def _column_digits(column: Column, rows: Sequence[ConfigRow]) -> int:
    """The column's digits; for an adaptive column, 4 unless some row's mean reaches 10 (then 1, for every row)."""
    if column.digits is not None:
        return column.digits
    means = [abs(mean) for row in rows if (mean := row.stats[column.name].mean) is not None]
    return 1 if means and max(means) >= 10 else 4


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def markdown_table(report: Report) -> str:
    columns = [*(report.keys or ["config"]), "seeds", "failed", *(column.title for column in report.columns)]
    lines = [_md_row(columns), "|" + "---|" * len(columns)]
    digits = [_column_digits(column, report.rows) for column in report.columns]
    for row in report.rows:
        key_cells = list(row.values.values()) if report.keys else [row.label]
        failed = f"**{len(row.failed)}**" if row.failed else "0"
        stats = [_fmt(row.stats[column.name], places) for column, places in zip(report.columns, digits)]
        lines.append(_md_row([*key_cells, row.n_seeds, failed, *stats]))
    return "\n".join(lines)


def _keys_text(keys: Sequence[str]) -> str:
    return ", ".join(f"`{key}`" for key in keys)


def render_markdown(report: Report, plots: Sequence[Path]) -> str:
    completed = sum(run.completed for run in report.runs)
    if report.group_by:
        ungrouped = [key for key in report.swept_keys if key not in report.group_by]
        rows_text = (f"Grouped by {_keys_text(report.group_by)} (a run's override, else its config group option, "
                     "else its config value)" + (f"; also varying within groups: {_keys_text(ungrouped)}"
                                                 if ungrouped else "") + ".")
    else:
        rows_text = f"Swept: {_keys_text(report.swept_keys) or 'nothing (one configuration)'}."
    if report.window == str(report.last_k):
        window = f"the last {report.last_k} logged train rewards"
    else:
        window = (f"the last {report.window} logged train rewards ({report.last_k} asked for; runs that logged "
                  "fewer average all of theirs)")
    parts = [
        f"# grpolab report: `{report.root}`",
        "",
        f"{len(report.runs)} runs: {completed} completed, {len(report.unfinished)} failed or unfinished. {rows_text} "
        f"Final reward = mean of {window}; accuracy = held-out `accuracy`"
        + (f"; {_keys_text(report.metrics)} = mean over the run's train steps" if report.metrics else "")
        + "; ± = sample std over seeds; failed runs are not averaged in.",
        "",
        markdown_table(report),
    ]
    if report.unfinished:
        parts += ["", "## Failed or unfinished runs", "", "| run | configuration | seed | status | reason |",
                  "|---|---|---|---|---|"]
        for row in report.rows:
            parts += [_md_row([run.name, row.label, run.seed, run.status.upper(), run.reason or ""])
                      for run in row.failed]
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
    for key in report.keys:
        points = []
        for row in report.rows:
            series = ", ".join(f"{other}={value}" for other, value in row.values.items() if other != key)
            points += [(series, row.values[key], acc) for run in row.completed
                       if (acc := run.accuracy("eval_after")) is not None]
        if points:
            written.append(plot_metric_vs_value(
                points, report.root / f"accuracy_vs_{_safe_filename(key)}.png", key=key,
                ylabel="held-out accuracy after training", title=f"accuracy vs {key}"))
    if report.group_by:
        for row in report.rows:
            if row.completed:
                seeds = [aggregate_curves(f"seed {run.seed} (run {run.name})", [run.train_rows])
                         for run in row.completed]
                slug = _safe_filename("_".join(row.values.values()))
                written.append(plot_reward_bands(seeds, report.root / f"reward_curve_{slug}.png",
                                                 title=f"train reward per seed: {row.label}", ylabel="train reward"))
    return written


def build_report(
    root: str | Path,
    last_k: int = FINAL_REWARD_WINDOW,
    excluded_keys: Sequence[str] = DEFAULT_EXCLUDED_KEYS,
    plots: bool = True,
    group_by: Sequence[str] = (),
    metrics: Sequence[str] = (),
) -> Report:
    """Read every run under ``root``, write ``report.md``, ``report.csv`` and the PNGs into ``root``.

    >>> report = build_report("outputs/multirun/2024-05-01/12-00-00", group_by=["tokenizer_mode"],
    ...                       metrics=["tokenizer/calls"])  # doctest: +SKIP
    >>> report.rows[0].stats["tokenizer/calls"].mean  # doctest: +SKIP
    256.0
    """
    root = Path(root)
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise FileNotFoundError(f"no run directories (with {SUMMARY_FILE}) under {root}")
    runs = [load_run(path, root) for path in run_dirs]
    group_by, metrics = list(group_by), list(metrics)
    check_request(runs, group_by, metrics)
    window = window_text([run for run in runs if run.completed], last_k)
    tools = any(run.metric_mean("tools/call_frequency") is not None for run in runs)
    columns = report_columns(last_k, window, metrics, tools)
    swept = swept_keys(runs, excluded_keys)
    if group_by:
        rows = aggregate(runs, group_by, columns, lambda run, key: run.value_of(key) or NOT_SET)
    else:
        rows = aggregate(runs, swept, columns, lambda run, key: run.overrides.get(key, NOT_OVERRIDDEN))
    report = Report(root=root, swept_keys=swept, group_by=group_by, metrics=metrics, columns=columns, rows=rows,
                    runs=runs, last_k=last_k, window=window)
    plot_paths = write_plots(report) if plots else []
    report.markdown = render_markdown(report, plot_paths)
    (root / REPORT_MD).write_text(report.markdown, encoding="utf-8")
    write_csv(report, root / REPORT_CSV)
    report.written = [root / REPORT_MD, root / REPORT_CSV, *plot_paths]
    return report
