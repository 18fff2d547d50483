"""Token exactness of multi-turn tool rollouts: the tokens GRPO trains on are the tokens the model generated plus the
tool-message tokens, in both tokenizer modes, with a byte-level BPE; and how often re-encoding would have drifted.

Each run is a real job (``grpolab.train.train`` on a composed config: ``experiment=tools`` with ``model=tiny_bpe``,
the BPE trained on the vendored GSM8K test split). While it trains, every ``model.generate`` call is recorded (each
row's unpadded input IDs and what it generated), and so is every scored generation round: the tensors the loss reads
(``prompt_ids``/``completion_ids`` with their masks, TRL's ``tool_mask``) and the messages the rewards read. Then, for
every trajectory (every completion of every round):

- **generated**: each run of IDs the loss trains on (tool mask 1) is what one ``generate`` call produced for exactly
  the IDs before it (the prompt, then each earlier turn and tool result), cut at EOS (or at the completion budget);
- **tool suffix**: each run of tool-output IDs (tool mask 0) is TRL's suffix for that round's tool messages
  (``grpolab.trainer.grpo.tool_suffix_ids``);
- **drift** (what grpolab avoids): whether decoding the trajectory and encoding the text again, or rendering its
  messages with the chat template again, gives other IDs than the ones trained on.

A trajectory that fails either of the first two checks is a mismatch. The text-mode and ids-mode runs (same seed,
canonical prompt IDs) must also log identical metrics and trajectories.

    python benchmarks/tool_token_exactness.py --doc docs/tools.md     # 8 GRPO steps per mode, writes the table
    python benchmarks/tool_token_exactness.py --steps 2               # a quick check, printed only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

GSM8K_TEST = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gsm8k" / "test.jsonl"
#: experiment=tools on the byte-level BPE, small enough for a few minutes on a CPU: a warm start on demonstrations
#: that all call the tool, so most rollouts make calls (some malformed), and completions long enough for the BPE.
OVERRIDES = [
    "experiment=tools", "model=tiny_bpe", f"model.tokenizer.path={GSM8K_TEST}",
    "+model.tokenizer.eos_token='<|im_end|>'",
    "model.tokenizer.vocab_size=1024", "logger=none", "data.train_size=256", "data.eval_size=16",
    "data.tool_call_rate=1.0", "batch.prompts_per_step=4", "batch.generations_per_prompt=4",
    "trainer.max_completion_length=128", "trainer.save_strategy=no", "eval.num_problems=16",
    "environment.max_tool_calling_iterations=2",
]
#: The benchmark's warm start (its table in docs/tools.md); a test may take a shorter one that still makes tool calls.
WARM_START = ("warmstart.steps=300", "warmstart.batch_size=32")
#: Wall-clock keys: the only metrics allowed to differ between the two modes.
TIME_KEYS = frozenset({"time_s", "step_time_s", "step_time", "timing/rewards_s", "wall_time_s"})
#: Tokenizer call counts differ between the modes by design (ids mode never encodes a prompt).
COST_KEYS = frozenset({"tokenizer/encode_calls", "tokenizer/decode_calls", "tokenizer/calls"})


@dataclass
class Recording:
    """What one run recorded: every generate call's rows, and every scored round."""

    generated: dict[tuple[int, ...], list[list[int]]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    pending_messages: list[tuple[list[Any], list[Any]]] = field(default_factory=list)


@contextmanager
def recorded(recording: Recording) -> Iterator[None]:
    """While open, every ``GrpolabTrainer`` the composition root builds records into ``recording``: its model's
    ``generate`` calls, each round's messages (what ``_calculate_rewards`` receives) and each round's output."""
    from grpolab.trainer.grpo import GrpolabTrainer

    original = GrpolabTrainer.train

    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        generate, score_round, rewards = self.model.generate, self.score_round, self._calculate_rewards

        def recording_generate(*g_args: Any, **g_kwargs: Any) -> Any:
            output = generate(*g_args, **g_kwargs)
            inputs, mask = g_kwargs["input_ids"], g_kwargs["attention_mask"]
            for row, row_mask, produced in zip(inputs.tolist(), mask.tolist(), output[:, inputs.size(1):].tolist(),
                                               strict=True):
                prompt = tuple(token for token, keep in zip(row, row_mask, strict=True) if keep)
                recording.generated.setdefault(prompt, []).append(produced)  # a group's prompts repeat
            return output

        def recording_rewards(inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
            recording.pending_messages.append((list(prompts), [list(c) for c in completions]))
            return rewards(inputs, prompts, completions, completion_ids_list)

        def recording_round(inputs: Any) -> Any:
            output = score_round(inputs)
            prompts, completions = recording.pending_messages.pop()
            recording.rounds.append({
                "prompt_ids": _kept(output["prompt_ids"], output["prompt_mask"]),
                "completion_ids": _kept(output["completion_ids"], output["completion_mask"]),
                "tool_mask": _kept(output["tool_mask"], output["completion_mask"]) if "tool_mask" in output else None,
                "prompts": prompts, "completions": completions,
            })
            return output

        self.model.generate = recording_generate
        self.score_round = recording_round
        self._calculate_rewards = recording_rewards
        return original(self, *args, **kwargs)

    GrpolabTrainer.train = train
    try:
        yield
    finally:
        GrpolabTrainer.train = original


def _kept(values: Any, mask: Any) -> list[list[int]]:
    return [[int(v) for v, m in zip(row, row_mask, strict=True) if m] for row, row_mask in
            zip(values.tolist(), mask.tolist(), strict=True)]


def run_job(overrides: list[str], run_dir: Path) -> tuple[Recording, Any]:
    """One job of the real pipeline, recorded; returns the recording and the run's encoder-side tokenizer."""
    from in_process import job_config

    from grpolab.train import train

    recording = Recording()
    with job_config(overrides, run_dir) as cfg, recorded(recording):
        train(cfg)
    return recording, cfg


@dataclass
class Check:
    """The counts of one run."""

    trajectories: int = 0
    with_tool_output: int = 0
    tool_rounds: int = 0
    mismatched: int = 0
    drift: dict[str, int] = field(default_factory=lambda: {"re-encode": 0, "re-render": 0})
    drift_with_tool_output: dict[str, int] = field(default_factory=lambda: {"re-encode": 0, "re-render": 0})
    examples: list[str] = field(default_factory=list)
    drift_examples: dict[str, tuple[bool, str]] = field(default_factory=dict)


def check(recording: Recording, cfg: Any) -> Check:
    """Every recorded trajectory against the generate calls and TRL's tool suffixes; the drift counts."""
    from hydra.utils import instantiate

    from grpolab.environments.tools import build_environment
    from grpolab.trainer.grpo import tool_suffix_ids

    processing_class = instantiate(cfg.model.tokenizer)
    environment = build_environment(cfg.environment, processing_class)
    tokenizer = processing_class
    eos = tokenizer.eos_token_id
    budget = cfg.trainer.max_completion_length
    counts = Check()
    for batch in recording.rounds:
        masks = batch["tool_mask"] or [[1] * len(ids) for ids in batch["completion_ids"]]
        for prompt_ids, ids, mask, prompt, messages in zip(batch["prompt_ids"], batch["completion_ids"], masks,
                                                           batch["prompts"], batch["completions"], strict=True):
            counts.trajectories += 1
            problems = []
            tool_messages = _tool_rounds(messages)
            sequence, position = list(prompt_ids), 0
            runs = [(own, len(list(run))) for own, run in groupby(mask)]
            called = any(not own for own, _ in runs)
            counts.with_tool_output += called
            for own, length in runs:
                segment = ids[position:position + length]
                if own:
                    cut = position + length == len(ids) and len(ids) == budget  # TRL cuts at the budget
                    candidates = recording.generated.get(tuple(sequence), [])
                    match = next((index for index, produced in enumerate(candidates)
                                  if _continues(segment, produced, eos, cut)), None)
                    if match is None:
                        problems.append(f"turn at {position}: no generate call produced it after the "
                                        f"{len(sequence)} IDs before it")
                    else:
                        candidates.pop(match)  # each generated row is one trajectory's turn
                else:
                    counts.tool_rounds += 1
                    if not tool_messages:
                        problems.append(f"tool output at {position} without tool messages")
                    elif segment != tool_suffix_ids(processing_class, tool_messages.pop(0)):
                        problems.append(f"tool output at {position} is not TRL's suffix of its messages")
                sequence += segment
                position += length
            if problems:
                counts.mismatched += 1
                if len(counts.examples) < 3:
                    counts.examples.append("; ".join(problems))
            trained = [*prompt_ids, *ids]
            text = tokenizer.decode(trained, skip_special_tokens=False)
            reencoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            rendered = processing_class.apply_chat_template(
                [*prompt, *messages], tools=environment.prompt_tools(), tokenize=True, return_dict=False)[:len(trained)]
            for kind, again in (("re-encode", reencoded), ("re-render", rendered)):
                if again != trained:
                    counts.drift[kind] += 1
                    counts.drift_with_tool_output[kind] += called
                    # The first example, or the first from a trajectory with tool output once there is one.
                    if kind not in counts.drift_examples or (called and not counts.drift_examples[kind][0]):
                        counts.drift_examples[kind] = (called, _first_difference(tokenizer, trained, again))
    return counts


def _first_difference(tokenizer: Any, trained: list[int], again: list[int]) -> str:
    """Where two ID sequences part, as the tokens around it: ``trained [...] vs again [...]``."""
    index = next((i for i, (a, b) in enumerate(zip(trained, again)) if a != b), min(len(trained), len(again)))

    def tokens(ids: list[int]) -> str:
        return " ".join(repr(tokenizer.decode([token])) for token in ids[max(0, index - 2):index + 3])

    return f"trained {tokens(trained)} / again {tokens(again)}"


def _continues(segment: list[int], produced: list[int], eos: int, cut: bool) -> bool:
    """Whether ``segment`` is what ``generate`` produced: up to and including its first EOS, or (``cut``) a prefix."""
    end = produced.index(eos) + 1 if eos in produced else len(produced)
    expected = produced[:end]
    return segment == expected or (cut and segment == expected[:len(segment)])


def _tool_rounds(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The tool messages of a completion, one list per round (consecutive tool messages)."""
    rounds: list[list[dict[str, Any]]] = []
    previous_was_tool = False
    for message in messages:
        if message.get("role") == "tool":
            if not previous_was_tool:
                rounds.append([])
            rounds[-1].append(message)
        previous_was_tool = message.get("role") == "tool"
    return rounds


def metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIME_KEYS | COST_KEYS} for row in rows]


def measure(steps: int, scratch: Path, warm_start: tuple[str, ...] = WARM_START) -> dict[str, Any]:
    """Both modes, one job each (the second loads the first's cached warm start); their checks and whether they took
    identical steps."""
    results: dict[str, Any] = {}
    trajectories = {}
    for mode in ("text", "ids"):
        run_dir = scratch / mode
        recording, cfg = run_job([*OVERRIDES, *warm_start, f"trainer.max_steps={steps}", f"tokenizer_mode={mode}"],
                                 run_dir)
        results[mode] = check(recording, cfg)
        trajectories[mode] = [(batch["prompt_ids"], batch["completion_ids"], batch["tool_mask"])
                              for batch in recording.rounds]
        results[f"{mode} metrics"] = metric_rows(run_dir)
    results["identical"] = (results["text metrics"] == results["ids metrics"]
                            and trajectories["text"] == trajectories["ids"])
    return results


def table(results: dict[str, Any], steps: int) -> str:
    lines = [f"| tokenizer_mode | trajectories ({steps} GRPO steps) | with tool output | tool rounds | mismatched "
             "(trained != generated + tool suffix) | re-encode would change (with tool output) | re-render would "
             "change (with tool output) |",
             "|---|---|---|---|---|---|---|"]
    for mode in ("text", "ids"):
        c = results[mode]
        lines.append(f"| {mode} | {c.trajectories} | {c.with_tool_output} | {c.tool_rounds} | {c.mismatched} | "
                     f"{c.drift['re-encode']} ({c.drift_with_tool_output['re-encode']}) | {c.drift['re-render']} "
                     f"({c.drift_with_tool_output['re-render']}) |")
    same = "identical" if results["identical"] else "DIFFERENT"
    lines += ["", f"Text and ids mode (same seed): {same} metrics and trajectories."]
    for kind, (called, example) in results["text"].drift_examples.items():
        where = "a trajectory with tool output" if called else "a trajectory"
        lines.append(f"A {kind} drift ({where}, text mode), the tokens where the IDs part: {example}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="GRPO steps per mode")
    parser.add_argument("--doc", type=Path, help="replace the tool_token_exactness block of this Markdown file")
    args = parser.parse_args(argv)

    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("GRPOLAB_CACHE_DIR", str(Path(tempfile.gettempdir()) / "grpolab-bench-cache"))
    with tempfile.TemporaryDirectory(prefix="grpolab-exactness-") as scratch:
        results = measure(args.steps, Path(scratch))
    block = table(results, args.steps)
    print(block)
    for mode in ("text", "ids"):
        for example in results[mode].examples:
            print(f"{mode} mismatch: {example}", file=sys.stderr)
    if args.doc:
        from readme_block import write_block

        write_block(args.doc, "tool_token_exactness", block)
    return 0 if results["identical"] and not any(results[m].mismatched for m in ("text", "ids")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
