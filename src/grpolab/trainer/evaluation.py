"""Held-out evaluation: greedy decoding on prompt IDs, scored by a reward-style function."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel

log = logging.getLogger(__name__)

Scorer = Callable[[list[list[int]], list[int]], dict[str, list[float]]]


@torch.no_grad()
def evaluate_greedy(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    score: Scorer,
    pad_token_id: int,
    max_new_tokens: int,
    batch_size: int,
) -> dict[str, float]:
    """Greedy-decode every prompt and average the per-sample scores ``score(completion_ids, row_indices)`` returns.

    Returns the mean of each scored metric (``accuracy`` among them) plus ``num_samples`` and ``wall_time_s``.
    """
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    device = next(model.parameters()).device
    for start in range(0, len(prompt_ids), batch_size):
        batch = [list(p) for p in prompt_ids[start : start + batch_size]]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad_token_id] * (width - len(p)) + p for p in batch], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_token_id,
        )
        completions = [_strip_after_eos(row, model.generation_config.eos_token_id) for row in output[:, width:].tolist()]
        for key, values in score(completions, list(range(start, start + len(batch)))).items():
            totals[key] = totals.get(key, 0.0) + float(sum(values))
    model.train(was_training)
    n = len(prompt_ids)
    metrics = {key: round(value / n, 4) for key, value in totals.items()}
    metrics.update(num_samples=n, wall_time_s=round(time.perf_counter() - started, 2))
    return metrics


def _strip_after_eos(ids: list[int], eos: int | list[int]) -> list[int]:
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1]
    return ids


def reward_scorer(metrics: Sequence[Any], tokenizer: Any, rows: Any) -> Scorer:
    """Score greedy completions with text-level reward callables; each metric keeps its reward's ``__name__``.

    ``rows`` is the held-out dataset: its columns (``answer`` ...) reach the metrics like dataset columns reach rewards.
    """
    columns = {name: rows[name] for name in rows.column_names if name not in ("prompt", "prompt_ids")}

    def score(completion_ids: list[list[int]], indices: list[int]) -> dict[str, list[float]]:
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        kwargs = {name: [values[i] for i in indices] for name, values in columns.items()}
        return {
            metric.__name__: [0.0 if v is None else float(v) for v in metric(
                prompts=[None] * len(texts), completions=texts, completion_ids=completion_ids, **kwargs
            )]
            for metric in metrics
        }

    return score
