"""Prompts from a local JSONL or Parquet file, as text or already tokenized (``data=jsonl data.path=...``).

Each row has ``prompt`` (text or chat messages) or ``prompt_ids`` (a list of token IDs, for ``tokenizer_mode=ids``),
an ``answer`` (the gold final answer) and optionally a ``solution`` (a full target completion) and ``answer_ids``.
Other columns are kept: they reach reward functions as keyword arguments, like any dataset column.

``solution`` is only needed by the supervised warm start, which says so before any model is built when it is
missing. Rows are read with ``datasets`` and validated in ``grpolab.data.prepare`` (``prompt_ids`` must be non-empty
lists of in-vocabulary ints).
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset, Value

from grpolab.data.task import DataError, TaskSplits, read_rows


@dataclass
class PromptFile:
    """Rows from ``path`` (``.jsonl``/``.json``/``.parquet``/``.csv``, read by :func:`grpolab.data.task.read_rows`);
    held-out rows from ``eval_path`` or carved from it.

    >>> PromptFile(path="train.jsonl", eval_path=None, eval_size=50, train_size=None, seed=0).eval_size
    50
    """

    path: str
    eval_path: str | None
    eval_size: int
    train_size: int | None
    seed: int

    def load(self) -> TaskSplits:
        rows = self._read(self.path, "data.path")
        if self.eval_path is not None:
            train_rows, eval_rows = rows.shuffle(seed=self.seed), self._read(self.eval_path, "data.eval_path")
            eval_rows = eval_rows.select(range(min(self.eval_size, len(eval_rows))))
        else:
            if self.eval_size >= len(rows):
                raise DataError(
                    f"data.eval_size={self.eval_size} leaves no training rows in the {len(rows)} rows of {self.path}; "
                    f"lower data.eval_size or set data.eval_path"
                )
            rows = rows.shuffle(seed=self.seed)
            eval_rows, train_rows = rows.select(range(self.eval_size)), rows.select(range(self.eval_size, len(rows)))
        if self.train_size is not None:
            train_rows = train_rows.select(range(min(self.train_size, len(train_rows))))
        return TaskSplits(train=train_rows, eval=eval_rows, source=f"data.path={self.path!r}")

    @staticmethod
    def _read(path: str, key: str) -> Dataset:
        rows = read_rows(path, key)
        columns = rows.column_names
        if "prompt" not in columns and "prompt_ids" not in columns:
            raise DataError(f"{key}={path!r} needs a 'prompt' or 'prompt_ids' column; it has {', '.join(columns)}")
        if "answer" not in columns:
            raise DataError(f"{key}={path!r} needs an 'answer' column; it has {', '.join(columns)}")
        if rows.features["answer"] != Value("string"):
            rows = rows.cast_column("answer", Value("string"))  # numeric answers compare as strings downstream
        return rows
