"""The prompt encoder on image rows (text and ids form alike), and their preparation: placeholder checks, the ids
form (expanded IDs + cached pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from grpolab.data.images import PROMPT_FEATURE, image_prompt
from grpolab.data.prepare import TextPrompts, TokenIdPrompts, count_image_placeholders
from grpolab.data.prompts import IMAGE_GRID, PIXEL_VALUES, PromptEncoder, image_column
from grpolab.data.task import DataError
from grpolab.data.shapes import build_shapes_dataset
from grpolab.models.vision import build_vlm_processor

PAD = "<|image_pad|>"
PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def processor():
    return build_vlm_processor(min_pixels=56 * 56, max_pixels=112 * 112)


def ids_prompts(processor, cache_dir=None, **options) -> TokenIdPrompts:
    return TokenIdPrompts(PromptEncoder(processor), None if cache_dir is None else str(cache_dir), **options)


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
    for preparer in (TextPrompts(PromptEncoder(processor)), ids_prompts(processor)):
        with pytest.raises(DataError, match=r"train split, row 1: the prompt has 2 image placeholder\(s\) but the "
                                            r"row has 1 image\(s\) in 'images'"):
            preparer.prepare(rows, "train", set(), {})
    fewer = _rows([image_prompt("A")], [[red, red]])
    with pytest.raises(DataError, match=r"row 0: the prompt has 1 image placeholder\(s\) but the row has 2 image"):
        TextPrompts(PromptEncoder(processor)).prepare(fewer, "eval", set(), {})


def test_image_rows_with_a_text_only_model_fail_naming_the_fix(shapes):
    from grpolab.models.tokenizer import build_char_tokenizer

    with pytest.raises(DataError, match=r"^the train split holds images \('image'\), but the selected model is "
                                        r"text-only; use a vision-language model \(model.modality=vision\)"):
        TextPrompts(PromptEncoder(build_char_tokenizer())).prepare(shapes, "train", set(), {})


def test_text_preparer_leaves_rows_to_trl_and_adds_answer_ids_with_the_text_tokenizer(processor, shapes):
    prepared = TextPrompts(PromptEncoder(processor)).prepare(shapes, "train", {"answer_ids"}, {})
    assert set(shapes.column_names) < set(prepared.column_names) and image_column(prepared.column_names) == "image"
    assert prepared[0]["answer_ids"] == processor.tokenizer.encode(shapes[0]["answer"], add_special_tokens=False)


def test_ids_form_matches_trls_generation_call_and_is_cached(processor, shapes, tmp_path):
    prepared = ids_prompts(processor, tmp_path).prepare(shapes, "train", {"answer_ids"}, {"data": 1})
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
    collated = PromptEncoder(processor).encode([prepared[i] for i in range(len(prepared))]).images
    assert torch.equal(collated.pixel_values, torch.as_tensor(np.asarray(reference[PIXEL_VALUES])))
    assert collated.image_grid_thw.tolist() == [[1, 4, 4]] * len(shapes)
    # The images stay lazy and readable for rewards.
    assert prepared[0]["source_image"].size == (56, 56)
    # Cached: a second preparation reads the saved split and never calls the processor.
    refusing = build_vlm_processor(min_pixels=56 * 56, max_pixels=112 * 112)
    refusing.apply_chat_template = _refuse  # the fingerprint (the cache key) is unchanged
    again = ids_prompts(refusing, tmp_path).prepare(shapes, "train", {"answer_ids"}, {"data": 1})
    assert again["prompt_ids"] == prepared["prompt_ids"]
    assert len(list(tmp_path.iterdir())) == 1


def _refuse(*args, **kwargs):
    raise AssertionError("the cache was not used")


def test_other_pixel_bounds_are_another_cache_entry(shapes, tmp_path):
    small = ids_prompts(build_vlm_processor(3136, 3136), tmp_path).prepare(shapes, "train", set(), {})
    large = ids_prompts(build_vlm_processor(12544, 12544), tmp_path).prepare(shapes, "train", set(), {})
    assert small[0][IMAGE_GRID] == [[1, 4, 4]] and large[0][IMAGE_GRID] == [[1, 8, 8]]
    assert len(large[0]["prompt_ids"]) - len(small[0]["prompt_ids"]) == 16 - 4


def test_without_cached_pixels_only_the_image_processor_runs(processor, shapes):
    cached = ids_prompts(processor).prepare(shapes, "train", set(), {})
    lean = ids_prompts(processor, cache_pixels=False).prepare(shapes, "train", set(), {})
    assert PIXEL_VALUES not in lean.column_names and lean["prompt_ids"] == cached["prompt_ids"]
    encoder = PromptEncoder(processor)
    assert torch.equal(encoder.encode([lean[i] for i in range(4)]).images.pixel_values,
                       encoder.encode([cached[i] for i in range(4)]).images.pixel_values)


def test_multi_image_rows_keep_their_images_in_order(processor):
    red, blue = Image.new("RGB", (56, 56), "red"), Image.new("RGB", (112, 112), "blue")
    rows = _rows([image_prompt("Which?", num_images=2), image_prompt("One", num_images=1)], [[red, blue], [blue]])
    prepared = ids_prompts(processor).prepare(rows, "train", set(), {})
    assert prepared[IMAGE_GRID] == [[[1, 4, 4], [1, 8, 8]], [[1, 8, 8]]]
    assert [ids.count(processor.image_token_id) for ids in prepared["prompt_ids"]] == [4 + 16, 16]
    encoder = PromptEncoder(processor)
    text_form, ids_form = encoder.encode([rows[0], rows[1]]), encoder.encode([prepared[0], prepared[1]])
    assert torch.equal(text_form.images.pixel_values, ids_form.images.pixel_values)
    assert text_form.prompt_ids == ids_form.prompt_ids and text_form.images.num_images == [2, 1]


def test_rows_without_images_are_prepared_as_text_prompts(processor):
    rows = Dataset.from_dict({"prompt": ["1+2="], "answer": ["3"]})
    prepared = ids_prompts(processor).prepare(rows, "train", set(), {})
    assert prepared["prompt_ids"] == [processor.tokenizer("1+2=")["input_ids"]]
    assert image_column(prepared.column_names) is None and IMAGE_GRID not in prepared.column_names
