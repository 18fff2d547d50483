"""Built-in rewards: the text and token variants agree on the same completions, and differ only where documented."""

from __future__ import annotations

import pickle

import pytest

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import Accuracy, Format, Length, Overlong, Reward
from grpolab.rewards.vocabulary import describe_vocabulary


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def bound(reward: Reward, tokenizer) -> Reward:
    reward.bind_tokens(describe_vocabulary(tokenizer, reward.token_strings()))
    return reward


def generated(tokenizer, texts: list[str]) -> tuple[list[list[int]], list[str]]:
    """What TRL hands a reward: completion IDs ending in EOS, and their decode with special tokens skipped."""
    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
    decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert decoded == texts, "the char tokenizer must round-trip these completions"
    return ids, decoded


def both_levels(make, tokenizer, texts: list[str], **columns) -> tuple[list, list]:
    ids, decoded = generated(tokenizer, texts)
    prompts = ["q"] * len(texts)
    text_rewards = make("text")(prompts=prompts, completions=decoded, completion_ids=ids, **columns)
    token_reward = bound(make("token"), tokenizer)
    token_columns = {k: v for k, v in columns.items() if k in token_reward.required_columns}
    token_rewards = token_reward(prompts=prompts, completions=decoded, completion_ids=ids, **token_columns)
    return text_rewards, token_rewards


ACCURACY_CASES = {  # completion -> expected reward against gold "19"
    "<answer>19</answer>": 1.0,
    "<answer>18</answer>": 0.0,
    "<think>12+7 is 19</think><answer>19</answer>": 1.0,
    "<answer>1</answer><answer>19</answer>": 1.0,  # the last answer counts
    "<answer>19</answer><answer>7</answer>": 0.0,
    "<answer>19</answer> and then 7": 1.0,
    "<answer></answer>": 0.0,
    "<answer>190</answer>": 0.0,
    "<answer>-19</answer>": 0.0,
    "no answer at all": 0.0,
}


def test_accuracy_variants_agree(tokenizer):
    texts = list(ACCURACY_CASES)
    answers = ["19"] * len(texts)
    answer_ids = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
    text_rewards, token_rewards = both_levels(
        lambda level: Accuracy(level=level), tokenizer, texts, answer=answers, answer_ids=answer_ids
    )
    assert text_rewards == list(ACCURACY_CASES.values())
    assert token_rewards == text_rewards


@pytest.mark.parametrize(
    ("completion", "gold"),
    [("<answer>19.0</answer>", "19"), ("<answer> 19 </answer>", "19"), ("<answer>1,000</answer>", "1000"),
     ("<answer>0.75</answer>", "3/4"), ("The sum is 19.", "19"), (r"so \boxed{19}", "19")],
)
def test_accuracy_documented_differences(tokenizer, completion, gold):
    """Equal values spelled differently, and untagged answers: 1.0 for math-verify, 0.0 for exact IDs."""
    text, token = both_levels(
        lambda level: Accuracy(level=level), tokenizer, [completion],
        answer=[gold], answer_ids=[tokenizer.encode(gold, add_special_tokens=False)],
    )
    assert (text, token) == ([1.0], [0.0])


def test_accuracy_text_fallbacks_can_be_disabled():
    reward = Accuracy(fallbacks=False)
    completions = ["The sum is 19.", r"\boxed{19}", "<answer>19</answer>"]
    assert reward(prompts=["q"] * 3, completions=completions, completion_ids=[[]] * 3, answer=["19"] * 3) == [
        0.0, 0.0, 1.0,
    ]


def test_accuracy_token_ignores_special_ids_around_gold(tokenizer):
    reward = bound(Accuracy(level="token"), tokenizer)
    ids, _ = generated(tokenizer, ["<answer>19</answer>"])
    gold = [tokenizer.eos_token_id, *tokenizer.encode("19", add_special_tokens=False), tokenizer.pad_token_id]
    assert reward(prompts=["q"], completions=None, completion_ids=ids, answer_ids=[gold]) == [1.0]


