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
