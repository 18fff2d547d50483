"""Picklable wrappers around reward callables: naming third-party functions, and guarding every reward at train time.

They are classes rather than closures because TRL may pickle reward functions into a rollout worker process. TRL
awaits a reward when ``is_async_callable`` says it is a coroutine function (a function, a partial of one, or an object
whose ``__call__`` is ``async def``) and runs all such rewards together with ``asyncio.gather``; so a wrapper around an
async reward is itself async (``AsyncNamedReward``, ``AsyncGuardedReward``), never a sync call returning a coroutine.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from grpolab.config.errors import ConfigError
from grpolab.rewards.base import TRAINER_KWARGS, RewardLevel, no_token_variant

# Arguments TRL always supplies; a callable's other required parameters must be dataset columns.
TRL_SUPPLIED = frozenset({"prompts", "completions", "completion_ids"}) | TRAINER_KWARGS
COMPLETIONS_AS = ("as_is", "chat")


def reward_name(func: Callable[..., Any]) -> str:
    """The name TRL logs a reward under (``rewards/<name>/mean``), resolved the way TRL resolves it."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def is_async_reward(func: Callable[..., Any]) -> bool:
    """Whether TRL will await ``func``: the test of ``trl.trainer.utils.is_async_callable``, without importing TRL.

    >>> async def judge(completions, **kwargs): ...
    >>> is_async_reward(judge), is_async_reward(functools.partial(judge)), is_async_reward(len)
    (True, True, False)
    """
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def required_parameters(func: Callable[..., Any]) -> frozenset[str]:
    """Parameters of a reward callable that TRL does not supply and that have no default: dataset columns.

    >>> def solution_reward(completions, solution, log_extra=None, **kwargs): ...
    >>> sorted(required_parameters(solution_reward))
    ['solution']
    """
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: nothing can be inferred
        return frozenset()
    return frozenset(
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty
        and p.name not in TRL_SUPPLIED
    )


class NamedReward:
    """Give any TRL-style reward callable (a function, a ``functools.partial``, a callable object) a metric name.

    ``completions_as="chat"`` turns plain-string completions into ``[{"role": "assistant", "content": text}]`` first,
    for functions such as ``trl.rewards.think_format_reward`` that read ``completion[0]["content"]``.
    ``reads_only_ids`` marks callables that read ``completion_ids`` only and never ``completions`` (TRL's
    soft overlong and repetition penalties): only those may run at ``level=token``.

    >>> import functools, trl.rewards
    >>> reward = NamedReward(functools.partial(trl.rewards.think_format_reward), "think_format", completions_as="chat")
    >>> reward.__name__, reward(prompts=["q"], completions=["<think>hm</think>19"], completion_ids=[[]])
    ('think_format', [1.0])
    """

    def __init__(
        self,
        func: Callable[..., Any],
        name: str,
        completions_as: str = "as_is",
        reads_only_ids: bool = False,
        level: RewardLevel | str = RewardLevel.text,
    ):
        if completions_as not in COMPLETIONS_AS:
            raise ConfigError(
                f"rewards.{name}.completions_as must be one of {', '.join(COMPLETIONS_AS)}; got {completions_as!r}"
            )
        self.level = RewardLevel.parse(level, where=f"rewards.{name}.level")
        if self.level is RewardLevel.token and not reads_only_ids:
            raise no_token_variant(name, has_level_key=False)
        self.func = func
        self.__name__ = name
        self.completions_as = completions_as
        self.reads_only_ids = reads_only_ids
        self.required_columns = required_parameters(func)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **kwargs: Any
    ) -> list[float | None]:
        return self.func(
            prompts=prompts, completions=self._completions(completions), completion_ids=completion_ids, **kwargs
        )

    def _completions(self, completions: Sequence[Any]) -> Sequence[Any]:
        if self.completions_as == "chat":
            return [[{"role": "assistant", "content": c}] if isinstance(c, str) else c for c in completions]
        return completions

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.func!r}, name={self.__name__!r})"


