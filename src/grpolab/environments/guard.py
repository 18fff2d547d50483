"""Per-call limits on tools: a wall-clock timeout that stops the call, and a cap on the result the model reads.

TRL runs a tool call inside its rollout loop and turns any exception into a tool failure (an ``{"error": ...}`` tool
message, counted in ``tools/failure_frequency``); a call that never returns would stall training and a huge result
would fill the completion budget. Every tool grpolab hands TRL is wrapped here, so a tool that hangs or raises is a
failure the model reads, never a stalled or crashed run:

- a synchronous tool runs under ``SIGALRM`` (``setitimer``): when ``timeout_s`` passes, :class:`ToolTimeout` is raised
  inside the call, interrupting Python code and interruptible waits (``time.sleep``, ``subprocess`` waits, socket
  reads). A call stuck in one long C routine is interrupted when that routine returns, so tools bound their inputs
  (``grpolab.environments.calculator``) or run untrusted work in a child process they can kill
  (``grpolab.environments.python``). The alarm needs the main thread (where TRL's rollout loop runs); elsewhere the
  call runs unguarded;
- an asynchronous tool is cancelled by ``asyncio.wait_for``;
- a result whose text is longer than ``max_output_chars`` is cut there, with a note of how much was dropped.

Environment classes (TRL's ``environment_factory``: one instance per rollout, its public methods the tools) get the
same limits through :class:`GuardedFactory`, which gives each instance a subclass with guarded methods.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: Methods of an environment class that TRL calls itself and never offers the model as tools.
ENVIRONMENT_HOOKS = ("reset", "get_reward")


class ToolTimeout(Exception):
    """A tool call ran past its ``timeout_s``; TRL reports it to the model as the call's error."""


@dataclass(frozen=True)
class ToolLimits:
    """What every tool call of a run is held to.

    >>> ToolLimits(timeout_s=0, max_output_chars=10)
    Traceback (most recent call last):
    ...
    ValueError: environment.timeout_s=0 must be a positive number of seconds
    """

    timeout_s: float
    max_output_chars: int

    def __post_init__(self) -> None:
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise ValueError(f"environment.timeout_s={self.timeout_s!r} must be a positive number of seconds")
        if isinstance(self.max_output_chars, bool) or not isinstance(self.max_output_chars, int) \
                or self.max_output_chars < 1:
            raise ValueError(f"environment.max_output_chars={self.max_output_chars!r} must be a positive number of "
                             "characters")


def truncated(result: Any, max_chars: int) -> Any:
    """``result`` as the model will read it: unchanged when its text fits, else its text cut at ``max_chars`` with a
    note. A list is passed through: TRL reads it as content blocks (an image with a caption), not as text.

    >>> truncated(12345, 10), truncated("x" * 12, 10)
    (12345, 'xxxxxxxxxx... [2 more characters]')
    """
    if isinstance(result, list):
        return result
    text = str(result)
    if len(text) <= max_chars:
        return result
    return f"{text[:max_chars]}... [{len(text) - max_chars} more characters]"


@contextmanager
def time_limit(seconds: float, name: str) -> Iterator[None]:
    """Raise :class:`ToolTimeout` in this (main) thread when ``seconds`` pass; an alarm that was already set (a tool
    calling a tool, the caller's own) gets its handler and its remaining time back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return

    def expire(signum: int, frame: Any) -> None:
        raise ToolTimeout(f"{name} did not return within {seconds:g} s (environment.timeout_s)")

    previous = signal.signal(signal.SIGALRM, expire)
    earlier_delay, earlier_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier_delay:
            remaining = max(earlier_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, earlier_interval)


def guard_tool(tool: Callable[..., Any], limits: ToolLimits) -> Callable[..., Any]:
    """``tool`` under ``limits``, with its name, signature, type hints and docstring (TRL builds the tool's JSON
    schema from them), sync or async as it was.

    >>> import time
    >>> def nap(seconds: float) -> str:
    ...     '''Sleep.
    ...
    ...     Args:
    ...         seconds: how long
    ...     '''
    ...     time.sleep(seconds)
    ...     return "rested"
    >>> guarded = guard_tool(nap, ToolLimits(timeout_s=0.2, max_output_chars=100))
    >>> guarded(0.01), guarded.__name__
    ('rested', 'nap')
    >>> guarded(30)
    Traceback (most recent call last):
    ...
    grpolab.environments.guard.ToolTimeout: nap did not return within 0.2 s (environment.timeout_s)
    """
    name = getattr(tool, "__name__", type(tool).__name__)
    if inspect.iscoroutinefunction(tool):
        @functools.wraps(tool)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await asyncio.wait_for(tool(*args, **kwargs), limits.timeout_s)
            except asyncio.TimeoutError:
                raise ToolTimeout(f"{name} did not return within {limits.timeout_s:g} s (environment.timeout_s)") \
                    from None
            return truncated(result, limits.max_output_chars)

        return guarded_async

    @functools.wraps(tool)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        with time_limit(limits.timeout_s, name):
            result = tool(*args, **kwargs)
        return truncated(result, limits.max_output_chars)

    return guarded


def public_methods(cls: type) -> list[str]:
    """The names TRL offers the model as tools of an environment class: public functions, minus its hooks."""
    return [name for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction)
            if not name.startswith("_") and name not in ENVIRONMENT_HOOKS]


class GuardedFactory:
    """An ``environment_factory`` whose instances run every tool method under ``limits``.

    Each instance the wrapped ``factory`` makes is given a subclass of its class (same name, so TRL's reward column
    keeps it) whose tool methods are guarded; TRL then finds those methods on the class, as it looks for them.
    """

    def __init__(self, factory: Callable[[], Any], limits: ToolLimits) -> None:
        self.factory = factory
        self.limits = limits
        self._guarded: dict[type, type] = {}

    def __call__(self) -> Any:
        instance = self.factory()
        cls = type(instance)
        if not callable(getattr(instance, "reset", None)):
            raise ValueError(f"environment.environment_factory: {cls.__name__} has no reset() method, which TRL "
                             "calls before every rollout")
        if cls not in self._guarded:
            methods = {name: guard_tool(getattr(cls, name), self.limits) for name in public_methods(cls)}
            self._guarded[cls] = type(cls.__name__, (cls,), {**methods, "__module__": cls.__module__,
                                                             "__qualname__": cls.__qualname__})
        try:
            instance.__class__ = self._guarded[cls]
        except TypeError as error:  # a built-in or __slots__ layout
            raise ValueError(f"environment.environment_factory: {cls.__name__} instances cannot take guarded tool "
                             f"methods ({error}); use a plain Python class") from error
        return instance
