"""MATH competition problems (Hendrycks et al. 2021): by hub id or a local JSONL file (``data.path``).

Rows are ``{"problem": str, "solution": str}`` (optionally ``level`` such as ``"Level 3"`` and ``type``), the worked
solution ending in a ``\\boxed{...}`` final answer, as in ``DigitalLearningGmbH/MATH-lighteval``. The gold ``answer``
is the content of the last ``\\boxed{}`` (LaTeX kept, e.g. ``\\frac{1}{2}``; the accuracy reward compares it with
math-verify). The warm-start ``solution`` keeps the worked solution inside ``<think>`` and the answer inside
``<answer>``, the format the ``format`` and ``accuracy`` rewards score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datasets import Dataset, load_dataset

from grpolab.data.task import TaskSplits, held_out_split, local_rows
from grpolab.rewards.answers import last_boxed

log = logging.getLogger(__name__)


@dataclass
class MathProblems:
    """MATH problems as chat prompts (or plain text), with a held-out split.

    With ``path`` set, that JSONL file is the only source: its rows are shuffled with ``seed`` and the first
    ``eval_size`` become the held-out split. Otherwise the hub dataset's ``train`` and ``test`` splits are used.
    ``levels`` keeps only the listed difficulty levels (e.g. ``["Level 3", "Level 4", "Level 5"]``, the Dr. GRPO
    subset); rows without a ``\\boxed{}`` answer are dropped (and counted in the log).

    >>> task = MathProblems(path=None, hub_id="DigitalLearningGmbH/MATH-lighteval", hub_config="default",
    ...                     levels=None, train_size=None, eval_size=500, seed=0, conversational=True,
    ...                     system_prompt="Answer in <answer></answer>.")
    >>> task.eval_size
    500
    """

    path: str | None
    hub_id: str
    hub_config: str | None
    levels: list[str] | None
    train_size: int | None
    eval_size: int
    seed: int
    conversational: bool
    system_prompt: str

    def load(self) -> TaskSplits:
        if self.path is not None:
            rows = self._usable(local_rows(self.path, "JSONL with problem/solution"))
            train_rows, eval_rows = held_out_split(rows, self.eval_size, self.seed)
        else:
            train_rows = self._usable(load_dataset(self.hub_id, self.hub_config, split="train"))
            eval_rows = self._usable(load_dataset(self.hub_id, self.hub_config, split="test"))
            eval_rows = eval_rows.select(range(min(self.eval_size, len(eval_rows))))
        if self.train_size is not None:
            train_rows = train_rows.select(range(min(self.train_size, len(train_rows))))
        return TaskSplits(train=self._format(train_rows), eval=self._format(eval_rows))

    def _usable(self, rows: Dataset) -> Dataset:
        for column in ("problem", "solution"):
            if column not in rows.column_names:
                raise ValueError(f"MATH rows need a {column!r} column; the source has {rows.column_names}")
        if self.levels is not None:
            if "level" not in rows.column_names:
                raise ValueError(f"data.levels={self.levels} needs a 'level' column; the source has "
                                 f"{rows.column_names}")
            wanted = set(self.levels)
            rows = rows.filter(lambda row: row["level"] in wanted)
        boxed = rows.filter(lambda row: bool((last_boxed(row["solution"]) or "").strip()))
        if len(boxed) < len(rows):
            log.info("MATH: dropped %d of %d rows without a \\boxed{} final answer", len(rows) - len(boxed), len(rows))
        return boxed

    def _format(self, rows: Dataset) -> Dataset:
        return rows.map(self._row, remove_columns=rows.column_names)

    def _row(self, row: dict) -> dict:
        answer = (last_boxed(row["solution"]) or "").strip()
        if self.conversational:
            prompt = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": row["problem"]}]
        else:
            prompt = f"{self.system_prompt}\n{row['problem']}\n"
        return {
            "prompt": prompt,
            "answer": answer,
            "solution": f"<think>{row['solution'].strip()}</think><answer>{answer}</answer>",
        }