class AsyncNamedReward(NamedReward):
    """``NamedReward`` for an async reward (``is_async_reward``): TRL sees a coroutine function and awaits it.

    >>> import asyncio
    >>> async def judge(completions, **kwargs):
    ...     return [float("19" in c) for c in completions]
    >>> reward = AsyncNamedReward(judge, "judge")
    >>> asyncio.run(reward(prompts=["q"] * 2, completions=["19", "18"], completion_ids=[[], []]))
    [1.0, 0.0]
    """

    async def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **kwargs: Any
    ) -> list[float | None]:
        return await self.func(
            prompts=prompts, completions=self._completions(completions), completion_ids=completion_ids, **kwargs
        )


class RewardError(RuntimeError):
    """A reward failed or returned something TRL cannot use; the message names the reward and the sample."""


class GuardedReward:
    """Wrap a reward so a failure names the reward and shows the offending sample, not just a stack trace.

    An exception is localised by re-running the reward on one sample at a time (only after a failure). A return value
    of the wrong length, a value that is not a number or None, or an infinite value is reported with the sample it
    concerns. ``__name__`` (the metric key) and ``level`` are the wrapped reward's.

    >>> def broken(completions, **kwargs):
    ...     return [1.0 / len(c) for c in completions]
    >>> broken.__name__ = "broken"
    >>> try:
    ...     GuardedReward(broken)(prompts=["a", "b"], completions=["x", ""], completion_ids=[[5], []])
    ... except RewardError as error:
    ...     print(error)  # doctest: +ELLIPSIS
    rewards.broken raised ZeroDivisionError('float division by zero') on sample 1 of 2: prompt='b', completion='', ...
    """

    awaits: ClassVar[bool] = False  # whether __call__ is a coroutine function, as the wrapped reward must be

    def __init__(self, func: Callable[..., Any]):
        self.func = func
        self.__name__ = reward_name(func)
        self.level: RewardLevel | None = getattr(func, "level", None)
        if _is_torch_module(func):
            name = getattr(getattr(func, "config", None), "_name_or_path", None) or self.__name__  # TRL's name for it
            raise TypeError(
                f"rewards.{name} is a model: TRL must receive it as a model, with its tokenizer in "
                f"reward_processing_classes (BuiltRewards.trainer_reward_funcs / reward_processing_classes do that)"
            )
        if is_async_reward(func) is not self.awaits:
            kind = "a synchronous" if self.awaits else "an async"
            raise TypeError(
                f"rewards.{self.__name__} is {kind} reward, so {type(self).__name__} would hide that from TRL; use "
                f"guard_reward(func), which picks GuardedReward or AsyncGuardedReward"
            )

    @property
    def label(self) -> str:
        level = f" ({self.level.value})" if isinstance(self.level, RewardLevel) else ""
        return f"rewards.{self.__name__}{level}"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **kwargs: Any
    ) -> list[float | None]:
        batch = _Batch(prompts, completions, completion_ids, kwargs)
        try:
            rewards = self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        except RewardError:
            raise
        except Exception as error:
            raise RewardError(self._describe_exception(error, batch)) from error
        self._check_output(rewards, batch)
        return rewards

    def _describe_exception(self, error: Exception, batch: _Batch) -> str:
        for index in range(batch.size):
            try:
                self.func(**batch.one(index))
            except Exception as sample_error:
                return self._sample_failure(sample_error, batch, index)
        return self._batch_failure(error, batch)

    def _sample_failure(self, error: Exception, batch: _Batch, index: int) -> str:
        return f"{self.label} raised {error!r} on sample {index} of {batch.size}: {batch.describe(index)}"

    def _batch_failure(self, error: Exception, batch: _Batch) -> str:
        where = f"first sample: {batch.describe(0)}" if batch.size else "the batch is empty"
        return f"{self.label} raised {error!r} on a batch of {batch.size} (no single sample reproduces it); {where}"

    def _check_output(self, rewards: Any, batch: _Batch) -> None:
        if isinstance(rewards, (str, bytes)) or not hasattr(rewards, "__len__"):
            raise RewardError(f"{self.label} returned {type(rewards).__name__}, not a list of rewards")
        if len(rewards) != batch.size:
            if len(rewards) < batch.size:
                first_missing = len(rewards)
                detail = f"; first sample without a reward: {first_missing}: {batch.describe(first_missing)}"
            else:
                detail = ""
            raise RewardError(
                f"{self.label} returned {len(rewards)} rewards for {batch.size} completions{detail}"
            )
        for index, value in enumerate(rewards):
            if value is None:
                continue
            if not isinstance(value, numbers.Real):
                problem = f"{value!r} ({type(value).__name__}), not a number or None"
            elif math.isinf(value):
                problem = f"{value!r}, an infinite reward"
            else:
                continue
            raise RewardError(
                f"{self.label} returned {problem} for sample {index} of {batch.size}: {batch.describe(index)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.func!r})"


class AsyncGuardedReward(GuardedReward):
    """``GuardedReward`` for an async reward: awaited by TRL like the reward it wraps, with the same diagnosis (a
    failure is localised by awaiting the reward on one sample at a time).

    >>> import asyncio
    >>> async def judge(completions, **kwargs):
    ...     return [1.0 / len(c) for c in completions]
    >>> try:
    ...     asyncio.run(AsyncGuardedReward(judge)(prompts=["a", "b"], completions=["x", ""], completion_ids=[[5], []]))
    ... except RewardError as error:
    ...     print(error)  # doctest: +ELLIPSIS
    rewards.judge raised ZeroDivisionError('float division by zero') on sample 1 of 2: prompt='b', completion='', ...
    """

    awaits = True

    async def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **kwargs: Any
    ) -> list[float | None]:
        batch = _Batch(prompts, completions, completion_ids, kwargs)
        try:
            rewards = await self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        except RewardError:
            raise
        except Exception as error:
            raise RewardError(await self._describe_exception_async(error, batch)) from error
        self._check_output(rewards, batch)
        return rewards

    async def _describe_exception_async(self, error: Exception, batch: _Batch) -> str:
        for index in range(batch.size):
            try:
                await self.func(**batch.one(index))
            except Exception as sample_error:
                return self._sample_failure(sample_error, batch, index)
        return self._batch_failure(error, batch)


