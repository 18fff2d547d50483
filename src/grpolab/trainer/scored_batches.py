"""TRL's scored batches as rows: select samples of one, concatenate several whose padded widths differ.

``GRPOTrainer._generate_and_score_completions`` returns one dict per generation batch: prompt tensors left-padded,
completion tensors right-padded, a few keys spanning both, and per-sample entries. Dynamic sampling
(``grpolab.trainer.dynamic_sampling``) keeps some groups of several such batches and joins them into one; the key
tables below say how each key is padded and joined. ``tests/trainer/test_scored_batches.py`` fails when TRL returns a
key they do not know, and anything unknown is refused here rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

#: Keys holding left-padded prompt tensors ``(B, P)`` and the padding value (``None`` = the tokenizer's pad id).
PROMPT_SIDE: dict[str, int | float | None] = {"prompt_ids": None, "prompt_mask": 0}
#: Keys holding right-padded completion tensors ``(B, C)`` (or ``(B, 1)``) and the padding value TRL uses.
COMPLETION_SIDE: dict[str, int | float | None] = {
    "completion_ids": None, "completion_mask": 0, "old_per_token_logps": 0.0, "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0, "importance_sampling_ratio": 1.0, "tool_mask": 1,
}
#: Keys spanning prompt and completion ``(B, P + C)``: prompt part left-padded, completion part right-padded.
WHOLE_SEQUENCE: dict[str, int] = {"token_type_ids": 0, "mm_token_type_ids": 0}
#: Keys with one entry (tensor row or list item) per sample once ``split_pixel_values_by_grid`` has run.
PER_SAMPLE = frozenset({
    "advantages", "pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
    "image_position_ids", "num_images", "num_tiles",
})
#: Keys recomputed for the concatenated batch.
RECOMPUTED = frozenset({"num_items_in_batch"})
#: Every key TRL 1.16's ``_generate_and_score_completions`` can return; anything else is refused, not guessed at.
KNOWN_KEYS = frozenset(PROMPT_SIDE) | frozenset(COMPLETION_SIDE) | frozenset(WHOLE_SEQUENCE) | PER_SAMPLE | RECOMPUTED


def num_rows(batch: Mapping[str, Any]) -> int:
    """How many samples a scored batch holds."""
    return batch["prompt_ids"].size(0)


def take_rows(batch: Mapping[str, Any], rows: Sequence[int]) -> dict[str, Any]:
    """The given samples of a per-sample batch (after ``split_pixel_values_by_grid``); scalars are kept as they are.

    >>> take_rows({"advantages": torch.tensor([1.0, 2.0, 3.0]), "num_images": [1, 2, 3]}, [2, 0])
    {'advantages': tensor([3., 1.]), 'num_images': [3, 1]}
    """
    unknown = sorted(set(batch) - KNOWN_KEYS)
    if unknown:
        raise NotImplementedError(
            f"dynamic sampling cannot select samples of the batch keys {unknown}: TRL returned keys this version of "
            "grpolab.trainer.scored_batches does not know; extend its key tables"
        )
    selected: dict[str, Any] = {}
    for key, value in batch.items():
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            selected[key] = value
        elif isinstance(value, torch.Tensor):
            selected[key] = value[torch.as_tensor(list(rows), dtype=torch.long, device=value.device)]
        else:
            selected[key] = [value[row] for row in rows]
    return selected


def concatenate_scored_batches(batches: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Concatenate per-sample batches of scored completions whose prompt/completion widths differ.

    Prompt tensors are left-padded and completion tensors right-padded to the widest batch (TRL's layout);
    ``num_items_in_batch`` is left for the caller to recompute.

    >>> a = {"prompt_ids": torch.tensor([[5, 6]]), "completion_ids": torch.tensor([[7]]), "advantages": torch.ones(1)}
    >>> b = {"prompt_ids": torch.tensor([[4]]), "completion_ids": torch.tensor([[8, 9]]), "advantages": torch.zeros(1)}
    >>> merged = concatenate_scored_batches([a, b], pad_token_id=0)
    >>> merged["prompt_ids"].tolist(), merged["completion_ids"].tolist(), merged["advantages"].tolist()
    ([[5, 6], [0, 4]], [[7, 0], [8, 9]], [1.0, 0.0])
    """
    if not batches:
        raise ValueError("nothing to concatenate")
    keys = list(batches[0])
    if any(list(batch) != keys for batch in batches[1:]):
        raise ValueError(f"scored batches carry different keys: {[sorted(batch) for batch in batches]}")
    prompt_width = max(batch["prompt_ids"].size(1) for batch in batches)
    completion_width = max(batch["completion_ids"].size(1) for batch in batches)
    merged: dict[str, Any] = {}
    for key in keys:
        values = [batch[key] for batch in batches]
        if key in RECOMPUTED or all(value is None for value in values):
            merged[key] = None
        elif key in PROMPT_SIDE:
            pad = _pad_value(PROMPT_SIDE[key], pad_token_id)
            merged[key] = torch.cat([_pad_to(v, prompt_width, pad, left=True) for v in values])
        elif key in COMPLETION_SIDE:
            pad = _pad_value(COMPLETION_SIDE[key], pad_token_id)
            if all(v.size(1) == 1 for v in values):  # includes sequence-level ratios, shape (B, 1)
                merged[key] = torch.cat(values)
            else:
                merged[key] = torch.cat([_pad_to(v, completion_width, pad, left=False) for v in values])
        elif key in WHOLE_SEQUENCE:
            merged[key] = torch.cat([
                torch.cat([
                    _pad_to(v[:, : batch["prompt_ids"].size(1)], prompt_width, WHOLE_SEQUENCE[key], left=True),
                    _pad_to(v[:, batch["prompt_ids"].size(1) :], completion_width, WHOLE_SEQUENCE[key], left=False),
                ], dim=1)
                for v, batch in zip(values, batches)
            ])
        elif isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape[1:]) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"dynamic sampling cannot concatenate {key!r}: per-sample shapes differ {shapes}")
            merged[key] = torch.cat(values)
        else:
            merged[key] = [item for value in values for item in value]
    return merged


def _pad_value(value: int | float | None, pad_token_id: int) -> int | float:
    return pad_token_id if value is None else value


def _pad_to(tensor: torch.Tensor, width: int, value: int | float, left: bool) -> torch.Tensor:
    missing = width - tensor.size(1)
    if missing == 0:
        return tensor
    padding = tensor.new_full((tensor.size(0), missing, *tensor.shape[2:]), value)
    return torch.cat([padding, tensor] if left else [tensor, padding], dim=1)
