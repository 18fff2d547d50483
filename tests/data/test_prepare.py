"""Prompt preparation: the ids-mode cache, pre-tokenized datasets, the round-trip check, prompt_ids validation, and
the JSONL/Parquet loader (``data=jsonl``)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from contextlib import contextmanager

import pytest
from datasets import Dataset

from grpolab.data.jsonl import PromptFile
from grpolab.data.prepare import (
    ROUND_TRIP_FILE,
    RoundTrip,
    TextPrompts,
    TokenIdPrompts,
    _arrow_ids_look_valid,
    check_prompt_ids,
    save_atomically,
)
from grpolab.data.prompts import PromptEncoder
from grpolab.data.task import DataError
from grpolab.models.tokenizer import build_char_tokenizer

DATA_KEY = {"_target_": "grpolab.data.arithmetic.ArithmeticTask", "train_size": 4}
PROMPTS = ["12+7=", "3-5=", "10+10=", "0-9="]


def ids_prompts(tokenizer, cache_dir) -> TokenIdPrompts:
    return TokenIdPrompts(PromptEncoder(tokenizer), str(cache_dir))


def rows(prompts=PROMPTS) -> Dataset:
    return Dataset.from_list([{"prompt": p, "answer": "1", "solution": "<answer>1</answer>"} for p in prompts])


@contextmanager
def tokenizer_calls(tokenizer):
    """Count every encode/decode entry point a transformers 5 tokenizer has, on this instance only."""
    calls: Counter[str] = Counter()
    names = ("encode", "_encode_plus", "apply_chat_template", "tokenize", "decode", "batch_decode", "_decode",
             "convert_ids_to_tokens")
    for name in names:
        original = getattr(tokenizer, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(tokenizer, name, counting)
    try:
        yield calls
    finally:
        for name in names:
            delattr(tokenizer, name)


def test_second_prepare_reads_the_cache_without_tokenizing(tmp_path):
    first_tokenizer, second_tokenizer = build_char_tokenizer(), build_char_tokenizer()  # two runs, two instances
    with tokenizer_calls(first_tokenizer) as first:
        prepared = ids_prompts(first_tokenizer, tmp_path).prepare(rows(), "train", {"answer_ids"}, DATA_KEY)
    with tokenizer_calls(second_tokenizer) as second:
        again = ids_prompts(second_tokenizer, tmp_path).prepare(rows(), "train", {"answer_ids"}, DATA_KEY)
    assert first["_encode_plus"] > 0
    assert sum(second.values()) == 0, second
    assert again[:] == prepared[:]
    assert prepared["prompt_ids"] == [first_tokenizer(p)["input_ids"] for p in PROMPTS]
    assert prepared["answer_ids"][0] == first_tokenizer("1", add_special_tokens=False)["input_ids"]
    assert "prompt" not in prepared.column_names


@pytest.mark.parametrize(
    "change",
    ["data config", "tokenizer", "needed columns", "rows", "chat template kwargs"],
)
def test_cache_key_covers_tokenizer_data_and_columns(tmp_path, change):
    ids_prompts(build_char_tokenizer(), tmp_path).prepare(rows(), "train", set(), DATA_KEY)
    tokenizer, key, needed, dataset, chat = build_char_tokenizer(), DATA_KEY, set(), rows(), {}
    if change == "data config":
        key = {**DATA_KEY, "train_size": 5}
    elif change == "tokenizer":
        tokenizer = build_char_tokenizer(tag_tokens=("<answer>", "</answer>"))
    elif change == "needed columns":
        needed = {"answer_ids"}
    elif change == "rows":
        dataset = rows(PROMPTS[:3])
    else:
        chat = {"enable_thinking": False}
    with tokenizer_calls(tokenizer) as calls:
        TokenIdPrompts(PromptEncoder(tokenizer, chat), str(tmp_path)).prepare(dataset, "train", needed, key)
    assert calls["_encode_plus"] > 0
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_without_cache_dir_prompts_are_tokenized_every_time():
    tokenizer = build_char_tokenizer()
    with tokenizer_calls(tokenizer) as calls:
        TokenIdPrompts(PromptEncoder(tokenizer), None).prepare(rows(), "train", set(), DATA_KEY)
        TokenIdPrompts(PromptEncoder(tokenizer), None).prepare(rows(), "train", set(), DATA_KEY)
    assert calls["_encode_plus"] == 2  # one batched call per prepare


def test_pretokenized_dataset_is_used_without_any_tokenizer_call(tmp_path):
    tokenizer = build_char_tokenizer()
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    dataset = Dataset.from_list([{"prompt_ids": i, "prompt": p, "answer": "1"} for i, p in zip(ids, PROMPTS)])
    with tokenizer_calls(tokenizer) as calls:
        prepared = ids_prompts(tokenizer, tmp_path).prepare(dataset, "train", set(), DATA_KEY)
    assert sum(calls.values()) == 0
    assert prepared["prompt_ids"] == ids
    assert "prompt" not in prepared.column_names  # the IDs are what the model reads
    assert not any(tmp_path.iterdir())  # nothing to cache


def test_pretokenized_dataset_gets_answer_ids_without_touching_prompts(tmp_path):
    tokenizer = build_char_tokenizer()
    dataset = Dataset.from_list([{"prompt_ids": [10, 11], "answer": "19"}])
    with tokenizer_calls(tokenizer) as calls:
        prepared = ids_prompts(tokenizer, tmp_path).prepare(dataset, "train", {"answer_ids"}, DATA_KEY)
    assert calls["_encode_plus"] == 1  # the answer, nothing else
    assert prepared["answer_ids"] == [tokenizer("19", add_special_tokens=False)["input_ids"]]


def test_chat_prompts_are_rendered_like_trl_and_flagged(tmp_path, caplog):
    tokenizer = build_char_tokenizer()
    chats = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}] for p in PROMPTS]
    dataset = Dataset.from_list([{"prompt": c, "answer": "1"} for c in chats])
    with caplog.at_level(logging.WARNING, logger="grpolab.data.prepare"):
        prepared = ids_prompts(tokenizer, tmp_path).prepare(dataset, "train", set(), DATA_KEY)
    expected = tokenizer.apply_chat_template(chats, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert prepared["prompt_ids"] == [list(i) for i in expected["input_ids"]]
    assert tokenizer.decode(prepared["prompt_ids"][0]).endswith("<|im_start|>assistant\n")
    assert [r.message for r in caplog.records] == [
        "tokenizer_mode=ids: train prompts are chat messages; text rewards reading `prompts` get the decoded "
        "chat-templated text in ids mode (the message list in text mode)"
    ]


def test_lossless_prompts_prepare_silently(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="grpolab.data.prepare"):
        ids_prompts(build_char_tokenizer(), tmp_path).prepare(rows(), "train", set(), DATA_KEY)
    assert not caplog.records


def test_lossy_round_trip_is_reported_at_prepare_and_on_every_cache_hit(tmp_path, caplog):
    dataset = rows(["12+7=", "café 1+1=", "2+2="])  # 'é' is not in the char vocabulary: it becomes <|unk|>
    with caplog.at_level(logging.WARNING, logger="grpolab.data.prepare"):
        ids_prompts(build_char_tokenizer(), tmp_path).prepare(dataset, "train", set(), DATA_KEY)
        first = [r.message for r in caplog.records]
        caplog.clear()
        ids_prompts(build_char_tokenizer(), tmp_path).prepare(dataset, "train", set(), DATA_KEY)
        second = [r.message for r in caplog.records]
    assert len(first) == 1 and first == second
    assert "does not round-trip 1 of 3 train prompts (row 1: 'café 1+1=' decodes to 'caf 1+1=')" in first[0]
    cached = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert json.loads((cached / ROUND_TRIP_FILE).read_text())["lossy_rows"] == 1


def test_round_trip_warns_once_per_reason(caplog):
    report = RoundTrip(rows=4, lossy_rows=2, example={"row": 3, "text": "é", "decoded": ""}, conversational=True,
                       response_parser=True)
    with caplog.at_level(logging.WARNING, logger="grpolab.data.prepare"):
        report.warn("eval")
        lines = [r.getMessage() for r in caplog.records]
        caplog.clear()
        RoundTrip(rows=4).warn("train")
        assert not caplog.records
    assert len(lines) == 3 and all(line.startswith("tokenizer_mode=ids: ") for line in lines)
    assert "2 of 4 eval prompts (row 3: 'é' decodes to '')" in lines[0]


def test_batched_encoding_equals_one_by_one():
    encoder = PromptEncoder(build_char_tokenizer())
    assert encoder.encode_texts(PROMPTS) == [encoder.encode_texts([p])[0] for p in PROMPTS]


@pytest.mark.parametrize(
    ("prompt_ids", "message"),
    [
        ([[5, 6], [7, 500]], "row 1 of 'prompt_ids' has token id 500 outside the model's vocabulary [0, 109)"),
        ([[5, 6], [-1]], "row 1 of 'prompt_ids' has token id -1 outside"),
        ([[5.0, 6.0]], "must hold non-empty lists of ints; row 0 has [5.0, 6.0]"),
        ([["5", "6"]], "must hold non-empty lists of ints; row 0 has ['5', '6']"),
        (["5 6"], "must hold non-empty lists of ints; row 0 has '5 6'"),
        ([[[5], [6]]], "must hold non-empty lists of ints; row 0 has [[5], [6]]"),
        ([[5], []], "must hold non-empty lists of ints; row 1 has []"),
        ([[5], None], "must hold non-empty lists of ints; row 1 has None"),
        ([[True, False]], "must hold non-empty lists of ints; row 0 has [True, False]"),
    ],
)
def test_bad_prompt_ids_fail_in_one_line_naming_the_row(prompt_ids, message):
    dataset = Dataset.from_dict({"prompt_ids": prompt_ids})
    with pytest.raises(DataError) as error:
        check_prompt_ids(dataset, 109, where="train split")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("train split: ")


def test_typed_id_columns_are_checked_without_walking_the_rows():
    valid = Dataset.from_dict({"prompt_ids": [[0, 5], [108]]})
    assert _arrow_ids_look_valid(valid, 109)  # Arrow min/max: no Python loop over the rows
    check_prompt_ids(valid, 109, where="train split")
    assert not _arrow_ids_look_valid(valid, 108)  # 108 is out of range: the row walk then names the row
    with pytest.raises(DataError, match="row 1 of 'prompt_ids' has token id 108"):
        check_prompt_ids(valid, 108, where="train split")
    assert not _arrow_ids_look_valid(Dataset.from_dict({"prompt_ids": [[0.0, 5.0]]}), 109)  # floats: walked


def test_text_mode_needs_text_and_ignores_given_ids():
    tokenizer = build_char_tokenizer()
    with pytest.raises(DataError, match="tokenizer_mode=text needs a 'prompt' column.*needs tokenizer_mode=ids"):
        TextPrompts(PromptEncoder(tokenizer)).prepare(Dataset.from_dict({"prompt_ids": [[5]], "answer": ["1"]}),
                                                      "train", (), {})
    both = Dataset.from_dict({"prompt": ["1+1="], "prompt_ids": [[5]], "answer": ["2"]})
    assert TextPrompts(PromptEncoder(tokenizer)).prepare(both, "train", (), {}).column_names == ["prompt", "answer"]


def test_losing_the_race_to_write_the_cache_keeps_the_winner(tmp_path):
    winner, loser = rows(PROMPTS[:1]), rows(PROMPTS[1:2])
    save_atomically(winner, tmp_path / "key", RoundTrip(rows=1))
    save_atomically(loser, tmp_path / "key", RoundTrip(rows=1))
    assert [p.name for p in tmp_path.iterdir()] == ["key"]
    assert Dataset.load_from_disk(str(tmp_path / "key"))["prompt"] == PROMPTS[:1]


# -- data=jsonl ----------------------------------------------------------------------------------------------------


def write_jsonl(path, records):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def prompt_file(path, **overrides) -> PromptFile:
    return PromptFile(**{"path": path, "eval_path": None, "eval_size": 2, "train_size": None, "seed": 0,
                         **overrides})


def test_jsonl_with_prompt_ids_loads_and_splits(tmp_path):
    records = [{"prompt_ids": [10 + i, 11], "answer": i, "solution": f"<answer>{i}</answer>"} for i in range(6)]
    splits = prompt_file(write_jsonl(tmp_path / "rows.jsonl", records)).load()
    assert (len(splits.train), len(splits.eval)) == (4, 2)
    assert isinstance(splits.train[0]["answer"], str)  # numeric answers are compared as strings
    assert sorted([*splits.train["prompt_ids"], *splits.eval["prompt_ids"]]) == sorted(r["prompt_ids"] for r in records)


def test_parquet_and_a_separate_eval_file(tmp_path):
    Dataset.from_list([{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(5)]).to_parquet(tmp_path / "t.parquet")
    eval_path = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "9+9=", "answer": "18"}])
    splits = prompt_file(str(tmp_path / "t.parquet"), eval_path=eval_path, train_size=3).load()
    assert (len(splits.train), splits.eval["prompt"]) == (3, ["9+9="])


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"prompt": "1+1=", "answer": "2"}, "not json"], r"rows\.jsonl': line 2 is not valid JSON: Expecting value"),
        ([{"question": "1+1=", "answer": "2"}] * 3, r"rows\.jsonl' needs a 'prompt' or 'prompt_ids' column"),
        ([{"prompt": "1+1="}] * 3, r"rows\.jsonl' needs an 'answer' column; it has prompt"),
    ],
)
def test_unreadable_or_incomplete_files_fail_in_one_line(tmp_path, records, message):
    path = write_jsonl(tmp_path / "rows.jsonl", records)
    with pytest.raises(DataError, match=message) as error:
        prompt_file(path).load()
    assert "\n" not in str(error.value)


def test_mixed_prompt_ids_load_and_are_rejected_before_training(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt_ids": [5, "a"], "answer": "1"}] * 4)
    splits = prompt_file(path).load()
    with pytest.raises(DataError, match=r"^train split: column 'prompt_ids' must hold .*row 0 has \[5, 'a'\]"):
        ids_prompts(build_char_tokenizer(), tmp_path).prepare(splits.train, "train", set(), DATA_KEY)


def test_unsupported_or_missing_files(tmp_path):
    with pytest.raises(DataError, match="unsupported file type"):
        prompt_file(str(tmp_path / "rows.txt")).load()
    with pytest.raises(DataError, match="is not a file"):
        prompt_file(str(tmp_path / "missing.jsonl")).load()
