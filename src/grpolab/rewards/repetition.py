"""Repetition: the n-gram repetition penalty of "Demystifying Long Chain-of-Thought Reasoning" (App. C.2)."""

from __future__ import annotations

from typing import Any

from grpolab.rewards.base import Reward, RewardLevel


class Repetition(Reward):
    """``(1 - distinct n-grams / all n-grams) * max_penalty``: 0.0 without a repeated n-gram, approaching
    ``max_penalty`` (<= 0) for a completion that repeats itself; 0.0 for fewer than ``ngram_size`` units.

    - text: n-grams of lower-cased, whitespace-separated words (Open-R1's ``repetition_penalty_reward``);
    - token: n-grams of completion IDs, special IDs (the trailing EOS/pad) left out as the text variant's decode does.

    Both variants call TRL's ``get_repetition_penalty_reward``: TRL applies it to IDs, and its arithmetic only compares
    n-gram elements for equality, so a list of words goes through it unchanged. The units differ by level on purpose
    (words vs tokens), so the two variants agree only where each word is one token.

    >>> reward = Repetition(ngram_size=2, max_penalty=-1.0)
    >>> reward(prompts=["q"] * 3, completion_ids=[[]] * 3,
    ...        completions=["add seven to twelve", "Carry the one carry the one", "19"])
    [0.0, -0.4, 0.0]
    """

    default_name = "repetition"

    def __init__(
        self,
        ngram_size: int = 3,
        max_penalty: float = -1.0,
        level: RewardLevel | str = RewardLevel.text,
        name: str | None = None,
    ):
        super().__init__(level=level, name=name)
        if ngram_size < 1:
            raise ValueError(f"rewards.{self.__name__}.ngram_size must be at least 1; got {ngram_size}")
        if max_penalty > 0:
            raise ValueError(f"rewards.{self.__name__}.max_penalty must be <= 0 (it is a penalty); got {max_penalty}")
        from trl.rewards import get_repetition_penalty_reward

        self.ngram_size, self.max_penalty = int(ngram_size), float(max_penalty)
        self.penalty = get_repetition_penalty_reward(ngram_size=self.ngram_size, max_penalty=self.max_penalty)

    def score_text(self, completions: list[str], **_: Any) -> list[float | None]:
        return self.penalty(completion_ids=[text.lower().split() for text in completions])

    def score_tokens(self, completion_ids: list[list[int]], **_: Any) -> list[float | None]:
        return self.penalty(completion_ids=[list(self.content_ids(ids)) for ids in completion_ids])
