"""Repetition: TRL's n-gram repetition penalty on words (text) and on IDs without the EOS (token)."""

from __future__ import annotations

import pickle

import pytest
from trl.rewards import get_repetition_penalty_reward

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import Repetition, describe_vocabulary

TEXTS = [
    "",
    "19",
    "add seven to twelve",
    "carry the one carry the one carry the one",
    "The the THE the",
    "twelve plus seven is nineteen so the answer is nineteen",
    "x x x x x x x x",
]


def open_r1_repetition_penalty(completions, ngram_size, max_penalty):
    """Open-R1's get_repetition_penalty_reward (src/open_r1/rewards.py), as published, for English text (the oracle)."""

    def zipngram(text, size):
        words = text.lower().split()
        return zip(*[words[i:] for i in range(size)], strict=False), words

    rewards = []
    for completion in completions:
        if completion == "" or len(completion.split()) < ngram_size:
            rewards.append(0.0)
            continue
        ngrams, total = set(), 0
        for ngram in zipngram(completion, ngram_size)[0]:
            ngrams.add(ngram)
            total += 1
        rewards.append((1 - len(ngrams) / total) * max_penalty)
    return rewards


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def bound(reward, tokenizer):
    reward.bind_tokens(describe_vocabulary(tokenizer, reward.token_strings()))
    return reward


@pytest.mark.parametrize(("ngram_size", "max_penalty"), [(1, -1.0), (2, -0.5), (3, -1.0)])
def test_text_variant_is_open_r1s_word_penalty(ngram_size, max_penalty):
    reward = Repetition(ngram_size=ngram_size, max_penalty=max_penalty)
    values = reward(prompts=["q"] * len(TEXTS), completions=TEXTS, completion_ids=[[]] * len(TEXTS))
    assert values == pytest.approx(open_r1_repetition_penalty(TEXTS, ngram_size, max_penalty))
    assert min(values) < 0.0 and values[0] == values[1] == 0.0


def test_token_variant_is_trls_penalty_on_the_ids_without_the_eos(tokenizer):
    reward = bound(Repetition(ngram_size=3, max_penalty=-1.0, level="token"), tokenizer)
    content = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    with_eos = [ids + [tokenizer.eos_token_id] for ids in content]
    trl_penalty = get_repetition_penalty_reward(ngram_size=3, max_penalty=-1.0)
    assert reward(prompts=["q"] * len(TEXTS), completions=None, completion_ids=with_eos) == trl_penalty(content)
    # TRL on the raw IDs counts the EOS trigram too: one more distinct n-gram, a smaller penalty.
    assert trl_penalty(with_eos)[-1] > trl_penalty(content)[-1]


def test_units_differ_by_level_as_documented(tokenizer):
    """Words at text level, characters (the char tokenizer's tokens) at token level."""
    text = "abcabcabc"  # one word: no word trigram; character trigrams repeat
    ids = [tokenizer.encode(text, add_special_tokens=False)]
    assert Repetition()(prompts=["q"], completions=[text], completion_ids=ids) == [0.0]
    token_value = bound(Repetition(level="token"), tokenizer)(prompts=["q"], completions=None, completion_ids=ids)
    assert token_value == [pytest.approx(-(1 - 3 / 7))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_penalty": 0.5}, r"rewards\.repetition\.max_penalty must be <= 0 \(it is a penalty\); got 0.5"),
     ({"ngram_size": 0}, r"rewards\.repetition\.ngram_size must be at least 1; got 0")],
)
def test_bad_parameters_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Repetition(**kwargs)


@pytest.mark.parametrize("level", ["text", "token"])
def test_pickles_and_scores_the_same(tokenizer, level):
    reward = bound(Repetition(ngram_size=2, max_penalty=-0.5, level=level), tokenizer)
    clone = pickle.loads(pickle.dumps(reward))
    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in TEXTS]
    call = dict(prompts=["q"] * len(TEXTS), completions=TEXTS, completion_ids=ids)
    assert clone(**call) == reward(**call)
