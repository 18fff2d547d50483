"""Any dataset by its columns (``data=columns``): a hub id, or a local JSONL/JSON/Parquet/CSV file or folder of them.

``data.columns`` names the source column behind each part of a row: ``prompt`` (text, or chat messages used as they
are), ``answer`` (the gold final answer, kept as a string), and optionally ``solution`` (a full target completion, for
``warmstart=sft``), ``images`` (image paths or images: one per row, or a list per row) and ``system_prompt`` (a
per-row system prompt; ``data.system_prompt`` is the fixed-string alternative). ``data.keep_columns`` passes more
source columns through to the rewards, under their own names; every other column is dropped.

Text prompts become chat messages (``data.conversational``: a system message, then the user message) or plain text
(the system prompt on the line before). Image rows are always chat prompts with one image part per image before the
question, as every image task gives them (``grpolab.data.images.image_prompt``); their images stay lazy and every image
path is checked at load time.

The held-out split is ``eval_split`` of ``eval_path`` (either defaults to its training counterpart) when one is set,
at most ``eval_size`` rows; otherwise rows carved from the training split by a ``seed``-ed shuffle: ``eval_size`` of
them, or the ``eval_fraction`` share capped at ``eval_size``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value, concatenate_datasets, load_dataset

from grpolab.data.images import PROMPT_FEATURE, ImageDataError, image_prompt, lazy_images
from grpolab.data.task import READERS, DataError, TaskSplits, held_out_split, read_rows

ROLES = ("prompt", "answer", "solution", "images", "system_prompt")
REQUIRED_ROLES = ("prompt", "answer")


def read_source(path: str, split: str, hub_config: str | None, key: str) -> tuple[Dataset, str | None]:
    """The ``split`` rows of ``path`` (a local file, a local folder or a hub id) and the folder relative image paths
    resolve against (None for a hub dataset). Every failure is one line naming ``key``; a local file is read by
    :func:`grpolab.data.task.read_rows`, which names the bad line of a malformed file.
    """
    source = Path(path).expanduser()
    if source.is_file():
        if source.suffix.lower() not in READERS:
            raise DataError(f"{key}={path!r}: unsupported file type; use one of {', '.join(READERS)}, a folder of "
                            "them or a hub dataset id")
        return read_rows(path, key), str(source.parent)  # one file, one split
    if not source.is_dir() and (source.suffix.lower() in READERS or path.startswith((".", "/", "~"))):
        raise DataError(f"{key}={path!r} is not a file or folder")
    try:
        return load_dataset(str(source) if source.is_dir() else path, hub_config, split=split), (
            str(source) if source.is_dir() else None)
    except Exception as error:  # an unknown split, a hub id that cannot be reached, ...
        cause = " ".join(str(error).split())
        raise DataError(f"{key}={path!r} (split {split!r}) cannot be loaded: {cause:.300}") from error


def describe(path: str, split: str) -> str:
    """How an error names a source: a file has one split, a folder or a hub dataset several."""
    return path if Path(path).expanduser().is_file() else f"{path} (split {split!r})"


@dataclass
class ColumnDataset:
    """Rows of any dataset, mapped by column name onto ``prompt``/``answer`` (+ ``solution``, ``image(s)``).

    >>> task = ColumnDataset(path="rows.csv", hub_config=None, split="train", eval_path=None, eval_split=None,
    ...     eval_size=50, eval_fraction=None, train_size=None, seed=0, system_prompt=None, conversational=True,
    ...     columns={"prompt": "question", "answer": "label", "solution": None, "images": None,
    ...              "system_prompt": None}, keep_columns=[])
    >>> task.load()  # doctest: +SKIP
    """

    path: str
    hub_config: str | None
    split: str
    eval_path: str | None
    eval_split: str | None
    eval_size: int
    eval_fraction: float | None
    train_size: int | None
    seed: int
    system_prompt: str | None
    conversational: bool
    columns: Mapping[str, str | None]
    keep_columns: Sequence[str]

    def load(self) -> TaskSplits:
        self._check_settings()
        rows, base_dir = read_source(self.path, self.split, self.hub_config, "data.path")
        # Formatted before any shuffle, so an error names the row as it is in the source.
        rows = self._format(rows, describe(self.path, self.split), base_dir)
        if self.eval_path is not None or self.eval_split is not None:
            eval_path, eval_split = self.eval_path or self.path, self.eval_split or self.split
            eval_rows, eval_dir = read_source(eval_path, eval_split, self.hub_config,
                                            "data.eval_path" if self.eval_path is not None else "data.path")
            eval_rows = eval_rows.select(range(min(self.eval_size, len(eval_rows))))
            eval_rows = self._format(eval_rows, describe(eval_path, eval_split), eval_dir)
            train_rows = rows.shuffle(seed=self.seed)
        else:
            held_out = self.eval_size
            if self.eval_fraction is not None:
                held_out = min(self.eval_size, max(1, round(self.eval_fraction * len(rows))))
            train_rows, eval_rows = held_out_split(rows, held_out, self.seed)
        if self.train_size is not None:
            train_rows = train_rows.select(range(min(self.train_size, len(train_rows))))
        return TaskSplits(train=train_rows, eval=eval_rows, source=f"data.path={self.path!r}")

    def _check_settings(self) -> None:
        unknown = sorted(set(self.columns) - set(ROLES))
        if unknown:
            raise DataError(f"data.columns.{unknown[0]}: no such role; valid: {', '.join(ROLES)}")
        for role in REQUIRED_ROLES:
            if not self.columns.get(role):
                raise DataError(f"data.columns.{role} is required: the source column holding the {role}")
        if self.system_prompt is not None and self.columns.get("system_prompt"):
            raise DataError("data.system_prompt and data.columns.system_prompt are both set; keep one (a fixed "
                            "string, or the column holding each row's system prompt)")
        if self.columns.get("images") and not self.conversational:
            raise DataError("data.conversational=false, but image rows need chat prompts (data.columns.images is "
                            "set); use data.conversational=true")
        if self.eval_split is not None and self.eval_path is None and Path(self.path).expanduser().is_file():
            raise DataError(f"data.eval_split={self.eval_split}: data.path={self.path!r} is one file, which has no "
                            "splits; set data.eval_path to a held-out file, or carve rows with data.eval_size / "
                            "data.eval_fraction")
        if self.eval_split == self.split and self.eval_path in (None, self.path):
            raise DataError(f"data.eval_split={self.eval_split} is data.split: the held-out rows would be training "
                            "rows; name another split, or carve rows with data.eval_size / data.eval_fraction")
        if self.eval_fraction is not None and not 0 < self.eval_fraction < 1:
            raise DataError(f"data.eval_fraction={self.eval_fraction} must be in (0, 1), or null (eval_size rows)")

    def _format(self, rows: Dataset, source: str, base_dir: str | None) -> Dataset:
        """The usual row contract from the mapped source columns (plain lists: no ``Dataset.map`` type surprises)."""
        mapped = {role: column for role, column in self.columns.items() if column}
        for role, column in mapped.items():
            if column not in rows.column_names:
                raise DataError(f"data.columns.{role}={column!r}: no such column in {source}; its columns: "
                                f"{', '.join(rows.column_names)}")
        for column in self.keep_columns:
            if column not in rows.column_names:
                raise DataError(f"data.keep_columns: no column {column!r} in {source}; its columns: "
                                f"{', '.join(rows.column_names)}")
        system = rows[mapped["system_prompt"]] if "system_prompt" in mapped else [self.system_prompt] * len(rows)
        answers = [self._text(value, row, "answer", source).strip() for row, value in
                   enumerate(rows[mapped["answer"]])]
        table: dict[str, list[Any]] = {"answer": answers}
        solution = ["solution"] if "solution" in mapped else []
        if solution:
            table["solution"] = [self._text(value, row, "solution", source)
                                 for row, value in enumerate(rows[mapped["solution"]])]
        questions = rows[mapped["prompt"]]
        if "images" not in mapped:
            table["prompt"] = [self._prompt(question, system_text, row, source)
                               for row, (question, system_text) in enumerate(zip(questions, system, strict=True))]
            return self._with_kept(Dataset.from_dict(table), rows, ["prompt", "answer", *solution])
        many = isinstance(rows.features[mapped["images"]], List)
        try:
            images, counts = lazy_images(rows, mapped["images"], many, base_dir, source, validate=True)
        except ImageDataError as error:
            raise DataError(f"data.columns.images={mapped['images']!r}: {error}") from error
        table["prompt"] = [
            self._image_prompt(self._text(question, row, "prompt", source), system_text, count)
            for row, (question, system_text, count) in enumerate(zip(questions, system, counts, strict=True))
        ]
        features = Features({"answer": Value("string"), **{column: Value("string") for column in solution},
                             "prompt": PROMPT_FEATURE})
        name = "images" if many else "image"
        images = images.select_columns([mapped["images"]]).rename_column(mapped["images"], name)
        prepared = concatenate_datasets([Dataset.from_dict(table, features=features), images], axis=1)
        return self._with_kept(prepared, rows, ["prompt", name, "answer", *solution])

    def _with_kept(self, prepared: Dataset, rows: Dataset, order: list[str]) -> Dataset:
        kept = [column for column in self.keep_columns if column not in order]
        if kept:
            prepared = concatenate_datasets([prepared, rows.select_columns(kept)], axis=1)
        return prepared.select_columns([*order, *kept])

    def _prompt(self, question: Any, system: str | None, row: int, source: str) -> str | list[dict[str, Any]]:
        if isinstance(question, list):  # chat messages, used as they are
            if not self.conversational:
                raise DataError(f"{source}: row {row}: data.columns.prompt={self.columns['prompt']!r} holds chat "
                                "messages, but data.conversational=false asks for plain-text prompts")
            if system is None:
                return question
            first = question[0]["content"] if question else ""
            content = system if isinstance(first, str) else [{"type": "text", "text": system}]
            return [{"role": "system", "content": content}, *question]
        text = self._text(question, row, "prompt", source)
        if self.conversational:
            return ([] if system is None else [{"role": "system", "content": system}]) + [
                {"role": "user", "content": text}]
        return text if system is None else f"{system}\n{text}"

    @staticmethod
    def _image_prompt(question: str, system: str | None, count: int) -> list[dict[str, Any]]:
        messages = image_prompt(question, count)
        if system is None:
            return messages
        return [{"role": "system", "content": [{"type": "text", "text": system}]}, *messages]

    def _text(self, value: Any, row: int, role: str, source: str) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{source}: row {row}: data.columns.{role}={self.columns[role]!r} is empty")
        if isinstance(value, (list, dict)):
            raise DataError(f"{source}: row {row}: data.columns.{role}={self.columns[role]!r} holds "
                            f"{type(value).__name__} {value!s:.60}, expected text")
        return str(value)
