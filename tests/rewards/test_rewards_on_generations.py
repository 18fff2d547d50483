"""Text and token variants of the built-in rewards agree on real completions sampled from the tiny model.

The hand-written cases in ``test_rewards_builtin.py`` pin the definitions; this test feeds both variants what a
briefly warm-started model actually produces (tagged answers, malformed tags, truncated completions without EOS),
cut and decoded the way TRL 1.16 cuts and decodes them, and checks that every difference is a documented one.
"""

from __future__ import annotations

import pytest
import torch

from grpolab.data.arithmetic import ArithmeticTask
from grpolab.models.tiny import build_tiny_qwen2
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import Accuracy, CosineLength, Format, Length, Overlong
from grpolab.rewards.answers import answers_match
from grpolab.rewards.tags import ALL_TAGS, last_answer, split_text
from grpolab.data.prompts import PromptEncoder
from grpolab.rewards.vocabulary import describe_vocabulary
from grpolab.trainer.warmstart import SupervisedWarmStart

pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 10


@pytest.fixture(scope="module")
def sampled():
    """(tokenizer, completion IDs as TRL passes them, their decoded text, gold answers) for 128 samples."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 0.13M-parameter model: more threads only contend on a shared 2-core machine
    try:
        yield _sample()
    finally:
        torch.set_num_threads(threads)


def _sample():
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    splits = ArithmeticTask(train_size=400, eval_size=64, max_operand=30, operations=["+", "-"], seed=1234).load()
    model = build_tiny_qwen2(tokenizer, 64, 256, 2, 4, 2, 256, True, seed=0)
    SupervisedWarmStart(steps=100, batch_size=64, lr=3e-3, weight_decay=0.0, warmup_steps=20, cache=False).run(
        model, splits.train, PromptEncoder(tokenizer), None, {}, seed=0)
    prompts = [tokenizer(p)["input_ids"] for p in splits.eval["prompt"]]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    output = model.generate(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                            do_sample=True, temperature=1.5, max_new_tokens=MAX_NEW_TOKENS,
                            pad_token_id=tokenizer.pad_token_id, num_return_sequences=2)
    completion_ids = [_cut_after_eos(row, tokenizer.eos_token_id) for row in output[:, width:].tolist()]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    answers = [a for a in splits.eval["answer"] for _ in range(2)]
    return tokenizer, completion_ids, texts, answers


def _cut_after_eos(ids: list[int], eos: int) -> list[int]:
    """TRL keeps a completion up to and including its first EOS."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def inner_special(tokenizer, ids) -> bool:
    """A special token before the completion's trailing EOS/pad: text decoding drops it, the token variants see it."""
    content = list(ids)
    while content and content[-1] in tokenizer.all_special_ids:
        content.pop()
    return any(i in tokenizer.all_special_ids for i in content)


def both(make, tokenizer, completion_ids, texts, **columns):
    text_reward, token_reward = make("text"), make("token")
    token_reward.bind_tokens(describe_vocabulary(tokenizer, token_reward.token_strings()))
    prompts = ["q"] * len(texts)
    text_values = text_reward(prompts=prompts, completions=texts, completion_ids=completion_ids,
                              **{k: v for k, v in columns.items() if k in text_reward.required_columns})
    token_values = token_reward(prompts=prompts, completions=texts, completion_ids=completion_ids,
                                **{k: v for k, v in columns.items() if k in token_reward.required_columns})
    return text_values, token_values


def test_samples_cover_the_interesting_cases(sampled):
    tokenizer, completion_ids, texts, answers = sampled
    assert any(ids[-1] == tokenizer.eos_token_id for ids in completion_ids)
    assert any(ids[-1] != tokenizer.eos_token_id for ids in completion_ids)  # truncated at MAX_NEW_TOKENS
    values = Format()(prompts=texts, completions=texts, completion_ids=completion_ids)
    assert 0.0 in values and 1.0 in values


def test_format_variants_agree_on_every_sample_without_inner_special_tokens(sampled):
    tokenizer, completion_ids, texts, _ = sampled
    text_values, token_values = both(lambda level: Format(level=level), tokenizer, completion_ids, texts)
    kept = [i for i, ids in enumerate(completion_ids) if not inner_special(tokenizer, ids)]
    assert len(kept) > len(texts) // 2
    assert [text_values[i] for i in kept] == [token_values[i] for i in kept]


def with_think_block(tokenizer, ids, spaced):
    """``<think>7+12</think>`` and the sampled completion (before its EOS), with whitespace around and between the two
    blocks when ``spaced``: " <think>7+12</think>\\n<completion> \\n"."""
    space, newline = tokenizer.encode(" \n", add_special_tokens=False)
    think = tokenizer.encode("<think>7+12</think>", add_special_tokens=False)
    end = len(ids)
    while end and ids[end - 1] in tokenizer.all_special_ids:
        end -= 1
    if not spaced:
        return think + list(ids)
    return [space, *think, newline, *ids[:end], space, newline, *ids[end:]]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("require_think", [False, True])
