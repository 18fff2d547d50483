"""Dataset preparation per tokenizer mode: rows stay text for TRL to tokenize, or become token IDs once.

``tokenizer_mode=text`` keeps TRL's stock path (it tokenizes ``prompt`` on every step); ``tokenizer_mode=ids`` turns
every prompt into ``prompt_ids`` once, through the run's :class:`~grpolab.data.prompts.PromptEncoder` (for image rows:
IDs with expanded image tokens plus the processed images), and caches the result keyed by everything that decides
the IDs. Text and image rows take the same path; where the ids mode may differ from the text mode (a tokenizer that
does not round-trip the prompt text, chat prompts, a response schema) it says so in one warning at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, concatenate_datasets, load_from_disk

from grpolab.config.enums import TokenizerMode
from grpolab.config.hashing import config_hash
from grpolab.data.task import DataError
from grpolab.data.prompts import (
    ANSWER_IDS, IMAGE_GRID, PIXEL_VALUES, PROMPT_IDS, SOURCE_PREFIX, PromptEncoder, image_column,
)

log = logging.getLogger(__name__)

# Written next to a cached prepared dataset: what the round-trip check found when the prompts were tokenized.
ROUND_TRIP_FILE = "grpolab_round_trip.json"
ENCODE_BATCH = 64


class PromptPreparation:
    """What both tokenizer modes share: the checks on the rows and the ``answer_ids`` column token rewards read."""

    mode: TokenizerMode

    def __init__(self, encoder: PromptEncoder) -> None:
        self.encoder = encoder

    def prepare(self, dataset: Dataset, split: str, needed_columns: Collection[str], key: Mapping[str, Any]) -> Dataset:
        """The ``split`` rows as the trainer, the warm start and the evaluation read them."""
        raise NotImplementedError

    def _check_images(self, dataset: Dataset, split: str) -> None:
        column = image_column(dataset.column_names)
        if column is None:
            return
        if self.encoder.image_token is None:
            raise DataError(
                f"the {split} split holds images ('{column}'), but the selected model is text-only; use a "
                "vision-language model (model.modality=vision), e.g. experiment=vision or model=tiny_vlm"
            )
        if "prompt" in dataset.column_names:
            check_image_placeholders(dataset, self.encoder.image_token, split)

    def _with_answer_ids(self, dataset: Dataset, needed_columns: Collection[str]) -> Dataset:
        if ANSWER_IDS not in needed_columns or ANSWER_IDS in dataset.column_names or "answer" not in dataset.column_names:
            return dataset
        # A column swap, not Dataset.map: image and pixel columns are not decoded and rewritten.
        return dataset.add_column(ANSWER_IDS, [self.encoder.answer_ids(answer) for answer in dataset["answer"]])


class TextPrompts(PromptPreparation):
    """``tokenizer_mode=text``: TRL tokenizes (and for image rows processes) the ``prompt`` on every step."""

    mode = TokenizerMode.text

    def prepare(self, dataset: Dataset, split: str, needed_columns: Collection[str], key: Mapping[str, Any]) -> Dataset:
        if "prompt" not in dataset.column_names:
            raise DataError(
                f"tokenizer_mode=text needs a 'prompt' column, but the {split} split has {dataset.column_names}; "
                f"a pre-tokenized dataset (with '{PROMPT_IDS}') needs tokenizer_mode=ids"
            )
        self._check_images(dataset, split)
        if PROMPT_IDS in dataset.column_names:
            log.info("tokenizer_mode=text: the %s split's '%s' column is ignored (TRL tokenizes 'prompt')",
                     split, PROMPT_IDS)
            dataset = dataset.remove_columns(PROMPT_IDS)
        return self._with_answer_ids(dataset, needed_columns)


class TokenIdPrompts(PromptPreparation):
    """``tokenizer_mode=ids``: prompts become ``prompt_ids`` (plus image fields) once, cached.

    A dataset that already has ``prompt_ids`` is used as is (validated, never re-tokenized; a ``prompt`` text column
    next to it is dropped, the IDs being what the model reads). ``cache_pixels=false`` keeps only IDs and image grids
    for image rows (for large images): the image processor alone then runs per step.

    With tools (the encoder's ``tools``) the chat messages stay next to their IDs: TRL's tool loop appends the tool
    calls and results to the messages, while the model reads the prepared IDs (``GrpolabTrainer._tokenize_prompts``).
    """

    mode = TokenizerMode.ids

    def __init__(self, encoder: PromptEncoder, cache_dir: str | None, cache_pixels: bool = True) -> None:
        super().__init__(encoder)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_pixels = cache_pixels

    def prepare(self, dataset: Dataset, split: str, needed_columns: Collection[str], key: Mapping[str, Any]) -> Dataset:
        keep_messages = bool(self.encoder.tools)
        if keep_messages and not _chat_prompts(dataset):
            raise DataError(f"tokenizer_mode=ids with an environment needs the {split} split's chat messages in "
                            f"'prompt' (TRL's tool loop appends to them); it has {dataset.column_names}")
        if PROMPT_IDS in dataset.column_names:
            check_prompt_ids(dataset, len(self.encoder.tokenizer), where=f"{split} split")
            if "prompt" in dataset.column_names and not keep_messages:
                dataset = dataset.remove_columns("prompt")
            log.info("ids mode: %s split carries '%s'; used as given, without tokenizing prompts", split, PROMPT_IDS)
            return self._with_answer_ids(dataset, needed_columns)
        if "prompt" not in dataset.column_names:
            raise DataError(f"the {split} split has neither 'prompt' nor '{PROMPT_IDS}': {dataset.column_names}")
        self._check_images(dataset, split)
        fingerprint = encoder_fingerprint(self.encoder)
        cached = None if self.cache_dir is None else self.cache_dir / config_hash(
            dict(key), split, fingerprint, sorted(needed_columns), dataset._fingerprint, self.cache_pixels)
        if cached is not None and cached.exists():
            log.info("ids mode: loaded %s prompts from cache %s", split, cached)
            if (report_file := cached / ROUND_TRIP_FILE).exists():
                RoundTrip(**json.loads(report_file.read_text(encoding="utf-8"))).warn(split)
            return load_from_disk(str(cached))
        prepared = self._with_answer_ids(self._encode(dataset, split, fingerprint), needed_columns)
        report = round_trip(self.encoder, dataset, prepared)
        report.warn(split)
        if cached is None:
            return prepared
        save_atomically(prepared, cached, report)
        log.info("ids mode: prepared %d %s prompts, cached at %s", len(prepared), split, cached)
        return load_from_disk(str(cached))  # memory-mapped, like a cache hit

    def _encode(self, dataset: Dataset, split: str, fingerprint: str) -> Dataset:
        column = image_column(dataset.column_names)
        read = ["prompt"] if column is None else ["prompt", column]
        kept = ["prompt"] if self.encoder.tools else []

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoded = self.encoder.encode([dict(zip(read, values)) for values in zip(*(batch[c] for c in read))])
            out: dict[str, list] = {PROMPT_IDS: encoded.prompt_ids}
            if encoded.images is not None:
                per_row = encoded.images.per_row()
                out[IMAGE_GRID] = [grids for grids, _ in per_row]
                if self.cache_pixels:
                    out[PIXEL_VALUES] = [pixels for _, pixels in per_row]
            return out

        encoded = dataset.map(
            encode, batched=True, batch_size=ENCODE_BATCH, remove_columns=[name for name in read if name not in kept],
            # An explicit fingerprint: datasets would otherwise hash (pickle) the tokenizer inside the closure.
            new_fingerprint=config_hash(dataset._fingerprint, PROMPT_IDS, fingerprint, self.cache_pixels),
            desc=f"encoding {split} prompts",
        )
        if column is None:
            return encoded
        # The images stay (lazy) for rewards, under a name TRL's image handling does not look for.
        images = dataset.select_columns([column]).rename_column(column, SOURCE_PREFIX + column)
        return concatenate_datasets([encoded, images], axis=1)


def _chat_prompts(dataset: Dataset) -> bool:
    """Whether the rows' ``prompt`` holds chat messages (a list of role/content mappings)."""
    if "prompt" not in dataset.column_names or not len(dataset):
        return False
    prompt = dataset[0]["prompt"]
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)


