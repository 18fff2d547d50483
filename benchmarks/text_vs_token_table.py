"""The text-vs-token table of docs/tokenizer_mode.md, rebuilt from a finished ``experiment=text_vs_token`` sweep.

The table is the sweep report's (``grpolab.tracking.aggregate``, grouped and with the per-step cost metrics the
experiment names under ``hydra.callbacks.sweep``), preceded by one line saying when, how many jobs and how long. With
``--doc`` it replaces what stands between the two marker comments in that file; without, it is printed.

    python -m grpolab.train experiment=text_vs_token                      # the study (8 jobs, 2 at a time)
    python benchmarks/text_vs_token_table.py outputs/multirun/<date>/<time> --doc docs/tokenizer_mode.md
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import yaml

from readme_block import write_block

from grpolab.tracking.aggregate import build_report, markdown_table

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "text_vs_token.yaml"


def study_table(sweep_dir: Path) -> str:
    """The measured line and the grouped table of the sweep in ``sweep_dir`` (its report files are rewritten)."""
    sweep = yaml.safe_load(EXPERIMENT.read_text(encoding="utf-8"))["hydra"]["callbacks"]["sweep"]
    report = build_report(sweep_dir, group_by=sweep["group_by"], metrics=sweep["metrics"])
    completed = [run for run in report.runs if run.completed]
    # Sweep wall time: from Hydra's multirun.yaml (written when the sweep starts) to the last summary.json written.
    started = (sweep_dir / "multirun.yaml").stat().st_mtime if (sweep_dir / "multirun.yaml").exists() else None
    ended = max((run.path / "summary.json").stat().st_mtime for run in report.runs)
    wall = f", {(ended - started) / 60:.1f} min wall" if started is not None else ""
    day = datetime.fromtimestamp(ended).strftime("%Y-%m-%d")
    measured = (f"Measured {day} (`experiment=text_vs_token`): {len(report.runs)} jobs, {len(completed)} completed"
                f"{wall}; regenerate with `python benchmarks/text_vs_token_table.py <sweep dir> --doc "
                "docs/tokenizer_mode.md`.")
    return f"{measured}\n\n{markdown_table(report)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory of experiment=text_vs_token")
    parser.add_argument("--doc", type=Path, help="replace the table between the markers in this Markdown file "
                                                 "(docs/tokenizer_mode.md)")
    args = parser.parse_args(argv)
    try:
        block = study_table(args.sweep_dir)
        if args.doc is None:
            print(block)
            return 0
        write_block(args.doc, "text_vs_token table", block)
    except (FileNotFoundError, ValueError) as error:
        print(f"text_vs_token_table: {error}", file=sys.stderr)
        return 1
    print(f"updated {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
