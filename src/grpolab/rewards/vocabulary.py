"""What token-level rewards know about a tokenizer: a small, picklable description built once by the builder.

Rewards never hold a tokenizer (TRL may pickle them into a rollout worker, and a token-level reward must not encode or
decode on the hot path). ``describe_vocabulary`` reads the tokenizer once, through its public methods only, and keeps
what the token variants need: which IDs are special (decoding with ``skip_special_tokens`` drops them), which IDs
decode to whitespace only (so ``format`` can ignore whitespace between blocks at both levels), and the IDs of the
fixed strings the rewards declared (tags, characters).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Vocabulary:
    """Special IDs, whitespace-only IDs and the encodings of a few fixed strings; no tokenizer inside.

    >>> vocabulary = Vocabulary(special_ids=frozenset({0}), whitespace_ids=frozenset({9}), encodings={"<a>": (5,)})
    >>> vocabulary.ids("<a>")
    (5,)
    """

    special_ids: frozenset[int]
    whitespace_ids: frozenset[int]
    encodings: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def ids(self, text: str) -> tuple[int, ...]:
        """The IDs of ``text`` as the tokenizer encodes it in isolation (no BOS/EOS)."""
        try:
            return self.encodings[text]
        except KeyError:
            raise KeyError(
                f"{text!r} was not encoded when the vocabulary was described; list it in the reward's "
                f"token_strings() so describe_vocabulary encodes it"
            ) from None


def describe_vocabulary(tokenizer: Any, strings: Iterable[str] = ()) -> Vocabulary:
    """Describe ``tokenizer`` for token-level rewards: its special IDs, its whitespace-only IDs and ``strings`` encoded.

    An ID is whitespace-only when the text it adds after an anchor token is non-empty and ``str.isspace()`` (the test
    the text variants apply); decoding after an anchor keeps a SentencePiece ``▁`` from being stripped as a leading
    space. Every ID of ``get_vocab()`` is decoded once, in one ``batch_decode``.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> tokenizer = build_char_tokenizer()
    >>> vocabulary = describe_vocabulary(tokenizer, ["<answer>"])
    >>> sorted(tokenizer.decode([i]) for i in vocabulary.whitespace_ids)
    ['\\t', '\\n', '\\x0b', '\\x0c', '\\r', ' ']
    >>> vocabulary.ids("<answer>") == tuple(tokenizer.convert_tokens_to_ids(["<answer>"]))
    True
    """
    special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
    candidates = sorted({int(i) for i in tokenizer.get_vocab().values()} - special_ids)
    anchor = list(tokenizer.encode("a", add_special_tokens=False))
    anchor_text = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
    with_anchor = tokenizer.batch_decode([anchor + [i] for i in candidates], clean_up_tokenization_spaces=False)
    whitespace_ids = set()
    for token_id, text in zip(candidates, with_anchor, strict=True):
        if text.startswith(anchor_text):
            added = text[len(anchor_text):]
        else:  # the anchor merged with the token when decoded: fall back to the token alone
            added = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
        if added.isspace():
            whitespace_ids.add(token_id)
    encodings = {text: tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False)) for text in strings}
    return Vocabulary(special_ids=special_ids, whitespace_ids=frozenset(whitespace_ids), encodings=encodings)
