"""Answer accuracy: 1.0 when the completion's final answer is the gold answer, else 0.0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpolab.rewards.answers import answers_match, extract_final_answer
from grpolab.rewards.base import Reward, RewardLevel
from grpolab.rewards.tags import ALL_TAGS, last_answer, split_ids


class Accuracy(Reward):
    r"""1.0 if the completion's final answer equals the gold answer, else 0.0.

    - text (column ``answer``): the final answer is the content of the last ``<answer>...</answer>``, else (with
      ``fallbacks``) the last ``\boxed{}``, else the last number; it is compared with ``answer`` by math-verify.
    - token (column ``answer_ids``): the IDs between the last ``<answer>`` and ``</answer>`` tag IDs must equal
      ``answer_ids`` exactly (leading/trailing special IDs of ``answer_ids`` are ignored).

    The variants agree on tagged answers written exactly as the gold string. They intentionally differ where
    math-verify sees equal values in different spellings: ``"19.0"``, ``" 19 "`` or ``"1,000"`` against ``"19"`` /
    ``"1000"`` score 1.0 as text and 0.0 as IDs. The token variant also has no fallbacks: an untagged answer scores 0.0.

    >>> reward = Accuracy(level="text")
    >>> reward(prompts=["12+7="] * 2, completions=["<answer>19</answer>", "<answer>18</answer>"],
    ...        completion_ids=[[], []], answer=["19", "19"])
    [1.0, 0.0]
    """

    default_name = "accuracy"
    text_columns = frozenset({"answer"})
    token_columns = frozenset({"answer_ids"})
    tags = ALL_TAGS

    def __init__(self, level: RewardLevel | str = RewardLevel.text, fallbacks: bool = True, name: str | None = None):
        super().__init__(level=level, name=name)
        self.fallbacks = fallbacks

    def score_text(self, completions: list[str], answer: Sequence[str], **_: Any) -> list[float | None]:
        return [
            float(answers_match(extract_final_answer(text, self.fallbacks), str(gold)))
            for text, gold in zip(completions, answer, strict=True)
        ]

    def score_tokens(
        self, completion_ids: list[list[int]], answer_ids: Sequence[Sequence[int]], **_: Any
    ) -> list[float | None]:
        rewards: list[float | None] = []
        for ids, gold_ids in zip(completion_ids, answer_ids, strict=True):
            predicted = last_answer(split_ids(self.content_ids(ids), self.tag_ids))
            gold = self._strip_special(gold_ids)
            rewards.append(float(predicted is not None and len(gold) > 0 and tuple(predicted) == gold))
        return rewards

    def _strip_special(self, ids: Sequence[int]) -> tuple[int, ...]:
        # A loader that encoded the gold answer with add_special_tokens=True may have added BOS/EOS; decoding
        # would drop special IDs wherever they are, so they are dropped here too.
        return tuple(int(i) for i in ids if i not in self.special_ids)
