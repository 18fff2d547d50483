"""How long the tests take as a new contributor meets them: a fresh clone of this checkout's HEAD, a fresh cache, the
fast tier and the full suite one after the other; the ``suite_time`` block of README.md rewritten.

    python benchmarks/suite_time.py                   # both tiers (the full suite takes most of it), rewrite README.md
    python benchmarks/suite_time.py --print-only --tiers fast -- tests/benchmarks   # a quick check of the script

Each tier is ``python -m pytest [-m "not slow"]`` run in the clone with this interpreter (the environment must hold
the locked packages: ``pip install -c constraints.txt -e ".[test]"``), with the clone's ``src`` first on the path and
``GRPOLAB_CACHE_DIR`` in a new directory, so no warm start or prepared dataset is reused from earlier runs. A figure is
the command's wall time and pytest's own closing line. Run it on a quiet machine: other load slows the suite.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

from readme_block import write_block

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "README.md"
BLOCK = "suite_time"
#: Tier -> (pytest's arguments, how the README names the command).
TIERS = {"fast": (["-m", "not slow"], '`python -m pytest -m "not slow"`'), "full": ([], "`python -m pytest`")}


def closing_line(output: str) -> str:
    """pytest's closing line without its ``=`` rule, e.g. ``1026 passed, 3 skipped in 1200.50s (0:20:00)``.

    >>> closing_line("...\\n==== 12 passed, 1 skipped in 3.21s ====\\n")
    '12 passed, 1 skipped in 3.21s'
    >>> closing_line("no summary")
    'no closing line'
    """
    found = re.findall(r"^=+ (.*? in [\d.]+s.*?) =+$", output, flags=re.MULTILINE)
    return found[-1] if found else "no closing line"


def run_tier(clone: Path, arguments: list[str], cache: Path) -> tuple[float, str, int]:
    """One pytest run in ``clone``: wall seconds, pytest's closing line, exit status."""
    env = {**os.environ, "GRPOLAB_CACHE_DIR": str(cache), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(clone / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", *arguments], cwd=clone, env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:  # what failed, before the clone (and pytest's report in it) is gone
        print("\n".join(line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR")))
              or result.stdout[-3000:], file=sys.stderr)
    return time.perf_counter() - started, closing_line(result.stdout), result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiers", nargs="+", default=list(TIERS), choices=list(TIERS))
    parser.add_argument("--print-only", action="store_true", help="print the block; leave README.md alone")
    parser.add_argument("select", nargs="*", help="test paths after -- (quick checks of the script; default: all)")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    lines = []
    with tempfile.TemporaryDirectory(prefix="grpolab-suite-time-") as scratch:
        clone = Path(scratch) / "grpolab"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
        for tier in args.tiers:
            arguments, command = TIERS[tier]
            wall, closing, status = run_tier(clone, [*arguments, *args.select], Path(scratch) / f"cache-{tier}")
            print(f"{tier}: {wall / 60:.1f} min, {closing} (exit {status})", file=sys.stderr, flush=True)
            lines.append(f"- {command}{' ' + ' '.join(args.select) if args.select else ''}: **{wall / 60:.1f} min** "
                         f"wall ({closing}{'' if status == 0 else f'; exit status {status}'})")
    load = os.getloadavg()[0]
    block = "\n".join([*lines, f"\nMeasured {date.today().isoformat()} by `python benchmarks/suite_time.py`: a fresh "
                       f"clone of {commit[:10]} and a fresh cache, {os.cpu_count()} CPUs, load average {load:.1f} at "
                       f"the end."])
    print(block)
    if not args.print_only:
        write_block(DOC, BLOCK, textwrap.indent(block, "  "))  # the block sits in a list item of the README
        print(f"rewrote the {BLOCK} block of {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
