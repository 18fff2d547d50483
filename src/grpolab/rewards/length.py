"""Length shaping: a linear reward toward a target length, and DAPO's soft overlong punishment.

Units differ by level on purpose: the text variants count characters of the decoded completion, the token variants
count completion tokens (trailing EOS/pad excluded, as decoding drops them). Set lengths in the unit of the level you
run; with the char tokenizer the two agree except that each tag (``<answer>``, ...) is one token but several characters.
"""

from __future__ import annotations

from typing import Any

from grpolab.rewards.base import Reward, RewardLevel


class Length(Reward):
    """``max(0, 1 - distance / tolerance)``: 1.0 at ``target`` length, falling linearly to 0.0 ``tolerance`` away.

    ``distance`` is ``|length - target|``, or only the excess over ``target`` when ``penalize_shorter`` is false (then
    every completion up to ``target`` scores 1.0). ``tolerance`` defaults to ``target``. Length is in characters
    (text) or tokens (token).

    >>> Length(target=4, tolerance=2)(prompts=["q"] * 3, completions=["abcd", "abc", "ab"], completion_ids=[[]] * 3)
    [1.0, 0.5, 0.0]
    """

    default_name = "length"

    def __init__(
        self,
        target: int,
        tolerance: int | None = None,
        penalize_shorter: bool = True,
        level: RewardLevel | str = RewardLevel.text,
        name: str | None = None,
    ):
        super().__init__(level=level, name=name)
        tolerance = target if tolerance is None else tolerance
        if target <= 0 or tolerance <= 0:
            raise ValueError(
                f"rewards.{self.__name__}: target and tolerance must be positive; got target={target}, "
                f"tolerance={tolerance}"
            )
        self.target, self.tolerance, self.penalize_shorter = int(target), int(tolerance), penalize_shorter

    def reward_for(self, length: int) -> float:
        distance = length - self.target
        distance = abs(distance) if self.penalize_shorter else max(distance, 0)
        return max(0.0, 1.0 - distance / self.tolerance)

    def score_text(self, completions: list[str], **_: Any) -> list[float | None]:
        return [self.reward_for(len(text)) for text in completions]

    def score_tokens(self, completion_ids: list[list[int]], **_: Any) -> list[float | None]:
        return [self.reward_for(len(self.content_ids(ids))) for ids in completion_ids]


class Overlong(Reward):
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), with ``L_max = max_length``, ``L_cache = cache``:
    0 up to ``L_max - L_cache``, then ``(L_max - L_cache - length) / L_cache`` falling to -1 at ``L_max``, and -1
    beyond.

    Length is in characters (text) or tokens (token). Unlike ``trl.rewards.get_soft_overlong_punishment`` (the
    ``soft_overlong`` reward), the token variant does not count the trailing EOS, so both variants measure the same
    content; a completion cut at ``max_completion_length`` without EOS has exactly ``L_max`` tokens.

    >>> Overlong(max_length=10, cache=4)(prompts=["q"] * 3, completions=["x" * 6, "x" * 8, "x" * 11],
    ...                                   completion_ids=[[]] * 3)
    [0.0, -0.5, -1.0]
    """

    default_name = "overlong"

    def __init__(
        self, max_length: int, cache: int, level: RewardLevel | str = RewardLevel.text, name: str | None = None
    ):
        super().__init__(level=level, name=name)
        if max_length <= 0 or not 0 <= cache <= max_length:
            raise ValueError(
                f"rewards.{self.__name__}: need max_length > 0 and 0 <= cache <= max_length; got "
                f"max_length={max_length}, cache={cache}"
            )
        self.max_length, self.cache = int(max_length), int(cache)

    def reward_for(self, length: int) -> float:
        free = self.max_length - self.cache
        if length <= free:
            return 0.0
        if length <= self.max_length:  # only reachable when cache > 0
            return (free - length) / self.cache
        return -1.0

    def score_text(self, completions: list[str], **_: Any) -> list[float | None]:
        return [self.reward_for(len(text)) for text in completions]

    def score_tokens(self, completion_ids: list[list[int]], **_: Any) -> list[float | None]:
        return [self.reward_for(len(self.content_ids(ids))) for ids in completion_ids]

