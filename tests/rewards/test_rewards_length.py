"""CosineLength: TRL's cosine-scaled formula, with the accuracy reward's correctness and grpolab's length units."""

from __future__ import annotations

import pickle

import pytest

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import Accuracy, CosineLength, describe_vocabulary
from grpolab.rewards.tags import ALL_TAGS


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def bound(reward, tokenizer):
    reward.bind_tokens(describe_vocabulary(tokenizer, reward.token_strings()))
    return reward


def test_values_match_trls_cosine_scaled_reward_where_correctness_agrees():
    """Boxed answers inside the tag: TRL's accuracy_reward and ours agree on correctness; lengths given equal."""
    from trl.rewards import get_cosine_scaled_reward

    texts = [f"<answer>\\boxed{{{answer}}}</answer>" + " " * pad for answer in ("19", "18") for pad in range(0, 70, 7)]
    trl_reward = get_cosine_scaled_reward(max_len=50)
    trl_values = trl_reward(completions=[[{"content": t}] for t in texts], solution=["19"] * len(texts),
                            completion_ids=[[0] * len(t) for t in texts])  # TRL counts IDs; here one per character
    ours = CosineLength(max_length=50, fallbacks=False)
    values = ours(prompts=["q"] * len(texts), completions=texts, completion_ids=[[]] * len(texts),
                  answer=["19"] * len(texts))
    assert values == pytest.approx(trl_values)
    assert {v > 0 for v in values[:10]} == {True} and {v < 0 for v in values[10:]} == {True}


def test_schedule_ends_and_direction():
    reward = CosineLength(max_length=10, min_value_wrong=-2.0, max_value_wrong=-1.0, min_value_correct=1.0,
                          max_value_correct=3.0)
    correct = [reward.reward_for(True, n) for n in range(0, 15)]
    wrong = [reward.reward_for(False, n) for n in range(0, 15)]
    assert correct[0] == 3.0 and correct[10] == 1.0 and correct[14] == 1.0
    assert wrong[0] == -2.0 and wrong[10] == -1.0 and wrong[14] == -1.0
    assert all(a > b for a, b in zip(correct[:11], correct[1:11], strict=False))  # shorter correct: more
    assert all(a < b for a, b in zip(wrong[:11], wrong[1:11], strict=False))  # longer wrong: penalised less
    assert correct[5] == pytest.approx(2.0) and wrong[5] == pytest.approx(-1.5)


@pytest.mark.parametrize("level", ["text", "token"])
def test_correctness_is_the_accuracy_rewards(tokenizer, level):
    texts = ["<answer>19</answer>", "<answer>18</answer>", "<think>7+12</think><answer>19</answer>", "19",
             "<answer> 19.0 </answer>", "<answer>19</answer><answer>7</answer>"]
    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
    columns = {"answer": ["19"] * len(texts), "answer_ids": [tokenizer.encode("19", add_special_tokens=False)] * 6}
    call = dict(prompts=["q"] * len(texts), completions=texts, completion_ids=ids)
    accuracy = bound(Accuracy(level=level, fallbacks=False), tokenizer)
    cosine = bound(CosineLength(max_length=100, fallbacks=False, level=level), tokenizer)
    correct = accuracy(**call, **{k: v for k, v in columns.items() if k in accuracy.required_columns})
    values = cosine(**call, **{k: v for k, v in columns.items() if k in cosine.required_columns})
    assert [v > 0 for v in values] == [c == 1.0 for c in correct]
    assert 1.0 in correct and 0.0 in correct


def test_text_counts_characters_and_token_counts_tokens_without_the_eos(tokenizer):
    texts = ["<answer>19</answer>", "<think>" + "x" * 20 + "</think><answer>18</answer>", "y" * 80]
    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
    columns = {"answer": ["19"] * 3, "answer_ids": [tokenizer.encode("19", add_special_tokens=False)] * 3}
    text = CosineLength(max_length=60)
    token = bound(CosineLength(max_length=60, level="token"), tokenizer)
    text_values = text(prompts=["q"] * 3, completions=texts, completion_ids=ids, **columns)
    token_values = token(prompts=["q"] * 3, completions=None, completion_ids=ids, **columns)
    tag_chars = [sum(t.count(tag) * (len(tag) - 1) for tag in ALL_TAGS) for t in texts]
    assert text_values == [text.reward_for(v > 0, len(t)) for v, t in zip(text_values, texts, strict=True)]
    assert token_values == [text.reward_for(v > 0, len(t) - c)
                            for v, t, c in zip(text_values, texts, tag_chars, strict=True)]
    assert token_values[2] == text_values[2] == -0.5  # untagged and beyond max_length at both levels


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_length": 0}, r"rewards\.cosine_length\.max_length must be positive; got 0"),
     ({"max_length": 9, "min_value_correct": 1.5}, r"need min_value_correct <= max_value_correct; got 1.5 > 1.0"),
     ({"max_length": 9, "max_value_wrong": -2.0}, r"need min_value_wrong <= max_value_wrong; got -1.0 > -2.0")],
)
def test_bad_parameters_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CosineLength(**kwargs)


def test_needs_the_answer_columns_of_its_level():
    assert CosineLength(max_length=5).required_columns == {"answer"}
    assert CosineLength(max_length=5, level="token").required_columns == {"answer_ids"}


@pytest.mark.parametrize("level", ["text", "token"])
def test_pickles_and_scores_the_same(tokenizer, level):
    reward = bound(CosineLength(max_length=30, level=level), tokenizer)
    clone = pickle.loads(pickle.dumps(reward))
    texts = ["<answer>19</answer>", "<answer>7</answer>   "]
    call = dict(prompts=["q"] * 2, completions=texts, answer=["19"] * 2,
                completion_ids=[tokenizer.encode(t, add_special_tokens=False) for t in texts],
                answer_ids=[tokenizer.encode("19", add_special_tokens=False)] * 2)
    assert clone(**call) == reward(**call)
