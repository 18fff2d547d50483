"""Image question-answering data: local files (``grpolab.data.task.read_rows``) and hub datasets.

Local format, one JSON object per line::

    {"image": "imgs/0001.png", "question": "How many cubes are there?", "answer": "3"}
    {"images": ["a.png", "b.png"], "question": "Which picture has more dots?", "answer": "first"}

Relative image paths are resolved against the folder of the JSONL file (or the dataset directory). A hub dataset
with an ``image`` column (e.g. R1-V's CLEVR counting set ``leonardPKU/clevr_cogen_a_train``: ``image``, ``problem``,
``solution`` = ``<answer> 3 </answer>``) loads through the same function by id, with column names and an answer
pattern as arguments.

Images stay lazy: the image column is a ``datasets.Image()`` feature holding a path (or the bytes a hub parquet
ships), decoded to a PIL image only when a row is read. Before that, every path is checked once, so a missing or
unreadable file fails at load time with its row number and path instead of mid-training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, Features, Image, List, Value, concatenate_datasets, load_dataset
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from grpolab.data.task import READERS, read_rows

# For sources whose answer column is a full target completion, e.g. CLEVR's "<answer> 3 </answer>".
ANSWER_TAG_PATTERN = r"<answer>\s*(.*?)\s*</answer>"
# Image parts carry text=None so one Arrow struct type holds both kinds of part (shapes.py stores the same).
PROMPT_FEATURE = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})


class ImageDataError(ValueError):
    """A row whose image is missing or unreadable, or a source without the expected columns."""


def _read_source(name_or_path: str, split: str, key: str) -> tuple[Dataset, str | None]:
    """The raw split and the folder relative image paths resolve against (None for hub datasets)."""
    if os.path.splitext(name_or_path)[1].lower() in READERS:  # a local file: every row, whatever the split
        return read_rows(name_or_path, key), os.path.dirname(os.path.abspath(os.path.expanduser(name_or_path)))
    dataset = load_dataset(name_or_path, split=split)
    return dataset, os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else None


def _image_column(dataset: Dataset, source: str) -> str:
    for column in ("images", "image"):
        if column in dataset.column_names:
            return column
    raise ImageDataError(f"{source}: no 'image' or 'images' column; columns are {dataset.column_names}")


def _check_readable(path: str, row: int, source: str) -> None:
    """Fail fast, naming the row, on a missing file or one Pillow cannot parse (``verify`` reads, does not decode)."""
    if not os.path.isfile(path):
        raise ImageDataError(f"{source}: row {row}: image file not found: {path}")
    try:
        with PILImage.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageDataError(f"{source}: row {row}: unreadable image {path}: {error}") from error


def _resolve_paths(
    entries: Iterable[str | list[str]], base_dir: str | None, source: str, many: bool, validate: bool
) -> list[str | list[str]]:
    """Absolute paths for a column of path strings (lists of them when ``many``), each checked when ``validate``."""
    resolved: list[str | list[str]] = []
    for row, entry in enumerate(entries):
        paths = entry if many else [entry]
        if paths is None or any(not isinstance(path, str) for path in paths):
            raise ImageDataError(f"{source}: row {row}: expected image path(s), got {entry!r}")
        absolute = [os.path.join(base_dir, path) if base_dir is not None else path for path in paths]
        if validate:
            for path in absolute:
                _check_readable(path, row, source)
        resolved.append(absolute if many else absolute[0])
    return resolved


def _stored_images(dataset: Dataset, column: str, many: bool) -> tuple[list[int], list[tuple[int, str | None]]]:
    """For an ``Image()`` column, read from Arrow without copying any image bytes into Python: the number of images
    per row, and ``(row, path)`` for every entry stored without bytes (path None when the entry itself is null)."""
    counts: list[int] = []
    unembedded: list[tuple[int, str | None]] = []
    offset = 0
    for chunk in dataset.with_format("arrow")[column].chunks:
        if many:
            counts.extend(pc.fill_null(pc.list_value_length(chunk), 0).to_pylist())
            rows = pc.list_parent_indices(chunk).to_numpy() + offset
            images = pc.list_flatten(chunk)
        else:
            counts.extend([1] * len(chunk))
            rows = np.arange(len(chunk)) + offset
            images = chunk
        null_entry = images.is_null().to_numpy(zero_copy_only=False)
        no_bytes = pc.is_null(pc.struct_field(images, "bytes")).to_numpy(zero_copy_only=False)
        paths = pc.struct_field(images, "path")
        for index in np.flatnonzero(null_entry | no_bytes):
            unembedded.append((int(rows[index]), None if null_entry[index] else paths[index].as_py()))
        offset += len(chunk)
    return counts, unembedded


def lazy_images(dataset: Dataset, column: str, many: bool, base_dir: str | None, source: str,
                validate: bool) -> tuple[Dataset, list[int]]:
    """``dataset`` with ``column`` as a lazy ``Image()`` column (``List(Image())`` when ``many``: several images per
    row), and the number of images in each row.

    The column holds image paths (resolved against ``base_dir``) or images as ``datasets`` stores them (an ``Image``
    feature: bytes or a path). With ``validate`` every path is checked once, naming the row of a missing or
    unreadable file; no image is decoded.
    """
    feature = dataset.features[column]
    inner = feature.feature if many and isinstance(feature, List) else feature
    if isinstance(inner, Image):
        counts, unembedded = _stored_images(dataset, column, many)
        for row, path in unembedded if validate else ():
            if path is None:
                raise ImageDataError(f"{source}: row {row}: missing image")
            _check_readable(path, row, source)
    elif isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        # Paths: resolve and check them as plain strings; the Image() cast stores the paths, not pixels.
        paths = _resolve_paths(dataset[column], base_dir, source, many, validate)
        counts = [len(entry) for entry in paths] if many else [1] * len(paths)
        dataset = dataset.remove_columns(column).add_column(column, paths)
        dataset = dataset.cast_column(column, List(Image()) if many else Image())
    else:
        raise ImageDataError(f"{source}: column {column!r} holds {feature}, expected image paths or images")
    return dataset, counts


def image_prompt(question: str, num_images: int = 1) -> list[dict]:
    """Chat messages with one image part per image before the question (what TRL fills from ``image(s)``).

    >>> image_prompt("How many?")[0]["content"][0]
    {'type': 'image', 'text': None}
    """
    parts = [{"type": "image", "text": None} for _ in range(num_images)]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": question}]}]


def load_image_qa(
    name_or_path: str,
    split: str = "train",
    question_column: str = "question",
    answer_column: str = "answer",
    answer_pattern: str | None = None,
    instruction: str = "",
    num_examples: int | None = None,
    validate: bool = True,
    key: str = "data.path",
) -> Dataset:
    """Load image QA rows as ``prompt`` (chat messages), ``image`` or ``images`` (lazy), ``answer``, ``solution``.

    ``name_or_path`` is a local file (``.jsonl``, ``.json``, ``.parquet``, ``.csv``: read by
    :func:`grpolab.data.task.read_rows`), a local dataset directory or a hub id; messages name it as the config key
    ``key``. ``answer_pattern`` (a regex whose first group is the answer) extracts the answer from a column that
    holds more, and ``instruction`` is appended to every question. ``num_examples`` keeps the first rows only
    (before validation, so it is cheap).

    >>> rows = load_image_qa("data/shapes/train.jsonl")  # doctest: +SKIP
    >>> clevr = load_image_qa("leonardPKU/clevr_cogen_a_train", question_column="problem",
    ...                       answer_column="solution", answer_pattern=ANSWER_TAG_PATTERN)  # doctest: +SKIP
    """
    dataset, base_dir = _read_source(name_or_path, split, key)
    source = f"{key}={name_or_path!r}"  # how every message names the data
    if num_examples is not None:
        dataset = dataset.select(range(min(num_examples, len(dataset))))
    column = _image_column(dataset, source)
    many = column == "images"
    for required in (question_column, answer_column):
        if required not in dataset.column_names:
            raise ImageDataError(f"{source}: no {required!r} column; columns are {dataset.column_names}")

    dataset, counts = lazy_images(dataset, column, many, base_dir, source, validate)

    pattern = re.compile(answer_pattern, re.DOTALL) if answer_pattern else None
    prompts, answers = [], []
    # Plain lists instead of Dataset.map: map would decode nothing here either, but it casts an output column back
    # to the type of a same-named input column (an int "answer" stays int), and the contract wants strings.
    for row, (question, raw_answer) in enumerate(zip(dataset[question_column], dataset[answer_column], strict=True)):
        answer = str(raw_answer).strip()
        if pattern is not None:
            match = pattern.search(answer)
            if match is None:
                raise ImageDataError(f"{source}: row {row}: answer {answer!r} does not match {answer_pattern}")
            answer = match.group(1).strip()
        prompts.append(image_prompt(f"{question} {instruction}".strip() if instruction else question, counts[row]))
        answers.append(answer)
    table = Dataset.from_dict(
        {"prompt": prompts, "answer": answers, "solution": [f"<answer>{answer}</answer>" for answer in answers]},
        features=Features({"prompt": PROMPT_FEATURE, "answer": Value("string"), "solution": Value("string")}),
    )
    # Column-wise concatenation shares the image column's Arrow data: still paths/bytes, still undecoded.
    return concatenate_datasets([table, dataset.select_columns([column])], axis=1).select_columns(
        ["prompt", column, "answer", "solution"]
    )
