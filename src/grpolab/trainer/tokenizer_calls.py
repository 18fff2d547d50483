"""What ``GrpolabTrainer`` (``grpolab.trainer.grpo``) does to tokenizer calls: makes decoding lazy and counts them.

In ids mode the trainer hands TRL ``LazyDecodedTexts`` in place of decoded completions and prompts
(``lazy_batch_decode`` while TRL generates), so a sequence is decoded only if a reward or a log reads it, and
``DiscardedLog`` stands in for a completion log nothing reads. ``TokenizerCallCounter`` counts what the tokenizer
still encodes and decodes, for the per-step cost metrics. None of this overrides TRL; the overrides that use it are in
``grpolab.trainer.grpo``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


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


class DiscardedLog:
    """Stands in for TRL's completion-log deque when nothing will read it, so logging never forces a decode."""

    def extend(self, items: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


@contextmanager
def lazy_batch_decode(processing_class: Any) -> Iterator[None]:
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
