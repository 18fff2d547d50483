"""The calculator's tools: exact, typed, described to the model, and bounded against huge inputs."""

from __future__ import annotations

import pytest
from transformers.utils import get_json_schema

from grpolab.environments.calculator import Calculator


def test_the_three_operations_are_exact_on_big_integers():
    calculator = Calculator()
    a, b = 123456789012345678901234567890 // 10, 987654321098765432109876543210 // 10
    assert calculator.add(a, b) == a + b and calculator.subtract(a, b) == a - b
    assert calculator.multiply(a, b) == a * b


def test_operations_picks_and_orders_the_tools():
    assert [tool.__name__ for tool in Calculator(["multiply", "add"]).tools()] == ["multiply", "add"]
    schema = get_json_schema(Calculator().multiply)["function"]
    assert schema["name"] == "multiply" and schema["parameters"]["required"] == ["a", "b"]
    assert schema["parameters"]["properties"]["a"] == {"type": "integer", "description": "The first factor."}


@pytest.mark.parametrize("value", ["12", 1.5, True, [1], None])
def test_what_is_not_an_integer_is_a_tool_error(value):
    with pytest.raises(ValueError, match="^a must be an integer"):
        Calculator().multiply(value, 2)


def test_a_huge_operand_is_refused_before_any_arithmetic_or_digit_counting_on_it():
    # Neither multiplied nor turned into text (str() of 1.8 million digits would itself take seconds, or fail).
    with pytest.raises(ValueError, match="^b has thousands of digits; this calculator takes at most 30$"):
        Calculator().multiply(3, 1 << 6_000_000)
    with pytest.raises(ValueError, match="^a has 31 digits; this calculator takes at most 30$"):
        Calculator().add(10**30, 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"operations": ["divide"]}, r"operations=\['divide'\] must be distinct names from add, subtract, multiply"),
    ({"operations": []}, "operations=\\[\\] must be"),
    ({"operations": ["add", "add"]}, r"operations=\[.add., .add.\] must be distinct"),
    ({"max_digits": 0}, "max_digits=0 must be a positive integer"),
])
def test_bad_settings_fail_in_one_line_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=f"^environment.tools: Calculator {message}"):
        Calculator(**kwargs)
