"""Prompts against the model's context: lengths as the model reads them (text, chat, ids form, images expanded) and
the one-line error before any model is built."""

from __future__ import annotations

import io

import pytest
from datasets import Dataset, Features, List
from datasets import Image as ImageFeature
from omegaconf import OmegaConf
from PIL import Image
from transformers import Qwen2Config, Qwen2VLConfig

from grpolab.data.context import check_prompts_fit, model_context_length, prompt_lengths
from grpolab.data.images import PROMPT_FEATURE, image_prompt
from grpolab.data.prepare import TokenIdPrompts
from grpolab.data.prompts import PromptEncoder, select_rows
from grpolab.data.shapes import build_shapes_dataset
from grpolab.data.task import DataError
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.models.vision import build_vlm_processor


@pytest.fixture(scope="module")
def text_encoder() -> PromptEncoder:
    return PromptEncoder(build_char_tokenizer())


@pytest.fixture(scope="module")
def image_encoder() -> PromptEncoder:
    return PromptEncoder(build_vlm_processor(min_pixels=56 * 56, max_pixels=112 * 112))


def _exact(rows: Dataset, encoder: PromptEncoder) -> list[int]:
    """What the model reads: the encoder's IDs (the call TRL makes), images processed and expanded."""
    return [len(ids) for ids in encoder.encode(select_rows(rows, range(len(rows)))).prompt_ids]


def test_text_and_chat_prompt_lengths_are_the_encoded_ids(text_encoder) -> None:
    text = Dataset.from_dict({"prompt": ["1+2=", "10+20=", "x" * 300]})
    chat = Dataset.from_dict({"prompt": [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]
                                         for q in ("1+2=", "How many?")]})
    for rows in (text, chat):
        assert prompt_lengths(rows, text_encoder) == _exact(rows, text_encoder)
    assert prompt_lengths(text, text_encoder) == [4, 6, 300]


def test_ids_form_lengths_are_the_prepared_ids(text_encoder, tmp_path) -> None:
    rows = Dataset.from_dict({"prompt": ["1+2=", "10+20="], "answer": ["3", "30"]})
    prepared = TokenIdPrompts(text_encoder, str(tmp_path)).prepare(rows, "train", (), {"key": 1})
    assert prompt_lengths(prepared, text_encoder) == [4, 6]


def test_image_rows_count_expanded_image_tokens_without_processing_images(image_encoder) -> None:
    shapes = build_shapes_dataset("count", "train", num_examples=4, seed=0)
    assert prompt_lengths(shapes, image_encoder) == _exact(shapes, image_encoder)
    # Two images of different sizes in one row (4 and 16 image tokens), one in the other.
    small, large = Image.new("RGB", (56, 56)), Image.new("RGB", (112, 112))
    features = Features({"prompt": PROMPT_FEATURE, "images": List(ImageFeature())})
    rows = Dataset.from_dict(
        {"prompt": [image_prompt("Which is larger?", num_images=2), image_prompt("How many?", num_images=1)],
         "images": [[_png(small), _png(large)], [_png(large)]]},
        features=features,
    )
    lengths = prompt_lengths(rows, image_encoder)
    assert lengths == _exact(rows, image_encoder)
    # The extra (small) image: <|vision_start|> and <|vision_end|> around its 4 image tokens.
    assert lengths[0] - lengths[1] == len("Which is larger?") - len("How many?") + 2 + 4


def _png(image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _cfg(context_length: int | None, max_completion_length: int = 8, max_new_tokens: int = 8,
         num_problems: int | None = None):
    return OmegaConf.create({
        "model": {"context_length": context_length, "name_or_path": None},
        "trainer": {"max_completion_length": max_completion_length},
        "eval": {"max_new_tokens": max_new_tokens, "num_problems": num_problems},
    })


def test_a_prompt_beyond_the_context_is_one_line_naming_split_row_and_numbers(text_encoder) -> None:
    train = Dataset.from_dict({"prompt": ["1+2=", "x" * 20, "1+3=", "y" * 15]})
    held_out = Dataset.from_dict({"prompt": ["1+1=", "z" * 20]})
    check_prompts_fit(_cfg(28), text_encoder, train, held_out)  # 20 + 8 = 28 fits exactly
    with pytest.raises(DataError) as error:
        check_prompts_fit(_cfg(27), text_encoder, train, held_out, "data.path='t.jsonl'")
    assert str(error.value) == (
        "data.path='t.jsonl': train split row 1 ('xxxxxxxxxxxxxxxxxxxx'): a 20-token prompt + "
        "trainer.max_completion_length=8 needs 28 positions, beyond the model's context of 27 (model.context_length); "
        "1 of 4 train prompts do not fit: shorten or drop them, or lower trainer.max_completion_length"
    )
    with pytest.raises(DataError, match=r"^eval split row 1 \('zzz.*eval.max_new_tokens=16 needs 36 positions"):
        check_prompts_fit(_cfg(28, max_new_tokens=16), text_encoder, train, held_out)
    # Held-out rows the evaluation never reads (beyond eval.num_problems) are not checked.
    check_prompts_fit(_cfg(28, max_new_tokens=16, num_problems=1), text_encoder, train, held_out)


def test_the_context_is_the_config_key_or_the_checkpoints_config(tmp_path) -> None:
    assert model_context_length(OmegaConf.create({"context_length": 512, "name_or_path": "anything"})) == 512
    assert model_context_length(OmegaConf.create({"context_length": None, "name_or_path": None})) is None
    Qwen2Config(max_position_embeddings=4096).save_pretrained(tmp_path / "text")
    Qwen2VLConfig(text_config={"max_position_embeddings": 8192}).save_pretrained(tmp_path / "vision")
    for name, expected in (("text", 4096), ("vision", 8192)):
        cfg = OmegaConf.create({"context_length": None, "name_or_path": str(tmp_path / name)})
        assert model_context_length(cfg) == expected
    with pytest.raises(DataError, match=r"^model.context_length=0 must be >= 1 \(or null\)$"):
        model_context_length(OmegaConf.create({"context_length": 0, "name_or_path": None}))


@pytest.mark.parametrize("option", ["tiny", "tiny_vlm"])
def test_the_tiny_models_context_length_is_the_built_models(compose_cfg, option: str) -> None:
    from hydra.utils import instantiate

    cfg = compose_cfg([f"model={option}"])
    model = instantiate(cfg.model.network, tokenizer=instantiate(cfg.model.tokenizer))
    assert cfg.model.context_length == model.config.get_text_config().max_position_embeddings
