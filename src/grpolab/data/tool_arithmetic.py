"""Procedural arithmetic beyond the model's head, posed as a chat with calculator tools (``experiment=tools``).

The problems are :mod:`grpolab.data.arithmetic`'s (``a op b``, held-out operand pairs never seen in training), with
operands of ``min_operand`` to ``max_operand``: two 3-digit factors by default, a product the tiny model cannot
compute token by token. The warm-start ``solution`` is a demonstration as chat messages, by a deliberately imperfect
teacher: on a share ``tool_call_rate`` of the problems it calls the calculator (``add``, ``subtract``,
``multiply``: ``grpolab.environments.calculator``) and copies the result into ``<answer>``; on the others it answers
from its head with an order-of-magnitude guess (the second operand rounded up to a power of ten: ``123*456`` ->
``123000``), never right for 3-digit factors. Imitation reproduces that mix; the accuracy reward pays only for right
answers, and GRPO moves the policy to the tool.
Problems whose operands are all at most ``mental_max_operand`` are easy: the teacher answers them right without the
tool, and their ``needs_tool`` column (what ``rewards=tool_use`` with ``needed_column=needs_tool`` reads) is False.
With ``code_tool`` (e.g. ``python``, for ``environment=python``) the teacher calls that code interpreter with a
one-line program (``print(123*456)``) instead of the calculator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from grpolab.data.arithmetic import _OPS
from grpolab.data.task import TaskSplits

#: The calculator tool that computes each operation (``grpolab.environments.calculator.Calculator``'s methods).
TOOL_FOR = {"+": "add", "-": "subtract", "*": "multiply"}


@dataclass
class ToolArithmeticTask:
    """Chat prompts ``a op b``; ``answer``, ``needs_tool`` and the teacher's ``solution`` (chat messages).

    >>> splits = ToolArithmeticTask(train_size=4, eval_size=2, min_operand=100, max_operand=999, operations=["*"],
    ...                             seed=0, tool_call_rate=1.0).load()
    >>> row = splits.train[0]
    >>> [message["role"] for message in row["solution"]], row["solution"][1]["content"] == row["answer"]
    (['assistant', 'tool', 'assistant'], True)
    """

    train_size: int
    eval_size: int
    min_operand: int
    max_operand: int
    operations: list[str]
    seed: int
    prompt_template: str = "{a}{op}{b}"
    system_prompt: str | None = None
    tool_call_rate: float = 0.5
    mental_max_operand: int = 9
    code_tool: str | None = None

    def __post_init__(self) -> None:
        unknown = [op for op in self.operations if op not in _OPS]
        if unknown or not self.operations:
            raise ValueError(f"data.operations={self.operations} is not valid; choose from {sorted(_OPS)}")
        if not 0 <= self.min_operand <= self.max_operand:
            raise ValueError(f"data.min_operand={self.min_operand} and data.max_operand={self.max_operand} must "
                             "satisfy 0 <= min_operand <= max_operand")
        if not 0.0 <= self.tool_call_rate <= 1.0:
            raise ValueError(f"data.tool_call_rate={self.tool_call_rate} must be a fraction in [0, 1]")
        span = self.max_operand - self.min_operand + 1
        total = span * span * len(self.operations)
        if self.train_size + self.eval_size > total:
            raise ValueError(f"data.train_size + data.eval_size = {self.train_size + self.eval_size} exceeds the "
                             f"{total} distinct problems with operands {self.min_operand}..{self.max_operand}")

    def load(self) -> TaskSplits:
        problems = self._distinct_problems(random.Random(self.seed), self.train_size + self.eval_size)
        teacher = random.Random(self.seed + 1)
        held_out, train = problems[: self.eval_size], problems[self.eval_size :]
        return TaskSplits(train=Dataset.from_list([self._row(*p, teacher=teacher) for p in train]),
                          eval=Dataset.from_list([self._row(*p) for p in held_out]))

    def _distinct_problems(self, rng: random.Random, count: int) -> list[tuple[int, str, int]]:
        # Drawn, not enumerated: two 3-digit operands make 810,000 problems per operation.
        drawn: dict[tuple[int, str, int], None] = {}
        while len(drawn) < count:
            problem = (rng.randint(self.min_operand, self.max_operand), rng.choice(self.operations),
                       rng.randint(self.min_operand, self.max_operand))
            drawn.setdefault(problem)
        return list(drawn)

    def _row(self, a: int, op: str, b: int, teacher: random.Random | None = None) -> dict[str, Any]:
        answer = _OPS[op](a, b)
        needs_tool = max(abs(a), abs(b)) > self.mental_max_operand
        prompt = [{"role": "user", "content": self.prompt_template.format(a=a, op=op, b=b)}]
        if self.system_prompt:
            prompt.insert(0, {"role": "system", "content": self.system_prompt})
        if not needs_tool:
            solution = [_assistant(f"<answer>{answer}</answer>")]
        elif teacher is None or teacher.random() < self.tool_call_rate:
            name, arguments, result = TOOL_FOR[op], {"a": a, "b": b}, str(answer)
            if self.code_tool:  # what the program prints, newline included, is the tool's result
                name, arguments, result = self.code_tool, {"code": f"print({a}{op}{b})"}, f"{answer}\n"
            call = {"type": "function", "function": {"name": name, "arguments": arguments}}
            solution = [_assistant("", [call]), {"role": "tool", "name": name, "content": result},
                        _assistant(f"<answer>{answer}</answer>")]
        else:
            solution = [_assistant(f"<answer>{_OPS[op](a, power_above(b))}</answer>")]
        return {"prompt": prompt, "answer": str(answer), "needs_tool": needs_tool, "solution": solution}


def power_above(value: int) -> int:
    """The power of ten just above ``value``'s digits: the teacher's order-of-magnitude stand-in for an operand it
    cannot hold in its head (``123*456`` estimated as ``123*1000``). A guess the model can learn exactly (copy, then
    zeros), so the warm start's gradient is not spent on digits no one can predict.

    >>> power_above(456), power_above(7), power_above(-99)
    (1000, 10, 100)
    """
    return 10 ** len(str(abs(value)))


def _assistant(content: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    # Every message carries the same keys: Arrow stores a list of messages as a list of one struct type.
    return {"role": "assistant", "content": content, "tool_calls": tool_calls, "name": None}
