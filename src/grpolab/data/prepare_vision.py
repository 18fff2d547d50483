"""Prompt preparation for image rows, per tokenizer mode, and the one encoder that turns image rows into model inputs.

Image rows come in two forms:

* **text form** (``tokenizer_mode=text``, and every task's raw output): ``prompt`` chat messages with one image part
  per image, and an ``image`` or ``images`` column. TRL renders and tokenizes them with the processor on every step.
* **ids form** (``tokenizer_mode=ids``, made once by :class:`VisionTokenIdPrompts` and cached): ``prompt_ids`` with
  every ``<|image_pad|>`` already expanded to its image's token count, ``image_grid_thw`` (one ``[t, h, w]`` per
  image), optionally ``pixel_values`` (the image processor's float32 output as raw bytes: a row reads back without
  one Python float per value), and the images themselves under ``source_image(s)`` so rewards still receive them
  while TRL, which looks for ``image``/``images``, never calls the processor on the prompt.

:func:`encode_vision_prompts` reads either form and returns what generation / a forward pass needs, which is how the
held-out evaluation and the vision warm start serve both modes. The modality option selects the preparer through
:func:`vision_prompts` (``tokenizer_mode.prompts`` gets ``mode: ${tokenizer_mode.mode}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, concatenate_datasets, load_from_disk

from grpolab.config.hashing import config_hash
from grpolab.config.enums import TokenizerMode
from grpolab.data.prepare import (
    ANSWER_IDS,
    PROMPT_IDS,
    DatasetError,
    save_atomically,
    TextPrompts,
    TokenIdPrompts,
    check_prompt_ids,
    encode_answer,
    tokenizer_fingerprint,
)
from grpolab.models.vlm import text_tokenizer

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("images", "image")  # TRL's names; "images" (a list per row) wins when both exist, as in TRL
IMAGE_GRID = "image_grid_thw"
PIXEL_VALUES = "pixel_values"
SOURCE_PREFIX = "source_"  # ids form: source_image / source_images, invisible to TRL's image handling
ENCODE_BATCH = 64


def image_column(column_names: Collection[str]) -> str | None:
    """The column holding a row's images in either form (``images``, ``image``, ``source_images``, ``source_image``).

    >>> image_column(["prompt", "image", "answer"]), image_column(["prompt_ids", "source_images"]), image_column([])
    ('image', 'source_images', None)
    """
    for name in (*IMAGE_COLUMNS, *(SOURCE_PREFIX + name for name in IMAGE_COLUMNS)):
        if name in column_names:
            return name
    return None


def has_images(dataset: Dataset) -> bool:
    """Whether rows carry images, so generation and training need pixels (either form)."""
    return image_column(dataset.column_names) is not None or IMAGE_GRID in dataset.column_names


def images_per_row(dataset: Dataset, column: str) -> list[int]:
    """How many images each row has, read from Arrow without decoding (or copying) a single image."""
    counts: list[int] = []
    for chunk in dataset.with_format("arrow")[column].chunks:
        if column.endswith("images"):
            counts.extend(pc.fill_null(pc.list_value_length(chunk), 0).to_pylist())
        else:
            counts.extend((~chunk.is_null().to_numpy(zero_copy_only=False)).astype(int).tolist())
    return counts


def row_images(row: Mapping[str, Any]) -> list[Any]:
    """A row's images as a list (PIL images once ``datasets`` decoded them), in either form."""
    column = image_column(row.keys())
    if column is None:
        return []
    value = row[column]
    if column.endswith("images"):
        return list(value or [])
    return [] if value is None else [value]


def count_image_placeholders(prompt: str | Sequence[Mapping[str, Any]], num_images: int, image_token: str) -> int:
    """Image slots the processor will see in one prompt, counted the way TRL 1.16 fills them.

    Chat image parts without a payload are slots; a first user message given as a plain string gets one part per
    image inserted by TRL (``prepare_multimodal_messages``); an image token typed into the text is one more slot
    (the processor expands every occurrence).

    >>> parts = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Q"}]}]
    >>> count_image_placeholders(parts, 1, "<|image_pad|>")
    2
    >>> count_image_placeholders([{"role": "user", "content": "Q"}], 1, "<|image_pad|>")
    1
    """
    if isinstance(prompt, str):
        return prompt.count(image_token)
    slots, string_user_seen = 0, False
    for message in prompt:
        content = message.get("content")
        if isinstance(content, str):
            slots += content.count(image_token)
            if message.get("role") == "user" and not string_user_seen:
                string_user_seen = True
                slots += num_images
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "image" and part.get("image") is None:
                    slots += 1
                elif part.get("type") == "text":
                    slots += (part.get("text") or "").count(image_token)
    return slots


