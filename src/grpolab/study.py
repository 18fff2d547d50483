"""The text-vs-token study table: ``tokenizer_mode x reward_level`` over seeds, with the cost columns.

``grpolab.report`` already aggregates any sweep (final reward, held-out accuracy, step time). This module adds what
the tokenizer-mode study is about, read from each job's ``metrics.jsonl`` (logged by ``GrpolabTrainer``): seconds
per step inside the reward functions (``timing/rewards_s``) and tokenizer calls per step (``tokenizer/calls``, split
into ``tokenizer/encode_calls`` and ``tokenizer/decode_calls``; one call = one sequence encoded or decoded). It writes
``study.md``, ``study.csv`` and one ``reward_curve_<variant>.png`` per variant (a line per seed) into the sweep dir.

Runs at the end of ``experiment=text_vs_token`` as a Hydra callback, or by hand:

    python -m grpolab.study outputs/multirun/2024-05-01/12-00-00
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode

from grpolab.report import RunRecord, Stat, find_run_dirs, load_run

log = logging.getLogger(__name__)

AXES = ("tokenizer_mode", "reward_level")
DEFAULTS = {"tokenizer_mode": "text", "reward_level": "text"}  # conf/train.yaml's defaults
STUDY_MD, STUDY_CSV = "study.md", "study.csv"
# (column title, how to read it from a run); per-step metrics are averaged over the run's logged train rows.
COLUMNS = (
    ("final train reward", lambda run: _number(run.summary.get("train_reward_final"))),
    ("held-out accuracy", lambda run: run.accuracy("eval_after")),
    ("step time (s)", lambda run: run.step_time()),
    ("reward time / step (s)", lambda run: _mean_metric(run, "timing/rewards_s")),
    ("tokenizer calls / step", lambda run: _mean_metric(run, "tokenizer/calls")),
    ("encodes / step", lambda run: _mean_metric(run, "tokenizer/encode_calls")),
    ("decodes / step", lambda run: _mean_metric(run, "tokenizer/decode_calls")),
)


@dataclass
class Variant:
    """One ``tokenizer_mode x reward_level`` cell: its completed runs (one per seed) and failed ones."""

    tokenizer_mode: str
    reward_level: str
    runs: list[RunRecord] = field(default_factory=list)
    failed: list[RunRecord] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"tokenizer_mode={self.tokenizer_mode}, reward_level={self.reward_level}"

    @property
    def slug(self) -> str:
        return f"{self.tokenizer_mode}_{self.reward_level}"

    def stats(self) -> list[Stat]:
        return [Stat.of([read(run) for run in self.runs]) for _, read in COLUMNS]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mean_metric(run: RunRecord, key: str) -> float | None:
    values = [value for row in run.train_rows if (value := _number(row.get(key))) is not None]
    return statistics.fmean(values) if values else None


def _axis_value(run: RunRecord, axis: str) -> str:
    """The run's value on a study axis: its override, else its recorded config, else the default."""
    if axis in run.overrides:
        return run.overrides[axis]
    from grpolab.tracking.rundir import MANIFEST_FILE, read_json

    config = (read_json(run.path / MANIFEST_FILE) or {}).get("config") or {}
    value = config.get(axis)
    if isinstance(value, dict):  # tokenizer_mode is a config group: {mode: ids, prompts: ...}
        value = value.get("mode")
    return str(value) if value is not None else DEFAULTS[axis]


def collect(root: Path) -> list[Variant]:
    """Every run under ``root`` grouped by variant, in a fixed order (text before ids, text before token)."""
    variants: dict[tuple[str, str], Variant] = {}
    for path in find_run_dirs(root):
        run = load_run(path, root)
        key = tuple(_axis_value(run, axis) for axis in AXES)
        variant = variants.setdefault(key, Variant(*key))
        (variant.runs if run.completed else variant.failed).append(run)
    order = {"text": 0, "ids": 1, "token": 1}
    return [variants[key] for key in sorted(variants, key=lambda k: [order.get(v, 2) for v in k] + list(k))]


def _fmt(stat: Stat) -> str:
    if stat.mean is None:
        return "—"
    digits = 4 if abs(stat.mean) < 10 else 1
    text = f"{stat.mean:.{digits}f}"
    return text + (f" ± {stat.std:.{digits}f}" if stat.std is not None else "")


