"""DAPO dynamic sampling (Yu et al. 2025, arXiv 2503.14476, Sec. 3.2, Eq. 11, Algorithm 1) for TRL's GRPOTrainer.

A prompt group whose completions all receive the same reward has advantages that are exactly zero, so it adds no
policy gradient, yet it still fills a slot of the batch (and dilutes the token-mean normaliser). DAPO drops such
groups and keeps sampling until the batch holds only informative groups. TRL 1.16 has no such option.

``DynamicSampler`` is a hook of ``grpolab.trainer.grpo.GrpolabTrainer`` (the one module that overrides TRL's
private methods): in training, the trainer hands it each generation batch and it scores one *generation round* at a
time through ``trainer.score_round``, judging groups by the rewards the trainer kept (``last_rewards_per_func``,
gathered over processes). After each round the uninformative groups are set aside; while fewer informative groups
than the round size have been collected, another round is generated from freshly drawn prompts, up to
``max_generation_rounds`` rounds. The rounds' scored batches are then concatenated (prompts re-padded on the left,
completions and per-token tensors on the right) into one batch of the usual size, which TRL shuffles and splits as
always. When re-padding changed a round's layout, the stored policy/reference log-probs are recomputed on the final
layout (TRL's fused LM head is layout-sensitive at the 1e-4 level, and an on-policy importance ratio must be exactly
1). How each key of TRL's scored batch is selected and concatenated is ``grpolab.trainer.scored_batches``; the refill
prompt stream is ``grpolab.trainer.refill_prompts.RefillPrompts``.

Decisions, all visible in the metrics:

* A group is uninformative when its rewards are all equal: the weighted reward sum for TRL's default
  ``multi_objective_aggregation="sum_then_normalize"``, every reward function separately for
  ``normalize_then_sum``. That is exactly when TRL gives it zero advantages. With ``filter_reward`` set, only that
  reward function counts: DAPO (Eq. 11 and its code) filters on accuracy, so a group that is all wrong but varies in
  its overlong penalty is dropped there and kept by the default.
* Every round generates as many prompts as the first (DAPO's code also generates fixed-size rounds); informative
  groups beyond the batch size are discarded, earliest rounds first kept.
* When the round cap is reached, the batch is topped up with uninformative groups (zero advantages, so no policy
  gradient) instead of shrinking, because TRL splits the batch into equal micro batches and processes must agree on
  sizes. DAPO's code raises an error instead. ``dynamic_sampling/groups_filled`` counts these.
* Refill prompts come from the train dataset in shuffled epochs of their own (seeded from ``args.seed``), each
  repeated ``num_generations`` times like TRL's ``RepeatSampler``; the main dataloader is not advanced, so epochs and
  ``max_steps`` keep counting optimizer steps as usual. With several processes every process draws a disjoint slice
  of the same permutation. A checkpoint keeps the stream's position (``refill_position``), so a resumed run draws
  the refill prompts the uninterrupted run would have drawn.
* Advantages are those TRL computed in each round. They are per group for ``scale_rewards`` ``group``/``none``, so
  concatenation leaves them exact; with ``scale_rewards="batch"`` each round's groups are scaled by that round's std.

Metrics (``_metrics["train"]``, averaged per logging step, so they reach ``metrics.jsonl``):
``dynamic_sampling/generation_rounds``, ``dynamic_sampling/groups_dropped`` (groups with all-equal rewards generated
in the step, summed over processes) and ``dynamic_sampling/groups_filled`` (of those, how many had to be used to top
up the batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid, use_adapter

from grpolab.config.schema import DynamicSamplingConfig
from grpolab.trainer.refill_prompts import RefillPrompts
from grpolab.trainer.scored_batches import concatenate_scored_batches, num_rows, take_rows

#: Batch keys TRL passes to ``_get_per_token_logps_and_entropies`` besides IDs and masks.
VISION_FORWARD_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)

# Rewards closer than this count as equal (float sums of identical terms are exact; this only absorbs noise).
_EQUAL_REWARD_ATOL = 1e-6


@dataclass(frozen=True)
class DynamicSamplingSettings:
    """Dynamic sampling as the trainer runs it.

    Attributes:
        max_generation_rounds: generation rounds per rollout at most (the first included).
        filter_reward: judge groups by this reward function alone (DAPO Eq. 11 uses accuracy); None judges the
            rewards TRL turns into advantages, so exactly the zero-advantage groups are dropped.
    """

    max_generation_rounds: int
    filter_reward: str | None = None

    @classmethod
    def from_config(cls, node: DynamicSamplingConfig | Mapping[str, Any] | None) -> DynamicSamplingSettings | None:
        """Settings from the ``dynamic_sampling`` config node; None when it is absent or ``enabled`` is false.

        >>> DynamicSamplingSettings.from_config({"enabled": True, "max_generation_rounds": 3})
        DynamicSamplingSettings(max_generation_rounds=3, filter_reward=None)
        >>> DynamicSamplingSettings.from_config(DynamicSamplingConfig(enabled=False)) is None
        True
        """
        if node is None:
            return None
        if isinstance(node, Mapping):
            read = node.get  # DictConfig too; an absent optional key reads as None
        else:
            def read(key: str) -> Any:
                return getattr(node, key, None)
        if not read("enabled"):
            return None
        # max_generation_rounds >= 1: DynamicSamplingConfig's own check (grpolab.config.schema), run by validate.
        return cls(max_generation_rounds=read("max_generation_rounds"), filter_reward=read("filter_reward"))


@dataclass
class _Round:
    """One generation round's scored batch (split per sample) and the indices of its informative groups."""

    batch: dict[str, Any]
    informative: list[int]
    uninformative: list[int]


