"""Procedural letter counting ("count a: abcaab" -> 3): a small answer space over an unbounded problem space.

Every string is drawn fresh from a seeded generator, so the held-out split is disjoint from training by construction
(duplicates are removed) and a model can only score by learning to count, not by memorising problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datasets import Dataset

from grpolab.data.task import TaskSplits


@dataclass
class CountingTask:
    """Count one letter in a random string over a small alphabet.

    >>> splits = CountingTask(train_size=4, eval_size=2, alphabet="abc", min_length=3, max_length=6, seed=0).load()
    >>> row = splits.eval[0]
    >>> row["prompt"].count(row["prompt"][6]) - 1 == int(row["answer"])  # "count X: <string>"
    True
    """

    train_size: int
    eval_size: int
    alphabet: str
    min_length: int
    max_length: int
    seed: int

    def __post_init__(self) -> None:
        if len(self.alphabet) < 2 or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"data.alphabet={self.alphabet!r} needs at least 2 distinct letters")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"data.min_length={self.min_length} / data.max_length={self.max_length} are not a range")

    def load(self) -> TaskSplits:
        rng = random.Random(self.seed)
        seen: set[tuple[str, str]] = set()
        rows: list[dict[str, str]] = []
        attempts = 0
        while len(rows) < self.train_size + self.eval_size:
            attempts += 1
            if attempts > 50 * (self.train_size + self.eval_size):
                raise ValueError(
                    f"data.train_size + data.eval_size = {self.train_size + self.eval_size} exceeds the distinct "
                    f"problems this alphabet and length range can make; lengthen data.max_length"
                )
            letter = rng.choice(self.alphabet)
            text = "".join(rng.choice(self.alphabet) for _ in range(rng.randint(self.min_length, self.max_length)))
            if (letter, text) in seen:
                continue
            seen.add((letter, text))
            answer = str(text.count(letter))
            rows.append({"prompt": f"count {letter}: {text}=", "answer": answer, "solution": f"<answer>{answer}</answer>"})
        return TaskSplits(
            train=Dataset.from_list(rows[self.eval_size :]), eval=Dataset.from_list(rows[: self.eval_size])
        )
