"""Round-trip drift and text/token reward agreement with byte-level BPE tokenizers trained on the GSM8K text.

Drift: the share of GSM8K prompts whose IDs, decoded and encoded again (what a text-mode pipeline does to them), come
back different. IDs made by the tokenizer itself never drift; IDs made piece by piece can.

Agreement: the share of GSM8K reference solutions (all 1,319, in the warm-start layout and its variants) that the
``format`` and ``accuracy`` rewards score 1.0 at text level and at token level, for the BPE of ``model=tiny_bpe``
(``raw``: the GSM8K text alone, where the tags never occur), one trained on that text plus the solutions written with
tags (``tagged``: like a chat model's tokenizer, it learns merges across tag boundaries), and that one with the four
tags added as single tokens. tests/models/test_bpe.py and tests/rewards/test_rewards_agreement.py assert the same.

    python benchmarks/bpe_round_trip.py                    # ~2 minutes on 2 cores; prints the two Markdown tables
    python benchmarks/bpe_round_trip.py --doc docs/tokenizer_mode.md  # and writes them into its two bpe_round_trip
                                                                      # blocks
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import textwrap
import time
from pathlib import Path

from readme_block import write_block
from tokenizers import AddedToken

from grpolab.data.gsm8k import GSM8K
from grpolab.models.bpe import jsonl_texts, train_bpe_tokenizer
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards.accuracy import Accuracy
from grpolab.rewards.agreement import SOLUTION_LAYOUTS, score_both_levels
from grpolab.rewards.format import Format
from grpolab.rewards.tags import ALL_TAGS

GSM8K_TEST = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gsm8k" / "test.jsonl"
VOCAB_SIZE = 4096
SYSTEM_PROMPT = ("Solve the problem. Think inside <think></think>, then give only the final number inside "
                 "<answer></answer>.")


def encoded(tokenizer, pieces: list[str]) -> list[int]:
    return [i for piece in pieces for i in tokenizer(piece, add_special_tokens=False)["input_ids"]]


def drift_table(tokenizer, questions: list[str]) -> str:
    chat = tokenizer.apply_chat_template(
        [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}] for q in questions],
        add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    ways = {
        "the tokenizer's own encoding (plain question)": [encoded(tokenizer, [q]) for q in questions],
        "the tokenizer's own encoding (chat template, data=gsm8k system prompt)": [list(ids) for ids in chat],
        "word by word (each word with its leading space)": [encoded(tokenizer, re.findall(r"\s*\S+", q))
                                                            for q in questions],
        "sentence by sentence (each with its trailing space)": [encoded(tokenizer, re.findall(r".+?(?:[.?!]\s+|$)", q))
                                                                for q in questions],
        "character by character": [encoded(tokenizer, list(q)) for q in questions],
    }
    lines = ["| prompt IDs made | prompts | re-encoded IDs differ | share |", "|---|---|---|---|"]
    for way, id_lists in ways.items():
        back = [tokenizer(tokenizer.decode(ids), add_special_tokens=False)["input_ids"] for ids in id_lists]
        differ = sum(b != ids for b, ids in zip(back, id_lists, strict=True))
        lines.append(f"| {way} | {len(id_lists)} | {differ} | {differ / len(id_lists):.1%} |")
    return "\n".join(lines)


def agreement_table(tokenizers: dict, solutions: list[tuple[str, str]]) -> str:
    """One row per tokenizer, one column per completion layout; a cell is the share of solutions the token level
    scores 1.0 (format, accuracy), followed by the text level's shares where they are not both 100%."""
    answers = [answer for answer, _ in solutions]
    accuracy = functools.partial(Accuracy, fallbacks=False)
    layouts = [*SOLUTION_LAYOUTS, "tags written with other IDs"]
    lines = ["| tokenizer | " + " | ".join(f"`{SOLUTION_LAYOUTS[name]}`".replace("\n", "\\n") if name in SOLUTION_LAYOUTS
                                          else name for name in layouts) + " |",
             "|---|" + "---|" * len(layouts)]
    for name, tokenizer in tokenizers.items():
        cases = {layout: {"completions": [template.format(steps=s, answer=a) for a, s in solutions]}
                 for layout, template in SOLUTION_LAYOUTS.items()}
        # The same text with its tags spelt character by character: other IDs, which a model can sample.
        cases["tags written with other IDs"] = {"completion_ids": [
            [*encoded(tokenizer, list("<think>")), *encoded(tokenizer, [s]),
             *encoded(tokenizer, list("</think>\n<answer>")), *encoded(tokenizer, [a]),
             *encoded(tokenizer, list("</answer>"))] for a, s in solutions]}
        cells = []
        for layout in layouts:
            format_text, format_token = score_both_levels(Format, tokenizer, **cases[layout])
            accuracy_text, accuracy_token = score_both_levels(accuracy, tokenizer, answers=answers, **cases[layout])
            share = [f"{sum(s) / len(s):.0%}" for s in (format_token, accuracy_token, format_text, accuracy_text)]
            text = "" if share[2:] == ["100%", "100%"] else f" (text {share[2]}, {share[3]})"
            cells.append(f"{share[0]}, {share[1]}{text}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc", type=Path, help="also replace the two bpe_round_trip blocks of this Markdown file "
                                                 "(docs/tokenizer_mode.md)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = [json.loads(line) for line in GSM8K_TEST.read_text(encoding="utf-8").splitlines()]
    task = GSM8K(path=None, hub_id="", hub_config=None, train_size=None, eval_size=1, seed=0, conversational=False,
                 system_prompt="")
    solutions = [task.answer_and_steps(row["answer"]) for row in rows]
    text = list(jsonl_texts(GSM8K_TEST, ["question", "answer"]))
    tagged_text = [*text, *(SOLUTION_LAYOUTS["newline"].format(steps=s, answer=a) for a, s in solutions)]
    raw = train_bpe_tokenizer(text, VOCAB_SIZE)
    with_tags = train_bpe_tokenizer(tagged_text, VOCAB_SIZE)
    with_tags.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in ALL_TAGS])
    tokenizers = {"char (the default)": build_char_tokenizer(), "BPE on the GSM8K text (`model=tiny_bpe`)": raw,
                  "BPE that has also seen tagged text": train_bpe_tokenizer(tagged_text, VOCAB_SIZE),
                  "the same with the four tags added as tokens": with_tags}
    drift = drift_table(raw, [row["question"] for row in rows])
    agreement = agreement_table(tokenizers, solutions)
    print(f"### Round-trip drift (BPE raw, {VOCAB_SIZE} tokens, {len(rows)} GSM8K test questions)\n\n{drift}")
    print(f"\n### Token-level rewards (format, accuracy) on the {len(solutions)} GSM8K reference solutions\n\n"
          f"{agreement}")
    if args.doc:
        stamp = "Generated by `python benchmarks/bpe_round_trip.py --doc docs/tokenizer_mode.md` (deterministic).\n\n"
        write_block(args.doc, "bpe_round_trip drift", textwrap.indent(stamp + drift, "  "))
        write_block(args.doc, "bpe_round_trip agreement", textwrap.indent(stamp + agreement, "  "))
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