class DynamicSampler:
    """DAPO dynamic sampling as a hook of ``GrpolabTrainer``: the trainer hands it each generation batch in training
    (``sample``) and it calls ``trainer.score_round`` once per generation round.

    >>> sampler = DynamicSampler.from_config({"enabled": True, "max_generation_rounds": 4})
    >>> sampler.settings.max_generation_rounds
    4
    """

    def __init__(self, settings: DynamicSamplingSettings) -> None:
        self.settings = settings
        self._refill: RefillPrompts | None = None

    @classmethod
    def from_config(cls, node: DynamicSamplingConfig | Mapping[str, Any] | None) -> DynamicSampler | None:
        """A sampler for the ``dynamic_sampling`` config node; None when it is absent or ``enabled`` is false."""
        settings = DynamicSamplingSettings.from_config(node)
        return None if settings is None else cls(settings)

    def check(self, trainer: Any) -> None:
        """Refuse, when the trainer is built, what the sampler could only fail on mid-training."""
        name = self.settings.filter_reward
        if name is not None and name not in trainer.reward_func_names:
            raise ValueError(
                f"dynamic_sampling.filter_reward={name!r} is not one of the run's rewards: {trainer.reward_func_names}"
            )
        dataset = trainer.train_dataset
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ValueError(
                "dynamic_sampling needs a map-style train dataset (indexable, with a length) to draw refill "
                f"prompts from; got {type(dataset).__name__}"
            )

    # --- the refill loop ---------------------------------------------------------------------------------------

    def sample(self, trainer: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """One batch of the usual size holding informative groups, from as many generation rounds as allowed."""
        group_size = trainer.num_generations
        if len(inputs) % group_size:
            raise ValueError(
                f"dynamic sampling needs whole prompt groups on each process: the local generation batch has "
                f"{len(inputs)} samples, not a multiple of num_generations={group_size}; choose a batch whose "
                "per-process share of a rollout is a multiple of the group size"
            )
        wanted = len(inputs) // group_size
        rounds: list[_Round] = []
        round_inputs = inputs
        while True:
            output = trainer.score_round(round_inputs)
            informative = self._informative_groups(trainer, len(round_inputs)).tolist()
            rounds.append(_Round(
                batch=split_pixel_values_by_grid(output),
                informative=[g for g, ok in enumerate(informative) if ok],
                uninformative=[g for g, ok in enumerate(informative) if not ok],
            ))
            collected = sum(len(r.informative) for r in rounds)
            # Every process generates in every round (generation and scoring gather across processes).
            capped = len(rounds) >= self.settings.max_generation_rounds
            if capped or not _any_process(trainer, collected < wanted):
                break
            round_inputs = self._refill_inputs(trainer, wanted)

        pieces, filled = [], 0
        for source in ("informative", "uninformative"):
            for scored in rounds:
                missing = wanted - sum(num_rows(piece) for piece in pieces) // group_size
                groups = getattr(scored, source)[:missing]
                if groups:
                    rows = [g * group_size + i for g in groups for i in range(group_size)]
                    pieces.append(take_rows(scored.batch, rows))
                    filled += len(groups) if source == "uninformative" else 0
        batch = concatenate_scored_batches(pieces, trainer._tokenizer.pad_token_id)
        loss_mask = batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]
        batch["num_items_in_batch"] = trainer.accelerator.gather(loss_mask.sum()).sum()
        batch = unsplit_pixel_values_by_grid(batch)
        widths = {(piece["prompt_ids"].size(1), piece["completion_ids"].size(1)) for piece in pieces}
        # Decided together: under FSDP/ZeRO-3 a forward pass needs every process.
        if _any_process(trainer, widths != {(batch["prompt_ids"].size(1), batch["completion_ids"].size(1))}):
            _rescore_stored_log_probs(trainer, batch)
        _log_dynamic_sampling(trainer, len(rounds), sum(len(r.uninformative) for r in rounds), filled)
        return batch

    def _informative_groups(self, trainer: Any, local_samples: int) -> torch.Tensor:
        """Which of this process's groups in the round just scored have unequal rewards (bool, one per group)."""
        rewards = trainer.last_rewards_per_func
        if rewards is None:
            raise RuntimeError("dynamic sampling: TRL scored a batch without calling _calculate_rewards")
        start = trainer.accelerator.process_index * local_samples
        local = rewards[start : start + local_samples]
        grouped = local.view(-1, trainer.num_generations, local.size(-1))
        if self.settings.filter_reward is not None:
            column = trainer.reward_func_names.index(self.settings.filter_reward)
            return reward_spread(grouped[..., column]).gt(_EQUAL_REWARD_ATOL)
        if trainer.multi_objective_aggregation == "normalize_then_sum":
            return reward_spread(grouped.transpose(1, 2)).gt(_EQUAL_REWARD_ATOL).any(dim=1)
        weights = trainer.reward_weights.to(local.device)
        total = (grouped * weights).nansum(dim=-1)
        total[torch.isnan(grouped).all(dim=-1)] = torch.nan  # unscorable samples join no baseline in TRL either
        return reward_spread(total).gt(_EQUAL_REWARD_ATOL)

    # --- checkpoints ----------------------------------------------------------------------------------------

    @property
    def refill_position(self) -> int:
        """How many refill prompts the run has drawn (on all processes): what a checkpoint keeps of the sampler."""
        return 0 if self._refill is None else self._refill.consumed

    def resume_refill(self, trainer: Any, position: int) -> None:
        """Continue the refill stream of a checkpointed run that had drawn ``position`` prompts."""
        if position:
            self._refill_stream(trainer).fast_forward(position)

    def _refill_stream(self, trainer: Any) -> RefillPrompts:
        if self._refill is None:
            self._refill = RefillPrompts(
                len(trainer.train_dataset), seed=trainer.args.seed + 1,
                num_processes=trainer.accelerator.num_processes, process_index=trainer.accelerator.process_index,
            )
        return self._refill

    def _refill_inputs(self, trainer: Any, num_prompts: int) -> list[dict[str, Any]]:
        """``num_prompts`` fresh prompts from the train dataset, each repeated ``num_generations`` times."""
        self._refill_stream(trainer)
        collate = trainer._get_collator_with_removed_columns(trainer.data_collator, description="dynamic sampling")
        rows = [trainer.train_dataset[index] for index in self._refill.take(num_prompts)]
        return collate([row for row in rows for _ in range(trainer.num_generations)])


