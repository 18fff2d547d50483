"""Reasoning steps: the Open-R1 (DeepSeek-R1 reproduction) reward for visible step-by-step reasoning."""

from __future__ import annotations

import re
from typing import Any

from grpolab.rewards.base import Reward, RewardLevel

# Open-R1's pattern ("Step 1:", a numbered line "1.", "-"/"*" bullets after a newline, transition words) with (?m), so
# a numbered line counts anywhere; Open-R1 compiles it without re.MULTILINE, so there "1." counts only at position 0.
STEP_PATTERN = r"(?m)(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)"


class ReasoningSteps(Reward):
    """``min(1, steps / min_steps)``, where ``steps`` counts the matches of ``pattern`` (step markers) in the text.

    Open-R1's ``reasoning_steps_reward`` with ``min_steps`` as a key (Open-R1 hard-codes 3) and the pattern made
    multi-line (see ``STEP_PATTERN``; drop the leading ``(?m)`` for Open-R1's exact behaviour). TRL 1.16 ships no
    reasoning-steps reward, so there is nothing of TRL's to delegate to. Text level only: the markers are character
    patterns, and matching them on token IDs would need a decode, which is what the token level avoids.

    >>> reward = ReasoningSteps()
    >>> reward(prompts=["q"] * 3, completion_ids=[[]] * 3,
    ...        completions=["Step 1: add. Step 2: check.", "1. add\\n2. carry\\n3. check", "It is 19."])
    [0.6666666666666666, 1.0, 0.0]
    """

    default_name = "reasoning_steps"

    def __init__(
        self,
        pattern: str = STEP_PATTERN,
        min_steps: int = 3,
        level: RewardLevel | str = RewardLevel.text,
        name: str | None = None,
    ):
        super().__init__(level=level, name=name)
        if min_steps < 1:
            raise ValueError(f"rewards.{self.__name__}.min_steps must be at least 1; got {min_steps}")
        try:
            self.pattern = re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"rewards.{self.__name__}.pattern is not a valid regular expression ({error}): {pattern!r}"
            ) from error
        self.min_steps = int(min_steps)

    def score_text(self, completions: list[str], **_: Any) -> list[float | None]:
        return [min(1.0, len(self.pattern.findall(text)) / self.min_steps) for text in completions]
