"""Text vs token rewards on real multi-token tags: where the two levels agree with a byte-level BPE, and where not.

Completions are GSM8K reference solutions in the warm-start layout and its common variants, scored at both
levels as a training step scores them (``score_both_levels``). Three BPEs of 4,096 tokens trained on the vendored
GSM8K text: ``raw`` (the text alone: the tags never occur in it), ``tagged`` (plus the solutions written with tags,
as a chat model's tokenizer has seen such text: it learns merges across the tag boundaries, ``>J``, ``.</``, ``>\\n``)
and ``tagged`` with the four tags added as single tokens (what Qwen3 and DeepSeek-R1 do for ``<think>``).
The agreement table of docs/tokenizer_mode.md gives these numbers on all 1,319 solutions
(benchmarks/bpe_round_trip.py).
"""

from __future__ import annotations

import functools
import json

import pytest
from tokenizers import AddedToken

from grpolab.data.gsm8k import GSM8K
from grpolab.models.bpe import jsonl_texts, train_bpe_tokenizer
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards.accuracy import Accuracy
from grpolab.rewards.agreement import SOLUTION_LAYOUTS, score_both_levels
from grpolab.rewards.format import Format
from grpolab.rewards.tags import ALL_TAGS

# Three BPEs trained on GSM8K, then hundreds of solutions scored (math-verify) per test: seconds.
pytestmark = pytest.mark.slow

ACCURACY = functools.partial(Accuracy, fallbacks=False)
SOLUTIONS = 300  # of 1,319: the shares below are all 0 or 1, so the first 300 show them (math-verify is slow)
# (format text, format token, accuracy text, accuracy token): the share of completions scoring 1.0. The text level
# scores every reference solution 1.0; the token level where the tags' isolated IDs survive in context.
EXPECTED = {
    "char": {"adjacent": (1, 1, 1, 1), "newline": (1, 1, 1, 1), "spaced": (1, 1, 1, 0), "r1": (1, 1, 1, 0),
             "answer only": (1, 1, 1, 1)},
    "raw": {"adjacent": (1, 1, 1, 1), "newline": (1, 1, 1, 1), "spaced": (1, 1, 1, 0), "r1": (1, 1, 1, 0),
            "answer only": (1, 1, 1, 1)},
    "tagged": {"adjacent": (1, 0, 1, 0), "newline": (1, 0, 1, 1), "spaced": (1, 0, 1, 0), "r1": (1, 0, 1, 0),
               "answer only": (1, 1, 1, 1)},
    "tagged + tag tokens": {"adjacent": (1, 1, 1, 1), "newline": (1, 1, 1, 1), "spaced": (1, 1, 1, 0),
                            "r1": (1, 1, 1, 0), "answer only": (1, 1, 1, 1)},
}


@pytest.fixture(scope="module")
def all_solutions(gsm8k_test_split):
    """(answer, worked steps) of every GSM8K test problem, as the gsm8k data option writes its solutions."""
    task = GSM8K(path=None, hub_id="", hub_config=None, train_size=None, eval_size=1, seed=0, conversational=False,
                 system_prompt="")
    rows = [json.loads(line) for line in gsm8k_test_split.read_text(encoding="utf-8").splitlines()]
    return [task.answer_and_steps(row["answer"]) for row in rows]


@pytest.fixture(scope="module")
def solutions(all_solutions):
    return all_solutions[:SOLUTIONS]


@pytest.fixture(scope="module")
def tokenizers(gsm8k_test_split, all_solutions):
    text = list(jsonl_texts(gsm8k_test_split, ["question", "answer"]))
    tagged_text = [*text, *(SOLUTION_LAYOUTS["newline"].format(steps=s, answer=a) for a, s in all_solutions)]
    with_tags = train_bpe_tokenizer(tagged_text, 4096)
    with_tags.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in ALL_TAGS])
    return {"char": build_char_tokenizer(), "raw": train_bpe_tokenizer(text, 4096),
            "tagged": train_bpe_tokenizer(tagged_text, 4096), "tagged + tag tokens": with_tags}


def share(scores: list[float | None]) -> float:
    return sum(score == 1.0 for score in scores) / len(scores)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_where_text_and_token_rewards_agree_on_reference_solutions(tokenizers, solutions, name):
    tokenizer, answers = tokenizers[name], [answer for answer, _ in solutions]
    measured = {}
    for layout, template in SOLUTION_LAYOUTS.items():
        texts = [template.format(steps=steps, answer=answer) for answer, steps in solutions]
        format_text, format_token = score_both_levels(Format, tokenizer, texts)
        accuracy_text, accuracy_token = score_both_levels(ACCURACY, tokenizer, texts, answers=answers)
        measured[layout] = tuple(share(s) for s in (format_text, format_token, accuracy_text, accuracy_token))
    assert measured == EXPECTED[name]


def test_the_tags_are_several_tokens_and_merge_in_context_once_the_tokenizer_has_seen_them(tokenizers):
    for name in ("raw", "tagged"):
        tokenizer = tokenizers[name]
        assert all(len(tokenizer(tag, add_special_tokens=False)["input_ids"]) > 1 for tag in ALL_TAGS)
    tokens = tokenizers["tagged"].convert_ids_to_tokens(
        tokenizers["tagged"]("<think>Janet</think>\n<answer>18</answer>", add_special_tokens=False)["input_ids"])
    assert ">J" in tokens and ">Ċ" in tokens  # the merges that hide </think> and <think> from the token level
    raw = tokenizers["raw"].convert_ids_to_tokens(
        tokenizers["raw"]("<think>Janet</think>\n<answer>18</answer>", add_special_tokens=False)["input_ids"])
    assert raw[:4] == ["<", "th", "ink", ">"] and "Ċ" in raw


@pytest.mark.parametrize("name", list(EXPECTED))
def test_wrong_answers_score_zero_at_both_levels(tokenizers, solutions, name):
    texts = [SOLUTION_LAYOUTS["newline"].format(steps=steps, answer=int(answer) + 1)
             for answer, steps in solutions[:200]]
    text, token = score_both_levels(ACCURACY, tokenizers[name], texts, answers=[a for a, _ in solutions[:200]])
    assert share(text) == share(token) == 0.0


@pytest.mark.parametrize("name", list(EXPECTED))
def test_tags_spelt_with_other_ids_are_seen_by_the_text_level_only(tokenizers, solutions, name):
    """A model may write a tag with IDs other than the tokenizer's own encoding (here: byte by byte). Decoded, it is
    the same text; as IDs it is not the tag. No tokenizer can make the levels agree on such completions."""
    tokenizer = tokenizers[name]

    def encoded(text: str, char_by_char: bool = False) -> list[int]:
        parts = list(text) if char_by_char else [text]
        return [i for part in parts for i in tokenizer(part, add_special_tokens=False)["input_ids"]]

    ids = [[*encoded("<think>", True), *encoded(steps), *encoded("</think>\n<answer>", True), *encoded(answer),
            *encoded("</answer>", True)] for answer, steps in solutions[:200]]
    text, token = score_both_levels(Format, tokenizer, completion_ids=ids)
    assert all(tag in text for text in tokenizer.batch_decode(ids) for tag in ALL_TAGS)
    assert (share(text), share(token)) == (1.0, 0.0)
