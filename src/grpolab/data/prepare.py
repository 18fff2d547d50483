"""Prompt preparation per tokenizer mode: text prompts for TRL to tokenize, or token IDs prepared once.

In ``ids`` mode the prompt leaves this module as token IDs (``prompt_ids``) and is never turned back into text on
the way to generation. The IDs are produced by exactly the call TRL would make on the text (``encode_prompt``), which
is what makes the two modes generate identical sequences for the same seed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from grpolab.config.schema import TokenizerMode
from grpolab.config.hashing import config_hash

log = logging.getLogger(__name__)

PROMPT_IDS = "prompt_ids"
ANSWER_IDS = "answer_ids"


def encode_prompt(tokenizer: Any, prompt: str | Sequence[Mapping[str, Any]]) -> list[int]:
    """Token IDs of one prompt, exactly as ``GRPOTrainer._tokenize_prompts`` (trl 1.16) computes them."""
    if isinstance(prompt, str):
        return list(tokenizer(text=[prompt])["input_ids"][0])
    encoded = tokenizer.apply_chat_template(
        conversation=[list(prompt)], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"][0])


def encode_answer(tokenizer: Any, answer: str) -> list[int]:
    """IDs of the gold answer string as it appears inside a completion (no BOS/EOS)."""
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides how text becomes IDs (vocabulary, merges, special tokens, chat template)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return config_hash(type(tokenizer).__name__, body, getattr(tokenizer, "chat_template", None),
                       tokenizer.all_special_tokens)


def check_prompt_ids(dataset: Dataset, vocab_size: int, where: str) -> None:
    """Fail with one line naming the row when ``prompt_ids`` is not a list of in-vocabulary ints."""
    for row, ids in enumerate(dataset[PROMPT_IDS]):
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise ValueError(
                f"{where}: column '{PROMPT_IDS}' must hold non-empty lists of ints; row {row} has {ids!r:.80}"
            )
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise ValueError(
                f"{where}: row {row} of '{PROMPT_IDS}' has token id {bad} outside the model's vocabulary "
                f"[0, {vocab_size}) (tokenizer_mode=ids with a dataset tokenized for another model?)"
            )


class TextPrompts:
    """``tokenizer_mode=text``: TRL tokenizes the ``prompt`` text on every step (its stock behaviour)."""

    mode = TokenizerMode.TEXT

    def prepare(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str], key: Mapping[str, Any],
                split: str) -> Dataset:
        if "prompt" not in dataset.column_names:
            raise ValueError(
                f"tokenizer_mode=text needs a 'prompt' column, but the {split} split has {dataset.column_names}; "
                f"a pre-tokenized dataset (with '{PROMPT_IDS}') needs tokenizer_mode=ids"
            )
        return _add_answer_ids(dataset, tokenizer, needed_columns)


class TokenIdPrompts:
    """``tokenizer_mode=ids``: prompts become ``prompt_ids`` once, cached by tokenizer + data config.

    A dataset that already has a ``prompt_ids`` column is used as is (validated, never re-tokenized).
    """

    mode = TokenizerMode.IDS

    def __init__(self, cache_dir: str | None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def prepare(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str], key: Mapping[str, Any],
                split: str) -> Dataset:
        if PROMPT_IDS in dataset.column_names:
            check_prompt_ids(dataset, len(tokenizer), where=f"{split} split")
            return _add_answer_ids(dataset, tokenizer, needed_columns)
        cache_key = config_hash(dict(key), split, tokenizer_fingerprint(tokenizer), sorted(needed_columns),
                                dataset._fingerprint)
        cached = self.cache_dir / cache_key if self.cache_dir is not None else None
        if cached is not None and cached.exists():
            log.info("ids mode: loaded %s prompts from cache %s", split, cached)
            return load_from_disk(str(cached))
        prepared = dataset.map(
            lambda row: {PROMPT_IDS: encode_prompt(tokenizer, row["prompt"])},
            remove_columns=["prompt"],
            desc=f"tokenizing {split} prompts",
        )
        prepared = _add_answer_ids(prepared, tokenizer, needed_columns)
        if cached is not None:
            prepared.save_to_disk(str(cached))
            prepared = load_from_disk(str(cached))  # memory-mapped, like a cache hit
            log.info("ids mode: tokenized %d %s prompts, cached at %s", len(prepared), split, cached)
        return prepared


def _add_answer_ids(dataset: Dataset, tokenizer: Any, needed_columns: Collection[str]) -> Dataset:
    if ANSWER_IDS not in needed_columns or ANSWER_IDS in dataset.column_names or "answer" not in dataset.column_names:
        return dataset
    return dataset.map(lambda row: {ANSWER_IDS: encode_answer(tokenizer, row["answer"])}, desc="tokenizing answers")
