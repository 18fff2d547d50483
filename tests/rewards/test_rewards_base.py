"""The Reward base class: TRL's calling contract, completion normalisation, levels, token binding, import weight."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from collections.abc import Sequence

import pytest

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import Accuracy, Format, Length, Overlong, Reward, RewardLevel, RewardLevelError
from grpolab.rewards.vocabulary import describe_vocabulary
from grpolab.rewards.base import completion_text, strip_trailing_special


class Untouchable(Sequence):
    """Stands in for the lazily decoded completions of ids mode: any access would be a decode, so it fails."""

    def __len__(self):
        raise AssertionError("completions was touched at token level")

    def __getitem__(self, index):
        raise AssertionError("completions was touched at token level")

    def __iter__(self):
        raise AssertionError("completions was touched at token level")


class TextOnly(Reward):
    default_name = "text_only"

    def score_text(self, completions, **_):
        return [float(len(c)) for c in completions]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def bind(reward, tokenizer):
    reward.bind_tokens(describe_vocabulary(tokenizer, reward.token_strings()))


def test_string_and_chat_completions_score_the_same():
    reward = Format()
    text = "<think>a</think><answer>19</answer>"
    chat = [[{"role": "assistant", "content": text}], [{"role": "assistant", "content": "19"}]]
    assert reward(prompts=["q"] * 2, completions=[text, "19"], completion_ids=[[]] * 2) == [1.0, 0.0]
    assert reward(prompts=[[{"role": "user", "content": "q"}]] * 2, completions=chat, completion_ids=[[]] * 2) == [
        1.0, 0.0,
    ]


def test_completion_text_handles_content_parts_and_tool_turns():
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "<answer>"}, {"type": "text", "text": "7"}]}]
    assert completion_text(parts) == "<answer>7"
    turns = [{"role": "assistant", "content": "a"}, {"role": "tool", "content": "tool output"},
             {"role": "assistant", "content": "b"}]
    assert completion_text(turns) == "ab"
    with pytest.raises(TypeError, match="string or a list of chat messages"):
        completion_text(42)


def test_strip_trailing_special_keeps_inner_ids():
    assert strip_trailing_special([1, 5, 1, 6, 1, 0, 0], {0, 1}) == (1, 5, 1, 6)
    assert strip_trailing_special([0, 1], {0, 1}) == ()


@pytest.mark.parametrize(
    "reward",
    [Accuracy(level="token"), Format(level="token"), Length(target=3, level="token"),
     Overlong(max_length=4, cache=2, level="token")],
)
def test_token_level_never_touches_completions(tokenizer, reward):
    bind(reward, tokenizer)
    ids = [tokenizer.encode("<answer>19</answer>", add_special_tokens=False) + [tokenizer.eos_token_id]]
    result = reward(prompts=["q"], completions=Untouchable(), completion_ids=ids,
                    answer_ids=[tokenizer.encode("19", add_special_tokens=False)], trainer_state=None)
    assert len(result) == 1 and isinstance(result[0], float)


def test_text_only_reward_refuses_token_level_naming_reward_and_level():
    assert TextOnly(level="text")(prompts=["q"], completions=["ab"], completion_ids=[[]]) == [2.0]
    with pytest.raises(RewardLevelError, match=r"^rewards\.text_only has no token variant, so it cannot run with "
                                               r"reward_level=token; set rewards\.text_only\.level=text"):
        TextOnly(level="token")
    assert not TextOnly.has_token_variant() and Accuracy.has_token_variant()


def test_invalid_level_names_the_choices():
    with pytest.raises(ValueError, match=r"rewards\.accuracy\.level=tokens must be one of text, token"):
        Accuracy(level="tokens")
    assert RewardLevel.parse("token") is RewardLevel.token and RewardLevel("text") == "text"


def test_unbound_token_reward_fails_clearly():
    with pytest.raises(RuntimeError, match=r"rewards\.format \(token\) was never bound.*bind_tokens"):
        Format(level="token")(prompts=["q"], completions=Untouchable(), completion_ids=[[7, 8]])


def test_missing_column_names_reward_level_and_what_arrived():
    expected = r"rewards\.accuracy \(text\) needs dataset column\(s\) answer but got: solution"
    with pytest.raises(ValueError, match=expected):
        Accuracy()(prompts=["q"], completions=["<answer>1</answer>"], completion_ids=[[]], solution=["1"],
                   trainer_state=None, log_extra=None)


def test_required_columns_follow_the_level():
    assert Accuracy(level="text").required_columns == {"answer"}
    assert Accuracy(level="token").required_columns == {"answer_ids"}
    assert Format().required_columns == frozenset()


def test_bind_tokens_resolves_tags_without_keeping_the_tokenizer(tokenizer):
    reward = Accuracy(level="token")
    bind(reward, tokenizer)
    assert reward.tag_ids["<answer>"] == tuple(tokenizer.convert_tokens_to_ids(["<answer>"]))
    assert reward.special_ids == set(tokenizer.all_special_ids)
    assert {tokenizer.decode([i]) for i in reward.whitespace_ids} == {" ", "\t", "\n", "\r", "\x0b", "\x0c"}
    assert not any(callable(value) or value is tokenizer for value in vars(reward).values())


def test_bind_tokens_rejects_tags_that_are_special_tokens():
    tokenizer = build_char_tokenizer(special_tokens=("<|im_start|>", "<answer>"), tag_tokens=("</answer>",))
    with pytest.raises(ValueError, match=r"tag '<answer>' encodes to special IDs"):
        bind(Accuracy(level="token"), tokenizer)


def test_bind_tokens_accepts_multi_id_tags():
    """A tokenizer without tag tokens spells tags character by character; the token variants still find them."""
    tokenizer = build_char_tokenizer(tag_tokens=())
    reward = Format(level="token")
    bind(reward, tokenizer)
    assert len(reward.tag_ids["</answer>"]) == len("</answer>")
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in ["<answer>19</answer>", "<answer>19</answer>x"]]
    assert reward(prompts=["q"] * 2, completions=Untouchable(), completion_ids=ids) == [1.0, 0.0]


def test_importing_rewards_loads_no_heavy_libraries():
    code = (
        "import sys, grpolab.rewards; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'math_verify', 'sympy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["accuracy", "answers", "base", "build", "format", "length", "model", "reasoning",
                                    "repetition", "tags", "tools", "vocabulary", "wrappers"])
def test_docstring_examples_hold(module):
    result = doctest.testmod(importlib.import_module(f"grpolab.rewards.{module}"))
    assert result.attempted > 0 and result.failed == 0