def check_image_placeholders(dataset: Dataset, image_token: str, split: str) -> None:
    """Every image slot of a prompt needs an image and every image a slot; fail naming the first bad row."""
    column = image_column(dataset.column_names)
    if column is None or "prompt" not in dataset.column_names:
        return
    for row, (prompt, num_images) in enumerate(zip(dataset["prompt"], images_per_row(dataset, column), strict=True)):
        slots = count_image_placeholders(prompt, num_images, image_token)
        if slots > num_images:
            raise DatasetError(
                f"{split} split, row {row}: the prompt has {slots} image placeholders but the row has {num_images} "
                f"image(s) in '{column}'; every placeholder needs an image"
            )
        if slots < num_images:
            raise DatasetError(
                f"{split} split, row {row}: the row has {num_images} image(s) in '{column}' but the prompt has only "
                f"{slots} image placeholder(s); add one image part per image to the prompt"
            )


@dataclass
class VisionPrompts:
    """Model inputs for a batch of image prompts: unpadded ``prompt_ids`` and the batch's image tensors."""

    prompt_ids: list[list[int]]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor

    def token_type_ids(self, input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
        """Qwen2-VL's ``mm_token_type_ids`` (1 at image tokens): M-RoPE needs it whenever images are passed."""
        return (input_ids == image_token_id).long()


def encode_vision_prompts(processor: Any, rows: Sequence[Mapping[str, Any]],
                          chat_template_kwargs: Mapping[str, Any] | None = None) -> VisionPrompts:
    """Prompt IDs (image tokens expanded) and image tensors for rows in either form.

    Text-form rows go through the very call TRL makes for generation (``processor.apply_chat_template`` on the
    messages with the images filled in), so these IDs are the ones a text-mode run generates from. Ids-form rows are
    collated from their cached columns; without cached ``pixel_values`` only the image processor runs. (A text-form
    row may carry compact ``prompt_ids`` too, e.g. the warm start's; the form is told by ``image_grid_thw``.)
    """
    if rows and IMAGE_GRID in rows[0]:
        return _collate_ids_form(processor, rows)
    from trl.data_utils import prepare_multimodal_messages

    conversations = [prepare_multimodal_messages(list(row["prompt"]), images=row_images(row)) for row in rows]
    encoded = processor.apply_chat_template(
        conversation=conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
        **dict(chat_template_kwargs or {}),
    )
    return VisionPrompts(
        prompt_ids=[list(ids) for ids in encoded["input_ids"]],
        pixel_values=torch.as_tensor(np.asarray(encoded[PIXEL_VALUES])),
        image_grid_thw=torch.as_tensor(np.asarray(encoded[IMAGE_GRID])),
    )


def _collate_ids_form(processor: Any, rows: Sequence[Mapping[str, Any]]) -> VisionPrompts:
    grids = [grid for row in rows for grid in row[IMAGE_GRID]]
    if rows and PIXEL_VALUES in rows[0]:
        patches = sum(t * h * w for t, h, w in grids)
        flat = np.concatenate([np.frombuffer(row[PIXEL_VALUES], dtype=np.float32) for row in rows])
        pixels = torch.from_numpy(flat.reshape(patches, -1).copy())
    else:
        images = [image for row in rows for image in row_images(row)]
        pixels = torch.as_tensor(np.asarray(processor.image_processor(images=images)[PIXEL_VALUES]))
    return VisionPrompts(
        prompt_ids=[list(row[PROMPT_IDS]) for row in rows],
        pixel_values=pixels,
        image_grid_thw=torch.tensor(grids, dtype=torch.long).reshape(-1, 3),
    )


class VisionTextPrompts:
    """``tokenizer_mode=text`` for image rows: checks image placeholders against images, then TRL's own path.

    ``prepare`` takes the processor (the run's processing class); answer IDs come from its text tokenizer.
    """

    mode = TokenizerMode.text

    def prepare(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str], key: Mapping[str, Any],
                split: str) -> Dataset:
        check_image_placeholders(dataset, tokenizer.image_token, split)
        return TextPrompts().prepare(dataset, text_tokenizer(tokenizer), needed_columns, key, split)


