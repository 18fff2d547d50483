"""MATH competition problems (Hendrycks et al. 2021): by hub id or a local JSONL file (``data.path``).

Rows are ``{"problem": str, "solution": str}`` (optionally ``level`` such as ``"Level 3"`` and ``type``), the worked
solution ending in a ``\\boxed{...}`` final answer, as in ``DigitalLearningGmbH/MATH-lighteval``. The gold ``answer``
is the content of the last ``\\boxed{}`` (LaTeX kept, e.g. ``\\frac{1}{2}``; the accuracy reward compares it with
math-verify).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from datasets import Dataset

from grpolab.data.task import DataError, WordProblems
from grpolab.rewards.answers import last_boxed

log = logging.getLogger(__name__)


@dataclass
class MathProblems(WordProblems):
    """MATH problems as chat prompts (or plain text), with a held-out split.

    ``levels`` keeps only the listed difficulty levels (e.g. ``["Level 3", "Level 4", "Level 5"]``, the Dr. GRPO
    subset); rows without a ``\\boxed{}`` answer are dropped (and counted in the log).

    >>> MathProblems(path=None, hub_id="x", hub_config=None, train_size=None, eval_size=5, seed=0, conversational=False,
    ...              system_prompt="", levels=None).answer_and_steps("So $x=\\\\boxed{2}$.")
    ('2', 'So $x=\\\\boxed{2}$.')
    """

    levels: list[str] | None = None

    source_columns: ClassVar[tuple[str, str]] = ("problem", "solution")

    def _usable(self, rows: Dataset) -> Dataset:
        rows = super()._usable(rows)
        if self.levels is not None:
            if "level" not in rows.column_names:
                raise DataError(f"data.levels={self.levels} needs a 'level' column; the source has {rows.column_names}")
            wanted = set(self.levels)
            rows = rows.filter(lambda row: row["level"] in wanted)
        boxed = rows.filter(lambda row: bool((last_boxed(row["solution"]) or "").strip()))
        if len(boxed) < len(rows):
            log.info("MATH: dropped %d of %d rows without a \\boxed{} final answer", len(rows) - len(boxed), len(rows))
        return boxed

    def answer_and_steps(self, worked_solution: str) -> tuple[str, str]:
        return (last_boxed(worked_solution) or "").strip(), worked_solution.strip()
