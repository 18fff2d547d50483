"""Rewards for image tasks: intersection over union of a predicted bounding box (VLM-R1-style grounding).

Exact/numeric answers on image tasks (counting, colours) are scored by the ordinary ``Accuracy`` reward: TRL hands
every reward the row's ``image``/``images`` as keyword arguments, which it accepts and ignores. The IoU reward is the
one that needs the image: a box predicted on a normalised scale, or on the picture as the processor resized it, is
mapped back to the original pixels using the image's size before it is compared with the gold box.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from grpolab.rewards.base import Reward, RewardLevel
from grpolab.rewards.tags import ALL_TAGS, last_answer, split_ids, split_text
from grpolab.rewards.vocabulary import Vocabulary

Box = tuple[float, float, float, float]
# [x1, y1, x2, y2]: four numbers, optional spaces, in square brackets.
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
# Characters a box can be written with; the token variant reads a box through these, one token each.
BOX_CHARACTERS = "0123456789.,-[] "
FRAMES = ("pixels", "unit", "per_mille", "resized")


def parse_box(text: str) -> Box | None:
    """The first ``[x1, y1, x2, y2]`` in ``text``, or None.

    >>> parse_box("[10, 20.5, 30,40]"), parse_box("10, 20, 30, 40")
    ((10.0, 20.5, 30.0, 40.0), None)
    """
    match = _BOX.search(text)
    return tuple(float(value) for value in match.groups()) if match else None  # type: ignore[return-value]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; a box with no area scores 0.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    """
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    intersection = max(0.0, width) * max(0.0, height)
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - intersection
    return intersection / union if union > 0 else 0.0


def resized_size(width: int, height: int, min_pixels: int, max_pixels: int, factor: int) -> tuple[int, int]:
    """The ``(width, height)`` Qwen2-VL's image processor resizes a picture to (its ``smart_resize``).

    >>> resized_size(640, 480, min_pixels=56 * 56, max_pixels=112 * 112, factor=28)
    (112, 84)
    """
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


class IoU(Reward):
    """IoU of the box in the last ``<answer>[x1, y1, x2, y2]</answer>`` with the gold box (column ``answer``, same
    notation, in the original image's pixels); 0.0 when no box can be read. ``threshold`` turns it into 1.0/0.0
    (VLM-R1's ``IoU > 0.5``).

    ``frame`` says where the model's coordinates live: ``pixels`` (the original image, as the gold box),
    ``unit`` (0..1 of width/height), ``per_mille`` (0..1000, Qwen2-VL's grounding convention) or ``resized`` (the
    picture the processor fed the model, ``min_pixels``/``max_pixels``/``resize_factor`` as the model's processor;
    Qwen2.5-VL's absolute coordinates). Every frame but ``pixels`` reads the image size from the ``image``/``images``
    keyword TRL passes (the first image of a row).

    Token level reads the answer's token IDs through a table of the tokenizer's single-token characters
    (``BOX_CHARACTERS``), never decoding; a box written with a multi-character number token scores 0.0 there (it
    would parse as text).

    >>> reward = IoU(level="text")
    >>> reward(prompts=[None] * 2, completions=["<answer>[0,0,10,10]</answer>", "[0,0,10,10]"],
    ...        completion_ids=[[], []], answer=["[5, 0, 15, 10]"] * 2)
    [0.3333333333333333, 0.0]
    """

    default_name = "iou"
    text_columns = frozenset({"answer"})
    token_columns = frozenset({"answer"})
    tags = ALL_TAGS

    def __init__(
        self,
        level: RewardLevel | str = RewardLevel.text,
        frame: str = "pixels",
        threshold: float | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        resize_factor: int = 28,
        name: str | None = None,
    ) -> None:
        super().__init__(level=level, name=name)
        if frame not in FRAMES:
            raise ValueError(f"rewards.{self.__name__}.frame must be one of {', '.join(FRAMES)}; got {frame!r}")
        if frame == "resized" and (min_pixels is None or max_pixels is None):
            raise ValueError(f"rewards.{self.__name__}: frame=resized needs min_pixels and max_pixels (the model's)")
        self.frame, self.threshold = frame, threshold
        self.min_pixels, self.max_pixels, self.resize_factor = min_pixels, max_pixels, resize_factor
        self.id_to_char: dict[int, str] = {}

    def token_strings(self) -> tuple[str, ...]:
        return (*self.tags, *BOX_CHARACTERS)

    def bind_tokens(self, vocabulary: Vocabulary) -> None:
        super().bind_tokens(vocabulary)
        table: dict[int, str] = {}
        for character in BOX_CHARACTERS:
            ids = vocabulary.ids(character)
            if len(ids) == 1 and ids[0] not in self.special_ids:
                table[int(ids[0])] = character
        self.id_to_char = table

    def score_text(self, completions: list[str], answer: Sequence[str], **columns: Any) -> list[float | None]:
        predicted = [last_answer(split_text(text)) for text in completions]
        return self._score([parse_box(p) if p is not None else None for p in predicted], answer, columns)

    def score_tokens(self, completion_ids: list[list[int]], answer: Sequence[str], **columns: Any
                     ) -> list[float | None]:
        boxes = []
        for ids in completion_ids:
            content = last_answer(split_ids(self.content_ids(ids), self.tag_ids))
            characters = [] if content is None else [self.id_to_char.get(int(i)) for i in content]
            boxes.append(None if content is None or None in characters else parse_box("".join(characters)))
        return self._score(boxes, answer, columns)

    def _score(self, predicted: Sequence[Box | None], answer: Sequence[str], columns: dict[str, Any]) -> list[float]:
        sizes = self._image_sizes(columns, len(predicted))
        rewards = []
        for row, (box, gold_text) in enumerate(zip(predicted, answer, strict=True)):
            gold = parse_box(str(gold_text))
            if gold is None:
                raise ValueError(f"rewards.{self.__name__}: gold answer {gold_text!r} (row {row}) is not a box "
                                 "[x1, y1, x2, y2]")
            iou = 0.0 if box is None else box_iou(self._to_pixels(box, sizes[row]), gold)
            rewards.append(iou if self.threshold is None else float(iou > self.threshold))
        return rewards

    def _image_sizes(self, columns: dict[str, Any], count: int) -> list[tuple[int, int] | None]:
        if self.frame == "pixels":
            return [None] * count
        images = columns.get("image")
        if images is None and columns.get("images") is not None:
            images = [row[0] if row else None for row in columns["images"]]
        if images is None or any(image is None for image in images):
            raise ValueError(f"rewards.{self.__name__}: frame={self.frame} needs each row's image (the 'image' or "
                             "'images' column) to map boxes to pixels")
        return [tuple(image.size) for image in images]

    def _to_pixels(self, box: Box, size: tuple[int, int] | None) -> Box:
        if size is None:
            return box
        width, height = size
        if self.frame == "unit":
            scale_x, scale_y = width, height
        elif self.frame == "per_mille":
            scale_x, scale_y = width / 1000, height / 1000
        else:
            seen_w, seen_h = resized_size(width, height, self.min_pixels, self.max_pixels, self.resize_factor)
            scale_x, scale_y = width / seen_w, height / seen_h
        return (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
