"""The one prompt encoder: dataset rows -> what the model reads (prompt IDs, and the processed images of image rows).

The trainer (ids-form image rows), the supervised warm start and the held-out evaluation all turn rows into model
inputs through :class:`PromptEncoder`, so a prompt renders the same way in all three (same call, same
``chat_template_kwargs``). Rows come in two forms:

* **text form**: ``prompt`` is text or chat messages; image rows add an ``image`` or ``images`` column (TRL's names)
  and one image part per image in the messages. Text is encoded by the very call ``GRPOTrainer._tokenize_prompts``
  (trl 1.16) makes, so the IDs equal the ones a text-mode step generates from.
* **ids form** (``tokenizer_mode=ids``, made once by ``grpolab.data.prepare``): ``prompt_ids`` (or ``prompt`` holding
  IDs, as the trainer sees it); image rows add ``image_grid_thw`` (one ``[t, h, w]`` per image, every image token
  already expanded in the IDs), optionally ``pixel_values`` (the image processor's float32 output as raw bytes) and
  the images themselves under ``source_image(s)``, a name TRL's image handling does not look for.

Which form a row is in, and whether it carries images, is read from the row: the data says what it holds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PROMPT_IDS = "prompt_ids"
ANSWER_IDS = "answer_ids"
IMAGE_COLUMNS = ("images", "image")  # TRL's names; "images" (a list per row) wins when both exist, as in TRL
IMAGE_GRID = "image_grid_thw"
PIXEL_VALUES = "pixel_values"
SOURCE_PREFIX = "source_"  # ids form: source_image / source_images, invisible to TRL's image handling


def text_tokenizer(processing_class: Any) -> Any:
    """The text tokenizer inside a processor (vision-language models), or the tokenizer itself."""
    return getattr(processing_class, "tokenizer", processing_class)


class SharedTokenIds(tuple):
    """A pre-tokenized prompt that ``copy.deepcopy`` shares instead of copying.

    TRL's ``_generate`` deep-copies the batch's prompts because chat messages may be edited on the way to generation;
    token IDs never are, and copying 128 prompts of 120 IDs element by element costs about 7 ms of host time per step.

    >>> import copy
    >>> ids = SharedTokenIds([5, 6])
    >>> copy.deepcopy(ids) is ids, is_token_ids(ids), list(ids)
    (True, True, [5, 6])
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict) -> SharedTokenIds:
        return self


class HostRows(list):
    """A batch of dataset rows that stays where it is when accelerate moves the batch to the device; the class itself
    is the trainer's data collator in ids mode (TRL's identity collator, with this type).

    GRPO's batches are rows of Python values (TRL builds the tensors itself), yet accelerate's data loader walks every
    batch element by element looking for tensors to move: for 128 rows of 120 prompt IDs that walk is about 35 ms of
    host time per step. ``to`` is the hook that walk calls first (``pin_memory`` the one torch's loader calls when
    pinning memory for a GPU); a batch of rows has nothing to move or pin.

    >>> from accelerate.utils import send_to_device
    >>> rows = HostRows([{"prompt": [5, 6]}])
    >>> send_to_device(rows, "cpu") is rows
    True
    """

    __slots__ = ()

    def to(self, *args: Any, **kwargs: Any) -> HostRows:
        return self

    def pin_memory(self, *args: Any, **kwargs: Any) -> HostRows:
        return self


def is_token_ids(prompt: Any) -> bool:
    """True for a pre-tokenized prompt: a non-empty list of ints.

    >>> is_token_ids([5, 6]), is_token_ids("56"), is_token_ids([])
    (True, False, False)
    """
    return isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], int)


def image_column(column_names: Collection[str]) -> str | None:
    """The column holding a row's images in either form (``images``, ``image``, ``source_images``, ``source_image``).

    >>> image_column(["prompt", "image", "answer"]), image_column(["prompt_ids", "source_images"]), image_column([])
    ('image', 'source_images', None)
    """
    for name in (*IMAGE_COLUMNS, *(SOURCE_PREFIX + name for name in IMAGE_COLUMNS)):
        if name in column_names:
            return name
    return None


def row_images(row: Mapping[str, Any]) -> list[Any]:
    """A row's images as a list (PIL images once ``datasets`` decoded them), in either form."""
    column = image_column(row.keys())
    if column is None:
        return []
    value = row[column]
    if column.endswith("images"):
        return list(value or [])
    return [] if value is None else [value]


def select_rows(dataset: Any, indices: Sequence[int]) -> list[dict[str, Any]]:
    """Rows ``indices`` of a ``datasets.Dataset`` as dicts, read in one Arrow take (images decode on access).

    >>> from datasets import Dataset
    >>> select_rows(Dataset.from_dict({"prompt": ["a", "b", "c"]}), [2, 0])
    [{'prompt': 'c'}, {'prompt': 'a'}]
    """
    columns = dataset[list(indices)]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


