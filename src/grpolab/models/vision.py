"""Vision-language processors: the tiny VLM's (built from config) and hub or local ones (one loading path).

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
from collections.abc import Sequence

import torch
from transformers import AutoImageProcessor, AutoProcessor, ProcessorMixin, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.utils import cached_file, is_torchvision_available

from grpolab.models.hub import check_checkpoint
from grpolab.models.tokenizer import DEFAULT_SPECIAL_TOKENS, DEFAULT_TAG_TOKENS, EOS, build_char_tokenizer

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
    tag_tokens: Sequence[str] = DEFAULT_TAG_TOKENS,
    eos_token: str = EOS,
) -> ImageOnlyQwen2VLProcessor:
    """The tiny model's processor: Qwen2-VL's PIL image processor + the character tokenizer with image placeholders.

    Images are resized (aspect kept) to a multiple of ``patch_size * merge_size`` with a pixel count in
    ``[min_pixels, max_pixels]``. ``tag_tokens`` and ``eos_token`` are the character tokenizer's
    (``grpolab.models.tokenizer.build_char_tokenizer``): ``model=tiny_vlm_tools`` makes the tool-calling tags single
    tokens and ``<|im_end|>`` the EOS, as ``model=tiny_tools`` does for the text model.

    >>> processor = build_vlm_processor(min_pixels=64 * 64, max_pixels=64 * 64, patch_size=8)
    >>> processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    True
    """
    tokenizer = build_char_tokenizer(special_tokens=(*DEFAULT_SPECIAL_TOKENS, *IMAGE_PLACEHOLDER_TOKENS),
                                     tag_tokens=tag_tokens, eos_token=eos_token)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size
    )
    return ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )


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
    check_checkpoint(name_or_path)
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

    >>> describe_parameters(model)["total"]  # doctest: +SKIP
    313984
    """
    counts = {group: 0 for group in groups}
    for name, parameter in model.named_parameters():
        for group in groups:
            if f".{group}." in f".{name}":
                counts[group] += parameter.numel()
                break
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
