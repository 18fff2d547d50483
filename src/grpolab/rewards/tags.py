"""Tag structure shared by the text and token variants, so both apply the same grammar by construction.

A completion (a string, or a tuple of token IDs) is split into ``Piece``s: tags (``<think>``, ``</think>``,
``<answer>``, ``</answer>``) and the content between them. The format check and the answer extraction then run on
pieces and never care whether the content is characters or IDs.

Token-level tags are matched as the ID sequence the tokenizer gives for the tag in isolation (one ID for the
char tokenizer and for models with added tag tokens). If a tokenizer merges a tag with its neighbours in context, the
token variant will not see it; the text variant would.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
ALL_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

_TAG_SPLIT = re.compile("(" + "|".join(re.escape(tag) for tag in ALL_TAGS) + ")")


class Piece(NamedTuple):
    """A tag (``tag`` set, ``content`` empty) or a run of content between tags (``tag`` is None)."""

    tag: str | None
    content: str | tuple[int, ...]


def split_text(text: str) -> list[Piece]:
    """Split text on the tags; empty content between adjacent tags is dropped.

    >>> [p.tag or p.content for p in split_text("<answer>19</answer>")]
    ['<answer>', '19', '</answer>']
    """
    pieces = []
    for i, part in enumerate(_TAG_SPLIT.split(text)):
        if i % 2:
            pieces.append(Piece(part, ""))
        elif part:
            pieces.append(Piece(None, part))
    return pieces


def split_ids(ids: Sequence[int], tag_ids: Mapping[str, tuple[int, ...]]) -> list[Piece]:
    """Split token IDs on the tags' ID sequences, scanning left to right like ``split_text``.

    >>> [p.tag or p.content for p in split_ids([7, 3, 3, 8], {"<answer>": (7,), "</answer>": (8,)})]
    ['<answer>', (3, 3), '</answer>']
    """
    by_first_id = _by_first_id(tuple(tag_ids.items()))
    ids = tuple(ids)
    pieces: list[Piece] = []
    content_start = 0
    # Only positions holding a tag's first ID can start a tag: found in one pass, the rest of the scan skips content
    # (most of a completion) without a Python step per token.
    for position in [i for i, token in enumerate(ids) if token in by_first_id]:
        if position < content_start:  # inside a tag matched just before
            continue
        for tag, pattern in by_first_id[ids[position]]:
            if ids[position : position + len(pattern)] == pattern:
                if position > content_start:
                    pieces.append(Piece(None, ids[content_start:position]))
                pieces.append(Piece(tag, ()))
                content_start = position + len(pattern)
                break
    if len(ids) > content_start:
        pieces.append(Piece(None, ids[content_start:]))
    return pieces


@functools.lru_cache(maxsize=64)
def _by_first_id(tag_ids: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[int, list[tuple[str, tuple[int, ...]]]]:
    """The tags indexed by their first ID, longest first (so a tag whose IDs are a prefix of another's cannot shadow
    it); cached, since a reward splits every completion of a step with the same tags."""
    by_first_id: dict[int, list[tuple[str, tuple[int, ...]]]] = {}
    for tag, pattern in sorted(tag_ids, key=lambda item: -len(item[1])):
        by_first_id.setdefault(pattern[0], []).append((tag, pattern))
    return by_first_id


def drop_blank(pieces: Sequence[Piece], is_blank: Callable[[str | tuple[int, ...]], bool]) -> list[Piece]:
    """The pieces without content pieces that are whitespace only (``is_blank``); tags are always kept.

    >>> [p.tag or p.content for p in drop_blank(split_text("<answer>1</answer>\\n "), str.isspace)]
    ['<answer>', '1', '</answer>']
    """
    return [piece for piece in pieces if piece.tag is not None or not is_blank(piece.content)]


def last_answer(pieces: Sequence[Piece]) -> str | tuple[int, ...] | None:
    """Content of the last ``<answer>`` immediately closed by ``</answer>`` with no tag inside; None if there is none.

    An empty ``<answer></answer>`` gives empty content (``""`` or ``()``), not None.
    """
    for i in range(len(pieces) - 1, 0, -1):
        if pieces[i].tag != ANSWER_CLOSE:
            continue
        if pieces[i - 1].tag == ANSWER_OPEN:
            return pieces[i].content  # the empty content of the closing tag: "" or ()
        if pieces[i - 1].tag is None and i >= 2 and pieces[i - 2].tag == ANSWER_OPEN:
            return pieces[i - 1].content
    return None


def is_well_formed(pieces: Sequence[Piece], require_think: bool) -> bool:
    """True for exactly ``<answer>X</answer>`` (X non-empty), optionally (or, with ``require_think``, necessarily)
    preceded by ``<think>...</think>``; nothing may come before, between or after, and no tag may be nested."""
    answer = [Piece(ANSWER_OPEN, ""), None, Piece(ANSWER_CLOSE, "")]
    if len(pieces) >= 3 and _matches(pieces[-3:], answer):
        head = pieces[:-3]
        if not head:
            return not require_think
        # The think block may be empty, and an empty block has no content piece between the tags.
        return head[0].tag == THINK_OPEN and head[-1].tag == THINK_CLOSE and len(head) in (2, 3) and (
            len(head) == 2 or head[1].tag is None
        )
    return False


def _matches(pieces: Sequence[Piece], pattern: Sequence[Piece | None]) -> bool:
    """``None`` in ``pattern`` stands for one content piece."""
    return all(
        piece.tag is None if expected is None else piece.tag == expected.tag
        for piece, expected in zip(pieces, pattern, strict=True)
    )
