"""Format: the completion is ``<answer>X</answer>``, optionally preceded by ``<think>...</think>``."""

from __future__ import annotations

from typing import Any

from grpolab.rewards.base import Reward, RewardLevel
from grpolab.rewards.tags import ALL_TAGS, Piece, drop_blank, is_well_formed, split_ids, split_text


class Format(Reward):
    """1.0 if the completion is ``<answer>X</answer>`` (X non-empty), optionally preceded by ``<think>...</think>``
    (required with ``require_think``), with nothing else before, between or after the blocks; else 0.0.

    By default whitespace is not content: it may surround and separate the blocks, and an answer of whitespace only
    is empty (``"<think>a</think>\\n<answer>19</answer>\\n"`` scores 1.0, ``"<answer> </answer>"`` 0.0). With
    ``strict`` every character counts, as in grpolab before whitespace was tolerated: the first scores 0.0 and the
    second 1.0.

    Both variants split the completion on the four tags (text: the tag strings; token: the tags' IDs, special IDs
    dropped) and apply the same grammar, so they agree whenever the tags are tokenized as themselves. Whitespace is
    ``str.isspace()`` text, and for the token variant the IDs the vocabulary description found to decode to whitespace
    only; a tokenizer that merges whitespace into a neighbouring tag token (``">\\n"``) hides that tag from the token
    variant, as any merge does.

    >>> Format(require_think=True)(prompts=["q"] * 3, completion_ids=[[], [], []],
    ...     completions=["<think>7+12</think><answer>19</answer>", "<think>7+12</think>\\n<answer>19</answer>\\n",
    ...                  "<answer>19</answer>"])
    [1.0, 1.0, 0.0]
    >>> Format(strict=True)(prompts=["q"], completion_ids=[[]], completions=["<answer>19</answer>\\n"])
    [0.0]
    """

    default_name = "format"
    tags = ALL_TAGS

    def __init__(
        self,
        level: RewardLevel | str = RewardLevel.text,
        require_think: bool = False,
        strict: bool = False,
        name: str | None = None,
    ):
        super().__init__(level=level, name=name)
        self.require_think = require_think
        self.strict = strict

    def score_text(self, completions: list[str], **_: Any) -> list[float | None]:
        return [self._score(split_text(text), str.isspace) for text in completions]

    def score_tokens(self, completion_ids: list[list[int]], **_: Any) -> list[float | None]:
        return [self._score(split_ids(self.content_ids(ids), self.tag_ids), self._is_blank) for ids in completion_ids]

    def _score(self, pieces: list[Piece], is_blank: Any) -> float:
        if not self.strict:
            pieces = drop_blank(pieces, is_blank)
        return float(is_well_formed(pieces, self.require_think))

    def _is_blank(self, ids: tuple[int, ...]) -> bool:
        return bool(ids) and all(i in self.whitespace_ids for i in ids)
