"""Causal language models: the tiny embedded default (built from a config) and hub/local checkpoints.

Both end in the same place: a ``PreTrainedModel`` whose ``generation_config`` knows the tokenizer's pad and EOS IDs.
Hub presets and the tiny model saved to disk share one loading function, ``load_causal_lm``, which is what the
save/load test exercises.
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers import Qwen2Config, Qwen2ForCausalLM

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def _dtype(name: str):
    if name not in _DTYPES:
        raise ValueError(f"model.dtype={name!r} is not valid; choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def _align_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    # Generation stops and pads with the tokenizer's own IDs; a mismatch here silently breaks EOS masking in TRL.
    for config in (model.config, model.generation_config):
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny_qwen2(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    max_position_embeddings: int,
    tie_word_embeddings: bool,
    seed: int,
    dtype: str = "float32",
) -> PreTrainedModel:
    """A randomly initialised Qwen2-architecture causal LM sized by config, with the tokenizer's vocabulary.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> model = build_tiny_qwen2(build_char_tokenizer(), 32, 64, 1, 2, 1, 64, True, seed=0)
    >>> model.config.vocab_size == len(build_char_tokenizer())
    True
    """
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    # The weights depend only on this seed, so the warm-start cache key (which includes it) identifies them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return _align_special_tokens(model.to(_dtype(dtype)), tokenizer)


def load_tokenizer(name_or_path: str, padding_side: str = "left") -> PreTrainedTokenizerBase:
    """Load a tokenizer by hub id or local directory; give it a pad token if it has none (GRPO pads batches)."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side=padding_side)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, tokenizer: PreTrainedTokenizerBase, dtype: str = "float32") -> PreTrainedModel:
    """Load a causal LM by hub id or local directory (``model.name_or_path``)."""
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=_dtype(dtype))
    return _align_special_tokens(model, tokenizer)