def guard_reward(func: Callable[..., Any]) -> GuardedReward:
    """The guard TRL should receive for a reward function: async for an async reward, so TRL still awaits it."""
    return AsyncGuardedReward(func) if is_async_reward(func) else GuardedReward(func)


class _Batch:
    """One call's arguments, able to cut out and describe single samples."""

    def __init__(self, prompts: Any, completions: Any, completion_ids: Any, kwargs: dict[str, Any]):
        self.prompts, self.completions, self.completion_ids, self.kwargs = prompts, completions, completion_ids, kwargs
        self.size = len(completion_ids)

    def _is_column(self, key: str, value: Any) -> bool:
        return key not in TRAINER_KWARGS and isinstance(value, (list, tuple)) and len(value) == self.size

    def one(self, index: int) -> dict[str, Any]:
        kwargs = {}
        for key, value in self.kwargs.items():
            if key in ("log_extra", "log_metric"):
                kwargs[key] = _ignore  # re-runs for diagnosis must not log twice
            elif self._is_column(key, value) or key == "environments":
                kwargs[key] = [value[index]]
            else:
                kwargs[key] = value
        return {
            "prompts": [self.prompts[index]],
            # A view, so a reward that never reads completions (token level) does not trigger a decode here either.
            "completions": _OneOf(self.completions, index),
            "completion_ids": [self.completion_ids[index]],
            **kwargs,
        }

    def describe(self, index: int) -> str:
        parts = [f"prompt={_short(self.prompts[index])}"]
        try:
            parts.append(f"completion={_short(self.completions[index])}")
        except Exception as error:  # a lazily decoded sequence may itself be what failed
            parts.append(f"completion=<unavailable: {error!r}>")
        parts.append(f"completion_ids={_short(list(self.completion_ids[index]))}")
        parts += [f"{key}={_short(value[index])}" for key, value in self.kwargs.items() if self._is_column(key, value)]
        return ", ".join(parts)


class _OneOf(Sequence):
    """A one-element view of ``sequence[index]`` that reads the element only when asked."""

    def __init__(self, sequence: Sequence[Any], index: int):
        self.sequence, self.index = sequence, index

    def __len__(self) -> int:
        return 1

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(1))]
        if position not in (0, -1):
            raise IndexError(position)
        return self.sequence[self.index]


def _is_torch_module(func: Any) -> bool:
    torch = sys.modules.get("torch")  # an nn.Module exists only once torch is imported; never import it here
    return torch is not None and isinstance(func, torch.nn.Module)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...<{len(text)} chars>"
