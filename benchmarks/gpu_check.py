"""The GPU check: grpolab trains the model sizes its users train, on one CUDA device, and prints what it measured.

    python benchmarks/gpu_check.py                              # on a CUDA machine: every row within --budget-s
    python benchmarks/gpu_check.py --write docs/gpu_check.md    # ... and replace the table in that file
    python benchmarks/gpu_check.py --device cpu                 # the same rows at tiny sizes, a minute on a CPU

Without CUDA (and without ``--device cpu``) it says so in one line and exits 0. Exit code 1 when a row failed or a
comparison found a difference. docs/gpu_check.md says what each row runs and means, and how to install on an offline
GPU node. The rows (``rows_to_run``):

- GRPO on a randomly initialised Qwen2.5-0.5B-Instruct-shaped model (``model=qwen2_5_0_5b_shape``) on GSM8K prompts
  in bf16: full fine-tuning and ``peft=lora``, without and with activation (gradient) checkpointing;
- the TRL baseline (``benchmarks/gpu_check_trl.py``): the full fine-tuning row's steps through plain
  ``trl.GRPOTrainer``, and grpolab's time per step as a ratio of it;
- text vs ids: ``tokenizer_mode=text`` and ``tokenizer_mode=ids`` runs of one config, compared metric by metric;
- kill + resume: that config killed with SIGKILL after a checkpoint and continued with ``resume=true``, compared with
  the uninterrupted text run;
- the tiny VLM (``experiment=vision``) and a Qwen2-VL-2B-shaped model, a few steps each; a Qwen2.5-1.5B-shaped row
  with what is left of the budget;
- flash-attn, vLLM and DeepSpeed rows where installed, else listed as skipped with the reason.

Each row is its own process (peak memory is the row's own; ``benchmarks/gpu_check_runs.py``): grpolab's Hydra entry
point with the row's overrides (``benchmarks/gpu_check_rows.py``) or the TRL script. Every figure comes from the
runs: seconds per step and generated tokens from ``metrics.jsonl``, parameters from ``summary.json``, peak memory
from ``torch.cuda.max_memory_allocated`` (``--device cpu``: the process's peak RSS) recorded by the row's process
when it ends.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpu_check_rows import TABLE_ORDER, Row, Sizes, rows_to_run, skipped_engines
from gpu_check_runs import Outcome, Runner, compared, has_teeth, prune, same_weights, step_figures
from readme_block import write_block

REPO = Path(__file__).resolve().parents[1]
BLOCK = "gpu-check"
COLUMNS = ("check", "model", "setting", "steps", "s/step", "generated tok/s", "peak memory", "result")


def gib(value: float | None) -> str:
    return "" if value is None else f"{value / 2**30:.2f} GiB"


def number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def count(parameters: int) -> str:
    """A parameter count as the table shows it.

    >>> count(494_032_768), count(74_912), count(1_543_714_304)
    ('494.0M', '74.9k', '1,543.7M')
    """
    return f"{parameters / 1e6:,.1f}M" if parameters >= 1e6 else f"{parameters / 1e3:,.1f}k"


def time_share(remaining_s: float, row: Row, later: list[Row], startup_s: float | None,
               step_s: float | None, min_steps: int) -> float | None:
    """Seconds a budgeted row may run before it is asked to stop (None: too few to be worth starting).

    The ``fixed`` rows after it (a few steps each: ``min_steps``) keep their estimated time, ``startup_s + min_steps
    * step_s`` as the 0.5B performance row measured them (90 s while nothing is measured); a ``share`` row gets an
    equal share of the rest with the ``share`` rows after it, a ``fixed`` or ``leftover`` row all of it. A row whose
    time cannot hold its start-up and ``min_steps`` steps (scaled by its ``cost_factor``) is not started.

    >>> rows = [Row("a", "", "", "", plan="share"), Row("b", "", "", "", plan="share"),
    ...         Row("c", "", "", "", plan="fixed", fixed_steps=lambda sizes: 4)]
    >>> time_share(400.0, rows[0], rows[1:], None, None, 4)          # (400 - 90) / 2
    155.0
    >>> time_share(400.0, rows[0], rows[1:], 20.0, 10.0, 4)          # (400 - (20 + 4 * 10)) / 2
    170.0
    >>> time_share(50.0, rows[0], rows[1:], 20.0, 10.0, 4) is None   # not even the fixed row fits
    True
    """
    known = startup_s is not None and step_s is not None

    def estimate(steps: int, factor: float = 1.0) -> float:
        return factor * (startup_s + steps * step_s) if known else 90.0

    left = remaining_s - sum(estimate(min_steps) for r in later if r.plan == "fixed")
    if row.plan == "share":
        left /= 1 + sum(r.plan == "share" for r in later)
    needed = estimate(min_steps, row.cost_factor) if known else 60.0
    return left if left >= needed else None


class Check:
    """Runs the rows in order and turns each into a line of the table."""

    def __init__(self, sizes: Sizes, out: Path, keep_runs: bool) -> None:
        self.sizes, self.out, self.keep_runs = sizes, out, keep_runs
        self.runner = Runner(sizes.device, sizes.budget_s, out)
        self.lines: dict[str, dict[str, str]] = {}
        self.failed = False
        self.devices: set[str] = set()
        # The latest measured 0.5B performance row: seconds per step, and seconds outside its steps (start-up,
        # evaluation, saving): what the time shares of the rows after it are estimated from.
        self.step_s: float | None = None
        self.startup_s: float | None = None

    def line(self, row: Row, **cells: str) -> None:
        self.lines[row.key] = {"check": row.check, "model": row.model, "setting": row.setting, **cells}

    def process(self, row: Row, run_name: str, log_name: str | None = None, extra: tuple[str, ...] = (),
                **stopping: Any) -> Outcome:
        run_dir = self.out / run_name
        if row.kind == "trl":  # the TRL script reads the full fine-tuning row's resolved config
            argv = [str(self.out / "full"), str(run_dir)]
        else:
            argv = [*row.argv(self.sizes, extra), f"hydra.run.dir={run_dir}"]
        outcome = self.runner.run(log_name or run_name, row.kind, argv, run_dir, row.env(self.sizes), **stopping)
        if "device" in outcome.peak:
            self.devices.add(outcome.peak["device"])
        return outcome

    def figures(self, row: Row, outcome: Outcome) -> dict[str, str]:
        metrics = outcome.metrics()
        seconds, tokens = step_figures(metrics, self.sizes.prompts * self.sizes.generations)
        peak = outcome.peak.get("gpu_bytes" if self.sizes.device == "cuda" else "rss_bytes")
        parameters = outcome.summary().get("parameters") or {}
        steps = f"{len(metrics)} of {row.steps(self.sizes)}" if outcome.stopped else str(len(metrics))
        cells = {"steps": steps, "s/step": number(seconds, 2), "generated tok/s": number(tokens, 0),
                 "peak memory": gib(peak)}
        if parameters.get("total"):
            cells["model"] = f"{row.model} ({count(parameters['total'])})"
            if parameters.get("trainable_fraction", 1.0) < 1.0:
                cells["setting"] = f"{row.setting}; {count(parameters['trainable'])} trainable"
        return cells

    def fail(self, row: Row, outcome: Outcome, what: str = "failed") -> None:
        self.failed = True
        self.line(row, **self.figures(row, outcome), result=f"{what}: {outcome.failure()} (log: {outcome.log.name})")

    def run_measured(self, row: Row, stop_after_s: float | None) -> None:
        outcome = self.process(row, row.key, stop_after_s=stop_after_s)
        if not outcome.ok or not outcome.metrics():
            self.fail(row, outcome)
        else:
            stopped = " (stopped at its share of --budget-s)" if outcome.stopped else ""
            self.line(row, **self.figures(row, outcome), result=f"ok{stopped}")
            if row.plan == "share" and row.cost_factor == 1.0:
                self.step_s = step_figures(outcome.metrics(), 1)[0]
                self.startup_s = outcome.wall_s - sum(r["step_time_s"] or 0.0 for r in outcome.metrics())
        if not self.keep_runs:
            prune(outcome.run_dir)

    def run_trl(self, row: Row, stop_after_s: float | None) -> None:
        full = self.lines.get("full", {})
        if not full.get("result", "").startswith("ok"):
            self.line(row, result="not run: the grpolab row it mirrors did not complete")
            return
        outcome = self.process(row, "trl", stop_after_s=stop_after_s)
        if not outcome.ok or not outcome.metrics():
            self.fail(row, outcome)
            return
        cells = {**self.figures(row, outcome), "model": full["model"]}  # the same builder and numbers
        ratio = float(full["s/step"].replace(",", "")) / float(cells["s/step"].replace(",", ""))
        self.line(row, **cells, result=f"grpolab / TRL = {ratio:.3f}x seconds per step")

    def run_text_vs_ids(self, row: Row) -> Outcome | None:
        text = self.process(row, "text")
        if not text.ok:
            self.fail(row, text)
            return None
        ids = self.process(row, "ids", extra=("tokenizer_mode=ids",))
        if not ids.ok:
            self.fail(row, ids)
        else:
            self.lines[row.key] = self.verdict(row, text, ids, "tokenizer_mode=text vs =ids")
            self.lines[row.key]["s/step"] = " / ".join(number(step_figures(o.metrics(), 1)[0], 2) for o in (text, ids))
        return text

    def run_kill_and_resume(self, row: Row, uninterrupted: Outcome | None) -> None:
        if uninterrupted is None:
            self.failed = True
            self.line(row, result="not run: the uninterrupted text run failed")
            return
        logged = f'"step": {self.sizes.check_save_steps + 1},'

        def past_a_checkpoint(run_dir: Path) -> bool:  # a step logged after a save: that checkpoint is complete
            path = run_dir / "metrics.jsonl"
            return path.exists() and logged in path.read_text()

        killed = self.process(row, "killed", kill_when=past_a_checkpoint)
        if killed.exit_code != -signal.SIGKILL:
            self.fail(row, killed, f"not killed (exit {killed.exit_code})")
        else:
            resumed = self.process(row, "killed", "resumed", extra=("resume=true",))
            log = resumed.log.read_text(errors="replace") if resumed.log.exists() else ""
            if not resumed.ok or "resume: continuing from" not in log:
                self.fail(row, resumed, "resume failed")
            else:
                self.lines[row.key] = self.verdict(row, uninterrupted, resumed,
                                                   "SIGKILLed and resumed vs uninterrupted")
        if not self.keep_runs:
            for name in ("text", "ids", "killed"):
                prune(self.out / name)

    def verdict(self, row: Row, expected: Outcome, actual: Outcome, what: str) -> dict[str, str]:
        """The table line of two runs that must be identical: every metric of every step, the held-out evaluation
        before and after, and the final weights."""
        difference, where, keys = compared(expected.metrics(), actual.metrics())
        for moment in ("eval_before", "eval_after"):
            evals = [{k: v for k, v in (o.summary().get(moment) or {}).items() if k != "wall_time_s"}
                     for o in (expected, actual)]
            if difference == 0.0 and evals[0] != evals[1]:
                difference, where = math.inf, f"{moment} {evals[0]} vs {evals[1]}"
        weights = same_weights(expected.run_dir, actual.run_dir)
        if difference == 0.0 and weights is False:
            difference, where = math.inf, "the final weights"
        identical = difference == 0.0 and has_teeth(expected.metrics())
        self.failed |= not identical
        if identical:
            result = (f"identical: {keys} metrics x {len(expected.metrics())} steps, held-out evaluations"
                      f"{' and final weights' if weights else ''} equal bit for bit")
        elif difference == 0.0:
            result = "VACUOUS: equal, but no step had both a non-zero loss and reward variance"
        else:
            result = f"DIFFERENT: max |difference| {difference:.3g} ({where})"
        figures = self.figures(row, expected)
        figures["peak memory"] = gib(max(o.peak.get("gpu_bytes" if self.sizes.device == "cuda" else "rss_bytes", 0)
                                         for o in (expected, actual)))
        return {"check": row.check, "model": figures.pop("model", row.model), "setting": row.setting, **figures,
                "result": f"{result} ({what})"}

    def run(self) -> None:
        uninterrupted = None
        rows = rows_to_run(self.sizes)
        for index, row in enumerate(rows):
            share = None
            if row.plan is not None and self.sizes.budget_s is not None:
                share = time_share(self.runner.remaining(), row, rows[index + 1:], self.startup_s, self.step_s,
                                   self.sizes.min_perf_steps)
                if share is None:
                    self.line(row, result=f"skipped: time budget ({max(0.0, self.runner.remaining()):.0f} s of "
                                          f"--budget-s {self.sizes.budget_s:.0f} left)")
                    continue
            if row.key == "text_vs_ids":
                uninterrupted = self.run_text_vs_ids(row)
            elif row.key == "kill_resume":
                self.run_kill_and_resume(row, uninterrupted)
            elif row.key == "trl":
                self.run_trl(row, share)
            else:
                self.run_measured(row, share)
        for row in skipped_engines(self.sizes):
            self.line(row, result=row.skip_reason)

    def table(self) -> str:
        header = "| " + " | ".join(COLUMNS) + " |"
        rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
        lines = [self.lines[key] for key in TABLE_ORDER if key in self.lines]
        return "\n".join([header, rule, *("| " + " | ".join(line.get(c, "") for c in COLUMNS) + " |"
                                           for line in lines)])


def git(*arguments: str) -> str:
    """git's output in this checkout; empty without git or outside a repository (a copied tree on a GPU node)."""
    try:
        return subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def heading(sizes: Sizes, check: Check, command: str) -> str:
    import torch
    import transformers
    import trl

    revision = git("rev-parse", "--short", "HEAD") or "(commit unknown: not a git checkout)"
    if git("status", "--porcelain", "--untracked-files=no"):
        revision += " with uncommitted changes"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""
    versions = f"torch {torch.__version__}{cuda}, transformers {transformers.__version__}, trl {trl.__version__}"
    if sizes.device == "cuda":
        where = f"**{', '.join(sorted(check.devices)) or 'CUDA device'}**"
        memory = "peak memory = `torch.cuda.max_memory_allocated()` of the row's process"
    else:
        where = (f"**CPU-reduced form** (`--device cpu`: tiny model shapes, a few steps, short completions; not GPU "
                 f"figures) on {os.cpu_count()} CPU cores")
        memory = "peak memory = the row's process's peak resident set size"
    return (f"Written by `{command}` on {date}: {where}; {versions}; grpolab {revision}; "
            f"{check.runner.elapsed():.0f} s in all. {sizes.describe()}; {memory}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: the check at real sizes; cpu: the same rows at tiny sizes (what the tests run)")
    parser.add_argument("--write", type=Path, help="replace the gpu-check block of this file with the table")
    parser.add_argument("--out", type=Path, help="where the rows' run directories go (default: a new "
                        "outputs/gpu_check/<time> folder)")
    parser.add_argument("--budget-s", type=float, help="seconds the check may take (default: 480 on CUDA, none on "
                        "CPU); adaptive rows get fewer steps, or are skipped, to stay within it")
    parser.add_argument("--keep-runs", action="store_true", help="keep the rows' weights and checkpoints (GBs)")
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to run; "
                  "--device cpu runs the reduced form")
            return
    sizes = Sizes.for_device(args.device, args.budget_s)
    out = args.out or REPO / "outputs" / "gpu_check" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    check = Check(sizes, out, args.keep_runs)
    check.run()
    if not args.keep_runs:
        shutil.rmtree(out / "cache", ignore_errors=True)
    command = "python benchmarks/gpu_check.py" + (" --device cpu" if args.device == "cpu" else "") + (
        f" --write {args.write}" if args.write else "")
    block = f"{heading(sizes, check, command)}\n\n{check.table()}"
    print(block)
    if args.write:
        write_block(args.write, BLOCK, block)
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