def _rescore_stored_log_probs(trainer: Any, batch: dict[str, Any]) -> None:
    """Recompute the stored policy and reference log-probs on the concatenated layout.

    TRL's fused LM head returns log-probs that depend slightly (~1e-4 here) on how a row is padded, and TRL relies
    on the stored ``old_per_token_logps`` and the loss forward seeing the same layout (ratio exactly 1 on the
    first update). Re-padded rows would break that, so both are recomputed here, the way TRL computes them.
    (A vLLM ``importance_sampling_ratio`` stays as computed in its round.)
    """
    needed = [key for key in ("old_per_token_logps", "ref_per_token_logps") if batch.get(key) is not None]
    if not needed:
        return
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    forward = {key: batch.get(key) for key in VISION_FORWARD_KEYS}

    def log_probs(model: Any) -> torch.Tensor:
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, batch["completion_ids"].size(1),
            batch_size=trainer.args.per_device_train_batch_size, **forward,
        )
        return logps

    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        if "old_per_token_logps" in needed:
            batch["old_per_token_logps"] = log_probs(trainer.model)
        if "ref_per_token_logps" in needed:
            if trainer.ref_model is not None:
                batch["ref_per_token_logps"] = log_probs(trainer.ref_model)
            else:  # PEFT: TRL's reference is the model with the adapter disabled (or the "ref" adapter)
                model = trainer.accelerator.unwrap_model(trainer.model)
                with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
                    batch["ref_per_token_logps"] = log_probs(trainer.model)


def _any_process(trainer: Any, local: bool) -> bool:
    flag = torch.tensor([int(local)], device=trainer.accelerator.device)
    return bool(trainer.accelerator.gather(flag).max().item() > 0)


def _log_dynamic_sampling(trainer: Any, rounds: int, dropped: int, filled: int) -> None:
    totals = torch.tensor([float(dropped), float(filled)], device=trainer.accelerator.device)
    dropped_all, filled_all = trainer.accelerator.gather(totals).view(-1, 2).sum(dim=0).tolist()
    metrics = trainer._metrics["train"]
    metrics["dynamic_sampling/generation_rounds"].append(float(rounds))
    metrics["dynamic_sampling/groups_dropped"].append(dropped_all)
    metrics["dynamic_sampling/groups_filled"].append(filled_all)


def reward_spread(rewards: torch.Tensor) -> torch.Tensor:
    """Max minus min over the last dimension, ignoring NaN; 0 when fewer than two values are finite.

    >>> reward_spread(torch.tensor([[1.0, 1.0], [0.0, 2.0], [float("nan"), 3.0]])).tolist()
    [0.0, 2.0, 0.0]
    """
    finite = ~torch.isnan(rewards)
    high = torch.where(finite, rewards, -torch.inf).amax(dim=-1)
    low = torch.where(finite, rewards, torch.inf).amin(dim=-1)
    return torch.where(finite.sum(dim=-1) >= 2, high - low, torch.zeros_like(high))
