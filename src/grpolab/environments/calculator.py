"""``environment=calculator``: exact integer arithmetic as tools, bounded so no input can make a call slow.

The operations are plain typed, docstringed methods (TRL builds each tool's JSON schema from the signature and the
docstring); nothing is evaluated from text. Python's integers are unbounded and a product of two ``n``-digit numbers
costs ``O(n^1.6)``, so operands are capped at ``max_digits`` digits: a larger one is a tool error the model reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class Calculator:
    """Add, subtract and multiply integers of at most ``max_digits`` digits; ``operations`` picks which of the three
    the model is offered (in that order in its prompt).

    >>> calculator = Calculator(operations=["multiply"], max_digits=6)
    >>> [tool.__name__ for tool in calculator.tools()], calculator.multiply(123, 456)
    (['multiply'], 56088)
    >>> calculator.multiply(10**7, 2)
    Traceback (most recent call last):
    ...
    ValueError: a has 8 digits; this calculator takes at most 6
    """

    OPERATIONS = ("add", "subtract", "multiply")

    def __init__(self, operations: Sequence[str] = OPERATIONS, max_digits: int = 30) -> None:
        unknown = [name for name in operations if name not in self.OPERATIONS]
        if unknown or not operations or len(set(operations)) != len(operations):
            raise ValueError(f"environment.tools: Calculator operations={list(operations)} must be distinct names "
                             f"from {', '.join(self.OPERATIONS)}")
        if isinstance(max_digits, bool) or not isinstance(max_digits, int) or max_digits < 1:
            raise ValueError(f"environment.tools: Calculator max_digits={max_digits!r} must be a positive integer")
        self.operations = list(operations)
        self.max_digits = max_digits

    def tools(self) -> list[Callable[..., Any]]:
        """The tools this calculator offers: its chosen operations, as bound methods."""
        return [getattr(self, name) for name in self.operations]

    def add(self, a: int, b: int) -> int:
        """Add two integers exactly.

        Args:
            a: The first integer.
            b: The second integer.
        """
        return self._checked(a, "a") + self._checked(b, "b")

    def subtract(self, a: int, b: int) -> int:
        """Subtract the second integer from the first, exactly.

        Args:
            a: The integer to subtract from.
            b: The integer to subtract.
        """
        return self._checked(a, "a") - self._checked(b, "b")

    def multiply(self, a: int, b: int) -> int:
        """Multiply two integers exactly.

        Args:
            a: The first factor.
            b: The second factor.
        """
        return self._checked(a, "a") * self._checked(b, "b")

    def _checked(self, value: Any, name: str) -> int:
        # The model writes the arguments: anything may arrive (a string, a float, a list).
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r:.40}")
        # Counting digits by str() would itself be slow for a huge int: compare magnitudes instead.
        if abs(value) >= 10 ** self.max_digits:
            digits = len(str(abs(value))) if value.bit_length() <= 10_000 else "thousands of"
            raise ValueError(f"{name} has {digits} digits; this calculator takes at most {self.max_digits}")
        return value
