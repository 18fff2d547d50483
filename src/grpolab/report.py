"""Aggregate run directories into ``report.md``, ``report.csv`` and plots (``grpolab-report <dir>``).

``<dir>`` is a Hydra sweep dir, any directory containing run directories at any depth, or a single run directory;
the rows, columns and plots are ``grpolab.tracking.aggregate``'s (``--group-by`` and ``--metrics`` are its
``group_by`` and ``metrics``). Imports no torch.

    grpolab-report outputs/multirun/2024-05-01/12-00-00 --last-k 5
    python -m grpolab.report outputs/multirun/2024-05-01/12-00-00 --group-by tokenizer_mode,reward_level \\
        --metrics timing/rewards_s,tokenizer/calls,tokenizer/encode_calls,tokenizer/decode_calls
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from grpolab.tracking.aggregate import DEFAULT_EXCLUDED_KEYS, build_report
from grpolab.tracking.rundir import FINAL_REWARD_WINDOW


def _key_list(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpolab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="sweep dir, directory of runs, or a single run dir")
    parser.add_argument("--last-k", type=int, default=FINAL_REWARD_WINDOW,
                        help="final train reward = mean of the last K logged rewards (default: %(default)s)")
    parser.add_argument("--exclude", action="append", default=[], metavar="KEY",
                        help="another override key not to treat as a configuration key (repeatable; seed always is)")
    parser.add_argument("--group-by", type=_key_list, default=[], metavar="KEY,...",
                        help="one row per value combination of these keys instead of per swept configuration")
    parser.add_argument("--metrics", type=_key_list, default=[], metavar="METRIC,...",
                        help="per-step metrics of metrics.jsonl to add, each averaged over a run's train rows")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.directory, args.last_k, (*DEFAULT_EXCLUDED_KEYS, *args.exclude),
                              plots=not args.no_plots, group_by=args.group_by, metrics=args.metrics)
    except (FileNotFoundError, ValueError) as error:
        print(f"grpolab-report: {error}", file=sys.stderr)
        return 1
    print(report.markdown)
    print("written: " + ", ".join(str(path) for path in report.written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