def encoder_fingerprint(encoder: PromptEncoder) -> str:
    """A hash of what decides a prompt's IDs and pixels: vocabulary, merges, special tokens, chat template (and its
    arguments), the image processor's settings."""
    tokenizer = encoder.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    image_processor = getattr(encoder.processing_class, "image_processor", None)
    return config_hash(
        type(encoder.processing_class).__name__, body, getattr(encoder.processing_class, "chat_template", None),
        tokenizer.all_special_tokens, encoder.chat_template_kwargs,
        None if image_processor is None else json.dumps(image_processor.to_dict(), sort_keys=True, default=str),
        *([encoder.tool_schemas()] if encoder.tools else []),  # runs without tools keep their cache keys
    )


def check_prompt_ids(dataset: Dataset, vocab_size: int, where: str) -> None:
    """Fail with one line naming the row when ``prompt_ids`` is not a list of in-vocabulary ints.

    A column Arrow already types as lists of integers is checked with vectorised min/max; anything else (or a
    violation) is walked row by row to name the first bad row.
    """
    if _arrow_ids_look_valid(dataset, vocab_size):
        return
    for row, ids in enumerate(dataset[PROMPT_IDS]):
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise DataError(
                f"{where}: column '{PROMPT_IDS}' must hold non-empty lists of ints; row {row} has {ids!r:.80}"
            )
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise DataError(
                f"{where}: row {row} of '{PROMPT_IDS}' has token id {bad} outside the model's vocabulary "
                f"[0, {vocab_size}) (tokenizer_mode=ids with a dataset tokenized for another model?)"
            )


