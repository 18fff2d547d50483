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

from grpolab.config.errors import ConfigError
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

    Both variants call TRL's ``get_soft_overlong_punishment``, which scores ``len()`` of each item it is given: the
    text variant hands it the decoded completions (length in characters), the token variant the completion IDs
    without special IDs (length in tokens; TRL, given ``completion_ids`` itself, would also count the trailing EOS), so
    both variants measure the same content and a completion cut at ``max_completion_length`` has ``L_max`` tokens.

    >>> Overlong(max_length=10, cache=4)(prompts=["q"] * 3, completions=["x" * 6, "x" * 8, "x" * 11],
    ...                                   completion_ids=[[]] * 3)
    [0.0, -0.5, -1.0]
    """

    default_name = "overlong"

    def __init__(
        self, max_length: int, cache: int, level: RewardLevel | str = RewardLevel.text, name: str | None = None
    ):
        from trl.rewards import get_soft_overlong_punishment

        super().__init__(level=level, name=name)
        key = f"rewards.{self.__name__}"
        if not _is_int(max_length) or max_length < 1:
            raise ConfigError(f"{key}.max_length={max_length} must be an integer >= 1")
        if not _is_int(cache) or not 0 <= cache < max_length:
            raise ConfigError(f"{key}.cache={cache} must be an integer in [0, {key}.max_length={max_length}) (the "
                              "punishment ramp below the length limit)")
        self.max_length, self.cache = max_length, cache
        self.punishment = get_soft_overlong_punishment(max_completion_len=max_length, soft_punish_cache=cache)

    def check_budget(self, max_completion_length: int) -> None:
        """At token level the ramp must start inside the generation limit, or no completion is ever punished."""
        start, key = self.max_length - self.cache, f"rewards.{self.__name__}"
        if self.level is RewardLevel.token and start >= max_completion_length:
            raise ConfigError(
                f"{key}.cache={self.cache} with {key}.max_length={self.max_length} starts the punishment at {start} "
                f"tokens, but trainer.max_completion_length={max_completion_length} cuts every completion before "
                f"that; valid: {key}.max_length - {key}.cache < {max_completion_length}"
            )

    def score_text(self, completions: list[str], **_: Any) -> list[float | None]:
        return self.punishment(completion_ids=completions)

    def score_tokens(self, completion_ids: list[list[int]], **_: Any) -> list[float | None]:
        return self.punishment(completion_ids=[self.content_ids(ids) for ids in completion_ids])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
