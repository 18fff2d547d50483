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

    def __post_init__(self) -> None:
        unknown = [op for op in self.operations if op not in _OPS]
        if unknown or not self.operations:
            raise ValueError(f"data.operations={self.operations} is not valid; choose from {sorted(_OPS)}")
        total = (self.max_operand + 1) ** 2 * len(self.operations)
        if self.train_size + self.eval_size > total:
            raise ValueError(
                f"data.train_size + data.eval_size = {self.train_size + self.eval_size} exceeds the {total} distinct "
                f"problems with data.max_operand={self.max_operand}; lower the sizes or raise data.max_operand"
            )

    def _row(self, a: int, op: str, b: int) -> dict[str, str]:
        answer = str(_OPS[op](a, b))
        return {
            "prompt": self.prompt_template.format(a=a, op=op, b=b),
            "answer": answer,
            "solution": f"<answer>{answer}</answer>",
        }

    def load(self) -> TaskSplits:
        problems = [(a, op, b) for op in self.operations for a in range(self.max_operand + 1)
                    for b in range(self.max_operand + 1)]
        random.Random(self.seed).shuffle(problems)
        held_out = problems[: self.eval_size]
        train = problems[self.eval_size : self.eval_size + self.train_size]
        return TaskSplits(
            train=Dataset.from_list([self._row(*p) for p in train]),
            eval=Dataset.from_list([self._row(*p) for p in held_out]),
        )
