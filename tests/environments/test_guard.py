"""Per-call limits: a tool that hangs is stopped, a huge result is cut, the tool's schema survives the wrapping."""

from __future__ import annotations

import asyncio
import signal

import pytest
from transformers.utils import get_json_schema

from grpolab.environments.guard import GuardedFactory, ToolLimits, ToolTimeout, guard_tool, public_methods, truncated

LIMITS = ToolLimits(timeout_s=0.3, max_output_chars=20)


def spin(rounds: int) -> int:
    """Busy Python loop.

    Args:
        rounds: How many additions.
    """
    total = 0
    for index in range(rounds):
        total += index
    return total


def shout(text: str) -> str:
    """Repeat text loudly.

    Args:
        text: What to repeat.
    """
    return text.upper() * 10


async def wait(seconds: float) -> str:
    """Wait.

    Args:
        seconds: How long.
    """
    await asyncio.sleep(seconds)
    return "done"


def test_a_hanging_python_loop_is_stopped_within_the_timeout():
    guarded = guard_tool(spin, LIMITS)
    with pytest.raises(ToolTimeout, match=r"^spin did not return within 0.3 s \(environment.timeout_s\)$"):
        guarded(10**12)  # hours of additions
    assert guarded(10) == 45  # the next call runs normally
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left behind


def test_the_alarm_handler_before_the_call_is_restored():
    def previous(signum, frame):
        pass

    signal.signal(signal.SIGALRM, previous)
    try:
        guard_tool(spin, LIMITS)(10)
        assert signal.getsignal(signal.SIGALRM) is previous
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def test_a_tool_calling_a_tool_leaves_the_outer_alarm_running():
    def outer(rounds: int) -> int:
        """Call the inner tool, then spin.

        Args:
            rounds: How many additions.
        """
        guard_tool(spin, ToolLimits(timeout_s=5, max_output_chars=20))(10)
        return spin(rounds)

    with pytest.raises(ToolTimeout, match="^outer did not return"):
        guard_tool(outer, LIMITS)(10**12)


def test_a_long_result_is_cut_with_a_note_and_a_short_one_kept_as_it_is():
    cut = guard_tool(shout, LIMITS)("abc")
    assert cut == "ABC" * 6 + "AB" + "... [10 more characters]"
    assert guard_tool(spin, LIMITS)(3) == 3  # not turned into text
    assert truncated([{"type": "text", "text": "x" * 50}], 5)[0]["text"] == "x" * 50  # content blocks pass


def test_the_guarded_tool_keeps_the_schema_trl_renders():
    assert get_json_schema(guard_tool(shout, LIMITS)) == get_json_schema(shout)


def test_an_async_tool_is_cancelled_at_the_timeout():
    guarded = guard_tool(wait, LIMITS)
    assert asyncio.iscoroutinefunction(guarded)
    assert asyncio.run(guarded(0.01)) == "done"
    with pytest.raises(ToolTimeout, match="^wait did not return within 0.3 s"):
        asyncio.run(guarded(30))


@pytest.mark.parametrize(("timeout", "chars", "message"), [
    (0, 10, "environment.timeout_s=0 must be a positive number of seconds"),
    (True, 10, "environment.timeout_s=True must be"),
    (1, 0, "environment.max_output_chars=0 must be a positive number of characters"),
])
def test_bad_limits_fail_in_one_line(timeout, chars, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        ToolLimits(timeout_s=timeout, max_output_chars=chars)


class Counter:
    """An environment in TRL's sense: reset, a reward, tools."""

    def reset(self, **row):
        self.count = 0

    def get_reward(self) -> float:
        return float(self.count)

    def increment(self, by: int) -> int:
        """Add to the counter.

        Args:
            by: How much to add.
        """
        self.count += by
        return self.count

    def stall(self) -> str:
        """Never return."""
        while True:
            pass

    def _helper(self):
        return None


def test_environment_instances_get_guarded_tool_methods_under_their_own_class_name():
    factory = GuardedFactory(Counter, LIMITS)
    first, second = factory(), factory()
    assert type(first) is type(second) and type(first).__name__ == "Counter" and isinstance(first, Counter)
    assert public_methods(type(first)) == ["increment", "stall"]
    first.reset()
    assert first.increment(2) == 2 and first.get_reward() == 2.0
    with pytest.raises(ToolTimeout, match="^stall did not return"):
        first.stall()
    assert get_json_schema(first.increment)["function"]["parameters"]["properties"] == {
        "by": {"type": "integer", "description": "How much to add."}}
