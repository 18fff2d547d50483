"""Supervised warm start: a short next-token pass over ``prompt -> solution`` before GRPO.

GRPO only sharpens what the policy can already sample; a randomly initialised tiny model never samples a correct
answer, so every group has zero reward variance and nothing is learned. A brief supervised pass gives it a foothold.
The result is cached under a key derived from everything that determines the weights (model config, data config,
warm-start config, seed), so sweeps over GRPO knobs pay for it once.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from grpolab.config.hashing import config_hash

log = logging.getLogger(__name__)


@dataclass
class SupervisedWarmStart:
    """Teacher-forced training on the ``solution`` column, masked to completion tokens.

    >>> ws = SupervisedWarmStart(steps=0, batch_size=8, lr=1e-3, weight_decay=0.0, warmup_steps=0, cache=False)
    >>> ws.steps
    0
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    cache: bool
    log_every: int = 50

    def run(
        self,
        model: PreTrainedModel,
        examples: Dataset,
        eos_token_id: int,
        pad_token_id: int,
        cache_dir: Path | None,
        key_parts: dict[str, Any],
        seed: int,
    ) -> dict[str, Any]:
        """Train ``model`` in place (or load cached weights). ``examples`` has ``prompt_ids`` and ``solution_ids``."""
        if self.steps <= 0:
            return {"steps": 0, "cached": False}
        key = config_hash(key_parts, asdict(self), seed)
        cached = cache_dir / f"warmstart-{key}.pt" if (cache_dir is not None and self.cache) else None
        if cached is not None and cached.exists():
            model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
            log.info("warm start: loaded cached weights %s", cached)
            return {"steps": self.steps, "cached": True, "cache_key": key}

        started = time.perf_counter()
        losses = self._train(model, examples, eos_token_id, pad_token_id, seed)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(cached)
        return {
            "steps": self.steps,
            "cached": False,
            "cache_key": key,
            "final_loss": losses[-1],
            "wall_time_s": round(time.perf_counter() - started, 2),
        }

    def optimizer_and_schedule(self, model):
        """AdamW with a linear warm-up and cosine decay over ``steps`` (shared with the vision warm start)."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def lr_at(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * progress))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)

    def _train(self, model, examples: Dataset, eos_token_id: int, pad_token_id: int, seed: int) -> list[float]:
        rows = [(p, s + [eos_token_id]) for p, s in zip(examples["prompt_ids"], examples["solution_ids"])]
        rng = random.Random(seed)
        optimizer, scheduler = self.optimizer_and_schedule(model)
        model.train()
        losses: list[float] = []
        for step in range(self.steps):
            batch = rng.sample(rows, min(self.batch_size, len(rows)))
            input_ids, labels, attention = _collate(batch, pad_token_id)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if (step + 1) % self.log_every == 0 or step + 1 == self.steps:
                recent = losses[-self.log_every :]
                log.info("warm start step %d/%d loss %.4f", step + 1, self.steps, sum(recent) / len(recent))
        model.eval()
        return losses


def _collate(batch: list[tuple[list[int], list[int]]], pad_token_id: int):
    # Right padding: positions are absolute from 0 for every row, matching how prompts start at generation time
    # once left padding is removed by the attention mask.
    length = max(len(p) + len(s) for p, s in batch)
    input_ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    for i, (prompt, solution) in enumerate(batch):
        sequence = prompt + solution
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        labels[i, len(prompt) : len(sequence)] = torch.tensor(solution)
        attention[i, : len(sequence)] = 1
    return input_ids, labels, attention
