"""Lazy decoding and the tokenizer call counter, the pieces ``GrpolabTrainer`` uses in ids mode and for its cost
metrics; what they deliver in real runs is ``tests/trainer/test_grpo.py``."""

from __future__ import annotations

import pickle

import pytest

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.trainer.tokenizer_calls import (
    LazyDecodedTexts,
    TokenizerCallCounter,
    lazy_batch_decode,
)


def test_lazy_texts_decode_each_item_once_and_slice():
    tokenizer = build_char_tokenizer()
    calls = []

    def decode(ids, **kwargs):
        calls.append(ids)
        return tokenizer.decode(ids, **kwargs)

    texts = LazyDecodedTexts(decode, [tokenizer("ab")["input_ids"], tokenizer("cd")["input_ids"]], {})
    assert (len(texts), texts.decoded_count) == (2, 0)
    assert texts[1] == texts[-1] == "cd" and texts[0:1] == ["ab"]
    assert len(calls) == 2 and texts.decoded_count == 2
    assert pickle.loads(pickle.dumps(texts)) == ["ab", "cd"]  # text crosses process boundaries


def test_lazy_batch_decode_is_removed_even_after_an_error():
    tokenizer = build_char_tokenizer()
    with pytest.raises(RuntimeError), lazy_batch_decode(tokenizer):
        assert isinstance(tokenizer.batch_decode([[10]]), LazyDecodedTexts)
        raise RuntimeError
    assert tokenizer.batch_decode([[10]]) == [tokenizer.decode([10])]


def test_call_counter_counts_sequences_and_restores_earlier_wrappers():
    tokenizer = build_char_tokenizer()
    outer_calls = []
    original = tokenizer._decode

    def outer(*args, **kwargs):
        outer_calls.append(1)
        return original(*args, **kwargs)

    tokenizer._decode = outer
    counter = TokenizerCallCounter(tokenizer)
    with counter.installed():
        tokenizer(["a", "b", "c"])
        tokenizer.encode("abc")
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True)
        tokenizer.batch_decode([[10], [11]])
    tokenizer.decode([10])
    assert (counter.encoded, counter.decoded) == (5, 2)
    assert tokenizer._decode is outer and len(outer_calls) == 3
    assert "_encode_plus" not in vars(tokenizer)