@dataclass
class ImageInputs:
    """A batch's processed images: all patches of all images in row order, and one grid per image."""

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    num_images: list[int]

    def to(self, device: torch.device | str) -> ImageInputs:
        return ImageInputs(self.pixel_values.to(device), self.image_grid_thw.to(device), self.num_images)

    def model_inputs(self, input_ids: torch.Tensor, image_token_id: int, dtype: torch.dtype,
                     completion_length: int = 0) -> dict[str, Any]:
        """What a forward pass or ``generate`` over ``input_ids`` (prompt, then ``completion_length`` completion
        tokens) needs besides the IDs; Qwen2-VL's M-RoPE reads ``mm_token_type_ids`` (1 at image tokens), which TRL
        zeroes over the completion."""
        token_types = (input_ids == image_token_id).long()
        if completion_length:
            token_types[:, input_ids.size(1) - completion_length :] = 0
        return {"pixel_values": self.pixel_values.to(dtype), "image_grid_thw": self.image_grid_thw,
                "mm_token_type_ids": token_types}

    def rows(self) -> list[ImageInputs]:
        """The batch split into one :class:`ImageInputs` per row (a row without images has none)."""
        grids = self.image_grid_thw.reshape(-1, 3)
        patches = grids.prod(-1).tolist()
        image_starts = np.cumsum([0, *self.num_images])
        patch_starts = np.cumsum([0, *patches])
        return [ImageInputs(self.pixel_values[patch_starts[a] : patch_starts[b]], grids[a:b], [int(b - a)])
                for a, b in zip(image_starts[:-1], image_starts[1:])]

    @staticmethod
    def join(rows: Sequence[ImageInputs | None], one_row: bool = False) -> ImageInputs | None:
        """Rows (None: a row without images) as one batch, in order; ``one_row``: the parts are all one row's images,
        in the order its sequence shows them (a prompt's, then those tool results added). None when there is no image.

        >>> one = ImageInputs(torch.ones(4, 2), torch.tensor([[1, 2, 2]]), [1])
        >>> batch = ImageInputs.join([one, None, one])
        >>> batch.num_images, batch.pixel_values.shape[0], [row.num_images for row in batch.rows()]
        ([1, 0, 1], 8, [[1], [0], [1]])
        >>> ImageInputs.join([one, None, one], one_row=True).num_images
        [2]
        """
        present = [row for row in rows if row is not None and sum(row.num_images)]
        if not present:
            return None
        counts = [0 if row is None else sum(row.num_images) for row in rows]
        return ImageInputs(torch.cat([row.pixel_values for row in present]),
                           torch.cat([row.image_grid_thw.reshape(-1, 3) for row in present]),
                           [sum(counts)] if one_row else counts)

    def per_row(self) -> list[tuple[list[list[int]], bytes]]:
        """``(grids, float32 pixel bytes)`` per row: the ids form's cached columns."""
        grids = self.image_grid_thw.tolist()
        pixels = self.pixel_values.numpy().astype(np.float32)
        image_starts = np.cumsum([0, *self.num_images])
        patch_starts = np.cumsum([0, *(int(np.prod(grid)) for grid in grids)])
        return [
            (grids[a:b], pixels[patch_starts[a] : patch_starts[b]].tobytes())
            for a, b in zip(image_starts[:-1], image_starts[1:])
        ]


@dataclass
class EncodedPrompts:
    """Unpadded prompt IDs of a batch of rows and, when the rows carry images, their processed images."""

    prompt_ids: list[list[int]]
    images: ImageInputs | None = None

    def model_inputs(self, input_ids: torch.Tensor, model: Any, completion_length: int = 0) -> dict[str, Any]:
        """Keyword arguments for ``model(input_ids=...)`` / ``model.generate(input_ids=...)`` beyond IDs and mask."""
        if self.images is None:
            return {}
        images = self.images.to(input_ids.device)
        return images.model_inputs(input_ids, model.config.image_token_id, model.dtype, completion_length)


