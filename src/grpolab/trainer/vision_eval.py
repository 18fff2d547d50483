"""Held-out greedy evaluation for image rows: the text evaluator's metrics, with the images fed to ``generate``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from grpolab.data.prepare_vision import PIXEL_VALUES, SOURCE_PREFIX, encode_vision_prompts
from grpolab.trainer.evaluation import Scorer, _strip_after_eos


@torch.no_grad()
def evaluate_greedy_with_images(
    model: PreTrainedModel,
    processor: Any,
    rows: Dataset,
    score: Scorer,
    max_new_tokens: int,
    batch_size: int,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Greedy-decode every image prompt (left-padded, as TRL generates) and average ``score``'s per-row metrics.

    Returns the same keys as ``grpolab.trainer.evaluation.evaluate_greedy``: each metric's mean, ``num_samples``
    and ``wall_time_s``.
    """
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    tokenizer = processor.tokenizer
    pad_id, eos_id = tokenizer.pad_token_id, model.generation_config.eos_token_id
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    for start in range(0, len(rows), batch_size):
        indices = list(range(start, min(start + batch_size, len(rows))))
        batch = encode_vision_prompts(processor, [rows[i] for i in indices], chat_template_kwargs)
        width = max(len(ids) for ids in batch.prompt_ids)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch.prompt_ids], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch.prompt_ids], device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            pixel_values=batch.pixel_values.to(device=device, dtype=model.dtype),
            image_grid_thw=batch.image_grid_thw.to(device),
            mm_token_type_ids=batch.token_type_ids(input_ids, model.config.image_token_id),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
        completions = [_strip_after_eos(ids, eos_id) for ids in output[:, width:].tolist()]
        for key, values in score(completions, indices).items():
            totals[key] = totals.get(key, 0.0) + float(sum(values))
    model.train(was_training)
    metrics = {key: round(value / len(rows), 4) for key, value in totals.items()}
    metrics.update(num_samples=len(rows), wall_time_s=round(time.perf_counter() - started, 2))
    return metrics


def image_greedy_evaluator(
    processor: Any,
    rows: Dataset,
    metrics: list[Callable[..., Any]],
    reward_scorer: Callable[..., Scorer],
    max_new_tokens: int,
    batch_size: int,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[PreTrainedModel], dict[str, float]]:
    """``evaluate(model)`` for the held-out image rows; metrics receive the rows' columns (images included)."""
    # Cached pixel values are model input, not something a metric reads; ids-form images go back to TRL's names so
    # metrics receive `image`/`images` in both tokenizer modes.
    scored_rows = rows.remove_columns([c for c in (PIXEL_VALUES,) if c in rows.column_names]).rename_columns(
        {c: c[len(SOURCE_PREFIX):] for c in rows.column_names if c.startswith(SOURCE_PREFIX)}
    )
    score = reward_scorer(metrics, processor.tokenizer, scored_rows)

    def evaluate(model: PreTrainedModel) -> dict[str, float]:
        return evaluate_greedy_with_images(model, processor, rows, score, max_new_tokens, batch_size,
                                           chat_template_kwargs)

    return evaluate