class VisionTokenIdPrompts:
    """``tokenizer_mode=ids`` for image rows: prompt IDs with expanded image tokens + processed images, made once.

    Each prompt goes through TRL's own generation call (``processor.apply_chat_template`` with its images), so the
    IDs and pixels are exactly what a text-mode step computes; the result is cached by data config, split,
    processor (tokenizer, chat template, image processor settings) and the columns rewards need. During training the
    processor then never sees prompt text (``grpolab.trainer.vision_ids.VisionIdsMixin`` feeds the cached fields).
    ``cache_pixels=False`` keeps only IDs and grids (for large images): the image processor alone runs per step.
    Rows without images are prepared as text prompts are (``TokenIdPrompts``).
    """

    mode = TokenizerMode.ids

    def __init__(self, cache_dir: str | None, chat_template_kwargs: Mapping[str, Any] | None = None,
                 cache_pixels: bool = True) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.cache_pixels = cache_pixels

    def prepare(self, dataset: Dataset, tokenizer: Any, needed_columns: Collection[str], key: Mapping[str, Any],
                split: str) -> Dataset:
        processor, text = tokenizer, text_tokenizer(tokenizer)
        column = image_column(dataset.column_names)
        if IMAGE_GRID in dataset.column_names:  # already in ids form (e.g. saved by an earlier run)
            check_prompt_ids(dataset, len(text), where=f"{split} split")
            return _add_answer_ids(dataset, text, needed_columns)
        if column is None:
            return TokenIdPrompts(str(self.cache_dir) if self.cache_dir else None, self.chat_template_kwargs).prepare(
                dataset, text, needed_columns, key, split)
        if "prompt" not in dataset.column_names:
            raise DatasetError(f"the {split} split has images but no 'prompt' column: {dataset.column_names}")
        check_image_placeholders(dataset, processor.image_token, split)
        fingerprint = processor_fingerprint(processor)
        cache_key = config_hash(dict(key), split, fingerprint, sorted(needed_columns), dataset._fingerprint,
                                self.chat_template_kwargs, self.cache_pixels, "vision")
        cached = self.cache_dir / cache_key if self.cache_dir is not None else None
        if cached is not None and cached.exists():
            log.info("ids mode: loaded %s image prompts from cache %s", split, cached)
            return load_from_disk(str(cached))
        prepared = self._encode(dataset, processor, column, split, fingerprint)
        prepared = _add_answer_ids(prepared, text, needed_columns)
        if cached is None:
            return prepared
        save_atomically(prepared, cached)
        log.info("ids mode: prepared %d %s image prompts, cached at %s", len(prepared), split, cached)
        return load_from_disk(str(cached))  # memory-mapped, like a cache hit

    def _encode(self, dataset: Dataset, processor: Any, column: str, split: str, fingerprint: str) -> Dataset:
        def encode(batch: dict[str, list]) -> dict[str, list]:
            rows = [{"prompt": prompt, column: images} for prompt, images in zip(batch["prompt"], batch[column])]
            encoded = encode_vision_prompts(processor, rows, self.chat_template_kwargs)
            grids = encoded.image_grid_thw.tolist()
            counts = [len(row_images(row)) for row in rows]
            starts = np.cumsum([0, *counts])
            out: dict[str, list] = {PROMPT_IDS: encoded.prompt_ids,
                                    IMAGE_GRID: [grids[a:b] for a, b in zip(starts[:-1], starts[1:])]}
            if self.cache_pixels:
                patches = np.cumsum([0, *(int(np.prod(g)) for g in grids)])
                pixels = encoded.pixel_values.numpy().astype(np.float32)
                out[PIXEL_VALUES] = [pixels[patches[a]:patches[b]].tobytes() for a, b in zip(starts[:-1], starts[1:])]
            return out

        encoded = dataset.map(
            encode, batched=True, batch_size=ENCODE_BATCH, remove_columns=["prompt", column],
            # An explicit fingerprint: datasets would otherwise hash (pickle) the processor inside the closure.
            new_fingerprint=config_hash(dataset._fingerprint, "vision-ids", fingerprint, self.chat_template_kwargs,
                                        self.cache_pixels),
            desc=f"preparing {split} image prompts",
        )
        # The images stay (lazy) for rewards, under a name TRL's image handling does not look for.
        images = dataset.select_columns([column]).rename_column(column, SOURCE_PREFIX + column)
        return concatenate_datasets([encoded, images], axis=1)


def processor_fingerprint(processor: Any) -> str:
    """A hash of what decides a prompt's IDs and pixels: the tokenizer, the chat template, the image processor."""
    image_processor = json.dumps(processor.image_processor.to_dict(), sort_keys=True, default=str)
    return config_hash(type(processor).__name__, tokenizer_fingerprint(text_tokenizer(processor)),
                       getattr(processor, "chat_template", None), image_processor)


def _add_answer_ids(dataset: Dataset, tokenizer: Any, needed_columns: Collection[str]) -> Dataset:
    if ANSWER_IDS not in needed_columns or ANSWER_IDS in dataset.column_names or "answer" not in dataset.column_names:
        return dataset
    answers = [encode_answer(tokenizer, str(answer)) for answer in dataset["answer"]]
    # A column swap, not Dataset.map: the image and pixel columns are not decoded and rewritten.
    return dataset.add_column(ANSWER_IDS, answers)


def vision_prompts(
    mode: TokenizerMode | str,
    cache_dir: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    cache_pixels: bool = True,
) -> VisionTextPrompts | VisionTokenIdPrompts:
    """The image-aware preparer for a tokenizer mode: what ``modality=vision`` puts in ``tokenizer_mode.prompts``.

    The modality option cannot pick a config option per tokenizer mode (Hydra resolves defaults-list interpolation
    only against groups listed after it), so it names this factory and passes the mode.

    >>> vision_prompts("text").mode.value, vision_prompts("ids", cache_dir=None).mode.value
    ('text', 'ids')
    """
    if TokenizerMode(mode) is TokenizerMode.ids:
        return VisionTokenIdPrompts(cache_dir, chat_template_kwargs, cache_pixels)
    return VisionTextPrompts()
