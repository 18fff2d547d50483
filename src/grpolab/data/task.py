"""What every task hands to the rest of grpolab (a train and a held-out split), and the loading logic tasks share."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, load_dataset
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from grpolab.config.validate import ConfigError

#: Local file types by suffix, and the ``datasets`` builder that reads each.
READERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(ConfigError):
    """Data that cannot be used as configured; the message is one line naming the file, split or row."""


@dataclass
class TaskSplits:
    """A train and a held-out split. Each holds ``prompt`` (text or chat messages) or ``prompt_ids`` (token IDs) and
    ``answer`` (the gold final answer); ``solution`` (a complete target completion) is what a warm start reads, and
    every other column reaches the rewards. ``source`` names where the rows come from in messages (e.g.
    ``data.path='train.jsonl'``); None for generated tasks."""

    train: Dataset
    eval: Dataset
    source: str | None = None

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        for name, split in (("train", self.train), ("eval", self.eval)):
            columns = split.column_names
            if "prompt" not in columns and "prompt_ids" not in columns:
                raise DataError(f"{where}the {name} split needs a 'prompt' or 'prompt_ids' column; it has {columns}")
            if "answer" not in columns:
                raise DataError(f"{where}the {name} split needs an 'answer' column; it has {columns}")


def read_rows(path: str, key: str) -> Dataset:
    """Rows of the local file ``path``, given as the config key ``key``: JSON lines (``.jsonl``/``.json``, or a
    ``.json`` array), Parquet or CSV. Every local-file loader reads through here.

    A file that cannot be used fails in one line naming the key and the file, and for a text file the line: an
    unsupported suffix, no such file, an empty file, bytes that are not UTF-8, a line that is not a JSON object, a
    CSV line with the wrong number of fields. The file is parsed by ``datasets`` (pyarrow) first; only when that
    fails is it read again line by line, to name the line (pyarrow names neither file nor line).

    >>> read_rows("train.txt", "data.path")
    Traceback (most recent call last):
    ...
    grpolab.data.task.DataError: data.path='train.txt': unsupported file type; use one of .jsonl, .json, .parquet, .csv
    """
    source = Path(path).expanduser()
    where = f"{key}={path!r}"
    reader = READERS.get(source.suffix.lower())
    if reader is None:
        raise DataError(f"{where}: unsupported file type; use one of {', '.join(READERS)}")
    if not source.is_file():
        raise DataError(f"{where} is not a file")
    if source.stat().st_size == 0:
        raise DataError(f"{where}: the file is empty")
    try:
        with _quiet_datasets():
            rows = load_dataset(reader, data_files=str(source), split="train")
        # pyarrow keeps JSON strings that are not UTF-8 as they are; reading such a row would fail mid-run.
        rows.data.table.validate(full=True)
    except Exception as error:  # pyarrow, pandas, UnicodeDecodeError, datasets' own "no data" errors, ...
        raise DataError(f"{where}: {_first_bad_line(source, reader) or _cannot_read(reader, error)}") from error
    if len(rows) == 0:
        raise DataError(f"{where}: no rows")
    return rows


def _first_bad_line(source: Path, reader: str) -> str | None:
    """What is wrong with the file, naming the line (1-based) of a text file, or None when nothing is found."""
    if reader == "parquet":
        try:
            return "no rows" if pq.read_metadata(source).num_rows == 0 else None
        except (OSError, pa.ArrowException):
            return None
    lines: list[str] = []
    with source.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as bad:
                return (f"line {number} is not UTF-8 text (byte 0x{raw[bad.start]:02x} at column {bad.start + 1}); "
                        "save the file as UTF-8")
    if not any(line.strip() for line in lines):
        return "only blank lines, no rows"
    if reader != "json":
        return None
    text = "".join(lines)
    if source.suffix.lower() == ".json" and text.lstrip().startswith("["):  # one JSON document, not JSON lines
        try:
            json.loads(text)
        except json.JSONDecodeError as bad:
            return f"line {bad.lineno} is not valid JSON: {bad.msg} (column {bad.colno})"
        return None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as bad:
            return f"line {number} is not valid JSON: {bad.msg} (column {bad.colno})"
        if not isinstance(value, dict):
            return f"line {number} is not a JSON object: {line.strip():.60}"
    return None


def _cannot_read(reader: str, error: BaseException) -> str:
    cause = error.__cause__ or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"cannot be read as {reader}: {lines[0] if lines else type(cause).__name__}"


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bar for reading one local file, and no ERROR log of a failed parse before the error is raised:
    grpolab reports the error itself, in one line."""
    library = logging.getLogger("datasets")
    level, bars_were_off = library.level, are_progress_bars_disabled()
    library.setLevel(logging.CRITICAL)
    disable_progress_bars()
    try:
        yield
    finally:
        library.setLevel(level)
        if not bars_were_off:
            enable_progress_bars()


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
            rows = self._usable(read_rows(self.path, "data.path"))
            train_rows, eval_rows = held_out_split(rows, self.eval_size, self.seed)
        else:
            train_rows = self._usable(load_dataset(self.hub_id, self.hub_config, split="train"))
            eval_rows = self._usable(load_dataset(self.hub_id, self.hub_config, split="test"))
            eval_rows = eval_rows.select(range(min(self.eval_size, len(eval_rows))))
        if self.train_size is not None:
            train_rows = train_rows.select(range(min(self.train_size, len(train_rows))))
        source = f"data.hub_id={self.hub_id!r}" if self.path is None else f"data.path={self.path!r}"
        return TaskSplits(train=self._format(train_rows), eval=self._format(eval_rows), source=source)

    def _usable(self, rows: Dataset) -> Dataset:
        for column in self.source_columns:
            if column not in rows.column_names:
                source = f"data.hub_id={self.hub_id!r}" if self.path is None else f"data.path={self.path!r}"
                raise DataError(f"{source}: {type(self).__name__} rows need a {column!r} column; it has "
                                f"{', '.join(rows.column_names)}")
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
