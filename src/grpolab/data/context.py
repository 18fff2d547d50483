"""Prompts that cannot fit the model's context fail before the model is built, in one line naming the split and row.

A prompt of ``p`` tokens leaves the model ``context - p`` positions to generate in; TRL neither truncates prompts
nor checks this, so a prompt plus ``trainer.max_completion_length`` beyond the context fails deep inside generation
(or, for rotary models, silently generates from positions the model never saw). The context is ``model.context_length``
(null: ``max_position_embeddings`` of the checkpoint's config.json, read without loading any weights).

Prompt lengths are what the model reads: ``prompt_ids`` as prepared (``tokenizer_mode=ids``), text prompts through the
very call TRL makes, and image rows with every image token expanded, counted from the image sizes (read from the file
headers) by the processor's own formula, so no image is decoded or processed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from grpolab.data.prompts import PROMPT_IDS, PromptEncoder, image_column, select_rows
from grpolab.data.task import DataError

log = logging.getLogger(__name__)
BATCH = 256


def check_prompts_fit(cfg: Any, encoder: PromptEncoder, train: Dataset, held_out: Dataset,
                      source: str | None = None) -> None:
    """Every training prompt plus ``trainer.max_completion_length``, and every evaluated held-out prompt plus
    ``eval.max_new_tokens``, must fit the model's context; else one line naming the data ``source``, the split, the
    row (and the start of its prompt) and the numbers."""
    context = model_context_length(cfg.model)
    if context is None:
        log.info("model context length unknown (model.context_length=null, no checkpoint config): prompt lengths "
                 "not checked")
        return
    if cfg.eval.num_problems is not None:
        held_out = held_out.select(range(min(cfg.eval.num_problems, len(held_out))))
    budgets = {"train": ("trainer.max_completion_length", cfg.trainer.max_completion_length),
               "eval": ("eval.max_new_tokens", cfg.eval.max_new_tokens)}
    for split, rows in (("train", train), ("eval", held_out)):
        key, budget = budgets[split]
        lengths = prompt_lengths(rows, encoder)
        too_long = [row for row, length in enumerate(lengths) if length + budget > context]
        if too_long:
            row = max(too_long, key=lengths.__getitem__)
            where = f"{source}: " if source else ""
            raise DataError(
                f"{where}{split} split row {row}{_preview(rows[row])}: a {lengths[row]}-token "
                f"prompt + {key}={budget} needs {lengths[row] + budget} positions, beyond the model's context of "
                f"{context} (model.context_length); {len(too_long)} of {len(rows)} {split} prompts do not fit: shorten "
                f"or drop them, or lower {key}"
            )


def _preview(row: dict[str, Any]) -> str:
    """The start of a row's prompt text (the last message of a chat prompt), to find it in the source."""
    prompt = row.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        prompt = prompt[-1].get("content")
    if not isinstance(prompt, str):
        return ""
    return f" ({prompt[:40]!r}{'...' if len(prompt) > 40 else ''})"


def model_context_length(model_cfg: Any) -> int | None:
    """``model.context_length``, or when null the checkpoint's ``max_position_embeddings`` (of its text model, for a
    vision-language model), read from its config.json alone; None when neither is known."""
    if model_cfg.context_length is not None:
        if model_cfg.context_length < 1:
            raise DataError(f"model.context_length={model_cfg.context_length} must be >= 1 (or null)")
        return int(model_cfg.context_length)
    if model_cfg.name_or_path is None:
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_cfg.name_or_path)
    except (OSError, ValueError) as error:  # loading the model itself reports it, right after
        log.info("no config for %s (%s): prompt lengths not checked", model_cfg.name_or_path, error)
        return None
    return getattr(config.get_text_config(), "max_position_embeddings", None)


def prompt_lengths(rows: Dataset, encoder: PromptEncoder) -> list[int]:
    """The number of tokens each row's prompt occupies in the model's input, image tokens included.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> prompt_lengths(Dataset.from_dict({"prompt": ["1+2=", "10+20="]}), PromptEncoder(build_char_tokenizer()))
    [4, 6]
    """
    if PROMPT_IDS in rows.column_names:
        return pc.list_value_length(rows.data.column(PROMPT_IDS)).to_pylist()
    column = image_column(rows.column_names)
    lengths: list[int] = []
    for start in range(0, len(rows), BATCH):
        batch = rows.select(range(start, min(start + BATCH, len(rows))))
        if column is None:
            lengths += [len(ids) for ids in encoder.encode_texts(batch["prompt"])]
        else:
            lengths += _image_prompt_lengths(batch, column, encoder)
    return lengths


def _image_prompt_lengths(rows: Dataset, column: str, encoder: PromptEncoder) -> list[int]:
    """Rendered text (one placeholder per image) plus, per image, the tokens its placeholder expands to."""
    processor = encoder.processing_class
    if not hasattr(processor, "_get_num_multimodal_tokens"):  # no formula: process the images
        return [len(ids) for ids in encoder.encode(select_rows(rows, range(len(rows)))).prompt_ids]
    from trl.data_utils import prepare_multimodal_messages

    sizes = [_image_sizes(entry) for entry in rows.cast_column(column, _undecoded(rows, column))[column]]
    conversations = [prepare_multimodal_messages(list(prompt), images=[None] * len(row_sizes))
                     for prompt, row_sizes in zip(rows["prompt"], sizes, strict=True)]
    texts = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False,
                                          **encoder.template_arguments())
    text_lengths = [len(ids) for ids in encoder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    flat = [size for row_sizes in sizes for size in row_sizes]
    per_image = iter(processor._get_num_multimodal_tokens(image_sizes=flat)["num_image_tokens"] if flat else [])
    # Each image's placeholder is one token of the rendered text and becomes its own count of image tokens.
    return [length + sum(next(per_image) - 1 for _ in row_sizes)
            for length, row_sizes in zip(text_lengths, sizes, strict=True)]


def _undecoded(rows: Dataset, column: str) -> Any:
    feature = rows.features[column]
    if isinstance(feature, ImageFeature):
        return ImageFeature(decode=False)
    return [ImageFeature(decode=False)] if isinstance(feature, list) else type(feature)(ImageFeature(decode=False))


def _image_sizes(entry: Any) -> list[tuple[int, int]]:
    """(height, width) of each image of a row, from the file header (nothing is decoded)."""
    entries: Sequence[Any] = entry if isinstance(entry, list) else [] if entry is None else [entry]
    sizes = []
    for image in entries:
        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
        with Image.open(source) as opened:
            sizes.append((opened.height, opened.width))
    return sizes
