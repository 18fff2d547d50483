"""Vision-language model presets: what ``conf/model/<vlm>.yaml`` instantiates.

A VLM preset's ``model.tokenizer`` node builds the *processor* (image processor + text tokenizer), and its
``model.network`` node receives that processor as ``tokenizer=`` (the composition root passes whatever the tokenizer
node built), exactly like the text presets. The tiny model and every hub preset end in the same place: a
``PreTrainedModel`` whose pad/EOS IDs are the processor's tokenizer's, and hub presets and a saved tiny model share
one loading function, :func:`load_vlm_network` (the save/load test goes through it).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoModelForImageTextToText, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from grpolab.models.causal_lm import _align_special_tokens, _dtype
from grpolab.models.vision import build_tiny_vlm


def text_tokenizer(processing_class: Any) -> PreTrainedTokenizerBase:
    """The text tokenizer inside a processor (a VLM's), or the tokenizer itself (a text model's).

    >>> from grpolab.models.vision import build_vlm_processor
    >>> processor = build_vlm_processor()
    >>> text_tokenizer(processor) is processor.tokenizer, text_tokenizer(processor.tokenizer) is processor.tokenizer
    (True, True)
    """
    return processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class


def tiny_vlm_network(
    tokenizer: ProcessorMixin,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    vision_embed_dim: int,
    vision_depth: int,
    vision_heads: int,
    seed: int,
    dtype: str = "float32",
) -> PreTrainedModel:
    """The tiny Qwen2-VL for the processor ``model.tokenizer`` built (its patch/merge sizes and vocabulary).

    >>> from grpolab.models.vision import build_vlm_processor
    >>> model = tiny_vlm_network(build_vlm_processor(), 32, 1, 2, 1, 64, 32, 1, 2, seed=0)
    >>> model.config.image_token_id == build_vlm_processor().image_token_id
    True
    """
    image_processor = tokenizer.image_processor
    model, own_processor = build_tiny_vlm(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        vision_embed_dim=vision_embed_dim,
        vision_depth=vision_depth,
        vision_heads=vision_heads,
        patch_size=image_processor.patch_size,
        merge_size=image_processor.merge_size,
        seed=seed,
    )
    # build_tiny_vlm sizes the embedding by its own processor; the run uses the configured one, so they must agree.
    if own_processor.tokenizer.get_vocab() != tokenizer.tokenizer.get_vocab():
        raise ValueError("model.network (tiny VLM) needs the character tokenizer of build_vlm_processor as its "
                         "model.tokenizer; the configured processor has another vocabulary")
    return _align_special_tokens(model.to(_dtype(dtype)), tokenizer.tokenizer)


def load_vlm_network(name_or_path: str, tokenizer: ProcessorMixin, dtype: str = "float32") -> PreTrainedModel:
    """A vision-language model by hub id or local directory (``model.name_or_path``), e.g. a saved tiny VLM.

    >>> model = load_vlm_network("Qwen/Qwen2.5-VL-3B-Instruct", processor)  # doctest: +SKIP
    """
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=_dtype(dtype))
    if model.config.image_token_id != getattr(tokenizer, "image_token_id", model.config.image_token_id):
        raise ValueError(
            f"{name_or_path}: the model's image token id {model.config.image_token_id} differs from the processor's "
            f"{tokenizer.image_token_id}; model.tokenizer and model.network must load the same checkpoint"
        )
    return _align_special_tokens(model, text_tokenizer(tokenizer))

