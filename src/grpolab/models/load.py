"""Hub and local checkpoints: one loading path for text and vision-language models.

Every model preset ends in the same place, a ``PreTrainedModel`` whose config and generation config carry the
tokenizer's pad and EOS IDs. Which ``Auto`` class loads a checkpoint is the preset's ``model.modality``; a tiny model
saved to disk loads through the very functions the hub presets use (the save/load tests exercise them).
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.tokenization_auto import get_tokenizer_config

from grpolab.config.enums import DType, Modality
from grpolab.models.hub import check_checkpoint

AUTO_MODELS = {Modality.text: AutoModelForCausalLM, Modality.vision: AutoModelForImageTextToText}


def torch_dtype(name: DType | str) -> torch.dtype | str:
    """``model.dtype`` (a ``DType``: the schema refuses any other name) as torch understands it.

    >>> torch_dtype("bfloat16"), torch_dtype(DType.auto)
    (torch.bfloat16, 'auto')
    """
    dtype = DType(name)
    return "auto" if dtype is DType.auto else getattr(torch, dtype.value)


def align_special_tokens(model: PreTrainedModel, processing_class) -> PreTrainedModel:
    """Make generation stop and pad with the tokenizer's own IDs; a mismatch silently breaks EOS masking in TRL."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)  # a VLM processor wraps its tokenizer
    for config in (model.config, model.generation_config):
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
    return model


#: ``tokenizer_class`` values of a tokenizer defined entirely by its ``tokenizer.json`` (grpolab's character
#: tokenizer saves as the first).
GENERIC_TOKENIZER_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})


def load_tokenizer(name_or_path: str, padding_side: str = "left"):
    """A tokenizer by hub id or local directory, given a pad token if it has none (GRPO pads batches).

    A tokenizer saved as a generic ``tokenizer.json`` tokenizer is loaded as one: transformers 5's ``AutoTokenizer``
    picks the class from the model type for some models (Qwen2: ``Qwen2Tokenizer``) whatever ``tokenizer_config.json``
    records, and would rebuild grpolab's character tokenizer saved next to a Qwen2 checkpoint (a run's ``model/``)
    as a byte-level one that drops spaces and newlines.
    """
    check_checkpoint(name_or_path)
    recorded = get_tokenizer_config(name_or_path).get("tokenizer_class")
    if recorded in GENERIC_TOKENIZER_CLASSES:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(name_or_path, padding_side=padding_side)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side=padding_side)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, tokenizer, modality: Modality | str, dtype: str = "float32",
               attn_implementation: str | None = None) -> PreTrainedModel:
    """A causal LM (``modality=text``) or a vision-language model (``modality=vision``) by hub id or local directory.

    ``tokenizer`` is what ``model.tokenizer`` built (a tokenizer, or a VLM's processor); ``attn_implementation``
    (``sdpa``, ``eager``, ``flash_attention_2``; None: transformers' default) is passed to ``from_pretrained``.

    >>> load_model("Qwen/Qwen2.5-0.5B-Instruct", tokenizer, "text", dtype="bfloat16")  # doctest: +SKIP
    """
    check_checkpoint(name_or_path)
    auto = AUTO_MODELS[Modality(modality)]
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = auto.from_pretrained(name_or_path, dtype=torch_dtype(dtype), **extra)
    expected = getattr(tokenizer, "image_token_id", None)
    if expected is not None and getattr(model.config, "image_token_id", expected) != expected:
        raise ValueError(
            f"{name_or_path}: the model's image token id {model.config.image_token_id} differs from the processor's "
            f"{expected}; model.tokenizer and model.network must load the same checkpoint"
        )
    return align_special_tokens(model, tokenizer)
