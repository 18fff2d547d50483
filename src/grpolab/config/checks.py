"""The vocabulary of value rules, each failing in one line ``<key>=<value> must be <what is valid>``: what a type
cannot say (a negative KL coefficient, a top_p above 1). Imports nothing heavy.

>>> require("trainer.top_p", 1.5, between(0, 1, low_open=True), "in (0, 1]")
Traceback (most recent call last):
...
grpolab.config.errors.ConfigError: trainer.top_p=1.5 must be in (0, 1]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from grpolab.config.errors import ConfigError

Check = Callable[[Any], bool]


def show(value: Any) -> str:
    """A value as it is typed on the command line: ``null``, ``true``, ``0.1``, ``fp16``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))  # an Enum member as its name


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # `steps: true` in YAML is a typo, not 1


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float, integer: bool = False) -> Check:
    return lambda v: (is_int(v) if integer else is_number(v)) and v >= low


def above(low: float) -> Check:
    return lambda v: is_number(v) and v > low


def between(low: float, high: float, low_open: bool = False) -> Check:
    return lambda v: is_number(v) and (v > low if low_open else v >= low) and v <= high


def or_null(check: Check) -> Check:
    return lambda v: v is None or check(v)


def require(key: str, value: Any, check: Check, valid: str) -> None:
    if not check(value):
        raise ConfigError(f"{key}={show(value)} must be {valid}")


def require_each(node: Mapping[str, Any], prefix: str, rules: Mapping[str, tuple[Check, str]]) -> None:
    """``require`` for each key of ``rules`` that ``node`` has (a ``_target_`` node's keys differ by option)."""
    for key, (check, valid) in rules.items():
        if key in node:
            require(f"{prefix}.{key}", node[key], check, valid)
