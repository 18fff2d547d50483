"""Prompt preparation per tokenizer mode: text prompts for TRL to tokenize, or token IDs prepared once.

In ``ids`` mode the prompt leaves this module as token IDs (``prompt_ids``) and is never turned back into text on
the way to generation. The IDs are produced by exactly the call TRL would make on the text (``encode_prompts``),
which is what makes the two modes generate identical sequences for the same seed. Where the two modes can still
differ (the tokenizer does not round-trip the prompt text, chat prompts, a tokenizer response schema) the ids mode
says so with one warning at start-up; see ``RoundTrip``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from grpolab.config.hashing import config_hash
from grpolab.config.enums import TokenizerMode
from grpolab.config.validate import ConfigError

log = logging.getLogger(__name__)

PROMPT_IDS = "prompt_ids"
ANSWER_IDS = "answer_ids"
# Written next to a cached prepared dataset: what the round-trip check found when the prompts were tokenized.
ROUND_TRIP_FILE = "grpolab_round_trip.json"
ENCODE_BATCH = 1000


class DatasetError(ConfigError):
    """A dataset that cannot be used as configured; the message is one line naming the split and row."""


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str | Sequence[Mapping[str, Any]]], chat_template_kwargs: Mapping | None = None
) -> list[list[int]]:
    """Token IDs of a batch of prompts, by the very call ``GRPOTrainer._tokenize_prompts`` (trl 1.16) makes.

    All prompts of a batch must be of one kind (text, or chat messages), as in a TRL dataset.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> encode_prompts(build_char_tokenizer(), ["1+2="])[0] == build_char_tokenizer()("1+2=")["input_ids"]
    True
    """
    if not prompts:
        return []
    if isinstance(prompts[0], str):
        return [list(ids) for ids in tokenizer(text=list(prompts))["input_ids"]]
    encoded = tokenizer.apply_chat_template(
        conversation=[list(prompt) for prompt in prompts], add_generation_prompt=True, tokenize=True,
        return_dict=True, **dict(chat_template_kwargs or {}),
    )
    return [list(ids) for ids in encoded["input_ids"]]


def encode_prompt(
    tokenizer: Any, prompt: str | Sequence[Mapping[str, Any]], chat_template_kwargs: Mapping | None = None
) -> list[int]:
    """Token IDs of one prompt, exactly as ``GRPOTrainer._tokenize_prompts`` (trl 1.16) computes them."""
    return encode_prompts(tokenizer, [prompt], chat_template_kwargs)[0]


def encode_answer(tokenizer: Any, answer: str) -> list[int]:
    """IDs of the gold answer string as it appears inside a completion (no BOS/EOS)."""
    return list(text_tokenizer(tokenizer)(answer, add_special_tokens=False)["input_ids"])


def text_tokenizer(processing_class: Any) -> Any:
    """The tokenizer inside a processor (vision-language models), or the tokenizer itself."""
    return getattr(processing_class, "tokenizer", processing_class)


def tokenizer_fingerprint(processing_class: Any) -> str:
    """A hash of everything that decides how text becomes IDs (vocabulary, merges, special tokens, chat template)."""
    tokenizer = text_tokenizer(processing_class)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return config_hash(type(processing_class).__name__, body, getattr(processing_class, "chat_template", None),
                       tokenizer.all_special_tokens)


def check_prompt_ids(dataset: Dataset, vocab_size: int, where: str) -> None:
    """Fail with one line naming the row when ``prompt_ids`` is not a list of in-vocabulary ints.

    A column Arrow already types as lists of integers is checked with vectorised min/max; anything else (or a
    violation) is walked row by row to name the first bad row.
    """
    if _arrow_ids_look_valid(dataset, vocab_size):
        return
    for row, ids in enumerate(dataset[PROMPT_IDS]):
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise DatasetError(
                f"{where}: column '{PROMPT_IDS}' must hold non-empty lists of ints; row {row} has {ids!r:.80}"
            )
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise DatasetError(
                f"{where}: row {row} of '{PROMPT_IDS}' has token id {bad} outside the model's vocabulary "
                f"[0, {vocab_size}) (tokenizer_mode=ids with a dataset tokenized for another model?)"
            )


def _arrow_ids_look_valid(dataset: Dataset, vocab_size: int) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = dataset.data.column(PROMPT_IDS)
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
        return False
    if len(column) == 0:
        return True
    column = column.combine_chunks()
    values = column.flatten()
    if column.null_count or values.null_count or pc.min(pc.list_value_length(column)).as_py() == 0:
        return False
    bounds = pc.min_max(values)
    return bounds["min"].as_py() >= 0 and bounds["max"].as_py() < vocab_size


@dataclass
class RoundTrip:
    """Whether decoding a prompt's IDs gives back the prompt text: what ids-mode rewards and logs see as the prompt.

    Prompt IDs, completions, losses and token rewards are equal in both modes whatever this says (the IDs come from
    the same call). It matters for a text reward that reads ``prompts``: text mode hands it the original prompt, ids
    mode hands it ``decode(prompt_ids)``.
    """

    rows: int
    lossy_rows: int = 0
    example: dict[str, Any] | None = None
    conversational: bool = False
    response_parser: bool = False
    notes: list[str] = field(default_factory=list)

    def caveats(self, split: str) -> list[str]:
        """One line per reason the ids mode may differ from the text mode; empty when the modes match exactly."""
        lines = []
        if self.lossy_rows:
            example = self.example or {}
            lines.append(
                f"tokenizer_mode=ids: the tokenizer does not round-trip {self.lossy_rows} of {self.rows} {split} "
                f"prompts (row {example.get('row')}: {example.get('text')!r:.60} decodes to "
                f"{example.get('decoded')!r:.60}); prompt IDs, completions, losses and token rewards still match "
                f"tokenizer_mode=text, but text rewards reading `prompts` and the completion log see the decoded "
                f"prompt, not the original text"
            )
        if self.conversational:
            lines.append(
                f"tokenizer_mode=ids: {split} prompts are chat messages; text rewards reading `prompts` get the "
                f"decoded chat-templated text in ids mode (the message list in text mode)"
            )
        if self.response_parser:
            lines.append(
                "tokenizer_mode=ids: the tokenizer has a response schema, which TRL applies to completions of chat "
                "prompts in text mode only; text rewards may see different completions in the two modes"
            )
        return lines


def round_trip(
    tokenizer: Any, prompts: Sequence[Any], prompt_ids: Sequence[Sequence[int]], chat_template_kwargs: Mapping | None
) -> RoundTrip:
    """Compare each prompt with the decode of its IDs (text prompts: the text TRL would tokenize; chat prompts: the
    rendered template, special tokens kept)."""
    report = RoundTrip(rows=len(prompts))
    if not prompts:
        return report
    report.conversational = not isinstance(prompts[0], str)
    if report.conversational:
        texts = tokenizer.apply_chat_template(
            [list(p) for p in prompts], add_generation_prompt=True, tokenize=False, **dict(chat_template_kwargs or {})
        )
        decoded = text_tokenizer(tokenizer).batch_decode(prompt_ids, skip_special_tokens=False)
        report.response_parser = any(
            getattr(text_tokenizer(tokenizer), name, None) is not None
            for name in ("response_template", "response_schema")
        )
    else:
        texts = list(prompts)
        decoded = text_tokenizer(tokenizer).batch_decode(prompt_ids, skip_special_tokens=True)
    for row, (text, back) in enumerate(zip(texts, decoded, strict=True)):
        if text != back:
            report.lossy_rows += 1
            if report.example is None:
                report.example = {"row": row, "text": text, "decoded": back}
    return report


def _warn(report: RoundTrip, split: str) -> None:
    for line in report.caveats(split):
        log.warning(line)


class TextPrompts:
    """``tokenizer_mode=text``: TRL tokenizes the ``prompt`` text on every step (its stock behaviour)."""

    mode = TokenizerMode.text

    def prepare(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str], key: Mapping[str, Any],
                split: str) -> Dataset:
        if "prompt" not in dataset.column_names:
            raise DatasetError(
                f"tokenizer_mode=text needs a 'prompt' column, but the {split} split has {dataset.column_names}; "
                f"a pre-tokenized dataset (with '{PROMPT_IDS}') needs tokenizer_mode=ids"
            )
        if PROMPT_IDS in dataset.column_names:
            log.info("tokenizer_mode=text: the %s split's '%s' column is ignored (TRL tokenizes 'prompt')",
                     split, PROMPT_IDS)
            dataset = dataset.remove_columns(PROMPT_IDS)
        return _add_answer_ids(dataset, tokenizer, needed_columns)


class TokenIdPrompts:
    """``tokenizer_mode=ids``: prompts become ``prompt_ids`` once, cached by tokenizer + data config.

    A dataset that already has a ``prompt_ids`` column is used as is (validated, never re-tokenized; a ``prompt``
    text column next to it is dropped, the IDs being what the model reads). ``chat_template_kwargs`` must be the
    trainer's (``trainer.chat_template_kwargs``) so chat prompts render as TRL would render them.
    """

    mode = TokenizerMode.ids

    def __init__(self, cache_dir: str | None, chat_template_kwargs: Mapping[str, Any] | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def prepare(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str], key: Mapping[str, Any],
                split: str) -> Dataset:
        if PROMPT_IDS in dataset.column_names:
            return self._pretokenized(dataset, tokenizer, needed_columns, split)
        if "prompt" not in dataset.column_names:
            raise DatasetError(f"the {split} split has neither 'prompt' nor '{PROMPT_IDS}': {dataset.column_names}")
        fingerprint = tokenizer_fingerprint(tokenizer)
        cache_key = config_hash(dict(key), split, fingerprint, sorted(needed_columns), dataset._fingerprint,
                                self.chat_template_kwargs)
        cached = self.cache_dir / cache_key if self.cache_dir is not None else None
        if cached is not None and cached.exists():
            log.info("ids mode: loaded %s prompts from cache %s", split, cached)
            report_file = cached / ROUND_TRIP_FILE
            if report_file.exists():
                _warn(RoundTrip(**json.loads(report_file.read_text(encoding="utf-8"))), split)
            return load_from_disk(str(cached))
        prepared, report = self._tokenize(dataset, tokenizer, needed_columns, split, fingerprint)
        _warn(report, split)
        if cached is None:
            return prepared
        save_atomically(prepared, cached, report)
        log.info("ids mode: tokenized %d %s prompts, cached at %s", len(prepared), split, cached)
        return load_from_disk(str(cached))  # memory-mapped, like a cache hit

    def _tokenize(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str], split: str,
                  fingerprint: str) -> tuple[Dataset, RoundTrip]:
        prepared = dataset.map(
            lambda rows: {PROMPT_IDS: encode_prompts(tokenizer, rows["prompt"], self.chat_template_kwargs)},
            batched=True, batch_size=ENCODE_BATCH, remove_columns=["prompt"],
            # An explicit fingerprint: datasets would otherwise hash (pickle) the tokenizer inside the closure.
            new_fingerprint=config_hash(dataset._fingerprint, PROMPT_IDS, fingerprint, self.chat_template_kwargs),
            desc=f"tokenizing {split} prompts",
        )
        report = RoundTrip(rows=len(dataset))
        for start in range(0, len(dataset), ENCODE_BATCH):
            part = round_trip(tokenizer, dataset[start : start + ENCODE_BATCH]["prompt"],
                              prepared[start : start + ENCODE_BATCH][PROMPT_IDS], self.chat_template_kwargs)
            if part.example is not None and report.example is None:
                report.example = {**part.example, "row": part.example["row"] + start}
            report.lossy_rows += part.lossy_rows
            report.conversational |= part.conversational
            report.response_parser |= part.response_parser
        return _add_answer_ids(prepared, tokenizer, needed_columns, fingerprint), report

    def _pretokenized(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str],
                      split: str) -> Dataset:
        check_prompt_ids(dataset, len(text_tokenizer(tokenizer)), where=f"{split} split")
        if "prompt" in dataset.column_names:
            dataset = dataset.remove_columns("prompt")
        log.info("ids mode: %s split carries '%s'; used as given, without tokenizing prompts (its equivalence with "
                 "a text-mode run cannot be checked)", split, PROMPT_IDS)
        return _add_answer_ids(dataset, tokenizer, needed_columns)


def save_atomically(prepared: Dataset, cached: Path, report: RoundTrip | None = None) -> None:
    """Write to a private directory, then rename: two jobs of a sweep preparing the same split cannot collide."""
    staging = cached.with_name(f"{cached.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    prepared.save_to_disk(str(staging))
    if report is not None:
        (staging / ROUND_TRIP_FILE).write_text(json.dumps(asdict(report)), encoding="utf-8")
    try:
        staging.rename(cached)
    except OSError:
        if not cached.exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another job won the race with identical content


def _add_answer_ids(dataset: Dataset, tokenizer: Any, needed_columns: Collection[str],
                    fingerprint: str | None = None) -> Dataset:
    if ANSWER_IDS not in needed_columns or ANSWER_IDS in dataset.column_names or "answer" not in dataset.column_names:
        return dataset
    fingerprint = fingerprint or tokenizer_fingerprint(tokenizer)
    return dataset.map(lambda row: {ANSWER_IDS: encode_answer(tokenizer, str(row["answer"]))},
                       new_fingerprint=config_hash(dataset._fingerprint, ANSWER_IDS, fingerprint),
                       desc="tokenizing answers")
