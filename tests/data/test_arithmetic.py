"""The procedural arithmetic task: held-out problems never trained on, and the warm-start solutions it writes."""

from __future__ import annotations

from grpolab.data.arithmetic import ArithmeticTask


def _task(**overrides) -> ArithmeticTask:
    settings = dict(train_size=60, eval_size=20, max_operand=9, operations=["+"], seed=0)
    return ArithmeticTask(**{**settings, **overrides})


def test_held_out_problems_never_appear_in_training():
    splits = _task().load()
    assert not set(splits.train["prompt"]) & set(splits.eval["prompt"])


def test_a_solution_prefix_opens_every_solution_and_leaves_the_answer_alone():
    plain, thinking = _task(untagged_solution_rate=0.5).load(), _task(untagged_solution_rate=0.5,
                                                                       solution_prefix="<think></think>").load()
    for split in ("train", "eval"):
        before, after = getattr(plain, split), getattr(thinking, split)
        assert after["solution"] == ["<think></think>" + solution for solution in before["solution"]]
        assert after["answer"] == before["answer"]
