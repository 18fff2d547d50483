"""Held-out evaluation: greedy decoding of every held-out prompt, scored by reward definitions at text level.

Prompts go through the run's :class:`~grpolab.data.prompts.PromptEncoder` (the trainer's chat template arguments,
the tools, image rows with their pixels), so the evaluation sees each prompt exactly as training renders it. With an
``environment`` the completions are multi-turn: the tool calls are executed as in training
(:class:`~grpolab.trainer.multiturn.ToolRollout`), the metrics read the messages TRL would hand the rewards, and
``tool_call_frequency`` (calls per completion) and ``tool_failure_frequency`` (failed calls per call, TRL's
``tools/*`` definitions) are reported too. It runs before and after GRPO, every ``eval.every_steps`` optimizer steps
during it (:class:`PeriodicEvaluation`), and on a saved model (``python -m grpolab.evaluate <run_dir>``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, TrainerCallback

from grpolab.data.prompts import PIXEL_VALUES, PROMPT_IDS, SOURCE_PREFIX, PromptEncoder, select_rows
from grpolab.tracking.processes import launched_processes
from grpolab.trainer.multiturn import Rollout, ToolRollout

log = logging.getLogger(__name__)
# Totals summed over the rows (and processes) on the way to the two tool frequencies.
TOOL_CALLS, TOOL_FAILURES = "tool_calls", "tool_failures"


def text_level(metrics_cfg: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``eval.metrics`` reward definitions pinned to text level: greedy completions are decoded anyway, and a
    held-out figure must not change its meaning with the run's ``reward_level``.

    >>> text_level({"accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy", "level": "token"}})["accuracy"]
    {'_target_': 'grpolab.rewards.accuracy.Accuracy', 'level': 'text'}
    """
    return {name: {**spec, "level": "text"} if "level" in spec else dict(spec) for name, spec in metrics_cfg.items()}


