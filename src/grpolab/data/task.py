"""What every task hands to the rest of grpolab (a train and a held-out split), and the loading logic tasks share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, load_dataset

from grpolab.config.validate import ConfigError


class DataError(ConfigError):
    """Data that cannot be used as configured; the message is one line naming the file, split or row."""


@dataclass
class TaskSplits:
    """A train and a held-out split. Each holds ``prompt`` (text or chat messages) or ``prompt_ids`` (token IDs) and
    ``answer`` (the gold final answer); ``solution`` (a complete target completion) is what a warm start reads, and
    every other column reaches the rewards."""

    train: Dataset
    eval: Dataset

    def __post_init__(self) -> None:
        for name, split in (("train", self.train), ("eval", self.eval)):
            columns = split.column_names
            if "prompt" not in columns and "prompt_ids" not in columns:
                raise DataError(f"the {name} split needs a 'prompt' or 'prompt_ids' column; it has {columns}")
            if "answer" not in columns:
                raise DataError(f"the {name} split needs an 'answer' column; it has {columns}")


def local_rows(path: str, expected: str) -> Dataset:
    """Rows of a local JSONL file given as ``data.path``; a clear error names the key when it is not a file."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise DataError(f"data.path={path!r} is not a file (expected {expected})")
    return load_dataset("json", data_files=str(source), split="train")


def held_out_split(rows: Dataset, eval_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """Shuffle with ``seed`` and carve the first ``eval_size`` rows off as the held-out split: (train, eval)."""
    rows = rows.shuffle(seed=seed)
    if eval_size >= len(rows):
        raise DataError(f"data.eval_size={eval_size} leaves no training rows in {len(rows)} usable rows")
    return rows.select(range(eval_size, len(rows))), rows.select(range(eval_size))


@dataclass
class WordProblems:
    """Math word problems by hub id (its ``train`` and ``test`` splits) or from one local JSONL file (``path``,
    shuffled with ``seed``, the first ``eval_size`` rows held out), as chat prompts or plain text.

    Subclasses name their source columns and turn a source row into ``answer`` and ``solution``
    (``<think>worked steps</think><answer>final answer</answer>``, the format the built-in rewards score).
    """

    path: str | None
    hub_id: str
    hub_config: str | None
    train_size: int | None
    eval_size: int
    seed: int
    conversational: bool
    system_prompt: str

    source_columns: ClassVar[tuple[str, str]] = ("question", "answer")  # (question, worked solution)

    def load(self) -> TaskSplits:
        if self.path is not None:
            rows = self._usable(local_rows(self.path, f"JSONL with {'/'.join(self.source_columns)}"))
            train_rows, eval_rows = held_out_split(rows, self.eval_size, self.seed)
        else:
            train_rows = self._usable(load_dataset(self.hub_id, self.hub_config, split="train"))
            eval_rows = self._usable(load_dataset(self.hub_id, self.hub_config, split="test"))
            eval_rows = eval_rows.select(range(min(self.eval_size, len(eval_rows))))
        if self.train_size is not None:
            train_rows = train_rows.select(range(min(self.train_size, len(train_rows))))
        return TaskSplits(train=self._format(train_rows), eval=self._format(eval_rows))

    def _usable(self, rows: Dataset) -> Dataset:
        for column in self.source_columns:
            if column not in rows.column_names:
                raise DataError(f"{type(self).__name__} rows need a {column!r} column; the source has "
                                f"{rows.column_names}")
        return rows

    def _format(self, rows: Dataset) -> Dataset:
        def row(source: dict[str, Any]) -> dict[str, Any]:
            question, worked = (source[column] for column in self.source_columns)
            answer, steps = self.answer_and_steps(worked)
            return {"prompt": self.prompt(question), "answer": answer,
                    "solution": f"<think>{steps}</think><answer>{answer}</answer>"}

        return rows.map(row, remove_columns=rows.column_names)

    def prompt(self, question: str) -> str | list[dict[str, str]]:
        if self.conversational:
            return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": question}]
        return f"{self.system_prompt}\n{question}\n"

    def answer_and_steps(self, worked_solution: str) -> tuple[str, str]:
        raise NotImplementedError
