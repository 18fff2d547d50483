"""Length shaping: a linear reward toward a target length, DAPO's soft overlong punishment, and the cosine-scaled
correctness reward of "Demystifying Long Chain-of-Thought Reasoning".

Units differ by level on purpose: the text variants count characters of the decoded completion, the token variants
count completion tokens (trailing EOS/pad excluded, as decoding drops them). Set lengths in the unit of the level you
run; with the char tokenizer the two agree except that each tag (``<answer>``, ...) is one token but several characters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from grpolab.rewards.accuracy import Accuracy
from grpolab.rewards.base import Reward, RewardLevel
from grpolab.rewards.tags import ALL_TAGS
from grpolab.rewards.vocabulary import Vocabulary


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


class CosineLength(Reward):
    """Correctness scaled by length on a cosine schedule ("Demystifying Long CoT", arXiv 2502.03373, App. C.1):
    a correct answer earns ``max_value_correct`` at length 0 falling to ``min_value_correct`` at ``max_length``; a
    wrong one earns ``min_value_wrong`` at length 0 rising to ``max_value_wrong`` at ``max_length`` (short wrong
    answers are penalised most, so the policy keeps exploring). Lengths beyond ``max_length`` score as ``max_length``.

    ``value = v_end + (v_start - v_end) * (1 + cos(pi * min(length / max_length, 1))) / 2``

    Correctness is the ``accuracy`` reward's, computed by an ``Accuracy`` with the same ``level`` and ``fallbacks``
    (text: math-verify on the ``<answer>`` content against ``answer``; token: the answer's IDs against
    ``answer_ids``). Length is in characters (text) or tokens without the trailing EOS (token), as for ``length``.

    The formula is TRL's ``get_cosine_scaled_reward`` (same defaults; a test checks the values against it), but TRL's
    function is not called: it decides correctness with its own ``accuracy_reward`` on a ``solution`` column (first
    LaTeX/boxed match, no ``<answer>`` tag, no token variant) and counts the EOS in the length.

    >>> reward = CosineLength(max_length=38)  # the first two are 19 characters: half of max_length
    >>> reward(prompts=["q"] * 3, completion_ids=[[]] * 3, answer=["19"] * 3,
    ...        completions=["<answer>19</answer>", "<answer>18</answer>", "<answer>18</answer>" + " " * 30])
    [0.75, -0.75, -0.5]
    """

    default_name = "cosine_length"
    text_columns = Accuracy.text_columns
    token_columns = Accuracy.token_columns
    tags = ALL_TAGS

    def __init__(
        self,
        max_length: int,
        min_value_wrong: float = -1.0,
        max_value_wrong: float = -0.5,
        min_value_correct: float = 0.5,
        max_value_correct: float = 1.0,
        fallbacks: bool = True,
        level: RewardLevel | str = RewardLevel.text,
        name: str | None = None,
    ):
        super().__init__(level=level, name=name)
        if max_length <= 0:
            raise ValueError(f"rewards.{self.__name__}.max_length must be positive; got {max_length}")
        bounds = {"wrong": (min_value_wrong, max_value_wrong), "correct": (min_value_correct, max_value_correct)}
        for kind, (low, high) in bounds.items():
            if low > high:
                raise ValueError(
                    f"rewards.{self.__name__}: need min_value_{kind} <= max_value_{kind}; got {low} > {high}"
                )
        self.max_length = int(max_length)
        self.min_value_wrong, self.max_value_wrong = float(min_value_wrong), float(max_value_wrong)
        self.min_value_correct, self.max_value_correct = float(min_value_correct), float(max_value_correct)
        self.accuracy = Accuracy(level=self.level, fallbacks=fallbacks, name=self.__name__)

    def bind_tokens(self, vocabulary: Vocabulary) -> None:
        super().bind_tokens(vocabulary)
        self.accuracy.bind_tokens(vocabulary)

    def reward_for(self, correct: bool, length: int) -> float:
        if correct:
            start, end = self.max_value_correct, self.min_value_correct
        else:
            start, end = self.min_value_wrong, self.max_value_wrong
        cosine = math.cos(math.pi * min(length / self.max_length, 1.0))
        return end + 0.5 * (start - end) * (1.0 + cosine)

    def score_text(self, completions: list[str], answer: Sequence[str], **_: Any) -> list[float | None]:
        correct = self.accuracy.score_text(completions, answer=answer)
        return [self.reward_for(c == 1.0, len(text)) for c, text in zip(correct, completions, strict=True)]

    def score_tokens(
        self, completion_ids: list[list[int]], answer_ids: Sequence[Sequence[int]], **_: Any
    ) -> list[float | None]:
        correct = self.accuracy.score_tokens(completion_ids, answer_ids=answer_ids)
        return [
            self.reward_for(c == 1.0, len(self.content_ids(ids)))
            for c, ids in zip(correct, completion_ids, strict=True)
        ]
