"""The byte-level BPE tokenizer trained on the vendored GSM8K text, and the tiny Qwen2 sized by it.

Also the round-trip drift figures docs/tokenizer_mode.md quotes (benchmarks/bpe_round_trip.py writes them): decoding
then re-encoding canonical IDs gives them back for every GSM8K prompt; IDs encoded piece by piece mostly do not.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from grpolab.models.bpe import bpe_tokenizer_from_jsonl, train_bpe_tokenizer
from grpolab.models.tiny import build_tiny_qwen2
from grpolab.rewards.tags import ALL_TAGS
from grpolab.rewards.vocabulary import describe_vocabulary

VOCAB_SIZE = 4096
SYSTEM_PROMPT = ("Solve the problem. Think inside <think></think>, then give only the final number inside "
                 "<answer></answer>.")


@pytest.fixture(scope="module")
def gsm8k_rows(gsm8k_test_split):
    return [json.loads(line) for line in gsm8k_test_split.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tokenizer(gsm8k_test_split):
    return bpe_tokenizer_from_jsonl(str(gsm8k_test_split), ["question", "answer"], VOCAB_SIZE)


def test_the_vocabulary_has_the_requested_size_and_real_merges(tokenizer, gsm8k_rows):
    assert len(tokenizer) == VOCAB_SIZE
    text = gsm8k_rows[0]["question"]
    ids = tokenizer(text)["input_ids"]
    assert len(text) / len(ids) > 3  # subwords: several characters per token on the text it was trained on
    assert tokenizer.convert_ids_to_tokens(tokenizer(" market")["input_ids"]) == ["Ġmarket"]  # a whole-word merge


def test_tags_are_several_ordinary_tokens(tokenizer):
    for tag in ALL_TAGS:
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) > 1 and not set(ids) & set(tokenizer.all_special_ids), (tag, ids)
    vocabulary = describe_vocabulary(tokenizer, ALL_TAGS)
    assert all(len(vocabulary.ids(tag)) > 1 for tag in ALL_TAGS)
    assert tokenizer.encode("\n", add_special_tokens=False)[0] in vocabulary.whitespace_ids


def test_special_tokens_padding_and_the_chat_template(tokenizer):
    assert (tokenizer.pad_token, tokenizer.eos_token) == ("<|pad|>", "<|endoftext|>")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.padding_side == "left"
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+3?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    assert tokenizer.decode(ids) == (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
                                     "What is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # one token, not split by the BPE
    batch = tokenizer(["7", "What is 2+3?"], padding=True)["input_ids"]
    assert batch[0][0] == tokenizer.pad_token_id  # left padding, as generation needs


def test_training_is_deterministic(gsm8k_test_split):
    first, again = (bpe_tokenizer_from_jsonl(str(gsm8k_test_split), ["question", "answer"], VOCAB_SIZE)
                    for _ in range(2))
    assert again.backend_tokenizer.to_str() == first.backend_tokenizer.to_str()


def test_bad_settings_fail_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="^vocab_size=200 leaves no merges"):
        train_bpe_tokenizer(["a b c"], vocab_size=200)
    with pytest.raises(FileNotFoundError, match="^model.tokenizer.path='nowhere.jsonl' is not a file"):
        bpe_tokenizer_from_jsonl("nowhere.jsonl", ["question"], VOCAB_SIZE)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(ValueError,
                       match="^model.tokenizer.fields: line 1 of .* has no 'answer' field; it has question$"):
        bpe_tokenizer_from_jsonl(str(rows), ["question", "answer"], VOCAB_SIZE)


def test_the_tiny_qwen2_is_sized_by_the_tokenizer(tokenizer):
    model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 512, True, seed=0)
    assert model.config.vocab_size == VOCAB_SIZE
    assert (model.config.pad_token_id, model.generation_config.eos_token_id) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id)
    ids = torch.tensor([tokenizer("Janet has 3 ducks.")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.size(1), VOCAB_SIZE)


# -- round-trip drift ------------------------------------------------------------------------------------------------


def reencoded(tokenizer, ids: list[int]) -> list[int]:
    """Decode then encode again: what a text-mode pipeline makes of pre-tokenized IDs."""
    return tokenizer(tokenizer.decode(ids, skip_special_tokens=False), add_special_tokens=False)["input_ids"]


def test_decoding_is_lossless_on_every_gsm8k_problem(tokenizer, gsm8k_rows):
    texts = [row["question"] + "\n" + row["answer"] for row in gsm8k_rows]
    assert [tokenizer.decode(tokenizer(text)["input_ids"]) for text in texts] == texts


@pytest.mark.slow  # re-encodes every GSM8K question, plain and as a chat: ~2 s
def test_canonical_prompt_ids_survive_the_round_trip(tokenizer, gsm8k_rows):
    plain = [tokenizer(row["question"])["input_ids"] for row in gsm8k_rows]
    chat = tokenizer.apply_chat_template(
        [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["question"]}]
         for row in gsm8k_rows], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert sum(reencoded(tokenizer, ids) != ids for ids in plain) == 0
    assert sum(reencoded(tokenizer, list(ids)) != list(ids) for ids in chat) == 0


def test_piecewise_encoded_prompt_ids_drift(tokenizer, gsm8k_rows):
    """IDs encoded sentence by sentence (each keeping its trailing space) decode to the very question text, yet the
    space then merges with the next word: almost every prompt re-encodes differently."""
    sentences = [re.findall(r".+?(?:[.?!]\s+|$)", row["question"]) for row in gsm8k_rows]
    piecewise = [[i for part in parts for i in tokenizer(part)["input_ids"]] for parts in sentences]
    assert [tokenizer.decode(ids) for ids in piecewise] == [row["question"] for row in gsm8k_rows]
    drifted = sum(reencoded(tokenizer, ids) != ids for ids in piecewise)
    assert drifted / len(gsm8k_rows) > 0.95, drifted
