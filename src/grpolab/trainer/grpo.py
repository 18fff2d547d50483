"""``GrpolabTrainer``: TRL's ``GRPOTrainer`` plus pre-tokenized prompts, lazy decoding and per-step cost metrics.

TRL 1.16 tokenizes prompt text on every step and decodes every completion for the rewards. For ``tokenizer_mode=ids``
this subclass changes a few private hooks, each small, calling ``super()`` and pinned by
``tests/trainer/test_grpo_overrides.py`` (which fails if TRL renames or reshapes them):

* ``_tokenize_prompts(prompts)``: a prompt that is already a list of token IDs is returned unchanged, so the
  tokenizer is never called on prompt text during training.
* ``_generate(prompts)``: while it runs (ids mode), the processing class's ``batch_decode`` returns a
  ``LazyDecodedTexts`` sequence that decodes a completion only when something reads it (a text-level reward,
  completion logging). With only token-level rewards and logging off, no completion is ever decoded. It also keeps
  the batch's prompt IDs, which every reward then receives as the ``prompt_ids`` keyword (in both modes).
* ``_calculate_rewards``: adds ``prompt_ids``; in ids mode hands rewards ``prompts`` as lazily decoded text (a text
  reward reading ``prompts`` gets text, as in text mode; nothing is decoded unless one does); times the rewards.
* ``log``: in ids mode, decodes the prompts kept for the completion log (only when ``log_completions`` is on, only at
  log time) so TRL's console sample, parquet files and wandb tables show text; adds the per-step cost metrics.

Everything else (generation, advantages, loss, logging) is TRL's own code path, which is what lets the text and ids
modes produce identical steps for the same seed.

Per-step cost metrics (averaged over the logging window, so they land in ``metrics.jsonl``):
``tokenizer/encode_calls``, ``tokenizer/decode_calls`` (sequences encoded/decoded per step, counted at the
tokenizer's two funnels ``_encode_plus`` and ``_decode``), ``tokenizer/calls`` (their sum) and ``timing/rewards_s``
(seconds per step inside ``_calculate_rewards``; in ids mode this includes the lazy decoding a text reward triggers).

Extending: a mixin for other behaviour goes before ``GRPOTrainer`` in the bases; every override here calls ``super()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from trl import GRPOTrainer

from grpolab.trainer.dynamic_sampling import DynamicSamplingMixin
from grpolab.trainer.vision_ids import VisionIdsMixin


def is_token_ids(prompt: Any) -> bool:
    """True for a pre-tokenized prompt: a non-empty list of ints."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], int)


class LazyDecodedTexts(Sequence):
    """Sequences of token IDs as text, decoded one at a time on first access and then kept.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> tok = build_char_tokenizer()
    >>> texts = LazyDecodedTexts(tok.decode, [tok("ab")["input_ids"]], {"skip_special_tokens": True})
    >>> texts.decoded_count, texts[0], texts.decoded_count
    (0, 'ab', 1)
    """

    def __init__(self, decode: Any, token_ids: Sequence[Sequence[int]], decode_kwargs: dict[str, Any]) -> None:
        self._decode = decode
        self._ids = token_ids
        self._kwargs = decode_kwargs
        self._texts: list[str | None] = [None] * len(token_ids)

    @property
    def decoded_count(self) -> int:
        return sum(text is not None for text in self._texts)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._texts[index] is None:
            self._texts[index] = self._decode(list(self._ids[index]), **self._kwargs)
        return self._texts[index]

    def __reduce__(self):
        # Crossing a process boundary (multi-process gather of the completion log) needs the text anyway.
        return list, (list(self),)

    def __repr__(self) -> str:
        return f"LazyDecodedTexts({len(self)} sequences, {self.decoded_count} decoded)"


