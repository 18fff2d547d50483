"""Supervised warm start for image rows: the text warm start's loop, with each prompt's pixels in the forward pass.

The text ``SupervisedWarmStart`` feeds ``prompt_ids`` only; on image rows that would train a model that never looks
at the images (Qwen2-VL embeds ``<|image_pad|>`` as an ordinary token when no ``pixel_values`` come along), so the
vision modality selects this class instead (``conf/warmstart/vision_sft.yaml``). Caching, the learning-rate
schedule and the summary are the parent's; the log adds the batch's exact-match rate (teacher-forced, which for a
short solution is what greedy decoding would answer).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from grpolab.data.prepare_vision import encode_vision_prompts
from grpolab.trainer.warmstart import SupervisedWarmStart

log = logging.getLogger(__name__)


class VisionSupervisedWarmStart(SupervisedWarmStart):
    """Teacher-forced training on ``solution`` for image rows (text or ids form), masked to completion tokens.

    ``processor`` is the run's processor, built by Hydra from the same config node as the run's
    (``processor: ${model.tokenizer}``).

    >>> from grpolab.models.vision import build_vlm_processor
    >>> warm = VisionSupervisedWarmStart(build_vlm_processor(), steps=0, batch_size=8, lr=1e-3, weight_decay=0.0,
    ...                                  warmup_steps=0, cache=False)
    >>> warm.run(None, None, 1, 0, None, {}, seed=0)
    {'steps': 0, 'cached': False}
    """

    def __init__(self, processor: Any, chat_template_kwargs: Mapping[str, Any] | None = None, **fields: Any) -> None:
        super().__init__(**fields)
        # Plain attributes, not dataclass fields: the parent's cache key (asdict) must not try to hash the processor.
        self.processor = processor
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def run(self, model: PreTrainedModel, examples: Dataset, eos_token_id: int, pad_token_id: int,
            cache_dir: Path | None, key_parts: dict[str, Any], seed: int) -> dict[str, Any]:
        # Same hyperparameters, other weights: never share a cache entry with the text warm start.
        key_parts = {**key_parts, "warm_start": type(self).__name__, "chat": self.chat_template_kwargs}
        return super().run(model, examples, eos_token_id, pad_token_id, cache_dir, key_parts, seed)

    def _train(self, model, examples: Dataset, eos_token_id: int, pad_token_id: int, seed: int) -> list[float]:
        rng = random.Random(seed)
        optimizer, scheduler = self.optimizer_and_schedule(model)
        solutions = examples["solution_ids"]
        model.train()
        losses: list[float] = []
        exact: list[float] = []
        for step in range(self.steps):
            indices = rng.sample(range(len(examples)), min(self.batch_size, len(examples)))
            prompts = encode_vision_prompts(self.processor, [examples[i] for i in indices], self.chat_template_kwargs)
            batch = _collate(prompts.prompt_ids, [solutions[i] + [eos_token_id] for i in indices], pad_token_id)
            input_ids, labels, attention = batch
            output = model(
                input_ids=input_ids,
                attention_mask=attention,
                pixel_values=prompts.pixel_values.to(model.dtype),
                image_grid_thw=prompts.image_grid_thw,
                mm_token_type_ids=prompts.token_type_ids(input_ids, model.config.image_token_id),
                labels=labels,
            )
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(output.loss.item())
            exact.append(_exact_match(output.logits.detach(), labels))
            if (step + 1) % self.log_every == 0 or step + 1 == self.steps:
                window = slice(-self.log_every, None)
                log.info("warm start step %d/%d loss %.4f exact match %.3f", step + 1, self.steps,
                         sum(losses[window]) / len(losses[window]), sum(exact[window]) / len(exact[window]))
        model.eval()
        return losses


def _collate(prompt_ids: list[list[int]], solution_ids: list[list[int]], pad_token_id: int):
    """Right-padded ``prompt + solution`` with labels on the solution only (the text warm start's layout)."""
    length = max(len(p) + len(s) for p, s in zip(prompt_ids, solution_ids, strict=True))
    input_ids = torch.full((len(prompt_ids), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(prompt_ids), length), -100, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), length), dtype=torch.long)
    for i, (prompt, solution) in enumerate(zip(prompt_ids, solution_ids, strict=True)):
        sequence = prompt + solution
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        labels[i, len(prompt) : len(sequence)] = torch.tensor(solution)
        attention[i, : len(sequence)] = 1
    return input_ids, labels, attention


def _exact_match(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose every solution token is the argmax given the true prefix (= greedy gets it right)."""
    predicted, targets = logits[:, :-1].argmax(-1), labels[:, 1:]
    wrong = ((predicted != targets) & (targets != -100)).any(dim=1)
    return 1.0 - wrong.float().mean().item()