def _arrow_ids_look_valid(dataset: Dataset, vocab_size: int) -> bool:
    column = dataset.data.column(PROMPT_IDS)
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
        return False
    if len(column) == 0:
        return True
    column = column.combine_chunks()
    values = column.flatten()
    if column.null_count or values.null_count or pc.min(pc.list_value_length(column)).as_py() == 0:
        return False
    bounds = pc.min_max(values)
    return bounds["min"].as_py() >= 0 and bounds["max"].as_py() < vocab_size


@dataclass
class RoundTrip:
    """Whether decoding a prompt's IDs gives back the prompt text: what ids-mode rewards and logs see as the prompt.

    Prompt IDs, completions, losses and token rewards are equal in both modes whatever this says (the IDs come from
    the same call). It matters for a text reward that reads ``prompts``: text mode hands it the original prompt, ids
    mode hands it ``decode(prompt_ids)``.
    """

    rows: int
    lossy_rows: int = 0
    example: dict[str, Any] | None = None
    conversational: bool = False
    response_parser: bool = False

    def warn(self, split: str) -> None:
        """One warning per reason the ids mode may differ from the text mode; silent when the modes match exactly."""
        if self.lossy_rows:
            example = self.example or {}
            log.warning(
                "tokenizer_mode=ids: the tokenizer does not round-trip %d of %d %s prompts (row %s: %.60r decodes to "
                "%.60r); prompt IDs, completions, losses and token rewards still match tokenizer_mode=text, but text "
                "rewards reading `prompts` and the completion log see the decoded prompt, not the original text",
                self.lossy_rows, self.rows, split, example.get("row"), example.get("text"), example.get("decoded"))
        if self.conversational:
            log.warning("tokenizer_mode=ids: %s prompts are chat messages; text rewards reading `prompts` get the "
                        "decoded chat-templated text in ids mode (the message list in text mode)", split)
        if self.response_parser:
            log.warning("tokenizer_mode=ids: the tokenizer has a response schema, which TRL applies to completions "
                        "of chat prompts in text mode only; text rewards may see different completions in the two "
                        "modes")


