"""Randomly initialised models built from config with no download: a Qwen2 causal LM and a Qwen2-VL.

The same two builders make the embedded tiny models (``model=tiny``, ``model=tiny_vlm``) and the real-size shapes
(``model=qwen2_5_0_5b_shape``, ``qwen2_5_1_5b_shape``, ``qwen2_vl_2b_shape``): a checkpoint's architecture with random
weights has its compute, memory and code path, which is what a GPU check measures. Both take the tokenizer (or
processor) ``model.tokenizer`` built and end like a loaded checkpoint (``grpolab.models.load.align_special_tokens``).
The embedding has the tokenizer's size, or ``vocab_size`` rows when given: a real checkpoint's embedding is padded
beyond its tokenizer too (Qwen2.5: 151,936 rows for 151,665 tokens). The weights depend only on ``seed`` (and the
shape), so the warm-start cache key (which includes both) identifies them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, Qwen2Config, Qwen2ForCausalLM, Qwen2VLConfig, Qwen2VLForConditionalGeneration

from grpolab.models.load import align_special_tokens, torch_dtype
from grpolab.models.vision import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START


def build_tiny_qwen2(
    tokenizer,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    max_position_embeddings: int,
    tie_word_embeddings: bool,
    seed: int,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    vocab_size: int | None = None,
    rope_theta: float = 10_000.0,
    initializer_range: float = 0.02,
) -> PreTrainedModel:
    """A randomly initialised Qwen2-architecture causal LM sized by config, with the tokenizer's vocabulary (or
    ``vocab_size`` embedding rows, at least the tokenizer's); weights drawn with standard deviation
    ``initializer_range``.

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> model = build_tiny_qwen2(build_char_tokenizer(), 32, 64, 1, 2, 1, 64, True, seed=0)
    >>> model.config.vocab_size == len(build_char_tokenizer())
    True
    >>> build_tiny_qwen2(build_char_tokenizer(), 32, 64, 1, 2, 1, 64, True, seed=0, vocab_size=512).config.vocab_size
    512
    """
    config = Qwen2Config(
        vocab_size=_embedding_rows(tokenizer, vocab_size),
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
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        initializer_range=initializer_range,
        **({} if attn_implementation is None else {"attn_implementation": attn_implementation}),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return align_special_tokens(model.to(torch_dtype(dtype)), tokenizer)


def build_tiny_vlm(
    tokenizer,
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
    attn_implementation: str | None = None,
    vocab_size: int | None = None,
    rope_theta: float = 10_000.0,
    max_position_embeddings: int = 2048,
    mrope_section: Sequence[int] | None = None,
    vision_mlp_ratio: int = 2,
) -> PreTrainedModel:
    """A randomly initialised Qwen2-VL for the processor ``tokenizer`` (its vocabulary or ``vocab_size`` embedding
    rows, its patch and merge sizes).

    ``hidden_size / num_heads`` must be a multiple of 4 (M-RoPE splits it over time/height/width) and so must
    ``vision_embed_dim / vision_heads`` (2-D rotary over height/width). ``mrope_section`` (temporal, height, width
    frequency pairs, summing to ``hidden_size / num_heads / 2``) defaults to a near-even split.

    >>> from grpolab.models.vision import build_vlm_processor
    >>> processor = build_vlm_processor()
    >>> model = build_tiny_vlm(processor, 32, 1, 2, 1, 64, 32, 1, 2, seed=0)
    >>> model.config.image_token_id == processor.image_token_id, model.num_parameters() < 1_000_000
    (True, True)
    """
    head_dim = hidden_size // num_heads
    if hidden_size % num_heads or head_dim % 4:
        raise ValueError(f"hidden_size/num_heads must be an integer multiple of 4, got {hidden_size}/{num_heads}")
    if vision_embed_dim % vision_heads or (vision_embed_dim // vision_heads) % 4:
        raise ValueError(
            f"vision_embed_dim/vision_heads must be an integer multiple of 4, got {vision_embed_dim}/{vision_heads}"
        )
    text, images = tokenizer.tokenizer, tokenizer.image_processor
    # M-RoPE rotates head_dim/2 frequency pairs split over (temporal, height, width) positions.
    rotary_pairs = head_dim // 2
    if mrope_section is None:
        mrope_section = [rotary_pairs - 2 * (rotary_pairs // 3), rotary_pairs // 3, rotary_pairs // 3]
    if sum(mrope_section) != rotary_pairs:
        raise ValueError(f"mrope_section {list(mrope_section)} must sum to hidden_size/num_heads/2 = {rotary_pairs}")
    token_id = text.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": _embedding_rows(text, vocab_size),
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "max_position_embeddings": max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta, "mrope_section": list(mrope_section)},
            "bos_token_id": text.eos_token_id,
            "eos_token_id": text.eos_token_id,
            "pad_token_id": text.pad_token_id,
        },
        vision_config={
            "depth": vision_depth,
            "embed_dim": vision_embed_dim,
            "hidden_size": hidden_size,  # the merger projects image features straight into the LM's width
            "num_heads": vision_heads,
            "mlp_ratio": vision_mlp_ratio,
            "patch_size": images.patch_size,
            "spatial_merge_size": images.merge_size,
            "temporal_patch_size": images.temporal_patch_size,
        },
        image_token_id=token_id(IMAGE_PAD),
        video_token_id=token_id(VIDEO_PAD),
        vision_start_token_id=token_id(VISION_START),
        vision_end_token_id=token_id(VISION_END),
        tie_word_embeddings=True,
        **({} if attn_implementation is None else {"attn_implementation": attn_implementation}),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.bos_token_id = text.eos_token_id
    return align_special_tokens(model.to(torch_dtype(dtype)), tokenizer)


def _embedding_rows(tokenizer, vocab_size: int | None) -> int:
    if vocab_size is None:
        return len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"model.network.vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} "
                         "tokens; null sizes the embedding by the tokenizer")
    return vocab_size
