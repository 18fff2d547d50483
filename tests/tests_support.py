"""Helpers several test modules share, and reward callables that misbehave on purpose (importable by the CLI
subprocesses the tests start)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous port of a two-process group a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FailingReward:
    """Divides by zero on problems with an even answer: a reward bug that should name itself and the sample."""

    def __call__(self, prompts, completions, completion_ids, answer, **kwargs):
        return [1.0 / (int(gold) % 2) for gold in answer]


class ShortReward:
    """Returns one reward too few."""

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        return [0.0] * (len(completions) - 1)


from grpolab.rewards.base import Reward  # noqa: E402


class NeedsDifficulty(Reward):
    """A reward that reads a dataset column the default task does not have."""

    text_columns = frozenset({"difficulty"})

    def score_text(self, completions, difficulty, **columns):
        return [float(d) for d in difficulty]
