"""GSM8K grade-school math (Cobbe et al. 2021): by hub id (``openai/gsm8k``) or a local JSONL file (``data.path``).

Rows are ``{"question": str, "answer": str}`` where the answer is a worked solution ending in ``#### <number>``.
The warm-start ``solution`` keeps the worked steps (calculator annotations removed) inside ``<think>`` and the number
inside ``<answer>``, the format the ``format`` and ``accuracy`` rewards score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasets import Dataset, load_dataset

from grpolab.data.task import TaskSplits, held_out_split, local_rows
from grpolab.rewards.answers import GSM8K_MARKER, gsm8k_final_answer

_CALCULATOR = re.compile(r"<<[^>]*>>")


@dataclass
class GSM8K:
    """GSM8K as chat prompts (or plain text), with a held-out split.

    With ``path`` set, that JSONL file is the only source: its rows are shuffled with ``seed`` and the first
    ``eval_size`` become the held-out split. Otherwise the hub dataset's ``train`` and ``test`` splits are used.

    >>> task = GSM8K(path=None, hub_id="openai/gsm8k", hub_config="main", train_size=None, eval_size=200,
    ...              seed=0, conversational=True, system_prompt="Answer in <answer></answer>.")
    >>> task.eval_size
    200
    """

    path: str | None
    hub_id: str
    hub_config: str
    train_size: int | None
    eval_size: int
    seed: int
    conversational: bool
    system_prompt: str

    def load(self) -> TaskSplits:
        if self.path is not None:
            rows = local_rows(self.path, "GSM8K-style JSONL")
            train_rows, eval_rows = held_out_split(rows, self.eval_size, self.seed)
        else:
            train_rows = load_dataset(self.hub_id, self.hub_config, split="train")
            eval_rows = load_dataset(self.hub_id, self.hub_config, split="test").select(range(self.eval_size))
        if self.train_size is not None:
            train_rows = train_rows.select(range(min(self.train_size, len(train_rows))))
        return TaskSplits(train=self._format(train_rows), eval=self._format(eval_rows))

    def _format(self, rows: Dataset) -> Dataset:
        for column in ("question", "answer"):
            if column not in rows.column_names:
                raise ValueError(f"GSM8K rows need a {column!r} column; data.path has {rows.column_names}")
        return rows.map(self._row, remove_columns=rows.column_names)

    def _row(self, row: dict) -> dict:
        reasoning = _CALCULATOR.sub("", row["answer"].rpartition(GSM8K_MARKER)[0]).strip()
        answer = gsm8k_final_answer(row["answer"])
        if self.conversational:
            prompt = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": row["question"]}]
        else:
            prompt = f"{self.system_prompt}\n{row['question']}\n"
        return {"prompt": prompt, "answer": answer, "solution": f"<think>{reasoning}</think><answer>{answer}</answer>"}