def round_trip(encoder: PromptEncoder, dataset: Dataset, prepared: Dataset) -> RoundTrip:
    """Compare each text prompt with the decode of its IDs (chat prompts: the rendered template, special tokens
    kept). Image rows are not compared: their IDs hold expanded image tokens the text never shows."""
    report = RoundTrip(rows=len(dataset))
    if not len(dataset) or image_column(dataset.column_names) is not None:
        return report
    tokenizer = encoder.tokenizer
    report.conversational = not isinstance(dataset[0]["prompt"], str)
    # With tools the rows keep their messages, so TRL parses completions in both modes.
    report.response_parser = report.conversational and not encoder.tools and any(
        getattr(tokenizer, name, None) is not None for name in ("response_template", "response_schema"))
    for start in range(0, len(dataset), ENCODE_BATCH):
        prompts = dataset[start : start + ENCODE_BATCH]["prompt"]
        ids = prepared[start : start + ENCODE_BATCH][PROMPT_IDS]
        if report.conversational:
            texts = tokenizer.apply_chat_template([list(p) for p in prompts], add_generation_prompt=True,
                                                  tokenize=False, **encoder.template_arguments())
            decoded = tokenizer.batch_decode(ids, skip_special_tokens=False)
        else:
            texts, decoded = list(prompts), tokenizer.batch_decode(ids, skip_special_tokens=True)
        for row, (text, back) in enumerate(zip(texts, decoded, strict=True), start=start):
            if text != back:
                report.lossy_rows += 1
                report.example = report.example or {"row": row, "text": text, "decoded": back}
    return report


def save_atomically(prepared: Dataset, cached: Path, report: RoundTrip | None = None) -> None:
    """Write to a private directory, then rename: two jobs of a sweep preparing the same split cannot collide."""
    staging = cached.with_name(f"{cached.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    prepared.save_to_disk(str(staging))
    if report is not None:
        (staging / ROUND_TRIP_FILE).write_text(json.dumps(asdict(report)), encoding="utf-8")
    try:
        staging.rename(cached)
    except OSError:
        if not cached.exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another job won the race with identical content


def images_per_row(dataset: Dataset, column: str) -> list[int]:
    """How many images each row has, read from Arrow without decoding (or copying) a single image."""
    counts: list[int] = []
    for chunk in dataset.with_format("arrow")[column].chunks:
        if column.endswith("images"):
            counts.extend(pc.fill_null(pc.list_value_length(chunk), 0).to_pylist())
        else:
            counts.extend((~chunk.is_null().to_numpy(zero_copy_only=False)).astype(int).tolist())
    return counts


def count_image_placeholders(prompt: str | Sequence[Mapping[str, Any]], num_images: int, image_token: str) -> int:
    """Image slots the processor will see in one prompt, counted the way TRL 1.16 fills them.

    Chat image parts without a payload are slots; a first user message given as a plain string gets one part per
    image inserted by TRL (``prepare_multimodal_messages``); an image token typed into the text is one more slot.

    >>> parts = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Q"}]}]
    >>> count_image_placeholders(parts, 1, "<|image_pad|>"), count_image_placeholders([{"role": "user", "content": "Q"}], 1, "<|image_pad|>")
    (2, 1)
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
    for row, (prompt, num_images) in enumerate(zip(dataset["prompt"], images_per_row(dataset, column), strict=True)):
        slots = count_image_placeholders(prompt, num_images, image_token)
        if slots != num_images:
            raise DataError(
                f"{split} split, row {row}: the prompt has {slots} image placeholder(s) but the row has {num_images} "
                f"image(s) in '{column}'; every placeholder needs an image and every image a placeholder"
            )