def test_accuracy_word_answers_compare_as_strings():
    reward = Accuracy()
    result = reward(prompts=["q"] * 2, completions=["<answer>yes</answer>", "<answer>no</answer>"],
                    completion_ids=[[]] * 2, answer=["yes", "yes"])
    assert result == [1.0, 0.0]


FORMAT_CASES = {  # completion without whitespace between blocks -> (reward without think required, with), any mode
    "<answer>19</answer>": (1.0, 0.0),
    "<think>12+7</think><answer>19</answer>": (1.0, 1.0),
    "<think></think><answer>19</answer>": (1.0, 1.0),
    "<think>multi\nline</think><answer>19</answer>": (1.0, 1.0),
    "<answer></answer>": (0.0, 0.0),
    "x<answer>19</answer>": (0.0, 0.0),
    "<answer>19</answer>x": (0.0, 0.0),
    "<think><think>a</think><answer>19</answer>": (0.0, 0.0),
    "<think>a<answer>19</answer>": (0.0, 0.0),
    "<answer>1</answer><answer>2</answer>": (0.0, 0.0),
    "<answer>1<answer>2</answer>": (0.0, 0.0),
    "<answer>19</answer><think>a</think>": (0.0, 0.0),
    "19": (0.0, 0.0),
    "": (0.0, 0.0),
}

WHITESPACE_CASES = {  # completion with whitespace -> (default, strict), with or without think required
    "<answer>19</answer>\n": (1.0, 0.0),
    "<think>a</think>\n<answer>19</answer>\n": (1.0, 0.0),
    "\n<think>a</think> <answer>19</answer>": (1.0, 0.0),
    "  \t<think>a</think>\r\n\n<answer>19</answer>\x0b\x0c ": (1.0, 0.0),
    "<think> </think><answer>19</answer>": (1.0, 1.0),  # a whitespace-only think block is an empty one
    "<think>a</think><answer> 19 </answer>": (1.0, 1.0),  # whitespace inside a non-empty answer is content
    "<think>a</think><answer> </answer>": (0.0, 1.0),  # a whitespace-only answer is empty, unless strict
    "<think>a</think><answer>\n</answer>\n": (0.0, 0.0),
    "<think>a</think>\nx<answer>19</answer>": (0.0, 0.0),  # not whitespace between the blocks
    "<think>a</think>\n<answer>19</answer>\n.": (0.0, 0.0),
    "<answer>1</answer>\n<answer>2</answer>": (0.0, 0.0),
    " \n ": (0.0, 0.0),
}


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("require_think", [False, True])
def test_format_variants_agree(tokenizer, require_think, strict):
    texts = list(FORMAT_CASES)
    text_rewards, token_rewards = both_levels(
        lambda level: Format(level=level, require_think=require_think, strict=strict), tokenizer, texts
    )
    assert text_rewards == [expected[require_think] for expected in FORMAT_CASES.values()]
    assert token_rewards == text_rewards


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("require_think", [False, True])
def test_format_whitespace_variants_agree(tokenizer, require_think, strict):
    texts = list(WHITESPACE_CASES)
    text_rewards, token_rewards = both_levels(
        lambda level: Format(level=level, require_think=require_think, strict=strict), tokenizer, texts
    )
    expected = [
        values[strict] if "<think>" in text or not require_think else 0.0
        for text, values in WHITESPACE_CASES.items()
    ]
    assert text_rewards == expected
    assert token_rewards == text_rewards


def test_format_token_strips_trailing_eos_and_padding(tokenizer):
    reward = bound(Format(level="token"), tokenizer)
    ids = tokenizer.encode("<answer>19</answer>", add_special_tokens=False)
    padded = [ids + [tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.pad_token_id], ids]
    assert reward(prompts=["q"] * 2, completions=None, completion_ids=padded) == [1.0, 1.0]


PLAIN_TEXTS = ["", "a", "abcd", "abcdefg", "x" * 10, "twelve chars", "x" * 30]


