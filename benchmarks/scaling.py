"""Data parallelism on CPU: the same run at world size 1 and 2, through the commands a user types.

World size 1 is ``python -m grpolab.train <overrides>``, world size 2 is ``torchrun --nproc_per_node=2 -m
grpolab.train <overrides>`` (gloo), both with one torch thread per process (``threads=1``, ``OMP_NUM_THREADS=1``) and
``distributed=ddp``. ``batch.*`` are global, so both see the same prompts and completions per optimizer step. Per run,
read back from its run directory:

- prompts and completions per optimizer step: the run's own ``GRPOConfig`` line in ``train.log``;
- held-out accuracy before and after GRPO, and the gain;
- throughput: completions generated during GRPO (optimizer steps x completions per step) per second of
  ``trainer.train()`` wall time (``train_runtime_s``);
- the mean step time and the main process's reward time per step (``--json`` only), to see where the time goes.

The warm start is cached (one cache for all runs), so every run starts GRPO from the same weights and its time is not
counted. Runs go one at a time: on a 2-core machine, world size 2 needs both cores, and other load skews the ratio.

    python benchmarks/scaling.py                          # the default run (python -m grpolab.train), 1 seed
    python benchmarks/scaling.py --seeds 0 1 2            # medians over seeds
    python benchmarks/scaling.py --quick                  # small settings: checks that the script works (~2 min)
    python benchmarks/scaling.py --seeds 0 1 2 --doc docs/scaling.md   # and the table of docs/scaling.md rewritten
    python benchmarks/scaling.py --json scaling.json -- trainer.max_steps=100   # extra overrides after --
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from readme_block import write_block

QUICK = ["trainer.max_steps=8", "warmstart.steps=200", "data.train_size=256", "data.eval_size=50",
         "batch.prompts_per_step=8", "batch.generations_per_prompt=4"]
COMMON = ["logger=none", "distributed=ddp", "threads=1", "trainer.disable_tqdm=true"]
GENERATION_BATCH = re.compile(r"GRPOConfig: (\d+) steps, (\d+) prompts x (\d+) completions per generation batch on "
                              r"(\d+) process")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(world_size: int, seed: int, overrides: list[str], workdir: Path) -> dict[str, Any]:
    """One job at ``world_size``; its figures, read back from the run directory."""
    run_dir = workdir / f"ws{world_size}-seed{seed}"
    launcher = [sys.executable] if world_size == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world_size}", f"--master_port={free_port()}"]
    command = [*launcher, "-m", "grpolab.train", *COMMON, f"seed={seed}", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRPOLAB_CACHE_DIR": str(workdir / "cache"),
           "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    batch = GENERATION_BATCH.search((run_dir / "train.log").read_text())
    steps, prompts, completions_per_prompt, processes = (int(group) for group in batch.groups())
    config = json.loads((run_dir / "manifest.json").read_text())["config"]
    steps_per_rollout = config["batch"]["updates_per_rollout"] * config["batch"]["num_iterations"]
    completions_per_step = prompts * completions_per_prompt // steps_per_rollout
    before, after = summary["eval_before"]["accuracy"], summary["eval_after"]["accuracy"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards_s = [row["timing/rewards_s"] for row in rows if row.get("timing/rewards_s") is not None]
    return {
        "world_size": processes, "seed": seed, "steps": summary["steps"],
        "prompts_per_step": prompts // steps_per_rollout, "completions_per_step": completions_per_step,
        "accuracy_before": before, "accuracy_after": after, "gain": after - before,
        "grpo_seconds": summary["train_runtime_s"],
        "completions_per_second": summary["steps"] * completions_per_step / summary["train_runtime_s"],
        "replicas_identical": summary["parameters"]["replicas_identical"],
        # Where a step's time goes: the rewards (per process) split with the batch, generating a few tokens hardly.
        "step_seconds": summary["step_time_s"],
        "reward_seconds_per_step": statistics.mean(rewards_s) if rewards_s else None,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("prompts_per_step", "completions_per_step", "accuracy_before", "accuracy_after", "gain",
            "completions_per_second", "grpo_seconds")
    return {"world_size": runs[0]["world_size"], "runs": len(runs),
            **{key: statistics.median(run[key] for run in runs) for key in keys}}


def report(one: dict[str, Any], two: dict[str, Any]) -> str:
    lines = ["| world size | runs | prompts / step | completions / step | held-out accuracy | gain | "
             "GRPO s | completions / s |", "|---|---|---|---|---|---|---|---|"]
    for row in (one, two):
        lines.append(f"| {row['world_size']} | {row['runs']} | {row['prompts_per_step']:g} | "
                     f"{row['completions_per_step']:g} | {row['accuracy_before']:.3f} -> {row['accuracy_after']:.3f} | "
                     f"{row['gain']:+.3f} | {row['grpo_seconds']:.1f} | {row['completions_per_second']:.1f} |")
    ratio = two["completions_per_second"] / one["completions_per_second"]
    lines.append("")
    lines.append(f"throughput ratio (world size 2 / 1): {ratio:.2f}x (goal >= 1.7x); held-out gain difference: "
                 f"{100 * (two['gain'] - one['gain']):+.1f} points (goal within 5)")
    return "\n".join(lines)


def measured_on(args: argparse.Namespace) -> str:
    """The line above the table: the command, the machine, the versions."""
    import platform

    import torch
    import transformers
    import trl

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = " ".join(["python benchmarks/scaling.py", *sys.argv[1:]])
    return (f"Measured by `{command}`: {len(args.seeds)} seed(s), medians; {os.cpu_count()} CPUs, load average "
            f"{load:.1f} at the end; torch {torch.__version__}, transformers {transformers.__version__}, trl "
            f"{trl.__version__}, Python {platform.python_version()}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="small settings, to check that the script works")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--doc", type=Path, help="also replace the table between the scaling markers of this "
                                                 "Markdown file (docs/scaling.md)")
    parser.add_argument("overrides", nargs="*", help="grpolab overrides for both world sizes (after --)")
    args = parser.parse_args(argv)
    overrides = [*(QUICK if args.quick else []), *args.overrides]
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="grpolab-scaling-") as workdir:
        for seed in args.seeds:
            for world_size in (1, 2):
                figures = run(world_size, seed, overrides, Path(workdir))
                results[world_size].append(figures)
                print(f"world size {world_size}, seed {seed}: {figures['completions_per_second']:.1f} completions/s, "
                      f"held-out {figures['accuracy_before']:.3f} -> {figures['accuracy_after']:.3f}", flush=True)
    table = report(medians(results[1]), medians(results[2]))
    print(table)
    if args.doc is not None:
        write_block(args.doc, "scaling table", f"{measured_on(args)}\n\n{table}")
    if args.json is not None:
        args.json.write_text(json.dumps({"overrides": overrides, "runs": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
