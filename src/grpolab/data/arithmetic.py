"""Procedural arithmetic: the embedded default task.

Problems are ``a op b`` with small operands. The held-out split holds operand pairs that never appear in the train
split, so held-out accuracy measures generalisation rather than memorisation.
"""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass

from datasets import Dataset

from grpolab.data.task import TaskSplits

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@dataclass
class ArithmeticTask:
    """Two-operand integer arithmetic with a fixed prompt template.

    ``solution_prefix`` opens every warm-start ``solution`` (e.g. ``<think></think>``, for rewards that require a
    think block); the gold ``answer`` is unaffected.

    >>> splits = ArithmeticTask(train_size=4, eval_size=2, max_operand=9, operations=["+"], seed=0).load()
    >>> row = splits.eval[0]
    >>> row["solution"] == f"<answer>{row['answer']}</answer>"
    True
    """

    train_size: int
    eval_size: int
    max_operand: int
    operations: list[str]
    seed: int
    prompt_template: str = "{a}{op}{b}="
    teacher_error_rate: float = 0.0
    max_second_operand: int | None = None
    untagged_solution_rate: float = 0.0
    solution_prefix: str = ""

    def __post_init__(self) -> None:
        unknown = [op for op in self.operations if op not in _OPS]
        if unknown or not self.operations:
            raise ValueError(f"data.operations={self.operations} is not valid; choose from {sorted(_OPS)}")
        second = self.max_operand if self.max_second_operand is None else self.max_second_operand
        total = (self.max_operand + 1) * (second + 1) * len(self.operations)
        if self.train_size + self.eval_size > total:
            raise ValueError(
                f"data.train_size + data.eval_size = {self.train_size + self.eval_size} exceeds the {total} distinct "
                f"problems with data.max_operand={self.max_operand}; lower the sizes or raise data.max_operand"
            )

    def _row(self, a: int, op: str, b: int, teacher: random.Random | None = None) -> dict[str, str]:
        answer = str(_OPS[op](a, b))
        shown = answer
        if teacher is not None and self.teacher_error_rate > 0:
            slip = schoolbook_slip(a, op, b)
            if slip is not None and teacher.random() < self.teacher_error_rate:
                shown = str(slip)
        solution = f"<answer>{shown}</answer>"
        if teacher is not None and teacher.random() < self.untagged_solution_rate:
            solution = f"Answer: {shown}"  # right number, but not in the tag the verifier reads
        return {
            "prompt": self.prompt_template.format(a=a, op=op, b=b),
            "answer": answer,
            "solution": self.solution_prefix + solution,
        }

    def load(self) -> TaskSplits:
        second = self.max_operand if self.max_second_operand is None else self.max_second_operand
        problems = [(a, op, b) for op in self.operations for a in range(self.max_operand + 1)
                    for b in range(second + 1)]
        random.Random(self.seed).shuffle(problems)
        held_out = problems[: self.eval_size]
        train = problems[self.eval_size : self.eval_size + self.train_size]
        teacher = random.Random(self.seed + 1)
        return TaskSplits(
            train=Dataset.from_list([self._row(*p, teacher=teacher) for p in train]),
            eval=Dataset.from_list([self._row(*p) for p in held_out]),
        )


def schoolbook_slip(a: int, op: str, b: int) -> int | None:
    """The classic column-arithmetic slip: add without carrying, or subtract the smaller digit from the larger
    instead of borrowing. ``None`` when the problem needs no carry/borrow (the slip would give the right answer).

    >>> schoolbook_slip(17, "+", 25), schoolbook_slip(23, "-", 17), schoolbook_slip(12, "+", 3)
    (32, 14, None)
    """
    if op not in ("+", "-") or a < 0 or b < 0 or (op == "-" and a < b):
        return None
    width = max(len(str(a)), len(str(b)))
    digits_a, digits_b = str(a).zfill(width), str(b).zfill(width)
    column = (lambda x, y: (x + y) % 10) if op == "+" else (lambda x, y: abs(x - y))
    slip = int("".join(str(column(int(x), int(y))) for x, y in zip(digits_a, digits_b)))
    return None if slip == _OPS[op](a, b) else slip