@pytest.mark.parametrize("penalize_shorter", [True, False])
def test_length_variants_agree_without_tags(tokenizer, penalize_shorter):
    def make(level):
        return Length(target=7, tolerance=4, penalize_shorter=penalize_shorter, level=level)

    text_rewards, token_rewards = both_levels(make, tokenizer, PLAIN_TEXTS)
    expected_shorter = [0.0, 0.0, 0.25, 1.0, 0.25, 0.0, 0.0]
    expected_longer_only = [1.0, 1.0, 1.0, 1.0, 0.25, 0.0, 0.0]
    assert text_rewards == (expected_shorter if penalize_shorter else expected_longer_only)
    assert token_rewards == text_rewards


def test_overlong_variants_agree_without_tags(tokenizer):
    text_rewards, token_rewards = both_levels(
        lambda level: Overlong(max_length=10, cache=4, level=level), tokenizer, PLAIN_TEXTS
    )
    assert text_rewards == [0.0, 0.0, 0.0, -0.25, -1.0, -1.0, -1.0]
    assert token_rewards == text_rewards


def test_overlong_zero_cache_is_a_hard_cliff():
    reward = Overlong(max_length=3, cache=0)
    assert reward(prompts=["q"] * 2, completions=["abc", "abcd"], completion_ids=[[]] * 2) == [0.0, -1.0]


def test_length_units_differ_by_level_on_tags(tokenizer):
    """A tag is one token but several characters: the documented unit difference."""
    completion = "<answer>19</answer>"  # 19 characters, 4 tokens
    text, token = both_levels(lambda level: Length(target=4, tolerance=4, level=level), tokenizer, [completion])
    assert (text, token) == ([0.0], [1.0])
    text, token = both_levels(lambda level: Overlong(max_length=10, cache=5, level=level), tokenizer, [completion])
    assert (text, token) == ([-1.0], [0.0])


def test_overlong_matches_trl_soft_overlong_except_for_the_eos(tokenizer):
    from trl.rewards import get_soft_overlong_punishment

    trl_reward = get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=4)
    ours = bound(Overlong(max_length=10, cache=4, level="token"), tokenizer)
    without_eos = [[42] * n for n in range(13)]
    assert ours(prompts=[""] * 13, completions=None, completion_ids=without_eos) == trl_reward(without_eos)
    with_eos = [ids + [tokenizer.eos_token_id] for ids in without_eos]
    assert ours(prompts=[""] * 13, completions=None, completion_ids=with_eos) == trl_reward(without_eos)
    six_tokens_and_eos = with_eos[6]  # L_max - L_cache = 6: inside the window for TRL, not for us
    assert trl_reward([six_tokens_and_eos]) == [-0.25]
    assert ours(prompts=[""], completions=None, completion_ids=[six_tokens_and_eos]) == [0.0]


@pytest.mark.parametrize(
    "make",
    [lambda: Length(target=0), lambda: Length(target=5, tolerance=0), lambda: Overlong(max_length=5, cache=6),
     lambda: Overlong(max_length=0, cache=0)],
)
def test_invalid_lengths_are_rejected(make):
    with pytest.raises(ValueError, match=r"rewards\.(length|overlong)"):
        make()


@pytest.mark.parametrize(
    "make",
    [lambda level: Accuracy(level=level, fallbacks=False), lambda level: Format(level=level, require_think=True),
     lambda level: Length(target=5, level=level), lambda level: Overlong(max_length=8, cache=2, level=level)],
)
@pytest.mark.parametrize("level", ["text", "token"])
def test_rewards_pickle_and_score_the_same_afterwards(tokenizer, make, level):
    reward = bound(make(level), tokenizer)
    reward.__name__ = "renamed"
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "renamed" and clone.level == reward.level
    ids, texts = generated(tokenizer, ["<think>a</think><answer>19</answer>", "<answer>7</answer>", "abc"])
    columns = {"answer": ["19"] * 3, "answer_ids": [tokenizer.encode("19", add_special_tokens=False)] * 3}
    call = dict(prompts=["q"] * 3, completions=texts, completion_ids=ids, **columns)
    assert clone(**call) == reward(**call)
