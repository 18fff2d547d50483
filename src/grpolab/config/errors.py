"""The error type of config checks, and the one way an error is cut to the one line a user reads. Imports nothing."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration mistake, reported as one line naming the key, the value and what would be valid."""


def first_line(error: BaseException) -> str:
    r"""The first non-blank line of an error's message (later lines of library errors repeat keys and types), or the
    error's type when it has no message.

    >>> first_line(ValueError("Value 'x' could not be converted to Integer\n    full_key: seed"))
    "Value 'x' could not be converted to Integer"
    """
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
