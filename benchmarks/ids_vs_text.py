"""Host-side time per GRPO step, ``tokenizer_mode=text`` vs ``tokenizer_mode=ids``, through the real pipeline.

Host-side time is everything in a training step except the model's own compute: the wall time between two
``on_step_end`` callbacks minus the time inside ``model.generate``, ``model.forward`` (outside generate), TRL's
per-token log-prob pass (``_get_per_token_logps_and_entropies``: the forward plus log-softmax and entropy over the
logits), ``accelerator.backward`` and ``optimizer.step``. It is what tokenization, decoding, reward functions, padding,
advantages and logging cost. Each run is a real job (``grpolab.train.train`` on a composed config, warm start cached),
steps after the first ``--skip`` are timed, and each variant's per-run median is reported as the median over runs.

Variants (tokenizer_mode / reward_level): ``text/text`` is stock TRL; ``ids/token`` is the full ID pipeline; the two
mixed ones separate the effect of the tokenizer mode from that of the reward level.

Scenarios: ``default`` (the embedded arithmetic task, ~8-token prompts), ``long`` (the same task behind a
~200-character instruction: ~200-token prompts with the character tokenizer) and ``gsm8k_bpe`` (a real subword
vocabulary: ``model=tiny_bpe``, the byte-level BPE of 4,096 tokens trained on the vendored GSM8K test split, and
``data=gsm8k`` on that split: chat prompts of median 120 BPE tokens; no warm start, 32-token completions).

    python benchmarks/ids_vs_text.py --doc docs/ids_vs_text.md   # 5 runs of every variant, every scenario, and the
                                                                 # table of docs/ids_vs_text.md rewritten
    python benchmarks/ids_vs_text.py --runs 1 --steps 4 --scenarios gsm8k_bpe --variants text/text ids/token
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from readme_block import write_block

LONG_INSTRUCTION = (
    "You are a careful calculator. Read the expression below, compute its value exactly, and reply with the "
    "integer result only, written inside answer tags, without any explanation, units or extra spaces. Expression: "
)
GSM8K_TEST = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gsm8k" / "test.jsonl"
SCENARIOS = {
    "default": [],
    "long": [f"data.prompt_template='{LONG_INSTRUCTION}{{a}}{{op}}{{b}}='", "model.network.max_position_embeddings=512"],
    # An untrained model's completions seldom hold a tagged answer, so math-verify seldom runs here: the text-reward
    # share of host time is a lower bound (the `default` scenario, warm-started, shows the full cost).
    "gsm8k_bpe": ["model=tiny_bpe", f"model.tokenizer.path={GSM8K_TEST}", "data=gsm8k", f"data.path={GSM8K_TEST}",
                  "warmstart=none", "trainer.max_completion_length=32"],
}
VARIANTS = ("text/text", "ids/token", "ids/text", "text/token")
COMMON = ["logger=none", "eval.num_problems=20", "trainer.logging_steps=1000", "trainer.disable_tqdm=true"]


class ModelClock:
    """Seconds spent inside the model's compute; nested calls (forward inside generate) count once."""

    def __init__(self, buckets: tuple[str, ...] = ("generate", "forward", "backward", "optimizer")) -> None:
        self.seconds = dict.fromkeys(buckets, 0.0)
        self._depth = 0

    def wrap(self, owner: Any, name: str, bucket: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[bucket] += time.perf_counter() - started
                self._depth -= 1

        setattr(owner, name, timed)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@contextmanager
def timed_steps(samples: list[dict[str, float]]):
    """While open, every ``GrpolabTrainer.train`` records per-step wall and model seconds into ``samples``.

    The method is wrapped on the class itself (not the name a module imported), so the trainer the composition root
    builds is timed wherever it is constructed.
    """
    from transformers import TrainerCallback

    from grpolab.trainer.grpo import GrpolabTrainer

    class StepClock(TrainerCallback):
        def __init__(self, clock: ModelClock, tokenizer_clock: ModelClock, trainer: Any) -> None:
            self.clock, self.tokenizer_clock, self.trainer, self.last = clock, tokenizer_clock, trainer, None

        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            self.clock.wrap(optimizer, "step", "optimizer")

        def on_step_end(self, args, state, control, **kwargs):
            now = (time.perf_counter(), dict(self.clock.seconds), self.tokenizer_clock.total,
                   self.trainer.reward_seconds)
            if self.last is not None:
                wall = now[0] - self.last[0]
                parts = {k: now[1][k] - self.last[1][k] for k in now[1]}
                samples.append({"wall": wall, "model": sum(parts.values()), **parts,
                                "tokenizer": now[2] - self.last[2], "rewards": now[3] - self.last[3]})
            self.last = now

    original = GrpolabTrainer.train

    def train(self, *args: Any, **kwargs: Any):
        clock = ModelClock()
        clock.wrap(self.model, "generate", "generate")
        clock.wrap(self.model, "forward", "forward")
        # TRL's per-token log-prob pass: the forward plus log-softmax and entropy over the full-vocabulary logits,
        # model compute that grows with the vocabulary (4,096 BPE tokens vs 109 characters), not host-side work.
        clock.wrap(self, "_get_per_token_logps_and_entropies", "forward")
        clock.wrap(self.accelerator, "backward", "backward")
        # The optimizer: built by the Trainer inside train() (optimizer_cls_and_kwargs), wrapped once it exists.
        # Host-side parts, read alongside: tokenizer calls (the entry points every encode and decode of TRL and
        # grpolab goes through; nested calls count once) and the trainer's own reward timer.
        tokenizer, tokenizer_clock = self.processing_class, ModelClock(("tokenizer",))
        for name in ("apply_chat_template", "_encode_plus", "batch_decode", "decode"):
            tokenizer_clock.wrap(tokenizer, name, "tokenizer")
        self.add_callback(StepClock(clock, tokenizer_clock, self))
        try:
            return original(self, *args, **kwargs)
        finally:
            for name in ("apply_chat_template", "_encode_plus", "batch_decode", "decode"):
                delattr(tokenizer, name)

    GrpolabTrainer.train = train
    try:
        yield
    finally:
        GrpolabTrainer.train = original


def run_once(overrides: list[str], run_dir: Path) -> list[dict[str, float]]:
    """One job of the real pipeline; the per-step timing samples of its GRPO phase."""
    from in_process import job_config

    from grpolab.train import train

    samples: list[dict[str, float]] = []
    with job_config(overrides, run_dir) as cfg, timed_steps(samples):
        train(cfg)
    return samples


def summarise(samples: list[dict[str, float]], skip: int) -> dict[str, float]:
    """Median per step of one run, after the first ``skip`` timed steps."""
    kept = samples[skip:] or samples
    keys = ["wall", "model", "generate", "forward", "backward", "optimizer", "tokenizer", "rewards"]
    result = {key: statistics.median(s[key] for s in kept) for key in keys}
    result["host"] = statistics.median(s["wall"] - s["model"] for s in kept)
    result["host_share"] = statistics.median((s["wall"] - s["model"]) / s["wall"] for s in kept)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="GRPO steps per run")
    parser.add_argument("--skip", type=int, default=2, help="timed steps discarded as warm-up")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write every run's medians here")
    parser.add_argument("--doc", type=Path, help="also replace the ids_vs_text table block, with the command and "
                                                 "machine, in this Markdown file (docs/ids_vs_text.md)")
    args = parser.parse_args(argv)

    import logging

    logging.disable(logging.WARNING)  # keep the console to the results
    os.environ.setdefault("GRPOLAB_CACHE_DIR", str(Path(tempfile.gettempdir()) / "grpolab-bench-cache"))
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="grpolab-bench-") as scratch:
        for scenario in args.scenarios:
            results[scenario] = {variant: [] for variant in args.variants}
            for run in range(args.runs):  # variants interleaved, so load drift on a shared machine hits all alike
                for variant in args.variants:
                    mode, level = variant.split("/")
                    overrides = [*COMMON, *SCENARIOS[scenario], f"trainer.max_steps={args.steps}",
                                 f"tokenizer_mode={mode}", f"reward_level={level}"]
                    run_dir = Path(scratch) / f"{scenario}-{mode}-{level}-{run}"
                    summary = summarise(run_once(overrides, run_dir), args.skip)
                    results[scenario][variant].append(summary)
                    print(f"{scenario:8s} {variant:10s} run {run}: host {summary['host'] * 1e3:7.1f} ms/step, "
                          f"end-to-end {summary['wall'] * 1e3:7.1f} ms/step", file=sys.stderr, flush=True)
    table = report(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if args.doc:
        write_block(args.doc, "ids_vs_text table", document(table, argv if argv is not None else sys.argv[1:], args))
    return 0


def document(table: str, argv: list[str], args: argparse.Namespace) -> str:
    """The block ``--doc`` writes: what was run, where, and the table."""
    import platform

    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"Generated by `python benchmarks/ids_vs_text.py {' '.join(argv)}`; do not edit by hand. "
        f"{args.runs} run(s) per variant and scenario, {args.steps} GRPO steps each, the first {args.skip} timed "
        "steps discarded; each figure is the median over runs of a run's median step. Host = step wall time minus "
        "the time inside `model.generate`, `model.forward`, TRL's per-token log-prob pass (forward, log-softmax and "
        "entropy over the logits), `accelerator.backward` and `optimizer.step`; host share "
        "= host / end-to-end. Of the host time, *tokenizer* is the time inside the tokenizer's encode/decode entry "
        "points and *rewards* the time inside the reward functions (with `ids/text`, the lazy decoding of "
        "completions happens inside the rewards and counts in both). Variants are "
        "`tokenizer_mode/reward_level`; text/text is stock TRL.\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} "
        f"at the end, torch {torch.__version__} ({torch.get_num_threads()} threads).\n\n"
        f"{table}"
    )


