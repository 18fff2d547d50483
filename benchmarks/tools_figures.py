"""docs/tools.md's figures, measured: ``python -m grpolab.train experiment=tools`` with the calculator tool and the
same run without it (``environment=none``), once per seed from a fresh cache, and the table between the page's
``tools_figures`` markers rewritten from what the runs recorded.

    python benchmarks/tools_figures.py --seeds 0 1 2         # 3 seeds each, rewrite docs/tools.md (~17 minutes)
    python benchmarks/tools_figures.py --print-only \\
        --overrides trainer.max_steps=2 warmstart.steps=20   # a quick check of the script itself: no edit

Every run is a command of its own in a fresh directory with its own cache (``readme_figures.measure``: the warm start
is trained every time), one at a time. A row is what the run's ``summary.json`` and ``metrics.jsonl`` recorded: the
held-out accuracy and tool calls per completion before and after GRPO (the held-out evaluation runs the tool loop),
TRL's tool calls per completion and failed calls per call at the first and the last logged step, and the command's
wall time. Run it on a quiet machine: the accuracies and frequencies do not depend on load, the times do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from readme_block import write_block
from readme_figures import Measured, measure

DOC = Path(__file__).resolve().parents[1] / "docs" / "tools.md"
#: name -> (the command's extra arguments, what the table calls it)
FIGURES = {
    "with the calculator": (["experiment=tools"], "`experiment=tools`"),
    "without a tool": (["experiment=tools", "environment=none"], "`experiment=tools environment=none`"),
}


def tool_frequencies(run: Measured, workdir_rows: list[dict]) -> dict[str, str]:
    """The held-out tool calls before -> after, and TRL's train tool metrics at the first and last logged step."""
    before, after = run.summary["eval_before"], run.summary["eval_after"]
    calls = [row.get("tools/call_frequency") for row in workdir_rows]
    failures = [row.get("tools/failure_frequency") for row in workdir_rows]

    def span(values: list) -> str:
        present = [value for value in values if isinstance(value, (int, float))]
        return f"{present[0]:.2f} -> {present[-1]:.2f}" if present else "—"

    held_out = (f"{before['tool_call_frequency']:.2f} -> {after['tool_call_frequency']:.2f}"
                if "tool_call_frequency" in after else "—")
    return {"held_out_calls": held_out, "train_calls": span(calls), "train_failures": span(failures)}


def table(rows: list[tuple[str, int, Measured, dict[str, str]]]) -> str:
    lines = ["| run (fresh cache) | seed | held-out accuracy before -> after | held-out tool calls / completion "
             "before -> after | train tool calls / completion, first -> last step | train failed calls / call, "
             "first -> last step | wall time |",
             "|---|---|---|---|---|---|---|"]
    for label, seed, run, tools in rows:
        lines.append(f"| {label} | {seed} | {run.before:.3f} -> {run.after:.3f} | {tools['held_out_calls']} | "
                     f"{tools['train_calls']} | {tools['train_failures']} | {run.wall_s:.0f} s |")
    first = rows[0][2]
    warm = [run.summary.get("warmstart", {}).get("wall_time_s") for _, _, run, _ in rows]
    lines += ["", f"Median warm start {statistics.median(w for w in warm if w):.0f} s of the wall time. "
              f"{first.provenance()}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed and figure (default 0)")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra overrides for every run (quick checks)")
    parser.add_argument("--print-only", action="store_true", help="print the table; leave docs/tools.md alone")
    args = parser.parse_args()
    rows = []
    for name, (arguments, label) in FIGURES.items():
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="tools-figures-") as workdir:
                run = measure([*arguments, f"seed={seed}", *args.overrides], Path(workdir))
                metrics = [json.loads(line) for line in
                           (Path(workdir) / "run" / "metrics.jsonl").read_text().splitlines()]
            rows.append((label, seed, run, tool_frequencies(run, metrics)))
            print(f"{name}, seed {seed}: {run.before:.3f} -> {run.after:.3f}, {run.wall_s:.0f} s",
                  file=sys.stderr)
    text = table(rows)
    print(text)
    if not args.print_only:
        write_block(DOC, "tools_figures", text)
        print(f"rewrote the table in {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
