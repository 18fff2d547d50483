"""describe_vocabulary: special and whitespace-only IDs and tag encodings, read once through public tokenizer calls."""

from __future__ import annotations

import pickle

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import Format, describe_vocabulary
from grpolab.rewards.vocabulary import Vocabulary


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style: '▁' marks a space, and decoding a lone '▁' gives '' (a stripped leading space)."""
    vocab = {"<unk>": 0, "</s>": 1, "▁": 2, "▁a": 3, "a": 4, "b": 5, "▁b": 6, "▁▁": 7, "<answer>": 8}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "a"), ("▁", "b"), ("▁", "▁")], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2/Qwen-style byte-level BPE: 'Ġ' is a space byte, 'Ċ' a newline, merged runs are one token."""
    vocab = {"a": 0, "b": 1, "Ġ": 2, "Ċ": 3, "ĠĠ": 4, "Ġa": 5, "ĊĊ": 6, "<|endoftext|>": 7, "aĊ": 8}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "Ġ"), ("Ġ", "a"), ("Ċ", "Ċ"), ("a", "Ċ")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def test_char_tokenizer_whitespace_is_one_id_per_character():
    tokenizer = build_char_tokenizer()
    vocabulary = describe_vocabulary(tokenizer, ["<answer>", "19"])
    assert vocabulary.special_ids == set(tokenizer.all_special_ids)
    assert sorted(tokenizer.decode([i]) for i in vocabulary.whitespace_ids) == sorted(" \t\n\r\x0b\x0c")
    assert vocabulary.ids("19") == tuple(tokenizer.encode("19", add_special_tokens=False))


def test_metaspace_space_token_counts_as_whitespace_although_it_decodes_alone_to_nothing():
    tokenizer = metaspace_tokenizer()
    assert tokenizer.decode([2]) == ""
    vocabulary = describe_vocabulary(tokenizer)
    assert vocabulary.whitespace_ids == {2, 7}  # '▁' and '▁▁'; never '▁a'
    assert vocabulary.special_ids == {0, 1}


def test_byte_level_merged_whitespace_runs_are_whitespace_ids():
    vocabulary = describe_vocabulary(byte_level_tokenizer())
    assert vocabulary.whitespace_ids == {2, 3, 4, 6}  # 'Ġ', 'Ċ', 'ĠĠ', 'ĊĊ'; not 'Ġa' or 'aĊ'


def test_format_token_variant_ignores_merged_whitespace_tokens_like_the_text_variant():
    tokenizer = byte_level_tokenizer()
    tokenizer.add_tokens(["<answer>", "</answer>", "<think>", "</think>"])
    text_reward, token_reward = Format(level="text"), Format(level="token")
    token_reward.bind_tokens(describe_vocabulary(tokenizer, token_reward.token_strings()))
    completions = ["<answer>a</answer>\n\n", "  <answer>a</answer>", "<answer>a</answer>a\n", "<answer>  </answer>"]
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in completions]
    assert any(6 in row or 4 in row for row in ids), "the merged whitespace tokens must occur"
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert texts == completions
    expected = [1.0, 1.0, 0.0, 0.0]
    assert text_reward(prompts=[""] * 4, completions=texts, completion_ids=ids) == expected
    assert token_reward(prompts=[""] * 4, completions=None, completion_ids=ids) == expected


def test_vocabulary_pickles_and_names_strings_it_was_not_given():
    vocabulary = describe_vocabulary(build_char_tokenizer(), ["<think>"])
    assert pickle.loads(pickle.dumps(vocabulary)) == vocabulary
    with pytest.raises(KeyError, match=r"'<answer>' was not encoded when the vocabulary was described"):
        vocabulary.ids("<answer>")


def test_a_reward_bound_without_its_tags_fails_naming_the_string():
    with pytest.raises(KeyError, match="token_strings"):
        Format(level="token").bind_tokens(Vocabulary(special_ids=frozenset(), whitespace_ids=frozenset()))