class PromptEncoder:
    """Turns rows of either form into :class:`EncodedPrompts`, exactly as TRL would for text-form rows.

    ``chat_template_kwargs`` must be the trainer's (``trainer.chat_template_kwargs``) and ``tools`` the ones the run
    hands TRL (``environment=...``: TRL renders their descriptions into every chat prompt), so chat prompts render the
    same during training, in the warm start and in the held-out evaluation.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> encoder = PromptEncoder(build_char_tokenizer())
    >>> encoder.encode([{"prompt": "1+2="}]).prompt_ids == encoder.encode_texts(["1+2="])
    True
    >>> encoder.encode([{"prompt_ids": [9, 9]}]).prompt_ids
    [[9, 9]]
    """

    def __init__(self, processing_class: Any, chat_template_kwargs: Mapping[str, Any] | None = None,
                 tools: Sequence[Any] = ()) -> None:
        self.processing_class = processing_class
        self.tokenizer = text_tokenizer(processing_class)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.tools = list(tools)
        # None for a text-only model: it cannot take image rows.
        self.image_token: str | None = getattr(processing_class, "image_token", None)

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> EncodedPrompts:
        """Prompt IDs (and images) of ``rows``; all rows of one call must be of one form, as in one dataset."""
        if not rows:
            return EncodedPrompts([])
        first = rows[0]
        if IMAGE_GRID in first:
            return self._collate_ids_form(rows)
        if PROMPT_IDS in first or is_token_ids(first.get("prompt")):
            return EncodedPrompts([list(row[PROMPT_IDS] if PROMPT_IDS in row else row["prompt"]) for row in rows])
        if image_column(first.keys()) is not None:
            return self._encode_with_images(rows)
        return EncodedPrompts(self.encode_texts([row["prompt"] for row in rows]))

    def encode_texts(self, prompts: Sequence[str | Sequence[Mapping[str, Any]]]) -> list[list[int]]:
        """Token IDs of text or chat prompts (all of one kind), by the call ``GRPOTrainer._tokenize_prompts`` makes."""
        if not prompts:
            return []
        if isinstance(prompts[0], str):
            return [list(ids) for ids in self.tokenizer(text=list(prompts))["input_ids"]]
        encoded = self.tokenizer.apply_chat_template(
            conversation=[list(prompt) for prompt in prompts], add_generation_prompt=True, tokenize=True,
            return_dict=True, **self.template_arguments(),
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def template_arguments(self) -> dict[str, Any]:
        """The keyword arguments every chat-template call of the run takes: the tools (None without, as TRL passes
        them: ``tools=[]`` renders an empty tool block in some templates) and ``chat_template_kwargs``."""
        return {"tools": self.tools or None, **self.chat_template_kwargs}

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The JSON schemas the chat template renders for the tools: part of what decides a prompt's IDs."""
        from transformers.utils import get_json_schema

        return [get_json_schema(tool) for tool in self.tools]

    def process_images(self, images: Sequence[Any]) -> ImageInputs | None:
        """``images`` (PIL images, e.g. a tool's results) as the model reads them: one row of :class:`ImageInputs`
        from the processor's image processor, the call TRL makes for images a tool returned (None: no image)."""
        if not images:
            return None
        processed = self.processing_class.image_processor(images=list(images), return_tensors="pt")
        return ImageInputs(torch.as_tensor(processed[PIXEL_VALUES]), torch.as_tensor(processed[IMAGE_GRID]),
                           [len(images)])

    def answer_ids(self, answer: str) -> list[int]:
        """IDs of a gold answer or solution as it appears inside a completion (no BOS/EOS)."""
        return list(self.tokenizer(str(answer), add_special_tokens=False)["input_ids"])

    def _encode_with_images(self, rows: Sequence[Mapping[str, Any]]) -> EncodedPrompts:
        if self.image_token is None:
            raise ValueError(f"the rows carry images but {type(self.processing_class).__name__} cannot read them; "
                             "use a vision-language model (model.modality=vision), e.g. model=tiny_vlm")
        from trl.data_utils import prepare_multimodal_messages

        conversations = [prepare_multimodal_messages(list(row["prompt"]), images=row_images(row)) for row in rows]
        encoded = self.processing_class.apply_chat_template(
            conversation=conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
            **self.template_arguments(),
        )
        return EncodedPrompts(
            prompt_ids=[list(ids) for ids in encoded["input_ids"]],
            images=ImageInputs(
                pixel_values=torch.as_tensor(np.asarray(encoded[PIXEL_VALUES])),
                image_grid_thw=torch.as_tensor(np.asarray(encoded[IMAGE_GRID])),
                num_images=[len(row_images(row)) for row in rows],
            ),
        )

    def _collate_ids_form(self, rows: Sequence[Mapping[str, Any]]) -> EncodedPrompts:
        grids = [grid for row in rows for grid in row[IMAGE_GRID]]
        if PIXEL_VALUES in rows[0]:
            patches = sum(t * h * w for t, h, w in grids)
            flat = np.concatenate([np.frombuffer(row[PIXEL_VALUES], dtype=np.float32) for row in rows])
            pixels = torch.from_numpy(flat.reshape(patches, -1).copy())
        else:  # cache_pixels=false: only the image processor runs, never the prompt text
            images = [image for row in rows for image in row_images(row)]
            pixels = torch.as_tensor(np.asarray(self.processing_class.image_processor(images=images)[PIXEL_VALUES]))
        return EncodedPrompts(
            prompt_ids=[list(row[PROMPT_IDS] if PROMPT_IDS in row else row["prompt"]) for row in rows],
            images=ImageInputs(pixels, torch.tensor(grids, dtype=torch.long).reshape(-1, 3),
                               [len(row[IMAGE_GRID]) for row in rows]),
        )