def markdown(variants: Sequence[Variant], root: Path, plots: Sequence[Path]) -> str:
    header = ["tokenizer_mode", "reward_level", "seeds", "failed", *(title for title, _ in COLUMNS)]
    lines = [
        f"# text vs token study: `{root}`",
        "",
        "Mean ± sample std over seeds. Final train reward: mean of the last logged rewards (summary.json); held-out "
        "accuracy after GRPO; step time: mean seconds per optimizer step; reward time: seconds per step inside the "
        "reward functions (in ids mode this includes the lazy decoding a text reward triggers); tokenizer calls: "
        "sequences encoded + decoded per step during training.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for variant in variants:
        cells = [variant.tokenizer_mode, variant.reward_level, str(len(variant.runs)), str(len(variant.failed)),
                 *(_fmt(stat) for stat in variant.stats())]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [(variant, run) for variant in variants for run in variant.failed]
    if failed:
        lines += ["", "Failed or unfinished runs:", ""]
        lines += [f"- `{run.name}` ({variant.label}, seed {run.seed}): {run.reason}" for variant, run in failed]
    if plots:
        lines += ["", "## Reward curves", ""] + [f"![{plot.stem}]({plot.name})" for plot in plots]
    return "\n".join(lines) + "\n"


def write_csv(variants: Sequence[Variant], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*AXES, "n_seeds", "n_failed",
                         *(f"{title}{suffix}" for title, _ in COLUMNS for suffix in (" mean", " std"))])
        for variant in variants:
            cells: list[Any] = [variant.tokenizer_mode, variant.reward_level, len(variant.runs), len(variant.failed)]
            for stat in variant.stats():
                cells += ["" if stat.mean is None else repr(stat.mean), "" if stat.std is None else repr(stat.std)]
            writer.writerow(cells)


def plot_variants(variants: Sequence[Variant], root: Path) -> list[Path]:
    """One PNG per variant: the train reward of each seed over steps."""
    from grpolab.tracking.plots import aggregate_curves, plot_reward_bands

    written = []
    for variant in variants:
        if not variant.runs:
            continue
        bands = [aggregate_curves(f"seed {run.seed}", [run.train_rows]) for run in variant.runs]
        written.append(plot_reward_bands(bands, root / f"reward_curve_{variant.slug}.png", title=variant.label))
    return written


def build_study(root: str | Path, plots: bool = True) -> Path:
    """Write ``study.md``, ``study.csv`` and the per-variant reward curves into ``root``; returns ``study.md``."""
    root = Path(root)
    variants = collect(root)
    if not variants:
        raise FileNotFoundError(f"no run directories under {root}")
    plot_paths = plot_variants(variants, root) if plots else []
    write_csv(variants, _staged(root / STUDY_CSV))
    _staged(root / STUDY_CSV).replace(root / STUDY_CSV)
    _staged(root / STUDY_MD).write_text(markdown(variants, root, plot_paths), encoding="utf-8")
    _staged(root / STUDY_MD).replace(root / STUDY_MD)  # two jobs ending together must not interleave their writes
    return root / STUDY_MD


def _staged(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}")


class StudyCallback(Callback):
    """Hydra callback (``hydra.callbacks``): rebuild the study table after every job and when the multirun ends.

    After every job, because Hydra's basic sweeper re-raises the first failed job and then never calls
    ``on_multirun_end``; the table of the jobs that ran must still exist. Never fails a job or the sweep.
    """

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        self._rebuild(config, announce=False)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._rebuild(config, announce=True)

    @staticmethod
    def _rebuild(config: Any, announce: bool) -> None:
        try:
            if config.hydra.mode != RunMode.MULTIRUN:
                return
            written = build_study(Path(str(config.hydra.sweep.dir)))
        except Exception as error:  # the jobs' results are already on disk; a table error must not hide them
            log.error("text-vs-token study table not written: %r", error)
            return
        if announce:
            log.info("text-vs-token study table: %s", written)
            print(written.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpolab.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="the sweep directory of experiment=text_vs_token")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        written = build_study(args.directory, plots=not args.no_plots)
    except FileNotFoundError as error:
        print(f"grpolab.study: {error}", file=sys.stderr)
        return 1
    print(written.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
