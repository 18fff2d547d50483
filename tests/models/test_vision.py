"""The tiny Qwen2-VL, its processor, the shared loading path, and one GRPO run through TRL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor
from transformers.utils import is_torchvision_available

from grpolab.models.load import load_model
from grpolab.models.tiny import build_tiny_vlm
from grpolab.models.vision import (
    IMAGE_PLACEHOLDER_TOKENS,
    ImageOnlyQwen2VLProcessor,
    build_vlm_processor,
    describe_parameters,
    image_token_count,
    load_vlm_processor,
)

QUESTION = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "How many?"}]}]


def tiny_vlm(min_pixels: int, max_pixels: int):
    processor = build_vlm_processor(min_pixels=min_pixels, max_pixels=max_pixels)
    return build_tiny_vlm(processor, 64, 2, 4, 2, 128, 64, 2, 4, seed=0), processor


def save(model, processor, directory) -> None:
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


@pytest.fixture(scope="module")
def tiny():
    return tiny_vlm(min_pixels=56 * 56, max_pixels=112 * 112)


def _batch(processor, colours=("red", "blue"), size=56):
    text = processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    images = [Image.new("RGB", (size, size), colour) for colour in colours]
    return processor(text=[text] * len(images), images=images, padding=True, return_tensors="pt")


def test_placeholders_are_single_special_tokens_and_tags_survive_decoding():
    tokenizer = build_vlm_processor().tokenizer
    for token in IMAGE_PLACEHOLDER_TOKENS:
        assert len(tokenizer(token)["input_ids"]) == 1, token
    ids = tokenizer("<|vision_start|><|image_pad|><|vision_end|><answer>3</answer><|endoftext|>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<answer>3</answer>"


def test_chat_template_renders_the_image_part_as_qwen_placeholders():
    processor = build_vlm_processor()
    text = processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(("side", "patch_size", "expected_tokens"), [(56, 14, 4), (112, 14, 16), (64, 8, 16)])
def test_image_pad_is_expanded_to_the_merged_patch_count(side, patch_size, expected_tokens):
    processor = build_vlm_processor(min_pixels=side * side, max_pixels=side * side, patch_size=patch_size)
    batch = _batch(processor, colours=("red",), size=side)
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == expected_tokens
    assert image_token_count(processor, side, side) == expected_tokens
    assert batch["image_grid_thw"].tolist() == [[1, side // patch_size, side // patch_size]]
    assert batch["pixel_values"].shape == (expected_tokens * 4, 3 * 2 * patch_size * patch_size)


def test_large_images_are_shrunk_to_max_pixels():
    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=112 * 112)
    batch = _batch(processor, colours=("red",), size=400)
    grid = batch["image_grid_thw"][0].tolist()
    assert grid[1] * grid[2] * 14 * 14 <= 112 * 112


def test_tiny_vlm_is_small_and_the_image_changes_the_logits(tiny):
    model, processor = tiny
    sizes = describe_parameters(model)
    assert 0 < sizes["visual"] and 0 < sizes["language_model"] and sizes["total"] < 2_000_000
    assert model.config.image_token_id == processor.image_token_id
    batch = _batch(processor)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(processor.tokenizer))
    # Identical text, different images: the answer position must depend on the pixels.
    assert not torch.allclose(logits[0, -1], logits[1, -1])


def test_generate_returns_decodable_tokens(tiny):
    model, processor = tiny
    batch = _batch(processor)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert output.shape[1] <= batch["input_ids"].shape[1] + 5
    assert all(isinstance(text, str) for text in processor.batch_decode(output, skip_special_tokens=True))


def test_saved_processor_reloads_with_the_backend_this_machine_has(tmp_path):
    build_vlm_processor().save_pretrained(tmp_path)
    image_processor = AutoProcessor.from_pretrained(tmp_path).image_processor
    expected = "Qwen2VLImageProcessor" if is_torchvision_available() else "Qwen2VLImageProcessorPil"
    assert type(image_processor).__name__ == expected


@pytest.mark.skipif(is_torchvision_available(), reason="documents the no-torchvision failure only")
def test_stock_qwen2_vl_processor_cannot_be_built_without_torchvision():
    """Canary: if this starts failing, transformers fixed it and ImageOnlyQwen2VLProcessor may be dropped."""
    from transformers import Qwen2VLProcessor

    processor = build_vlm_processor()
    with pytest.raises(AttributeError):
        Qwen2VLProcessor(image_processor=processor.image_processor, tokenizer=processor.tokenizer)


def test_save_then_autoprocessor_and_load_vlm_round_trip(tiny, tmp_path):
    model, processor = tiny
    save(model, processor, tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, ImageOnlyQwen2VLProcessor)
    original, again = _batch(processor), _batch(reloaded)
    assert original.keys() == again.keys()
    assert all(torch.equal(original[key], again[key]) for key in original)

    loaded_processor = load_vlm_processor(str(tmp_path), min_pixels=None, max_pixels=None)
    loaded_model = load_model(str(tmp_path), loaded_processor, "vision", dtype="float32")
    assert loaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    with torch.no_grad():
        assert torch.allclose(loaded_model(**original).logits, model(**original).logits)


def test_load_overrides_the_saved_pixel_bounds(tiny, tmp_path):
    model, processor = tiny
    save(model, processor, tmp_path)
    small = load_vlm_processor(str(tmp_path), min_pixels=56 * 56, max_pixels=56 * 56)
    assert _batch(small, colours=("red",), size=112)["image_grid_thw"].tolist() == [[1, 4, 4]]


@pytest.mark.skipif(is_torchvision_available(), reason="with torchvision, AutoProcessor loads hub repos as they are")
def test_hub_style_qwen2_vl_processor_loads_image_only_when_torchvision_is_missing(tmp_path):
    """A checkpoint recording the stock Qwen2VLProcessor (as hub Qwen2-VL repos do) still loads."""
    build_vlm_processor().save_pretrained(tmp_path)
    for name in ("processor_config.json", "tokenizer_config.json"):
        config = json.loads((tmp_path / name).read_text())
        config["processor_class"] = "Qwen2VLProcessor"
        if name == "tokenizer_config.json":
            config["padding_side"] = "right"  # TRL needs left; loading must fix it
        (tmp_path / name).write_text(json.dumps(config))
    processor = load_vlm_processor(str(tmp_path))
    assert isinstance(processor, ImageOnlyQwen2VLProcessor)
    assert processor.tokenizer.padding_side == "left"
    assert int((_batch(processor, ("red",))["input_ids"] == processor.image_token_id).sum()) == 4


@pytest.mark.slow
def test_grpo_trainer_updates_the_tiny_vlm_on_the_shapes_task(tmp_path: Path, one_torch_thread):
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.data.shapes import build_shapes_dataset

    model, processor = tiny_vlm(min_pixels=56 * 56, max_pixels=56 * 56)
    dataset = build_shapes_dataset("count", split="train", num_examples=16, seed=0)

    def distinct_characters(completions, answer, **_):
        # Trivial but varied within a group, so advantages (and gradients) are non-zero.
        return [float(len(set(completion[0]["content"]))) for completion in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        beta=0.0,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=distinct_characters,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    trainer.train()

    assert trainer.state.global_step == 2
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    # The vision tower only gets gradients if TRL fed pixel_values into the loss forward pass.
    assert any(name.startswith("model.visual.") for name in changed)
    assert any(name.startswith("model.language_model.") for name in changed)