class _DiscardedLog:
    """Stands in for TRL's completion-log deque when nothing will read it, so logging never forces a decode."""

    def extend(self, items: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


class TokenizerCallCounter:
    """Counts the sequences a tokenizer encodes and decodes while ``installed()`` is active.

    Every encode path of a transformers 5 tokenizer (``__call__``, ``encode``, ``apply_chat_template(tokenize=True)``,
    ``tokenize``) ends in ``_encode_plus``, and every decode path (``decode``, ``batch_decode``) in ``_decode``; the
    counter wraps those two on the instance (class untouched) and restores whatever was there before.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> tok = build_char_tokenizer()
    >>> counter = TokenizerCallCounter(tok)
    >>> with counter.installed():
    ...     _ = tok(["ab", "cd"]), tok.batch_decode([[5], [6], [7]])
    >>> counter.encoded, counter.decoded
    (2, 3)
    """

    FUNNELS = ("_encode_plus", "_decode")

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.encoded = 0
        self.decoded = 0

    @property
    def total(self) -> int:
        return self.encoded + self.decoded

    @contextmanager
    def installed(self) -> Iterator[TokenizerCallCounter]:
        saved = {name: vars(self.tokenizer).get(name) for name in self.FUNNELS}
        encode, decode = self.tokenizer._encode_plus, self.tokenizer._decode

        def counting_encode(*args: Any, **kwargs: Any) -> Any:
            text = kwargs.get("text", args[0] if args else None)
            self.encoded += len(text) if isinstance(text, (list, tuple)) else 1
            return encode(*args, **kwargs)

        def counting_decode(*args: Any, **kwargs: Any) -> Any:
            self.decoded += 1
            return decode(*args, **kwargs)

        self.tokenizer._encode_plus, self.tokenizer._decode = counting_encode, counting_decode
        try:
            yield self
        finally:
            for name, previous in saved.items():
                if previous is None:
                    delattr(self.tokenizer, name)
                else:
                    setattr(self.tokenizer, name, previous)


class GrpolabTrainer(DynamicSamplingMixin, VisionIdsMixin, GRPOTrainer):
    """``GRPOTrainer`` that accepts token-ID prompts (``prompt`` = list[int]) and decodes completions lazily.

    ``lazy_decoding`` turns the lazy decode on (the ids mode does); text-mode runs keep TRL's behaviour (rewards get
    an extra ``prompt_ids`` keyword and the cost metrics are logged, nothing else changes).
    """

    def __init__(self, *args: Any, lazy_decoding: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_decoding = lazy_decoding
        if lazy_decoding and not self.args.log_completions:
            # TRL appends every completion to this deque and reads it only when log_completions is on.
            self._logs["completion"] = _DiscardedLog()
        self.tokenizer_calls = TokenizerCallCounter(self._tokenizer)
        self.reward_seconds = 0.0
        self._batch_prompt_ids: list[list[int]] | None = None
        self._window = (0, 0, 0, 0.0)  # step, encoded, decoded, reward seconds at the last train log

    # -- ids mode -------------------------------------------------------------------------------------------------

    def _tokenize_prompts(self, prompts: list):
        if prompts and all(is_token_ids(prompt) for prompt in prompts):
            return [list(prompt) for prompt in prompts], None, {}
        return super()._tokenize_prompts(prompts)

    def _generate(self, prompts: list):
        if self.lazy_decoding:
            with _lazy_batch_decode(self.processing_class):
                result = super()._generate(prompts)
        else:
            result = super()._generate(prompts)
        self._batch_prompt_ids = [list(ids) for ids in result[0]]
        return result

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._batch_prompt_ids is not None and len(self._batch_prompt_ids) == len(inputs):
            inputs = [{**row, "prompt_ids": ids} for row, ids in zip(inputs, self._batch_prompt_ids, strict=True)]
        if self.lazy_decoding and prompts and is_token_ids(prompts[0]):
            # Text rewards reading `prompts` get text, as in text mode; token rewards read `prompt_ids` instead.
            prompts = LazyDecodedTexts(self.processing_class.decode, prompts, {"skip_special_tokens": True})
        started = time.perf_counter()
        try:
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        finally:
            self.reward_seconds += time.perf_counter() - started

    # -- logging --------------------------------------------------------------------------------------------------

    def train(self, *args: Any, **kwargs: Any):
        with self.tokenizer_calls.installed():
            return super().train(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            logs.update(self._cost_metrics())
            if self.lazy_decoding and self.log_completions:
                self._decode_logged_prompts()
        super().log(logs, start_time)

    def _cost_metrics(self) -> dict[str, float]:
        """Tokenizer calls and reward seconds per optimizer step since the previous train log."""
        step, encoded, decoded, reward_s = self._window
        steps = self.state.global_step - step
        if steps <= 0:
            return {}
        counter = self.tokenizer_calls
        self._window = (self.state.global_step, counter.encoded, counter.decoded, self.reward_seconds)
        return {
            "tokenizer/encode_calls": (counter.encoded - encoded) / steps,
            "tokenizer/decode_calls": (counter.decoded - decoded) / steps,
            "tokenizer/calls": (counter.total - encoded - decoded) / steps,
            "timing/rewards_s": (self.reward_seconds - reward_s) / steps,
        }

    def _decode_logged_prompts(self) -> None:
        """Prompts kept as IDs become the exact text the model saw (special tokens included), for the log only."""
        kept = self._logs["prompt"]
        if not any(is_token_ids(prompt) for prompt in kept):
            return
        decoded = [self.processing_class.decode(p) if is_token_ids(p) else p for p in kept]
        kept.clear()
        kept.extend(decoded)


@contextmanager
def _lazy_batch_decode(processing_class: Any) -> Iterator[None]:
    """Make ``processing_class.batch_decode`` return a ``LazyDecodedTexts`` for the duration of the block."""

    def batch_decode(sequences: Sequence[Sequence[int]], **kwargs: Any) -> LazyDecodedTexts:
        return LazyDecodedTexts(processing_class.decode, sequences, kwargs)

    shadowed = vars(processing_class).get("batch_decode")  # someone else's instance-level wrapper, if any
    processing_class.batch_decode = batch_decode  # instance attribute shadows the class method
    try:
        yield
    finally:
        if shadowed is None:
            del processing_class.batch_decode
        else:
            processing_class.batch_decode = shadowed


def trainer_dataset(dataset: Any) -> Any:
    """TRL reads prompts from the ``prompt`` column; in ids mode that column carries the ``prompt_ids``."""
    if "prompt_ids" in dataset.column_names:
        return dataset.rename_column("prompt_ids", "prompt")
    return dataset