class HeldOutEvaluator:
    """``evaluator(model)`` -> the mean of each metric over the held-out rows, plus ``num_samples`` and
    ``wall_time_s``. Metrics are reward callables; the rows' other columns (``answer``, images, ...) reach them as
    dataset columns reach rewards. In a multi-process job each process decodes its share of the rows (all of them
    the same number of batches, which FSDP and ZeRO-3 need) and the sums are added up: every process gets the whole
    split's means.
    """

    def __init__(self, rows: Dataset, encoder: PromptEncoder, metrics: Sequence[Callable[..., Any]],
                 max_new_tokens: int, batch_size: int, environment: Any = None) -> None:
        self.rows = rows
        self.encoder = encoder
        self.metrics = list(metrics)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.rollout = None if environment is None else ToolRollout(encoder, environment, max_new_tokens)
        self.processes = launched_processes()
        # Cached pixels are model input, not something a metric reads; ids-form images go back to TRL's names.
        self.columns = {
            name.removeprefix(SOURCE_PREFIX): rows[name]
            for name in rows.column_names if name not in ("prompt", PROMPT_IDS, PIXEL_VALUES)
        }

    @classmethod
    def from_config(cls, eval_cfg: Any, rows: Dataset, encoder: PromptEncoder,
                    environment: Any = None) -> HeldOutEvaluator:
        """The ``eval`` node's evaluator: its first ``num_problems`` rows (all when null), its metrics, the run's
        ``environment`` (``grpolab.environments.tools.ToolEnvironment`` or None)."""
        from omegaconf import OmegaConf

        from grpolab.rewards import build_rewards

        if eval_cfg.num_problems is not None:
            rows = rows.select(range(min(eval_cfg.num_problems, len(rows))))
        metrics = build_rewards(text_level(OmegaConf.to_container(eval_cfg.metrics, resolve=True)), "text").funcs
        return cls(rows, encoder, metrics, eval_cfg.max_new_tokens, eval_cfg.batch_size, environment)

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def __call__(self, model: PreTrainedModel) -> dict[str, float]:
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        pad_id = self.encoder.tokenizer.pad_token_id
        device = next(model.parameters()).device
        totals: dict[str, float] = {}
        shard, counted = self.processes.shard(len(self.rows))
        for start in range(0, len(shard), self.batch_size):
            indices = shard[start:start + self.batch_size]
            rows = select_rows(self.rows, indices)
            prompts = self.encoder.encode(rows)
            if self.rollout is not None:
                scores = self._score_rollouts(self.rollout(model, prompts.prompt_ids, rows, prompts.images), indices)
            else:
                width = max(len(ids) for ids in prompts.prompt_ids)
                input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts.prompt_ids],
                                         device=device)
                attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts.prompt_ids],
                                         device=device)
                output = model.generate(input_ids=input_ids, attention_mask=attention,
                                        max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                        **prompts.model_inputs(input_ids, model))
                eos = model.generation_config.eos_token_id
                completions = [_strip_after_eos(ids, eos) for ids in output[:, width:].tolist()]
                texts = self.encoder.tokenizer.batch_decode(completions, skip_special_tokens=True)
                scores = self._score(texts, completions, indices)
            for key, values in scores.items():
                totals[key] = totals.get(key, 0.0) + float(sum(values[: max(0, counted - start)]))
        totals = self.processes.sum(totals)
        model.train(was_training)
        calls, failures = totals.pop(TOOL_CALLS, None), totals.pop(TOOL_FAILURES, None)
        metrics = {key: round(value / len(self.rows), 4) for key, value in totals.items()}
        if calls is not None:
            metrics["tool_call_frequency"] = round(calls / len(self.rows), 4)
            metrics["tool_failure_frequency"] = round(failures / calls, 4) if calls else 0.0
        metrics.update(num_samples=len(self.rows), wall_time_s=round(time.perf_counter() - started, 2))
        return metrics

    def _score(self, completions: list[Any], completion_ids: list[list[int]], indices: list[int],
               **extra: list[Any]) -> dict[str, list[float]]:
        columns = {name: [values[i] for i in indices] for name, values in self.columns.items()}
        return {
            metric.__name__: [0.0 if value is None else float(value) for value in metric(
                prompts=[None] * len(completions), completions=completions, completion_ids=completion_ids,
                **columns, **extra)]
            for metric in self.metrics
        }

    def _score_rollouts(self, rollouts: list[Rollout], indices: list[int]) -> dict[str, list[float]]:
        """Metrics on the messages (as TRL hands text rewards) and the tool mask (as token rewards get it), and the
        tool calls and failures of each completion."""
        scores = self._score([rollout.messages for rollout in rollouts], [r.completion_ids for r in rollouts],
                             indices, tool_mask=[rollout.tool_mask for rollout in rollouts])
        scores[TOOL_CALLS] = [float(rollout.tool_calls) for rollout in rollouts]
        scores[TOOL_FAILURES] = [float(rollout.tool_failures) for rollout in rollouts]
        return scores


def _strip_after_eos(ids: list[int], eos: int | list[int]) -> list[int]:
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1]
    return ids


class PeriodicEvaluation(TrainerCallback):
    """``eval.every_steps``: the held-out evaluation every that many optimizer steps during training, logged the way
    the Trainer logs its own evaluations (``log``: ``GrpolabTrainer.log_held_out``), so ``metrics.jsonl`` gets a
    ``{"split": "eval", "step": N, "accuracy": ...}`` row and the logger ``eval/accuracy``. Not at the last step:
    ``eval_after`` is that evaluation. Greedy decoding draws no random numbers, so evaluating changes no training step.
    """

    def __init__(self, evaluate: HeldOutEvaluator, every_steps: int, log: Callable[[dict[str, float]], None]) -> None:
        if every_steps < 1:
            raise ValueError(f"eval.every_steps must be a positive number of steps or null, got {every_steps}")
        self.evaluate = evaluate
        self.every_steps = every_steps
        self.log = log

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every_steps == 0 and state.global_step < state.max_steps:
            metrics = self.evaluate(model)
            log.info("held-out at step %d: %s", state.global_step, metrics)
            self.log(metrics)
