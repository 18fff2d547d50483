"""The tool task: held-out problems unseen in training, an imperfect teacher, what easy problems look like."""

from __future__ import annotations

import pytest

from grpolab.data.tool_arithmetic import ToolArithmeticTask, power_above


def task(**overrides) -> ToolArithmeticTask:
    settings = {"train_size": 400, "eval_size": 50, "min_operand": 100, "max_operand": 999, "operations": ["*"],
                "seed": 3, "tool_call_rate": 0.5}
    return ToolArithmeticTask(**{**settings, **overrides})


def problem(row) -> str:
    return row["prompt"][-1]["content"]


def test_held_out_problems_never_appear_in_training_and_the_split_is_reproducible():
    splits = task().load()
    assert not {problem(r) for r in splits.train} & {problem(r) for r in splits.eval}
    assert [problem(r) for r in task().load().eval] == [problem(r) for r in splits.eval]


def test_the_teacher_calls_the_tool_on_its_share_and_estimates_otherwise():
    rows = task().load().train
    called = [row for row in rows if len(row["solution"]) == 3]
    assert 0.4 < len(called) / len(rows) < 0.6
    for row in called:
        call, result, answer = row["solution"]
        a, b = (int(x) for x in problem(row).split("*"))
        assert call["tool_calls"][0]["function"] == {"name": "multiply", "arguments": {"a": a, "b": b}}
        assert result["content"] == row["answer"] == str(a * b) and answer["content"] == f"<answer>{a * b}</answer>"
    guessed = [row for row in rows if len(row["solution"]) == 1]
    for row in guessed:  # the order-of-magnitude guess: never right for 3-digit factors
        a, b = (int(x) for x in problem(row).split("*"))
        assert row["solution"][0]["content"] == f"<answer>{a * 1000}</answer>" != f"<answer>{row['answer']}</answer>"
    assert all(row["needs_tool"] for row in rows)


def test_the_teacher_can_call_a_code_interpreter_instead():
    row = task(code_tool="python", tool_call_rate=1.0).load().train[0]
    call, result, _ = row["solution"]
    assert call["tool_calls"][0]["function"]["name"] == "python"
    assert call["tool_calls"][0]["function"]["arguments"]["code"] == f"print({problem(row)})"
    assert result["content"] == row["answer"] + "\n"


def test_held_out_rows_carry_a_right_demonstration():
    assert all(len(row["solution"]) == 3 for row in task().load().eval)


def test_easy_problems_are_answered_without_the_tool():
    rows = task(min_operand=1, max_operand=12, operations=["+", "*"], train_size=100, eval_size=10).load().train
    easy = [row for row in rows if not row["needs_tool"]]
    assert easy and all(row["solution"][0]["content"] == f"<answer>{row['answer']}</answer>" for row in easy)


def test_the_guess_rounds_an_operand_up_to_the_power_of_ten_above_its_digits():
    assert [power_above(v) for v in (5, 42, 100, 987, 1550, -30)] == [10, 100, 1000, 1000, 10000, 100]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"operations": ["/"]}, r"data.operations=\['/'\] is not valid"),
    ({"min_operand": 5, "max_operand": 4}, "data.min_operand=5 and data.max_operand=4 must satisfy"),
    ({"tool_call_rate": 1.5}, "data.tool_call_rate=1.5 must be a fraction"),
    ({"min_operand": 1, "max_operand": 3, "train_size": 10}, "data.train_size \\+ data.eval_size = 60 exceeds"),
])
def test_bad_settings_fail_in_one_line(overrides, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        task(**overrides)
