"""A procedural image task drawn with Pillow: count shapes, name a shape's colour, or say which side a dot is on.

Everything is a pure function of ``(seed, split, index)``, so a dataset is rebuilt identically anywhere. The held-out
split never shows an image the train split can show: each scene (the full description of what is drawn) is hashed
into one of ``HELD_OUT_BUCKETS`` buckets and bucket 0 belongs to ``test`` only, so the two splits cannot share a scene
and, since drawing is deterministic, cannot share an image, whatever the seeds and sizes.

Images are stored in a ``datasets.Image()`` column as PNG bytes (a few hundred bytes each) and decoded to a PIL image
only when a row is read, so a large split costs little memory; rows look exactly like rows from
:mod:`grpolab.data.images`, which is what TRL's ``GRPOTrainer`` expects from an ``image`` column.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw

from grpolab.data.images import PROMPT_FEATURE, image_prompt

SHAPE_TASKS = ("count", "colour", "side")
SPLITS = ("train", "test")
HELD_OUT_BUCKETS = 5  # one scene in five is held out

QUESTIONS = {
    "count": "How many shapes are there?",
    "colour": "What colour is the shape?",
    "side": "Is the dot on the left or the right?",
}
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
KINDS = ("circle", "square", "triangle")
# The background is the image processor's normalisation mean (CLIP's: 255 * OPENAI_CLIP_MEAN), so it normalises to ~0
# and only the shapes give a randomly initialised patch embedding any signal. On white, the tiny VLM sat at chance for
# 800+ SFT steps on counting; on this grey it passed 60% held-out in ~100 (see /work/notes/vision.md).
BACKGROUND = (123, 117, 104)
DOT_COLOUR = (0, 0, 0)


@dataclass(frozen=True)
class Shape:
    """One filled shape inside the box ``(x, y, x + size, y + size)``."""

    kind: str
    colour: str
    x: int
    y: int
    size: int


@dataclass(frozen=True)
class Scene:
    """What one image shows and the answer to its question."""

    task: str
    shapes: tuple[Shape, ...]
    answer: str

    def held_out(self) -> bool:
        """True for scenes reserved for the ``test`` split (a stable hash of the scene, not Python's ``hash``)."""
        digest = hashlib.sha256(repr((self.task, self.shapes)).encode()).digest()
        return int.from_bytes(digest[:8], "big") % HELD_OUT_BUCKETS == 0


def _overlaps(a: Shape, b: Shape, gap: int) -> bool:
    apart_x = a.x + a.size + gap <= b.x or b.x + b.size + gap <= a.x
    apart_y = a.y + a.size + gap <= b.y or b.y + b.size + gap <= a.y
    return not (apart_x or apart_y)


def _place(
    rng: random.Random,
    image_size: int,
    size: int,
    placed: Sequence[Shape],
    kind: str,
    colour: str,
    x_range: tuple[int, int] | None = None,
) -> Shape | None:
    """A shape at a random spot not touching ``placed`` (None if 100 tries fail; the caller then redraws)."""
    low, high = x_range if x_range is not None else (1, image_size - size - 1)
    for _ in range(100):
        shape = Shape(kind, colour, rng.randint(low, high), rng.randint(1, image_size - size - 1), size)
        if not any(_overlaps(shape, other, gap=2) for other in placed):
            return shape
    return None


def make_scene(task: str, rng: random.Random, image_size: int = 56, max_count: int = 5) -> Scene:
    """Draw a random scene for ``task``; answers are uniform over their values (counts 1..max_count, colours, sides).

    >>> make_scene("count", random.Random(0)).answer in {"1", "2", "3", "4", "5"}
    True
    """
    shape_size = max(6, image_size // 6)
    if task == "count":
        while True:
            count = rng.randint(1, max_count)
            shapes: list[Shape] = []
            for _ in range(count):
                shape = _place(rng, image_size, shape_size, shapes, rng.choice(KINDS), rng.choice(list(PALETTE)))
                if shape is None:
                    break
                shapes.append(shape)
            if len(shapes) == count:
                return Scene(task, tuple(shapes), str(count))
    if task == "colour":
        colour = rng.choice(list(PALETTE))
        size = rng.randint(shape_size, 2 * shape_size)
        shape = _place(rng, image_size, size, [], rng.choice(KINDS), colour)
        assert shape is not None  # an empty canvas always has room
        return Scene(task, (shape,), colour)
    if task == "side":
        side = rng.choice(("left", "right"))
        dot = max(4, image_size // 10)
        # Keep the dot clear of the middle band so every answer is unambiguous.
        half, margin = image_size // 2, image_size // 8
        x_range = (1, half - margin - dot) if side == "left" else (half + margin, image_size - dot - 1)
        shape = _place(rng, image_size, dot, [], "circle", "black", x_range=x_range)
        assert shape is not None
        return Scene(task, (shape,), side)
    raise ValueError(f"unknown shapes task {task!r}; expected one of {SHAPE_TASKS}")


def draw_scene(scene: Scene, image_size: int = 56) -> PILImage.Image:
    """Render a scene as an RGB image (filled shapes on a grey background).

    >>> draw_scene(make_scene("side", random.Random(0))).size
    (56, 56)
    """
    image = PILImage.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fill = PALETTE.get(shape.colour, DOT_COLOUR)
        box = (shape.x, shape.y, shape.x + shape.size - 1, shape.y + shape.size - 1)
        if shape.kind == "circle":
            draw.ellipse(box, fill=fill)
        elif shape.kind == "square":
            draw.rectangle(box, fill=fill)
        else:
            x0, y0, x1, y1 = box
            draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return image


def _png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


SHAPES_FEATURES = Features(
    {
        "prompt": PROMPT_FEATURE,
        "image": Image(),
        "answer": Value("string"),
        "solution": Value("string"),
        "task": Value("string"),
    }
)


def shape_scenes(task: str, split: str, num_examples: int, seed: int, image_size: int = 56,
                 max_count: int = 5) -> list[Scene]:
    """The scenes :func:`build_shapes_dataset` draws, in row order (what a teacher knows about each image).

    >>> [scene.answer for scene in shape_scenes("count", "test", 2, seed=1)] == build_shapes_dataset(
    ...     "count", "test", 2, seed=1)["answer"]
    True
    """
    if task not in SHAPE_TASKS:
        raise ValueError(f"unknown shapes task {task!r}; expected one of {SHAPE_TASKS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    want_held_out = split == "test"
    scenes: list[Scene] = []
    # String seeds hash deterministically (random.seed uses SHA-512 for str), unlike hash() of a tuple.
    rng = random.Random(f"shapes:{task}:{split}:{seed}:{image_size}:{max_count}")
    while len(scenes) < num_examples:
        scene = make_scene(task, rng, image_size=image_size, max_count=max_count)
        if scene.held_out() == want_held_out:
            scenes.append(scene)
    return scenes


def shapes_box(scene: Scene, image_size: int, grid: int = 1) -> dict[str, int]:
    """The box holding every shape of ``scene`` (PIL's convention: right and bottom exclusive), widened outward to
    multiples of ``grid`` pixels (fewer distinct boxes: a teacher whose calls a small model can learn to copy).

    >>> scene = Scene("count", (Shape("circle", "red", 10, 30, 9), Shape("square", "blue", 40, 5, 9)), "2")
    >>> shapes_box(scene, 56), shapes_box(scene, 56, grid=28)
    ({'left': 10, 'top': 5, 'right': 49, 'bottom': 39}, {'left': 0, 'top': 0, 'right': 56, 'bottom': 56})
    """
    left, top = min(shape.x for shape in scene.shapes), min(shape.y for shape in scene.shapes)
    right = max(shape.x + shape.size for shape in scene.shapes)
    bottom = max(shape.y + shape.size for shape in scene.shapes)
    return {"left": left // grid * grid, "top": top // grid * grid,
            "right": min(image_size, -(-right // grid) * grid), "bottom": min(image_size, -(-bottom // grid) * grid)}


def build_shapes_dataset(
    task: str = "count",
    split: str = "train",
    num_examples: int = 1000,
    seed: int = 0,
    image_size: int = 56,
    max_count: int = 5,
) -> Dataset:
    """Rows ``prompt`` (chat messages with an image part), ``image`` (decoded to PIL on access), ``answer``,
    ``solution`` (``<answer>3</answer>``, the supervised warm-start target) and ``task``.

    >>> test = build_shapes_dataset("count", split="test", num_examples=4, seed=1)
    >>> test[0]["solution"] == f"<answer>{test[0]['answer']}</answer>"
    True
    """
    rows: dict[str, list] = {name: [] for name in SHAPES_FEATURES}
    for scene in shape_scenes(task, split, num_examples, seed, image_size, max_count):
        rows["prompt"].append(image_prompt(QUESTIONS[task]))
        rows["image"].append({"bytes": _png_bytes(draw_scene(scene, image_size)), "path": None})
        rows["answer"].append(scene.answer)
        rows["solution"].append(f"<answer>{scene.answer}</answer>")
        rows["task"].append(task)
    return Dataset.from_dict(rows, features=SHAPES_FEATURES)
