"""The error types of config checks, and the "did you mean" helper their messages share. Imports nothing heavy."""

from __future__ import annotations

import difflib
from collections.abc import Collection


class ConfigError(ValueError):
    """A configuration mistake, reported as one line naming the key, the value and what would be valid."""


class PreflightError(ValueError):
    """A command-line mistake found before Hydra starts, described in one line naming the override and what is valid."""


def closest(word: str, choices: Collection[str], n: int = 3) -> str:
    """``"did you mean: a, b"`` for the closest choices, or ``""``.

    >>> closest("num_generation", ["num_generations", "beta"])
    'did you mean: num_generations'
    """
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f"did you mean: {', '.join(matches)}" if matches else ""
