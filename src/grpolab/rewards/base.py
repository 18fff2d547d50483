"""The reward base class: one metric, a text variant and an optional token-ID variant, TRL's calling contract.

TRL calls every reward function as ``func(prompts=..., completions=..., completion_ids=..., **columns)`` where the
columns are the dataset's other columns (one list entry per completion) plus ``trainer_state``, ``log_extra`` and
``log_metric``. It logs the result as ``rewards/<func.__name__>/mean``; the builder sets ``__name__`` to the yaml key
so the text and token variants of a reward log under the same key and runs at either level stay comparable.

At ``level=token`` a reward reads ``completion_ids`` only. ``completions`` may then be a lazily decoded sequence whose
every access costs a decode, so the token path must never touch it.

With tools (``environment=...``) a completion is multi-turn. TRL hands text rewards the messages (assistant turns with
their parsed ``tool_calls``, and the ``tool`` results); the text variant reads the assistant turns' content, never a
tool's output. Token rewards get ``tool_mask`` (0 on tool-output IDs, as TRL masks them out of the loss) and the token
variant reads the model's own IDs as the text variant sees them: tool output dropped, and the ``<tool_call>`` blocks
that TRL parses out of the content dropped too. A reward that scores the tool use itself opts out of both views
(``reads_messages``, ``reads_tool_output``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from itertools import compress, filterfalse
from typing import Any, ClassVar

from grpolab.config.enums import RewardLevel
from grpolab.config.errors import ConfigError
from grpolab.rewards.tags import split_ids
from grpolab.rewards.vocabulary import Vocabulary

# Keyword arguments TRL (and grpolab's trainer: ``tool_mask``) add on top of the dataset columns; never treated as
# dataset columns.
TRAINER_KWARGS = frozenset({"trainer_state", "log_extra", "log_metric", "environments", "tool_mask"})
#: The tags of a tool call in the chat templates grpolab knows (Qwen2.5's, grpolab's tiny models').
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
# The conf/rewards options that have a token variant; a test keeps this in step with what builds at level=token.
TOKEN_LEVEL_REWARDS = ("accuracy", "format", "length", "overlong", "cosine_length", "repetition")


class RewardLevelError(ConfigError):
    """A reward was asked for a level it has no variant for."""


def no_token_variant(name: str, has_level_key: bool) -> RewardLevelError:
    """The one refusal of a reward without a token variant at ``level=token`` (a ``Reward``, a reward model, or a plain
    callable that reads text); ``has_level_key``: the reward takes ``rewards.<name>.level``, so it can run at text level
    alone.

    >>> str(no_token_variant("think_format", has_level_key=False)).split(";")[0]
    'rewards.think_format has no token variant, so it cannot run with reward_level=token'
    """
    alternative = f"set rewards.{name}.level=text, " if has_level_key else ""
    return RewardLevelError(
        f"rewards.{name} has no token variant, so it cannot run with reward_level=token; {alternative}use "
        f"reward_level=text, or only rewards with a token variant: {', '.join(TOKEN_LEVEL_REWARDS)}"
    )


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message; multimodal content lists contribute their text parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def completion_text(completion: str | Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> str:
    """Normalise a completion to text: a plain string, or TRL's ``[{"role": "assistant", "content": ...}]``.

    Several assistant messages (tool-calling turns) are concatenated; tool results are not the model's output.

    >>> completion_text([{"role": "assistant", "content": "<answer>19</answer>"}])
    '<answer>19</answer>'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return message_text(completion)
    if isinstance(completion, Sequence):
        return "".join(message_text(m) for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def strip_trailing_special(ids: Sequence[int], special_ids: Collection[int]) -> tuple[int, ...]:
    """Drop trailing EOS/pad/end-of-turn IDs, which TRL keeps in ``completion_ids`` but text decoding skips.

    >>> strip_trailing_special([5, 6, 1, 0], {0, 1})
    (5, 6)
    """
    end = len(ids)
    while end > 0 and ids[end - 1] in special_ids:
        end -= 1
    return tuple(ids[:end])


class Reward:
    """Base class: subclasses implement ``score_text`` and, when they can, ``score_tokens``.

    Both variants compute the same quantity and log under the same name. Subclasses declare which dataset columns each
    variant reads (``text_columns`` / ``token_columns``) and which fixed strings the token variant must resolve to IDs
    (``tags``); the composition root describes the tokenizer once (``describe_vocabulary``) and calls ``bind_tokens``
    with that description, so no tokenizer object is ever held by a reward.
    """

    default_name: ClassVar[str] = "reward"
    text_columns: ClassVar[frozenset[str]] = frozenset()
    token_columns: ClassVar[frozenset[str]] = frozenset()
    tags: ClassVar[tuple[str, ...]] = ()
    #: The text variant gets the completions as TRL hands them (chat messages with tool calls), not their text.
    reads_messages: ClassVar[bool] = False
    #: The token variant gets every completion ID, tool output included, instead of the model's own IDs.
    reads_tool_output: ClassVar[bool] = False

    def __init__(self, level: RewardLevel | str = RewardLevel.text, name: str | None = None) -> None:
        self.__name__ = name or self.default_name
        self.level = RewardLevel.parse(level, where=f"rewards.{self.__name__}.level")
        if self.level is RewardLevel.token and not self.has_token_variant():
            raise no_token_variant(self.__name__, has_level_key=True)
        self.special_ids: frozenset[int] = frozenset()
        self.whitespace_ids: frozenset[int] = frozenset()
        self.tag_ids: dict[str, tuple[int, ...]] = {}
        self.tool_call_ids: dict[str, tuple[int, ...]] = {}
        self.bound = False

    @classmethod
    def has_token_variant(cls) -> bool:
        return cls.score_tokens is not Reward.score_tokens

    @property
    def required_columns(self) -> frozenset[str]:
        """Dataset columns this reward reads at its level."""
        return self.token_columns if self.level is RewardLevel.token else self.text_columns

    def token_strings(self) -> tuple[str, ...]:
        """Fixed strings whose IDs the token variant needs (encoded by ``describe_vocabulary``): the tags, and the
        tool-call tags the model's own IDs are read without."""
        return (*self.tags, TOOL_CALL_OPEN, TOOL_CALL_CLOSE)

    def check_budget(self, max_completion_length: int) -> None:
        """Refuse settings this reward cannot act on within ``trainer.max_completion_length`` tokens (what generation
        may produce); ``build_rewards`` calls it. Nothing by default."""

    def bind_tokens(self, vocabulary: Vocabulary) -> None:
        """Resolve ``tags`` to ID sequences and remember the special and whitespace-only IDs; no tokenizer is kept.

        ``vocabulary`` comes from ``describe_vocabulary(tokenizer, reward.token_strings())``; its special IDs should be
        every special ID (``tok.all_special_ids``) so trailing EOS/pad/end-of-turn IDs are ignored.
        """
        self.special_ids = vocabulary.special_ids
        self.whitespace_ids = vocabulary.whitespace_ids
        tag_ids = {}
        for tag in self.tags:
            ids = vocabulary.ids(tag)
            if not ids:
                raise ValueError(f"rewards.{self.__name__}: the tokenizer encodes the tag {tag!r} to no IDs")
            if self.special_ids.intersection(ids):
                # Decoding with skip_special_tokens drops special tokens, so the text variant could never see the tag.
                raise ValueError(
                    f"rewards.{self.__name__}: the tag {tag!r} encodes to special IDs {list(ids)}; tags must be "
                    f"non-special tokens so decoded text keeps them"
                )
            tag_ids[tag] = ids
        self.tag_ids = tag_ids
        self.tool_call_ids = {tag: vocabulary.encodings[tag] for tag in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)
                              if vocabulary.encodings.get(tag)}
        self.bound = True

    def score_text(self, completions: list[str], **columns: Any) -> list[float | None]:
        raise NotImplementedError

    def score_tokens(self, completion_ids: list[list[int]], **columns: Any) -> list[float | None]:
        raise NotImplementedError  # never called: __init__ refuses level=token without an override of this method

    def content_ids(self, completion_ids: Sequence[int]) -> tuple[int, ...]:
        """A completion's IDs without special IDs anywhere: what the text variant sees after decoding with
        ``skip_special_tokens=True`` (a tiny model can emit ``<|im_end|>`` mid-answer)."""
        return tuple(filterfalse(self.special_ids.__contains__, completion_ids))  # C speed: no Python step per ID

    def model_ids(self, completion_ids: Sequence[int], tool_mask: Sequence[int]) -> list[int]:
        """A multi-turn completion's IDs as the text variant sees the model's turns: the tool output (``tool_mask``
        0) dropped, and each ``<tool_call>...</tool_call>`` block, which TRL parses out of the turn's content.

        >>> reward = Reward()
        >>> reward.tool_call_ids = {TOOL_CALL_OPEN: (8,), TOOL_CALL_CLOSE: (9,)}
        >>> reward.model_ids([8, 5, 9, 0, 0, 7, 6], [1, 1, 1, 0, 0, 1, 1])
        [7, 6]
        """
        own = list(compress(completion_ids, tool_mask))
        if len(self.tool_call_ids) < 2:
            return own
        kept: list[int] = []
        inside = False
        for piece in split_ids(own, self.tool_call_ids):
            if piece.tag is not None:
                inside = piece.tag == TOOL_CALL_OPEN
            elif not inside:
                kept.extend(piece.content)
        return kept

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **kwargs: Any
    ) -> list[float | None]:
        missing = sorted(self.required_columns - kwargs.keys())
        if missing:
            available = ", ".join(sorted(k for k in kwargs if k not in TRAINER_KWARGS)) or "none"
            raise ValueError(
                f"rewards.{self.__name__} ({self.level.value}) needs dataset column(s) {', '.join(missing)} but got: "
                f"{available}"
            )
        if self.level is RewardLevel.token:
            if not self.bound:
                raise RuntimeError(
                    f"rewards.{self.__name__} (token) was never bound to a tokenizer: call "
                    f"bind_tokens(describe_vocabulary(tokenizer, reward.token_strings())) first (build_rewards does)"
                )
            tool_mask = kwargs.get("tool_mask")
            if tool_mask is not None and not self.reads_tool_output:
                completion_ids = [self.model_ids(ids, mask)
                                  for ids, mask in zip(completion_ids, tool_mask, strict=True)]
            return self.score_tokens(list(completion_ids), **kwargs)
        if self.reads_messages:
            return self.score_text(list(completions), **kwargs)
        return self.score_text([completion_text(c) for c in completions], **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r}, level={self.level.value!r})"
