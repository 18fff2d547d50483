"""The result tables of docs/results.md, measured: the default run and the vision default, each N times from a fresh
cache, and the tables between that page's ``readme_figures`` markers rewritten from what the runs recorded.

    python benchmarks/readme_figures.py                       # 4 runs each, rewrite docs/results.md (~20 minutes)
    python benchmarks/readme_figures.py --runs 1 --print-only \\
        --overrides trainer.max_steps=4 warmstart.steps=10    # a quick check of the script itself: no edit

Every run is ``python -m grpolab.train [experiment=vision] <overrides>`` in a directory of its own with its own
``GRPOLAB_CACHE_DIR`` (so the warm start is trained every time), one at a time. A table row is what the run's
``summary.json`` recorded (held-out accuracy before and after GRPO) with the command's wall time and peak resident
memory; under each table, the versions from the runs' ``manifest.json`` and the hash of ``constraints.txt`` they were
installed with. Run it on a quiet machine: the accuracies do not depend on load, the times do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from readme_block import has_block, replace_block

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "results.md"
#: name -> (the command's extra arguments, what the table calls it)
FIGURES = {
    "default": ([], "`python -m grpolab.train`"),
    "vision": (["experiment=vision"], "`python -m grpolab.train experiment=vision`"),
}
SHOWN_VERSIONS = ("torch", "transformers", "trl", "accelerate", "datasets")


@dataclass
class Measured:
    before: float
    after: float
    wall_s: float
    peak_rss_gb: float
    summary: dict
    manifest: dict
    last_lines: list[str]

    def provenance(self) -> str:
        """What measured the run, from its manifest: Python, torch, transformers and TRL versions, the platform and
        grpolab's commit (marked where the tree had uncommitted changes)."""
        versions, git = self.manifest["versions"], self.manifest["git"]
        return (f"Python {versions['python']}, torch {versions.get('torch')}, transformers "
                f"{versions.get('transformers')}, trl {versions.get('trl')} on {self.manifest['platform']}; grpolab "
                f"{(git.get('commit') or 'unknown')[:10]}" + (" (uncommitted changes)" if git.get("dirty") else ""))


def measure(arguments: list[str], workdir: Path, env: dict[str, str] | None = None) -> Measured:
    """One run of ``python -m grpolab.train`` in ``workdir`` with a fresh cache (and ``env`` added to this process's
    environment); its figures."""
    env = {**os.environ, **(env or {}), "GRPOLAB_CACHE_DIR": str(workdir / "cache"), "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "grpolab.train", f"hydra.run.dir={workdir / 'run'}", *arguments]
    started = time.perf_counter()
    with (workdir / "output.log").open("w") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory (ru_maxrss: KiB on Linux)
    wall_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"readme_figures: {' '.join(command)} failed ({process.returncode}); see {workdir / 'output.log'}")
    summary = json.loads((workdir / "run" / "summary.json").read_text())
    manifest = json.loads((workdir / "run" / "manifest.json").read_text())
    output = (workdir / "output.log").read_text(encoding="utf-8", errors="replace").splitlines()
    return Measured(summary["eval_before"]["accuracy"], summary["eval_after"]["accuracy"], wall_s,
                    usage.ru_maxrss / 1024**2, summary, manifest, output[-CONSOLE_LINES:])


#: How many of the last console lines of the first run the page shows (its ``<name>_console`` block, if any).
CONSOLE_LINES = 15


def table(name: str, runs: list[Measured], overrides: list[str]) -> str:
    label = FIGURES[name][1] if not overrides else f"{FIGURES[name][1][:-1]} {' '.join(overrides)}`"
    lines = [f"| run (fresh cache, {label}) | held-out accuracy before | after | wall time | peak memory |",
             "|---|---|---|---|---|"]
    lines += [f"| {i} | {run.before:.3f} | {run.after:.3f} | {run.wall_s:.0f} s | {run.peak_rss_gb:.2f} GB |"
              for i, run in enumerate(runs, start=1)]
    first = runs[0]
    same = all((run.before, run.after) == (first.before, first.after) for run in runs)
    warm = [run.summary.get("warmstart", {}).get("wall_time_s") for run in runs]
    grpo = [run.summary.get("train_runtime_s") for run in runs]
    versions = first.manifest["versions"]
    lock = first.manifest.get("lock") or {}
    lines += [
        "",
        f"Median wall time {statistics.median(run.wall_s for run in runs):.0f} s (warm start "
        f"{_median(warm)} s, GRPO {_median(grpo)} s, the rest imports and evaluation); "
        + ("the accuracies are identical in every run (everything is seeded, `seed=0`)." if same else
           "**the accuracies differ between runs**: see the runs' metrics."),
        f"Measured with Python {versions['python']}, "
        + ", ".join(f"{package} {versions.get(package)}" for package in SHOWN_VERSIONS)
        + f" on {first.manifest['platform']}; installed with `-c constraints.txt` (sha256 "
        f"`{(lock.get('sha256') or 'none')[:12]}`"
        + (f", but {len(lock['differs'])} packages differed from it" if lock.get("differs") else "")
        + f"), grpolab {(first.manifest['git'].get('commit') or 'unknown')[:10]}"
        + (" (uncommitted changes)" if first.manifest["git"].get("dirty") else "") + ".",
    ]
    return "\n".join(lines)


def _median(values: list[float | None]) -> str:
    present = [value for value in values if isinstance(value, (int, float))]
    return f"{statistics.median(present):.0f}" if present else "n/a"


def rewrite(page: str, name: str, text: str) -> str:
    """Replace the page's ``readme_figures <name>`` block (``readme_block`` markers)."""
    try:
        return replace_block(page, f"readme_figures {name}", text)
    except ValueError as error:
        sys.exit(f"readme_figures: {DOC}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs per figure (default 4)")
    parser.add_argument("--figures", default=",".join(FIGURES), help=f"which of {', '.join(FIGURES)}")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra overrides for every run (quick checks)")
    parser.add_argument("--print-only", action="store_true", help="print the tables; leave docs/results.md alone")
    args = parser.parse_args()
    page = DOC.read_text(encoding="utf-8")
    for name in args.figures.split(","):
        runs = []
        for attempt in range(args.runs):
            with tempfile.TemporaryDirectory(prefix=f"readme-{name}-") as workdir:
                runs.append(measure([*FIGURES[name][0], *args.overrides], Path(workdir)))
            print(f"{name} run {attempt + 1}/{args.runs}: {runs[-1].before:.3f} -> {runs[-1].after:.3f}, "
                  f"{runs[-1].wall_s:.0f} s", file=sys.stderr)
        text = table(name, runs, args.overrides)
        print(text, end="\n\n")
        page = rewrite(page, name, text)
        if has_block(page, f"readme_figures {name}_console"):
            page = rewrite(page, f"{name}_console", "```text\n...\n" + "\n".join(runs[0].last_lines) + "\n```")
    if not args.print_only:
        DOC.write_text(page, encoding="utf-8")
        print(f"rewrote the tables in {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
