"""Supervised warm start: a short next-token pass over ``prompt -> solution`` before GRPO.

A ``solution`` is completion text, or a tool-calling demonstration given as chat messages (assistant turns with
``tool_calls``, ``tool`` results, the final answer): it is then laid out token by token as GRPO's rollouts are
(``grpolab.trainer.multiturn.trajectory``) and the loss skips the tool results, which are never the model's. A tool
result the demonstration leaves out is computed by the run's environment, reset with the row; images among the
results (``environment=crop``) are trained on with the prompt's, in the order the sequence shows them.

GRPO only sharpens what the policy can already sample; a randomly initialised tiny model never samples a correct
answer, so every group has zero reward variance and nothing is learned. A brief supervised pass gives it a foothold.
Prompts go through the run's :class:`~grpolab.data.prompts.PromptEncoder`, so image rows are trained with their
pixels and every prompt renders exactly as GRPO will render it. The result is cached under a key derived from
everything that determines the weights (model and data config, prompt rendering, this node, seed), so sweeps over
GRPO knobs pay for it once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from filelock import FileLock
from transformers import PreTrainedModel

from grpolab.config.hashing import config_hash
from grpolab.data.prompts import ImageInputs, PromptEncoder, is_token_ids, select_rows
from grpolab.tracking.progress import Progress
from grpolab.trainer.multiturn import is_trace, row_tools, trajectory

log = logging.getLogger(__name__)


@dataclass
class SupervisedWarmStart:
    """Teacher-forced training on the ``solution`` column, masked to completion tokens.

    >>> SupervisedWarmStart(steps=0, batch_size=8, lr=1e-3, weight_decay=0.0, warmup_steps=0, cache=False).run(
    ...     None, None, None, None, {}, seed=0)
    {'steps': 0, 'cached': False}
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    cache: bool
    log_every: int = 50

    def checked(self, columns: Sequence[str]) -> SupervisedWarmStart:
        """Itself, once the rows it will train on are known to hold the ``solution`` column it reads."""
        if self.steps > 0 and "solution" not in columns:
            raise ValueError(f"warmstart: the warm start trains on a 'solution' column, which the data lacks (it has "
                             f"{', '.join(columns)}); add one or run with warmstart=none")
        return self

    def run(self, model: PreTrainedModel, rows: Dataset, encoder: PromptEncoder, cache_dir: Path | None,
            key_parts: dict[str, Any], seed: int, environment: Any = None) -> dict[str, Any]:
        """Train ``model`` in place on ``rows`` (either form, with or without images), or load cached weights;
        ``environment`` (the run's ``ToolEnvironment``) runs the tool calls whose results a demonstration leaves out."""
        if self.steps <= 0:
            return {"steps": 0, "cached": False}
        # Only what decides the weights: how often it logs or whether it caches does not.
        weights = {name: value for name, value in asdict(self).items() if name not in ("cache", "log_every")}
        # The tools' descriptions are part of every chat prompt; runs without tools keep their cache keys. The
        # environment's settings (key_parts["environment"]) decide the weights only through the tool results the
        # demonstrations leave to it: a run whose demonstrations give them all shares the warm start of a run without.
        if not (environment is not None and leaves_results_to_environment(rows)):
            key_parts = {name: part for name, part in key_parts.items() if name != "environment"}
        key = config_hash(key_parts, encoder.chat_template_kwargs, weights, seed,
                          *([encoder.tool_schemas()] if encoder.tools else []))
        cached = cache_dir / f"warmstart-{key}.pt" if (cache_dir is not None and self.cache) else None
        if cached is None:
            return self._trained(model, rows, encoder, seed, environment, key)
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Jobs side by side (a joblib sweep, tests) that share a warm start train it once: the others wait here and
        # load it. The lock is released if its holder dies.
        with FileLock(cached.with_name(f"{cached.name}.lock")):
            if cached.exists():
                model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
                log.info("warm start: loaded cached weights %s", cached)
                return {"steps": self.steps, "cached": True, "cache_key": key}
            result = self._trained(model, rows, encoder, seed, environment, key)
            # Written under another name first: a job killed mid-write leaves no torn cache file.
            tmp = cached.with_name(f"{cached.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            torch.save(model.state_dict(), tmp)
            tmp.replace(cached)
        return result

    def _trained(self, model: PreTrainedModel, rows: Dataset, encoder: PromptEncoder, seed: int, environment: Any,
                 key: str) -> dict[str, Any]:
        started = time.perf_counter()
        losses, exact = self._train(model, rows, encoder, seed, environment)
        window = min(self.log_every, len(losses))
        return {
            "steps": self.steps,
            "cached": False,
            "cache_key": key,
            # What the last log line printed: means over the last `final_window` steps, not the last step alone.
            "final_loss": sum(losses[-window:]) / window,
            "final_exact_match": sum(exact[-window:]) / window,
            "final_window": window,
            "wall_time_s": round(time.perf_counter() - started, 2),
        }

    def optimizer_and_schedule(self, model: PreTrainedModel):
        """AdamW with a linear warm-up and cosine decay over ``steps``."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def lr_at(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * progress))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)

    def _train(self, model: PreTrainedModel, rows: Dataset, encoder: PromptEncoder, seed: int,
               environment: Any = None) -> tuple[list[float], list[float]]:
        tokenizer = encoder.tokenizer
        solutions = _target_ids(encoder, rows, environment)
        device = next(model.parameters()).device
        rng = random.Random(seed)
        optimizer, scheduler = self.optimizer_and_schedule(model)
        model.train()
        losses: list[float] = []
        exact: list[float] = []
        progress = Progress("warm start", self.steps, log)
        for step in range(self.steps):
            indices = rng.sample(range(len(rows)), min(self.batch_size, len(rows)))
            prompts = encoder.encode(select_rows(rows, indices))
            if any(solutions[i][2] is not None for i in indices):  # images in tool results: after the prompt's
                prompt_images = prompts.images.rows() if prompts.images is not None else [None] * len(indices)
                prompts.images = ImageInputs.join([ImageInputs.join([own, solutions[i][2]], one_row=True)
                                                   for own, i in zip(prompt_images, indices, strict=True)])
            input_ids, labels, attention = (tensor.to(device) for tensor in _collate(
                prompts.prompt_ids, [solutions[i][:2] for i in indices], tokenizer.pad_token_id))
            output = model(input_ids=input_ids, attention_mask=attention, labels=labels,
                           **prompts.model_inputs(input_ids, model))
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(output.loss.item())
            exact.append(_exact_match(output.logits.detach(), labels))
            progress.advance(step + 1)
            if (step + 1) % self.log_every == 0 or step + 1 == self.steps:
                window = slice(-self.log_every, None)
                loss, exact_match = sum(losses[window]) / len(losses[window]), sum(exact[window]) / len(exact[window])
                progress.report(step + 1, f"loss {loss:.4f}, exact match {exact_match:.3f} (means over the last "
                                f"{len(losses[window])} steps)", bar_text=f"loss {loss:.4f}, exact {exact_match:.3f}")
        progress.close()
        model.eval()
        return losses, exact


def leaves_results_to_environment(rows: Dataset) -> bool:
    """Whether a demonstration in the ``solution`` column leaves a tool's result out (``content`` null) for the run's
    environment to compute."""
    if "solution" not in rows.column_names:
        return False
    return any(is_trace(solution) and any(message.get("role") == "tool" and message.get("content") is None
                                          for message in solution) for solution in rows["solution"])


def _target_ids(encoder: PromptEncoder, rows: Dataset,
                environment: Any = None) -> list[tuple[list[int], list[int], ImageInputs | None]]:
    """Each row's ``solution`` as ``(IDs after the prompt, mask of the IDs trained on (empty: all of them), the
    processed images of its tool results (None: none))``."""
    solutions = rows["solution"]
    traces = [is_trace(solution) for solution in solutions]
    prompts = rows["prompt"] if any(traces) and "prompt" in rows.column_names else [None] * len(rows)
    eos = encoder.tokenizer.eos_token_id
    targets = []
    for index, (prompt, solution, trace) in enumerate(zip(prompts, solutions, traces, strict=True)):
        if not trace:
            targets.append((encoder.answer_ids(solution) + [eos], [], None))
        elif isinstance(prompt, list) and not is_token_ids(prompt):
            # A result left to the environment needs the row (an image tool crops the row's image).
            tools = None
            if environment is not None and any(message.get("role") == "tool" and message.get("content") is None
                                               for message in solution):
                tools, observation = row_tools(environment, select_rows(rows, [index])[0])
                if observation is not None:
                    raise ValueError("warmstart: the environment's reset() adds to the prompt, which a demonstration "
                                     "cannot show; give the demonstration's tool results instead")
            laid_out = trajectory(encoder, prompt, solution, tools)
            targets.append((laid_out.ids, laid_out.mask, encoder.process_images(laid_out.images)))
        else:
            raise ValueError("warmstart: a solution given as chat messages needs the row's chat prompt ('prompt' as "
                             "messages) to lay the conversation out")
    return targets


def _collate(prompt_ids: list[list[int]], solutions: list[tuple[list[int], list[int]]], pad_token_id: int):
    """Right-padded ``prompt + solution`` with labels on the solution only (and there only where its mask, when it
    has one, is 1: tool results are context, not targets).

    Right padding: positions are absolute from 0 for every row, matching how prompts start at generation time once
    left padding is removed by the attention mask.
    """
    length = max(len(p) + len(ids) for p, (ids, _) in zip(prompt_ids, solutions, strict=True))
    input_ids = torch.full((len(prompt_ids), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(prompt_ids), length), -100, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), length), dtype=torch.long)
    for i, (prompt, (solution, mask)) in enumerate(zip(prompt_ids, solutions, strict=True)):
        sequence = prompt + solution
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        targets = [token if trained else -100 for token, trained in zip(solution, mask, strict=True)] if mask \
            else solution
        labels[i, len(prompt) : len(sequence)] = torch.tensor(targets)
        attention[i, : len(sequence)] = 1
    return input_ids, labels, attention


def _exact_match(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose every solution token is the argmax given the true prefix (= greedy gets it right)."""
    predicted, targets = logits[:, :-1].argmax(-1), labels[:, 1:]
    wrong = ((predicted != targets) & (targets != -100)).any(dim=1)
    return 1.0 - wrong.float().mean().item()
