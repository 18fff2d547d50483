"""What every task hands to the rest of grpolab: a train split and a held-out split."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset

#: Columns every task provides. ``prompt`` is text or chat messages; ``answer`` the gold final answer;
#: ``solution`` a complete target completion, used by the supervised warm start.
TASK_COLUMNS = ("prompt", "answer", "solution")


@dataclass
class TaskSplits:
    train: Dataset
    eval: Dataset

    def __post_init__(self) -> None:
        for split_name, split in (("train", self.train), ("eval", self.eval)):
            missing = [c for c in TASK_COLUMNS if c not in split.column_names]
            if missing:
                raise ValueError(
                    f"the {split_name} split lacks column(s) {missing}; a task must provide {list(TASK_COLUMNS)} "
                    f"(it has {split.column_names})"
                )


def local_rows(path: str, expected: str) -> Dataset:
    """Rows of a local JSONL file given as ``data.path``; a clear error names the key when it is not a file."""
    from pathlib import Path

    from datasets import load_dataset

    source = Path(path).expanduser()
    if not source.is_file():
        raise FileNotFoundError(f"data.path={path!r} is not a file (expected {expected})")
    return load_dataset("json", data_files=str(source), split="train")


def held_out_split(rows: Dataset, eval_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """Shuffle with ``seed`` and carve the first ``eval_size`` rows off as the held-out split: (train, eval)."""
    rows = rows.shuffle(seed=seed)
    if eval_size >= len(rows):
        raise ValueError(f"data.eval_size={eval_size} leaves no training rows in {len(rows)} usable rows")
    return rows.select(range(eval_size, len(rows))), rows.select(range(eval_size))
