"""Vision-language models: a tiny Qwen2-VL built from config, and one loading path shared with hub checkpoints.

Why a processor subclass: in transformers 5.23, ``Qwen2VLProcessor`` cannot be built or loaded without torchvision.
Its third sub-processor, the video processor, exists only as a torchvision class, and ``ProcessorMixin`` type-checks
every sub-processor (``None`` included), so even ``video_processor=None`` fails; ``AutoProcessor.from_pretrained``
fails too, looking for a video processor config. Image-text GRPO never needs video, so
:class:`ImageOnlyQwen2VLProcessor` drops that sub-processor and keeps Qwen2-VL's image handling as it is (each
``<|image_pad|>`` expanded to ``grid_t * grid_h * grid_w / merge_size**2`` copies). The image processor is resolved by
``AutoImageProcessor``, which picks the PIL backend (``Qwen2VLImageProcessorPil``) when torchvision is missing and
the torchvision one when it is there; both produce the same ``pixel_values`` / ``image_grid_thw``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.utils import cached_file, is_torchvision_available

from grpolab.models.tokenizer import DEFAULT_SPECIAL_TOKENS, build_char_tokenizer

VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"
# Placeholders Qwen2-VL's processor and model look up by name; the char tokenizer makes each one a single token.
IMAGE_PLACEHOLDER_TOKENS = (VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD)

# Small images keep a CPU forward pass cheap: 56x56 .. 112x112 pixels is 4 .. 16 image tokens at patch 14, merge 2.
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 112 * 112

# Processors whose image path is Qwen2-VL's (placeholder expansion by image_grid_thw): safe to load image-only.
_QWEN_VL_PROCESSORS = frozenset({"Qwen2VLProcessor", "Qwen2_5_VLProcessor"})


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without the (torchvision-only) video processor; see the module docstring.

    >>> processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56)
    >>> from PIL import Image
    >>> batch = processor(text=["<|vision_start|><|image_pad|><|vision_end|>How many?"],
    ...                   images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    >>> batch["image_grid_thw"].tolist(), int((batch["input_ids"] == processor.image_token_id).sum())
    ([[1, 4, 4]], 4)
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # ProcessorMixin pairs positional sub-processors with get_attributes(), which reads this signature, so the
        # video_processor=None the parent passes along is never stored nor type-checked.
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


# Lets AutoProcessor resolve the class by the name save_pretrained records. A string key (not Qwen2VLConfig) leaves
# transformers' own config -> processor mapping untouched.
AutoProcessor.register("grpolab-image-only-qwen2-vl", ImageOnlyQwen2VLProcessor)


def build_vlm_processor(
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    patch_size: int = 14,
    merge_size: int = 2,
) -> ImageOnlyQwen2VLProcessor:
    """The tiny model's processor: Qwen2-VL's PIL image processor + the character tokenizer with image placeholders.

    Images are resized (aspect kept) to a multiple of ``patch_size * merge_size`` with a pixel count in
    ``[min_pixels, max_pixels]``.

    >>> processor = build_vlm_processor(min_pixels=64 * 64, max_pixels=64 * 64, patch_size=8)
    >>> processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    True
    """
    tokenizer = build_char_tokenizer(special_tokens=(*DEFAULT_SPECIAL_TOKENS, *IMAGE_PLACEHOLDER_TOKENS))
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size
    )
    return ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )


def build_tiny_vlm(
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_embed_dim: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 4,
    patch_size: int = 14,
    merge_size: int = 2,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
) -> tuple[Qwen2VLForConditionalGeneration, ImageOnlyQwen2VLProcessor]:
    """A randomly initialised Qwen2-VL of a few hundred thousand parameters, and its processor.

    ``hidden_size / num_heads`` must be a multiple of 4 (M-RoPE splits it over time/height/width) and so must
    ``vision_embed_dim / vision_heads`` (2-D rotary over height/width).

    >>> model, processor = build_tiny_vlm(hidden_size=32, vision_embed_dim=32)
    >>> sum(p.numel() for p in model.parameters()) < 1_000_000
    True
    """
    head_dim = hidden_size // num_heads
    if hidden_size % num_heads or head_dim % 4:
        raise ValueError(f"hidden_size/num_heads must be an integer multiple of 4, got {hidden_size}/{num_heads}")
    if vision_embed_dim % vision_heads or (vision_embed_dim // vision_heads) % 4:
        raise ValueError(
            f"vision_embed_dim/vision_heads must be an integer multiple of 4, got {vision_embed_dim}/{vision_heads}"
        )
    processor = build_vlm_processor(min_pixels, max_pixels, patch_size, merge_size)
    tokenizer = processor.tokenizer
    # M-RoPE rotates head_dim/2 frequency pairs split over (temporal, height, width) positions.
    rotary_pairs = head_dim // 2
    mrope_section = [rotary_pairs - 2 * (rotary_pairs // 3), rotary_pairs // 3, rotary_pairs // 3]
    token_id = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "max_position_embeddings": 2048,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0, "mrope_section": mrope_section},
            "bos_token_id": tokenizer.eos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": vision_depth,
            "embed_dim": vision_embed_dim,
            "hidden_size": hidden_size,  # the merger projects image features straight into the LM's width
            "num_heads": vision_heads,
            "mlp_ratio": 2,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": processor.image_processor.temporal_patch_size,
        },
        image_token_id=token_id(IMAGE_PAD),
        video_token_id=token_id(VIDEO_PAD),
        vision_start_token_id=token_id(VISION_START),
        vision_end_token_id=token_id(VISION_END),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.eos_token_id
    return model, processor


def _recorded_processor_class(name_or_path: str) -> str | None:
    """The processor class a checkpoint (local directory or hub id) records, None when it records none."""
    for filename in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        # The same lookup AutoProcessor does; for a hub id these small files are fetched (and cached) anyway.
        path = cached_file(
            name_or_path,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if path is not None:
            with open(path, encoding="utf-8") as handle:
                recorded = json.load(handle).get("processor_class")
            if recorded:
                return recorded
    return None


def load_vlm_processor(
    name_or_path: str,
    min_pixels: int | None = DEFAULT_MIN_PIXELS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ProcessorMixin:
    """Load a processor saved from :func:`build_vlm_processor`, or any hub one, through ``AutoProcessor``.

    Exception: without torchvision, hub Qwen2-VL / Qwen2.5-VL processors are loaded image-only (see the module
    docstring), since ``AutoProcessor`` cannot build them there. ``min_pixels`` / ``max_pixels`` override the saved
    image size bounds (None keeps them).

    >>> processor = load_vlm_processor("runs/tiny-vlm", min_pixels=56 * 56, max_pixels=112 * 112)  # doctest: +SKIP
    """
    if not is_torchvision_available() and _recorded_processor_class(name_or_path) in _QWEN_VL_PROCESSORS:
        processor = ImageOnlyQwen2VLProcessor.from_pretrained(name_or_path)
    else:
        processor = AutoProcessor.from_pretrained(name_or_path)
    if min_pixels is not None or max_pixels is not None:
        size = dict(processor.image_processor.size)
        size["shortest_edge"] = min_pixels if min_pixels is not None else size["shortest_edge"]
        size["longest_edge"] = max_pixels if max_pixels is not None else size["longest_edge"]
        # Re-resolving (rather than mutating .size) runs the processor's own size validation.
        processor.image_processor = AutoImageProcessor.from_pretrained(name_or_path, size=size)
    # TRL left-pads prompt IDs itself and concatenates them with the processor's (padded) mm_token_type_ids, so the
    # two must pad on the same side; TRL forces "left" only when it loads the processor itself.
    processor.tokenizer.padding_side = "left"
    return processor


def load_vlm(
    name_or_path: str,
    min_pixels: int | None = DEFAULT_MIN_PIXELS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    dtype: str | torch.dtype = "float32",
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a vision-language model and its processor from a local directory or a hub id (one path for both).

    >>> model, processor = load_vlm("Qwen/Qwen2-VL-2B-Instruct", dtype="bfloat16")  # doctest: +SKIP
    """
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=torch_dtype)
    processor = load_vlm_processor(name_or_path, min_pixels=min_pixels, max_pixels=max_pixels)
    return model, processor


def save_vlm(model: PreTrainedModel, processor: ProcessorMixin, directory: str | os.PathLike[str]) -> None:
    """Save model and processor side by side so :func:`load_vlm` reads them back.

    >>> model, processor = build_tiny_vlm()
    >>> save_vlm(model, processor, "runs/tiny-vlm")  # doctest: +SKIP
    """
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def image_token_count(processor: ProcessorMixin, height: int, width: int) -> int:
    """Number of ``<|image_pad|>`` tokens one ``height x width`` image expands to in the prompt.

    >>> image_token_count(build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56), 56, 56)
    4
    """
    image_processor = processor.image_processor
    patches = image_processor.get_number_of_image_patches(height, width, {})
    return patches // image_processor.merge_size**2


def describe_parameters(
    model: torch.nn.Module, groups: Sequence[str] = ("visual", "language_model", "lm_head")
) -> dict:
    """Parameter counts per top-level part, to report model size in notes and logs.

    >>> model, _ = build_tiny_vlm()
    >>> describe_parameters(model)["total"] > 0
    True
    """
    counts = {group: 0 for group in groups}
    for name, parameter in model.named_parameters():
        for group in groups:
            if f".{group}." in f".{name}":
                counts[group] += parameter.numel()
                break
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
