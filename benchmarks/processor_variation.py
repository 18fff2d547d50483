"""Which figures of the locked default run depend on the processor: ``python -m grpolab.train`` once under each CPU
kernel set torch can be told to use here, and the ``processor_variation table`` block of docs/results.md rewritten.

    python benchmarks/processor_variation.py                 # one run per setting, rewrite docs/results.md (~10 min)
    python benchmarks/processor_variation.py --print-only \\
        --overrides trainer.max_steps=4 warmstart.steps=10   # a quick check of the script itself: no edit

The same seeded run gives the same figures on one machine (docs/results.md), but float32 sums come out in another
order when the kernels change, and a few rounding differences are enough to send sampling down another path. The
kernels change with the processor in two places: ATen's own vectorised kernels (``ATEN_CPU_CAPABILITY``: ``default``,
``avx2``, and ``avx512`` only where /proc/cpuinfo lists ``avx512f``, since torch does not check) and the BLAS behind
matrix products (MKL in the x86 torch wheels, which picks its code path from the CPU; ``MKL_CBWR=COMPATIBLE`` forces
its portable one). Each setting is one run of ``readme_figures.measure``: its own directory, its own fresh cache (so
the warm start is trained under the setting too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from readme_block import write_block
from readme_figures import Measured, measure

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"
BLOCK = "processor_variation table"
#: Keys of metrics.jsonl rows that are clock readings, not results.
CLOCK_KEYS = ("time_s", "step_time_s", "train_runtime", "train_samples_per_second", "train_steps_per_second")


def cpu() -> tuple[str, set[str]]:
    """The CPU's model name and flags, from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def settings(flags: set[str]) -> dict[str, dict[str, str]]:
    """Label -> environment of every setting this CPU can run (forcing avx512 on a CPU without it crashes)."""
    chosen = {"ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
              "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"}}
    if "avx512f" in flags:
        chosen["ATEN_CPU_CAPABILITY=avx512"] = {"ATEN_CPU_CAPABILITY": "avx512"}
    chosen["MKL_CBWR=COMPATIBLE"] = {"MKL_CBWR": "COMPATIBLE"}
    return chosen


def kernels_used(env: dict[str, str]) -> str:
    """The kernel set ATen picks under ``env`` (what ``torch.backends.cpu.get_cpu_capability`` says in a child)."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True,
                            check=True)
    return result.stdout.strip()


def results(run: Measured, metrics: list[dict]) -> dict:
    """What the run computed, clocks left out: the records compared bit for bit across settings."""
    summary = run.summary
    evals = {split: {k: v for k, v in summary[split].items() if k != "wall_time_s"}
             for split in ("eval_before", "eval_after")}
    warm = {k: v for k, v in (summary.get("warmstart") or {}).items() if k not in ("wall_time_s", "cached")}
    rows = [{k: v for k, v in row.items() if k not in CLOCK_KEYS and not k.startswith("timing/")} for row in metrics]
    # In the order the run computes them, so the first difference says where the runs part.
    return {"warmstart": warm, "eval_before": evals["eval_before"], "metrics.jsonl": rows,
            "train_reward_final": summary.get("train_reward_final"), "train_loss": summary.get("train_loss"),
            "max_abs_change": (summary.get("parameters") or {}).get("max_abs_change"),
            "eval_after": evals["eval_after"]}


def first_difference(one: object, two: object, where: str = "") -> str | None:
    """The first place where two runs' ``results`` differ, as a dotted name (None when they are bit-identical).

    >>> first_difference({"a": 1, "rows": [{"step": 5, "loss": 0.5}]}, {"a": 1, "rows": [{"step": 5, "loss": 0.25}]})
    'rows[0].loss'
    >>> first_difference({"a": {"b": 1.0}}, {"a": {"b": 1.0}}) is None
    True
    """
    if isinstance(one, dict) and isinstance(two, dict):
        for key in [*one, *(key for key in two if key not in one)]:
            found = first_difference(one.get(key), two.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if isinstance(one, list) and isinstance(two, list):
        for index, (a, b) in enumerate(zip(one, two, strict=False)):
            found = first_difference(a, b, f"{where}[{index}]")
            if found:
                return found
        return None if len(one) == len(two) else f"{where} (length)"
    return None if one == two else where


def last_loss(metrics: list[dict]) -> str:
    losses = [row["loss"] for row in metrics if row.get("split", "train") == "train" and "loss" in row]
    return f"{losses[-1]:.4f}" if losses else "n/a"


def _number(value: object, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def table(rows: list[tuple[str, str, Measured, dict, list[dict]]], model: str, flags: set[str]) -> str:
    lines = ["| setting | ATen kernels | held-out accuracy before -> after GRPO | warm-start final loss | "
             "last GRPO loss | train reward (last 5) | wall time | results bit-identical to the first row |",
             "|---|---|---|---|---|---|---|---|"]
    first = rows[0][3]
    for label, kernels, run, computed, metrics in rows:
        difference = first_difference(first, computed)
        same = "(first row)" if computed is first else ("yes" if difference is None else f"no: first at `{difference}`")
        warm = (run.summary.get("warmstart") or {}).get("final_loss")
        reward = run.summary.get("train_reward_final")
        lines.append(f"| `{label}` | {kernels} | {run.before:.3f} -> {run.after:.3f} | {_number(warm, 6)} | "
                     f"{last_loss(metrics)} | {_number(reward, 3)} | {run.wall_s:.0f} s | {same} |")
    befores = [run.before for _, _, run, _, _ in rows]
    afters = [run.after for _, _, run, _, _ in rows]
    simd = ", ".join(flag for flag in ("avx2", "avx512f", "amx_tile") if flag in flags) or "no avx2"
    load = os.getloadavg()[0]
    lines += ["", f"Across the settings: held-out accuracy before GRPO {min(befores):.3f}-{max(befores):.3f}, after "
              f"{min(afters):.3f}-{max(afters):.3f}. Wall times depend on the machine's load (load average {load:.1f} "
              f"at the end). CPU: {model} ({simd}); {rows[0][2].provenance()}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overrides", nargs="*", default=[], help="extra overrides for every run (quick checks)")
    parser.add_argument("--print-only", action="store_true", help="print the table; leave docs/results.md alone")
    args = parser.parse_args()
    model, flags = cpu()
    rows = []
    for label, env in settings(flags).items():
        kernels = kernels_used(env)
        with tempfile.TemporaryDirectory(prefix="processor-variation-") as workdir:
            run = measure(args.overrides, Path(workdir), env=env)
            path = Path(workdir) / "run" / "metrics.jsonl"
            metrics = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        rows.append((label, kernels, run, results(run, metrics), metrics))
        print(f"{label} ({kernels}): {run.before:.3f} -> {run.after:.3f}, {run.wall_s:.0f} s", file=sys.stderr,
              flush=True)
    text = table(rows, model, flags) + f" With nothing set, ATen uses {kernels_used({})} here."
    print(text)
    if not args.print_only:
        write_block(DOC, BLOCK, text)
        print(f"rewrote the table in {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