def test_format_variants_agree_on_samples_with_whitespace_around_and_between_blocks(sampled, strict, require_think):
    tokenizer, completion_ids, _, _ = sampled
    kept = [ids for ids in completion_ids if not inner_special(tokenizer, ids)]
    plain_ids = [with_think_block(tokenizer, ids, spaced=False) for ids in kept]
    spaced_ids = [with_think_block(tokenizer, ids, spaced=True) for ids in kept]
    plain_texts = tokenizer.batch_decode(plain_ids, skip_special_tokens=True)
    spaced_texts = tokenizer.batch_decode(spaced_ids, skip_special_tokens=True)
    assert all(t.startswith(" <think>7+12</think>\n") and t.endswith(" \n") for t in spaced_texts)
    make = lambda level: Format(level=level, require_think=require_think, strict=strict)  # noqa: E731
    text_values, token_values = both(make, tokenizer, spaced_ids, spaced_texts)
    assert text_values == token_values
    if strict:  # something now surrounds every completion
        assert set(text_values) == {0.0}
    else:  # whitespace is not content: the scores without it, and some samples are well formed
        assert text_values == both(make, tokenizer, plain_ids, plain_texts)[0] and 1.0 in text_values


def test_variants_agree_on_completions_with_inner_special_tokens(sampled):
    tokenizer, completion_ids, texts, answers = sampled
    answer_ids = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
    odd = [i for i, ids in enumerate(completion_ids) if inner_special(tokenizer, ids)]
    assert odd, "the sample has no completion with an inner special token"
    for make in (lambda level: Format(level=level), lambda level: Accuracy(level=level, fallbacks=False),
                 lambda level: Length(target=6, tolerance=4, level=level)):
        text_values, token_values = both(make, tokenizer, [completion_ids[i] for i in odd], [texts[i] for i in odd],
                                         answer=[answers[i] for i in odd], answer_ids=[answer_ids[i] for i in odd])
        tag_free_text = [make("text").reward_for(len(texts[i]) - _tag_chars(texts[i])) for i in odd] if isinstance(
            make("text"), Length) else text_values
        assert tag_free_text == token_values


def test_accuracy_variants_differ_only_where_documented(sampled):
    tokenizer, completion_ids, texts, answers = sampled
    answer_ids = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
    text_values, token_values = both(lambda level: Accuracy(level=level, fallbacks=False), tokenizer,
                                     completion_ids, texts, answer=answers, answer_ids=answer_ids)
    assert 1.0 in token_values and 0.0 in token_values
    for text, ids, gold, by_text, by_token in zip(texts, completion_ids, answers, text_values, token_values,
                                                  strict=True):
        if by_text == by_token or inner_special(tokenizer, ids):
            continue
        # Documented: an answer spelled differently from the gold string ("+19", "019") is equal for math-verify
        # only; the token variant compares IDs exactly.
        predicted = last_answer(split_text(text))
        assert by_text == 1.0 and predicted != gold and answers_match(predicted, gold), (text, gold)


@pytest.mark.parametrize(
    "make",
    [lambda level: Length(target=6, tolerance=4, level=level), lambda level: Overlong(max_length=8, cache=3, level=level)],
    ids=["length", "overlong"],
)
def test_length_variants_agree_once_tags_are_counted_in_their_unit(sampled, make):
    tokenizer, completion_ids, texts, _ = sampled
    text_values, token_values = both(make, tokenizer, completion_ids, texts)
    reward = make("text")
    untagged = 0
    for text, ids, by_text, by_token in zip(texts, completion_ids, text_values, token_values, strict=True):
        if inner_special(tokenizer, ids):
            continue
        tag_chars = _tag_chars(text)
        untagged += tag_chars == 0
        if tag_chars == 0:
            assert by_text == by_token, text
        # Documented: text counts characters, token counts tokens; each tag is one token but len(tag) characters.
        assert [by_token] == reward.score_text(completions=["x" * (len(text) - tag_chars)]), text
    assert untagged > 0


def _tag_chars(text: str) -> int:
    """Characters a text-level length counts beyond the token count: each tag is one token of len(tag) characters."""
    return sum(text.count(tag) * (len(tag) - 1) for tag in ALL_TAGS)


def test_cosine_length_variants_agree_where_accuracy_does_once_tags_are_counted(sampled):
    tokenizer, completion_ids, texts, answers = sampled
    answer_ids = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
    columns = dict(answer=answers, answer_ids=answer_ids)
    text_values, token_values = both(lambda level: CosineLength(max_length=8, fallbacks=False, level=level),
                                     tokenizer, completion_ids, texts, **columns)
    text_correct, token_correct = both(lambda level: Accuracy(level=level, fallbacks=False), tokenizer,
                                       completion_ids, texts, **columns)
    reward = CosineLength(max_length=8)
    compared = 0
    for text, ids, by_text, by_token, correct, same in zip(texts, completion_ids, text_values, token_values,
                                                           text_correct, token_correct, strict=True):
        if inner_special(tokenizer, ids) or correct != same:
            continue  # accuracy's documented differences (spellings, inner special tokens) carry over
        compared += 1
        assert by_text == reward.reward_for(correct == 1.0, len(text))
        assert by_token == reward.reward_for(correct == 1.0, len(text) - _tag_chars(text)), text
    assert compared > len(texts) // 2 and 1.0 in token_correct
