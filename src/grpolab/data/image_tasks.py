"""Image tasks as ``conf/data/<name>.yaml`` instantiates them: the procedural shapes task and image QA files/datasets.

Both return :class:`~grpolab.data.task.TaskSplits` whose rows carry ``prompt`` (chat messages with one image part per
image), ``image`` or ``images`` (a lazy ``datasets.Image`` column, decoded on row access), ``answer`` and ``solution``.
Data preparation (``grpolab.data.prepare``) sees the image column and, with a text-only model, fails in one line before
any model is built.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from grpolab.data.images import load_image_qa
from grpolab.data.shapes import build_shapes_dataset, shape_scenes, shapes_box
from grpolab.data.task import DataError, TaskSplits


@dataclass
class ShapesTask:
    """Count shapes / name a colour / say which side a dot is on, drawn with Pillow (see ``grpolab.data.shapes``).

    The held-out split shows scenes the train split never shows, whatever the seed. ``teacher_error_rate`` makes the
    warm-start teacher imperfect in the way people are: with that probability, the ``solution`` of a training scene
    with at least ``teacher_slip_from`` shapes undercounts by one (``answer``, which rewards and the held-out split
    use, stays true). A warm start then imitates the slips, and GRPO, rewarded by the true count, has to unlearn them.
    ``solution_prefix`` opens every training ``solution`` (e.g. ``<think></think>``, for rewards that require a think
    block). ``crop_call_rate`` (for ``environment=crop``): the share of training solutions that are tool-calling
    demonstrations, chat messages that first call ``crop`` on the box holding the shapes (widened to multiples of
    ``crop_grid`` pixels) and then answer; the tool's result is left out (``content`` null): the warm start runs the
    call with the run's environment (``grpolab.trainer.multiturn``), so it sees exactly the image the tool returns.

    >>> splits = ShapesTask(train_size=4, eval_size=2).load()
    >>> row = splits.eval[0]
    >>> len(splits.train), len(splits.eval), row["solution"] == f"<answer>{row['answer']}</answer>"
    (4, 2, True)
    """

    task: str = "count"
    train_size: int = 2000
    eval_size: int = 200
    image_size: int = 56
    max_count: int = 5
    seed: int = 1234
    teacher_error_rate: float = 0.0
    teacher_slip_from: int = 4
    solution_prefix: str = ""
    crop_call_rate: float = 0.0
    crop_grid: int = 28

    def __post_init__(self) -> None:
        if not 0.0 <= self.teacher_error_rate <= 1.0:
            raise ValueError(f"data.teacher_error_rate={self.teacher_error_rate} must be in [0, 1]")
        if not 0.0 <= self.crop_call_rate <= 1.0:
            raise ValueError(f"data.crop_call_rate={self.crop_call_rate} must be a fraction in [0, 1]")
        if isinstance(self.crop_grid, bool) or not isinstance(self.crop_grid, int) or self.crop_grid < 1:
            raise ValueError(f"data.crop_grid={self.crop_grid!r} must be a positive integer (pixels)")
        if self.teacher_error_rate and self.task != "count":
            raise ValueError(f"data.teacher_error_rate slips counts; with data.task={self.task} set it to 0")

    def load(self) -> TaskSplits:
        shape = dict(task=self.task, seed=self.seed, image_size=self.image_size, max_count=self.max_count)
        train = build_shapes_dataset(split="train", num_examples=self.train_size, **shape)
        if self.teacher_error_rate > 0 or self.solution_prefix:
            teacher = random.Random(f"teacher:{self.seed}")
            solutions = [
                self.solution_prefix + (
                    f"<answer>{int(answer) - 1}</answer>" if self.teacher_error_rate > 0
                    and int(answer) >= self.teacher_slip_from and teacher.random() < self.teacher_error_rate
                    else solution)
                for answer, solution in zip(train["answer"], train["solution"], strict=True)
            ]
            # Column swap, not Dataset.map: the image column's stored PNG bytes stay as they are (never decoded).
            train = train.remove_columns("solution").add_column("solution", solutions)
        if self.crop_call_rate > 0:
            scenes = shape_scenes(split="train", num_examples=self.train_size, **shape)
            teacher = random.Random(f"crop:{self.seed}")
            traces = [crop_trace(solution, shapes_box(scene, self.image_size, self.crop_grid)
                                 if teacher.random() < self.crop_call_rate else None)
                      for solution, scene in zip(train["solution"], scenes, strict=True)]
            train = train.remove_columns("solution").add_column("solution", traces)
        return TaskSplits(train=train, eval=build_shapes_dataset(split="test", num_examples=self.eval_size, **shape))


def crop_trace(answer: str, box: dict[str, int] | None) -> list[dict[str, Any]]:
    """A demonstration as chat messages: ``crop`` on ``box`` (its result left for the warm start to run), then
    ``answer``; without a box, the answer alone. Every message has the same keys (one Arrow struct type).

    >>> [message["role"] for message in crop_trace("<answer>2</answer>", {"left": 0, "top": 0, "right": 28,
    ...                                                                   "bottom": 28})]
    ['assistant', 'tool', 'assistant']
    """
    final = {"role": "assistant", "content": answer, "tool_calls": None, "name": None}
    if box is None:
        return [final]
    call = {"type": "function", "function": {"name": "crop", "arguments": box}}
    return [{"role": "assistant", "content": "", "tool_calls": [call], "name": None},
            {"role": "tool", "content": None, "tool_calls": None, "name": "crop"}, final]


@dataclass
class ImageQATask:
    """Image question answering from a JSONL file, a local dataset directory or a hub dataset id (``path``).

    The held-out split is ``eval_split`` of ``eval_path`` (default: ``path``) when either is set; otherwise
    ``eval_size`` rows carved from ``split`` by a ``seed``-ed shuffle (the rest, at most ``train_size``, train).
    Images stay lazy and every image path is checked at load time (``validate``): a missing or unreadable file fails
    naming its row and path.

    >>> task = ImageQATask(path="data/counting.jsonl", eval_size=100)
    >>> splits = task.load()  # doctest: +SKIP
    """

    path: str
    split: str = "train"
    eval_path: str | None = None
    eval_split: str | None = None
    train_size: int | None = None
    eval_size: int = 200
    question_column: str = "question"
    answer_column: str = "answer"
    answer_pattern: str | None = None
    instruction: str = ""
    seed: int = 1234
    validate: bool = True

    def _load(self, path: str, split: str, num_examples: int | None = None, key: str = "data.path") -> Dataset:
        return load_image_qa(
            path,
            split=split,
            question_column=self.question_column,
            answer_column=self.answer_column,
            answer_pattern=self.answer_pattern,
            instruction=self.instruction,
            num_examples=num_examples,
            validate=self.validate,
            key=key,
        )

    def load(self) -> TaskSplits:
        if self.eval_path is not None or self.eval_split is not None:
            train = self._load(self.path, self.split, self.train_size)
            held_out = self._load(self.eval_path or self.path, self.eval_split or self.split, self.eval_size,
                                  "data.eval_path" if self.eval_path else "data.path")
            return TaskSplits(train=train, eval=held_out, source=f"data.path={self.path!r}")
        rows = self._load(self.path, self.split)
        if self.eval_size >= len(rows):
            raise DataError(
                f"data.eval_size={self.eval_size} leaves no training rows: {self.path} ({self.split}) has {len(rows)}; "
                "lower data.eval_size or set data.eval_split / data.eval_path"
            )
        # An index shuffle (no image is read or copied): the held-out rows are fixed by the data seed alone.
        shuffled = rows.shuffle(seed=self.seed)
        held_out = shuffled.select(range(self.eval_size))
        rest = len(rows) - self.eval_size
        train = shuffled.select(range(self.eval_size, self.eval_size + min(rest, self.train_size or rest)))
        return TaskSplits(train=train, eval=held_out, source=f"data.path={self.path!r}")
