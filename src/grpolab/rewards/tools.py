"""Tool use: 1.0 when the completion called a tool and every call ran without error (``environment=...`` runs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any

from grpolab.rewards.base import Reward, RewardLevel

#: How TRL 1.16's tool loop words a failed call's result: ``str({"error": str(exception)})``.
ERROR_PREFIX = "{'error':"


class ToolUse(Reward):
    """1.0 if the completion made at least one tool call whose result came back and no call failed, else 0.0; with
    ``needed_column`` (a boolean dataset column, e.g. ``needs_tool``) only rows where it is true can earn it.

    - text (TRL's chat messages): a ``tool`` message means a call was parsed and run; one whose content is TRL's
      error result (``{'error': ...}``: an exception, a timeout, an unknown tool) is a failure.
    - token (``completion_ids`` and ``tool_mask``): each run of tool-output IDs (mask 0) is one round of results;
      one holding the IDs of ``{'error':`` is a failure. A round of several calls counts once, which changes nothing
      here: the reward asks whether any call ran and none failed.

    A call the model wrote but TRL could not parse, or whose result did not fit ``trainer.max_completion_length``
    (TRL then drops it), left no tool message: it earns nothing.

    >>> calls = [{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {}}]},
    ...          {"role": "tool", "name": "multiply", "content": "56088"},
    ...          {"role": "assistant", "content": "<answer>56088</answer>"}]
    >>> failed = [calls[0], {"role": "tool", "name": "multiply", "content": "{'error': 'a must be an integer'}"}]
    >>> ToolUse()(prompts=[None] * 3, completions=[calls, failed, [calls[-1]]], completion_ids=[[]] * 3)
    [1.0, 0.0, 0.0]
    """

    default_name = "tool_use"
    reads_messages = True
    reads_tool_output = True

    def __init__(self, level: RewardLevel | str = RewardLevel.text, needed_column: str | None = None,
                 name: str | None = None) -> None:
        super().__init__(level=level, name=name)
        self.needed_column = needed_column
        self.error_ids: tuple[int, ...] = ()

    @property
    def required_columns(self) -> frozenset[str]:
        return frozenset({self.needed_column} if self.needed_column else ())

    def token_strings(self) -> tuple[str, ...]:
        return (*super().token_strings(), ERROR_PREFIX)

    def score_text(self, completions: list[Any], **columns: Any) -> list[float | None]:
        scores = []
        for completion in completions:
            results = [message for message in completion if isinstance(message, Mapping)
                       and message.get("role") == "tool"] if isinstance(completion, list) else []
            failed = any(isinstance(m.get("content"), str) and m["content"].startswith(ERROR_PREFIX) for m in results)
            scores.append(float(bool(results) and not failed))
        return self._only_where_needed(scores, columns)

    def score_tokens(self, completion_ids: list[list[int]], tool_mask: Sequence[Sequence[int]] | None = None,
                     **columns: Any) -> list[float | None]:
        error = self.error_ids
        scores = []
        for ids, mask in zip(completion_ids, tool_mask or [[1] * len(ids) for ids in completion_ids], strict=True):
            position, spans = 0, []
            for own, run in groupby(mask):
                length = len(list(run))
                if not own:
                    spans.append(tuple(ids[position:position + length]))
                position += length
            failed = bool(error) and any(_contains(span, error) for span in spans)
            scores.append(float(bool(spans) and not failed))
        return self._only_where_needed(scores, columns)

    def bind_tokens(self, vocabulary: Any) -> None:
        super().bind_tokens(vocabulary)
        self.error_ids = vocabulary.ids(ERROR_PREFIX)

    def _only_where_needed(self, scores: list[float], columns: Mapping[str, Any]) -> list[float | None]:
        if not self.needed_column:
            return list(scores)
        return [score if needed else 0.0 for score, needed in zip(scores, columns[self.needed_column], strict=True)]


def _contains(span: tuple[int, ...], pattern: tuple[int, ...]) -> bool:
    return any(span[start:start + len(pattern)] == pattern for start in range(len(span) - len(pattern) + 1))
