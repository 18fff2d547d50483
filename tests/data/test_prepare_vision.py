"""Prompt preparation for image rows: placeholder checks, the ids form (expanded IDs + cached pixels), the encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from grpolab.data.images import PROMPT_FEATURE, image_prompt
from grpolab.data.prepare import DatasetError
from grpolab.data.prepare_vision import (
    IMAGE_GRID,
    PIXEL_VALUES,
    VisionTextPrompts,
    VisionTokenIdPrompts,
    count_image_placeholders,
    encode_vision_prompts,
    has_images,
    vision_prompts,
)
from grpolab.data.shapes import build_shapes_dataset
from grpolab.models.vision import build_vlm_processor

PAD = "<|image_pad|>"
PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def processor():
    return build_vlm_processor(min_pixels=56 * 56, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def shapes():
    return build_shapes_dataset("count", "train", num_examples=12, seed=3)


def _rows(prompts: list, images: list[list[Image.Image]]) -> Dataset:
    png = [[{"bytes": _png(image), "path": None} for image in row] for row in images]
    features = Features({"prompt": PROMPT_FEATURE, "images": List(ImageFeature()), "answer": Value("string")})
    return Dataset.from_dict({"prompt": prompts, "images": png, "answer": ["1"] * len(prompts)}, features=features)


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_placeholders_are_counted_as_trl_fills_them():
    two_parts = image_prompt("Q", num_images=2)
    assert count_image_placeholders(two_parts, 2, PAD) == 2
    assert count_image_placeholders([{"role": "user", "content": "Q"}], 3, PAD) == 3  # TRL inserts one per image
    typed = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"and {PLACEHOLDER}?"}]}]
    assert count_image_placeholders(typed, 1, PAD) == 2
    assert count_image_placeholders(f"{PLACEHOLDER} Q", 1, PAD) == 1


def test_more_placeholders_than_images_fail_naming_the_row(processor):
    red = Image.new("RGB", (56, 56), "red")
    rows = _rows([image_prompt("A"), image_prompt("B", num_images=2)], [[red], [red]])
    for preparer in (VisionTextPrompts(), VisionTokenIdPrompts(cache_dir=None)):
        with pytest.raises(DatasetError, match=r"train split, row 1: the prompt has 2 image placeholders but the "
                                               r"row has 1 image\(s\) in 'images'"):
            preparer.prepare(rows, processor, set(), {}, "train")
    fewer = _rows([image_prompt("A")], [[red, red]])
    with pytest.raises(DatasetError, match=r"row 0: the row has 2 image\(s\) in 'images' but the prompt has only 1"):
        VisionTextPrompts().prepare(fewer, processor, set(), {}, "eval")


def test_text_preparer_leaves_rows_to_trl_and_adds_answer_ids_with_the_text_tokenizer(processor, shapes):
    prepared = VisionTextPrompts().prepare(shapes, processor, {"answer_ids"}, {}, "train")
    assert set(shapes.column_names) < set(prepared.column_names) and has_images(prepared)
    assert prepared[0]["answer_ids"] == processor.tokenizer.encode(shapes[0]["answer"], add_special_tokens=False)


def test_ids_form_matches_trls_generation_call_and_is_cached(processor, shapes, tmp_path):
    preparer = vision_prompts("ids", cache_dir=str(tmp_path))
    prepared = preparer.prepare(shapes, processor, {"answer_ids"}, {"data": 1}, "train")
    assert "prompt" not in prepared.column_names and "image" not in prepared.column_names
    assert {"prompt_ids", IMAGE_GRID, PIXEL_VALUES, "source_image", "answer_ids"} <= set(prepared.column_names)
    # The reference: the call TRL 1.16 makes for generation in text mode, and its processor pass for the loss.
    from trl.data_utils import prepare_multimodal_messages

    rows = [shapes[i] for i in range(len(shapes))]
    conversations = [prepare_multimodal_messages(row["prompt"], images=[row["image"]]) for row in rows]
    reference = processor.apply_chat_template(conversation=conversations, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)
    assert prepared["prompt_ids"] == [list(ids) for ids in reference["input_ids"]]
    assert all(ids.count(processor.image_token_id) == 4 for ids in prepared["prompt_ids"])
    collated = encode_vision_prompts(processor, [prepared[i] for i in range(len(prepared))])
    assert torch.equal(collated.pixel_values, torch.as_tensor(np.asarray(reference[PIXEL_VALUES])))
    assert collated.image_grid_thw.tolist() == [[1, 4, 4]] * len(shapes)
    # The images stay lazy and readable for rewards.
    assert prepared[0]["source_image"].size == (56, 56)
    # Cached: a second preparation reads the saved split and never calls the processor.
    refusing = build_vlm_processor(min_pixels=56 * 56, max_pixels=112 * 112)
    refusing.apply_chat_template = _refuse  # the fingerprint (the cache key) is unchanged
    again = preparer.prepare(shapes, refusing, {"answer_ids"}, {"data": 1}, "train")
    assert again["prompt_ids"] == prepared["prompt_ids"]
    assert len(list(tmp_path.iterdir())) == 1


def _refuse(*args, **kwargs):
    raise AssertionError("the cache was not used")


def test_other_pixel_bounds_are_another_cache_entry(shapes, tmp_path):
    small = VisionTokenIdPrompts(str(tmp_path)).prepare(shapes, build_vlm_processor(3136, 3136), set(), {}, "train")
    large = VisionTokenIdPrompts(str(tmp_path)).prepare(shapes, build_vlm_processor(12544, 12544), set(), {}, "train")
    assert small[0][IMAGE_GRID] == [[1, 4, 4]] and large[0][IMAGE_GRID] == [[1, 8, 8]]
    assert len(large[0]["prompt_ids"]) - len(small[0]["prompt_ids"]) == 16 - 4


def test_without_cached_pixels_only_the_image_processor_runs(processor, shapes):
    cached = VisionTokenIdPrompts(None).prepare(shapes, processor, set(), {}, "train")
    lean = VisionTokenIdPrompts(None, cache_pixels=False).prepare(shapes, processor, set(), {}, "train")
    assert PIXEL_VALUES not in lean.column_names and lean["prompt_ids"] == cached["prompt_ids"]
    rows = [lean[i] for i in range(4)]
    assert torch.equal(encode_vision_prompts(processor, rows).pixel_values,
                       encode_vision_prompts(processor, [cached[i] for i in range(4)]).pixel_values)


def test_multi_image_rows_keep_their_images_in_order(processor):
    red, blue = Image.new("RGB", (56, 56), "red"), Image.new("RGB", (112, 112), "blue")
    rows = _rows([image_prompt("Which?", num_images=2), image_prompt("One", num_images=1)], [[red, blue], [blue]])
    prepared = VisionTokenIdPrompts(None).prepare(rows, processor, set(), {}, "train")
    assert prepared[IMAGE_GRID] == [[[1, 4, 4], [1, 8, 8]], [[1, 8, 8]]]
    assert [ids.count(processor.image_token_id) for ids in prepared["prompt_ids"]] == [4 + 16, 16]
    text_form = encode_vision_prompts(processor, [rows[0], rows[1]])
    ids_form = encode_vision_prompts(processor, [prepared[0], prepared[1]])
    assert torch.equal(text_form.pixel_values, ids_form.pixel_values) and text_form.prompt_ids == ids_form.prompt_ids


def test_rows_without_images_are_prepared_as_text_prompts(processor):
    rows = Dataset.from_dict({"prompt": ["1+2="], "answer": ["3"]})
    prepared = VisionTokenIdPrompts(None).prepare(rows, processor, set(), {}, "train")
    assert prepared["prompt_ids"] == [processor.tokenizer("1+2=")["input_ids"]] and not has_images(prepared)
