"""Format: the completion is exactly ``<answer>X</answer>``, optionally preceded by ``<think>...</think>``."""

from __future__ import annotations

from typing import Any

from grpolab.rewards.base import Reward, RewardLevel
from grpolab.rewards.tags import ALL_TAGS, is_well_formed, split_ids, split_text


class Format(Reward):
    """1.0 if the completion is exactly ``<answer>X</answer>`` (X non-empty), optionally preceded by
    ``<think>...</think>`` (required with ``require_think``), with nothing before, between or after; else 0.0.

    Both variants split the completion on the four tags (text: the tag strings; token: the tags' IDs, trailing
    EOS/pad stripped) and apply the same grammar, so they agree whenever the tags are tokenized as themselves.
    Whitespace counts as content: ``"<answer>1</answer>\\n"`` scores 0.0 at both levels.

    >>> Format(require_think=True)(prompts=["q"] * 2, completion_ids=[[], []],
    ...                            completions=["<think>7+12</think><answer>19</answer>", "<answer>19</answer>"])
    [1.0, 0.0]
    """

    default_name = "format"
    tags = ALL_TAGS

    def __init__(
        self, level: RewardLevel | str = RewardLevel.text, require_think: bool = False, name: str | None = None
    ):
        super().__init__(level=level, name=name)
        self.require_think = require_think

    def score_text(self, completions: list[str], **_: Any) -> list[float | None]:
        return [float(is_well_formed(split_text(text), self.require_think)) for text in completions]

    def score_tokens(self, completion_ids: list[list[int]], **_: Any) -> list[float | None]:
        return [
            float(is_well_formed(split_ids(self.content_ids(ids), self.tag_ids), self.require_think))
            for ids in completion_ids
        ]
