"""The procedural shapes task: deterministic, held-out images disjoint from train, answers true to the pixels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from datasets import Image

from grpolab.data.shapes import BACKGROUND, PALETTE, QUESTIONS, SHAPE_TASKS, build_shapes_dataset


def _png_bytes(dataset) -> list[bytes]:
    return [entry["bytes"] for entry in dataset.cast_column("image", Image(decode=False))["image"]]


def _foreground(image) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return np.any(pixels != np.array(BACKGROUND), axis=-1)


def _connected_components(mask: np.ndarray) -> int:
    seen = np.zeros_like(mask)
    components = 0
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        components += 1
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return components


def test_rows_have_the_contract_columns_and_a_chat_prompt_with_an_image_part():
    dataset = build_shapes_dataset("count", num_examples=3, image_size=64)
    assert set(dataset.column_names) >= {"prompt", "image", "answer", "solution"}
    row = dataset[0]
    assert row["prompt"] == [
        {
            "role": "user",
            "content": [{"type": "image", "text": None}, {"type": "text", "text": QUESTIONS["count"]}],
        }
    ]
    assert row["solution"] == f"<answer>{row['answer']}</answer>"
    assert row["image"].size == (64, 64) and row["image"].mode == "RGB"


def test_images_are_stored_encoded_and_decoded_only_on_access():
    dataset = build_shapes_dataset("colour", num_examples=2)
    assert isinstance(dataset.features["image"], Image)
    raw = dataset.cast_column("image", Image(decode=False))[0]["image"]
    assert raw["bytes"].startswith(b"\x89PNG") and len(raw["bytes"]) < 2_000


@pytest.mark.parametrize("task", SHAPE_TASKS)
def test_same_arguments_give_identical_datasets_and_seeds_differ(task):
    first = build_shapes_dataset(task, num_examples=20, seed=3)
    again = build_shapes_dataset(task, num_examples=20, seed=3)
    other = build_shapes_dataset(task, num_examples=20, seed=4)
    assert _png_bytes(first) == _png_bytes(again) and first["answer"] == again["answer"]
    assert _png_bytes(first) != _png_bytes(other)


@pytest.mark.parametrize("task", SHAPE_TASKS)
def test_held_out_images_never_appear_in_train(task):
    train = set(_png_bytes(build_shapes_dataset(task, "train", num_examples=1500, seed=0)))
    # A different seed for the test split too: disjointness must not depend on seeds lining up.
    test = _png_bytes(build_shapes_dataset(task, "test", num_examples=300, seed=7))
    assert not train.intersection(test)


def test_count_answers_match_the_number_of_drawn_shapes_and_are_balanced():
    dataset = build_shapes_dataset("count", "test", num_examples=200, seed=1)
    for row in dataset:
        assert _connected_components(_foreground(row["image"])) == int(row["answer"])
    counts = Counter(dataset["answer"])
    assert set(counts) == {"1", "2", "3", "4", "5"} and min(counts.values()) >= 20


def test_colour_answers_match_the_shape_pixels():
    for row in build_shapes_dataset("colour", num_examples=100, seed=2):
        pixels = np.asarray(row["image"])[_foreground(row["image"])]
        ((dominant, _),) = Counter(map(tuple, pixels)).most_common(1)
        assert dominant == PALETTE[row["answer"]]


def test_side_answers_match_the_dot_position():
    dataset = build_shapes_dataset("side", num_examples=100, seed=5, image_size=56)
    for row in dataset:
        columns = np.nonzero(_foreground(row["image"]))[1]
        assert ("left" if columns.mean() < 28 else "right") == row["answer"]
    assert set(dataset["answer"]) == {"left", "right"}


def test_unknown_task_or_split_is_rejected():
    with pytest.raises(ValueError, match="task"):
        build_shapes_dataset("shade")
    with pytest.raises(ValueError, match="split"):
        build_shapes_dataset("count", split="validation")
