"""``GrpolabTrainer``: TRL's ``GRPOTrainer`` plus pre-tokenized prompts and lazy completion decoding.

TRL 1.16 tokenizes prompt text on every step and decodes every completion for the rewards. For ``tokenizer_mode=ids``
this subclass changes exactly two private hooks, each small and pinned by ``tests/trainer/test_grpo_overrides.py``
(which fails if TRL renames or reshapes them):

* ``_tokenize_prompts(prompts)``: a prompt that is already a list of token IDs is returned unchanged, so the
  tokenizer is never called on prompt text during training.
* ``_generate(prompts)``: while it runs, the processing class's ``batch_decode`` returns a ``LazyDecodedTexts``
  sequence that decodes a completion only when something reads it (a text-level reward, completion logging). With
  only token-level rewards and logging off, no completion is ever decoded.

Everything else (generation, advantages, loss, logging) is TRL's own code path, which is what lets the text and ids
modes produce identical steps for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from trl import GRPOTrainer


def is_token_ids(prompt: Any) -> bool:
    """True for a pre-tokenized prompt: a non-empty list of ints."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], int)


class LazyDecodedTexts(Sequence):
    """Completions as text, decoded one at a time on first access and then kept.

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

    def __repr__(self) -> str:
        return f"LazyDecodedTexts({len(self)} completions, {self.decoded_count} decoded)"


class _DiscardedLog:
    """Stands in for TRL's completion-log deque when nothing will read it, so logging never forces a decode."""

    def extend(self, items: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


class GrpolabTrainer(GRPOTrainer):
    """``GRPOTrainer`` that accepts token-ID prompts (``prompt`` = list[int]) and decodes completions lazily.

    ``lazy_decoding`` turns the lazy decode on (the ids mode does); text-mode runs keep TRL's behaviour exactly.
    """

    def __init__(self, *args: Any, lazy_decoding: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_decoding = lazy_decoding
        if lazy_decoding and not self.args.log_completions:
            # TRL appends every completion to this deque and reads it only when log_completions is on.
            self._logs["completion"] = _DiscardedLog()

    def _tokenize_prompts(self, prompts: list):
        if prompts and all(is_token_ids(prompt) for prompt in prompts):
            return [list(prompt) for prompt in prompts], None, {}
        return super()._tokenize_prompts(prompts)

    def _generate(self, prompts: list):
        if not self.lazy_decoding:
            return super()._generate(prompts)
        with _lazy_batch_decode(self.processing_class):
            return super()._generate(prompts)


@contextmanager
def _lazy_batch_decode(processing_class: Any) -> Iterator[None]:
    """Make ``processing_class.batch_decode`` return a ``LazyDecodedTexts`` for the duration of the block."""

    def batch_decode(sequences: Sequence[Sequence[int]], **kwargs: Any) -> LazyDecodedTexts:
        return LazyDecodedTexts(processing_class.decode, sequences, kwargs)

    processing_class.batch_decode = batch_decode  # instance attribute shadows the class method
    try:
        yield
    finally:
        del processing_class.batch_decode


def trainer_dataset(dataset: Any) -> Any:
    """TRL reads prompts from the ``prompt`` column; in ids mode that column carries the ``prompt_ids``."""
    if "prompt_ids" in dataset.column_names:
        return dataset.rename_column("prompt_ids", "prompt")
    return dataset