def report(results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    lines = ["| scenario | variant | runs | host ms/step | of which tokenizer / rewards | model ms/step "
             "(gen/fwd/bwd/opt) | end-to-end ms/step | host share of step | host vs text/text | "
             "host vs text/text, run by run | end-to-end vs text/text |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario, variants in results.items():
        median = {variant: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                  for variant, runs in variants.items() if runs}
        base = median.get("text/text")
        for variant, m in median.items():
            parts = "/".join(f"{m[k] * 1e3:.0f}" for k in ("generate", "forward", "backward", "optimizer"))
            host_ratio = f"{m['host'] / base['host']:.0%}" if base else "—"
            wall_ratio = f"{m['wall'] / base['wall']:.0%}" if base else "—"
            lines.append(f"| {scenario} | {variant} | {len(variants[variant])} | {m['host'] * 1e3:.1f} | "
                         f"{m['tokenizer'] * 1e3:.1f} / {m['rewards'] * 1e3:.1f} | {m['model'] * 1e3:.0f} ({parts}) | "
                         f"{m['wall'] * 1e3:.1f} | {m['host_share']:.1%} | {host_ratio} | "
                         f"{run_by_run(variants[variant], variants.get('text/text'))} | {wall_ratio} |")
    return "\n".join(lines)


def run_by_run(runs: list[dict[str, float]], base_runs: list[dict[str, float]] | None) -> str:
    """Each run's host time over text/text's in the same round (variants run interleaved, round by round), so the
    spread shows whether a median ratio holds in every round or only on average.

    >>> run_by_run([{"host": 0.02}, {"host": 0.03}], [{"host": 0.05}, {"host": 0.05}])
    '40%, 60%'
    """
    if not base_runs:
        return "—"
    return ", ".join(f"{run['host'] / base['host']:.0%}" for run, base in zip(runs, base_runs))


if __name__ == "__main__":
    raise SystemExit(main())
