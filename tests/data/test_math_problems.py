"""The MATH loader on a local JSONL copy (no hub access): answers from \\boxed{}, level filter, splits, prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpolab.data.math_problems import MathProblems
from grpolab.rewards.accuracy import Accuracy

ROWS = [
    {"problem": "What is $1/2 + 1/4$?", "solution": r"We get $\boxed{\frac{3}{4}}$.", "level": "Level 1"},
    {"problem": "Solve $x+1=3$.", "solution": r"So $x = \boxed{2}$.", "level": "Level 3"},
    {"problem": "Area?", "solution": r"First \boxed{1}, finally $\boxed{ 16\pi }$.", "level": "Level 5"},
    {"problem": "No final answer.", "solution": "It is 7.", "level": "Level 4"},
    {"problem": "Count.", "solution": r"There are $\boxed{12}$.", "level": "Level 4"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def task(path: Path, **overrides) -> MathProblems:
    settings = dict(path=str(path), hub_id="unused", hub_config=None, levels=None, train_size=None, eval_size=1,
                    seed=0, conversational=True, system_prompt="Answer in <answer></answer>.")
    settings.update(overrides)
    return MathProblems(**settings)


def test_answers_come_from_the_last_boxed_and_unboxed_rows_are_dropped(tmp_path: Path) -> None:
    splits = task(write_jsonl(tmp_path / "math.jsonl", ROWS)).load()
    rows = list(splits.train) + list(splits.eval)
    assert len(splits.eval) == 1 and len(rows) == 4
    by_problem = {row["prompt"][1]["content"]: row for row in rows}
    assert "No final answer." not in by_problem
    assert by_problem["What is $1/2 + 1/4$?"]["answer"] == r"\frac{3}{4}"
    assert by_problem["Area?"]["answer"] == r"16\pi"
    assert by_problem["Count."]["solution"] == r"<think>There are $\boxed{12}$.</think><answer>12</answer>"
    assert by_problem["Count."]["prompt"][0] == {"role": "system", "content": "Answer in <answer></answer>."}


def test_the_warm_start_solution_earns_full_accuracy(tmp_path: Path) -> None:
    splits = task(write_jsonl(tmp_path / "math.jsonl", ROWS), eval_size=2).load()
    rows = list(splits.train)
    scores = Accuracy(level="text")(prompts=[""] * len(rows), completions=[row["solution"] for row in rows],
                                    completion_ids=[[]] * len(rows), answer=[row["answer"] for row in rows])
    assert scores == [1.0] * len(rows)


def test_level_filter_and_plain_text_prompts(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "math.jsonl", ROWS)
    splits = task(path, levels=["Level 3", "Level 4", "Level 5"], conversational=False, train_size=1).load()
    assert len(splits.train) == 1 and len(splits.eval) == 1
    for row in list(splits.train) + list(splits.eval):
        assert row["prompt"].startswith("Answer in <answer></answer>.\n")
        assert row["answer"] in {"2", r"16\pi", "12"}


def test_missing_columns_and_impossible_sizes_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'solution' column"):
        task(write_jsonl(tmp_path / "a.jsonl", [{"problem": "p"}])).load()
    with pytest.raises(ValueError, match="'level' column"):
        task(write_jsonl(tmp_path / "b.jsonl", [{"problem": "p", "solution": r"\boxed{1}"}]), levels=["Level 1"]).load()
    with pytest.raises(ValueError, match="leaves no training rows"):
        task(write_jsonl(tmp_path / "c.jsonl", ROWS[:2]), eval_size=2).load()
    with pytest.raises(ValueError, match="data.path=.* is not a file"):
        task(tmp_path / "missing.jsonl").load()
