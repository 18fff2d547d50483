"""Typed schemas for grpolab's own knobs, registered in Hydra's ConfigStore as the base of ``train.yaml``.

Only grpolab's knobs are typed here. Nodes that name a ``_target_`` (model builders, tasks, optimizers, rewards,
loggers) are validated by the signature of what they instantiate, and the ``trainer`` node by ``trl.GRPOConfig``
itself, so neither is mirrored. Importing this module imports no torch, transformers or trl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from grpolab.config.enums import Modality, RewardLevel, TokenizerMode

__all__ = ["Modality", "RewardLevel", "TokenizerMode", "TrainConfig", "register_schemas"]


@dataclass
class PathsConfig:
    cache_dir: str = MISSING


@dataclass
class ModelConfig:
    """A model preset. ``modality`` is the one place that says whether the model reads images."""

    modality: Modality = MISSING
    name_or_path: Optional[str] = None
    dtype: str = "float32"
    attn_implementation: Optional[str] = None
    tokenizer: Any = MISSING
    network: Any = MISSING


@dataclass
class SchedulerConfig:
    """The learning-rate schedule (``GRPOConfig.lr_scheduler_type``) and its linear warm-up in optimizer steps."""

    name: str = MISSING
    warmup_steps: int = 0


@dataclass
class BatchConfig:
    """Paper batch terms; see ``grpolab.config.batch.BatchSpec``."""

    prompts_per_step: int = MISSING
    generations_per_prompt: int = MISSING
    updates_per_rollout: int = 1
    num_iterations: int = 1
    micro_batch_size: Optional[int] = None


@dataclass
class DynamicSamplingConfig:
    """DAPO's dynamic sampling (arXiv 2503.14476, Sec. 3.2): refill the batch with groups of unequal rewards."""

    enabled: bool = False
    max_generation_rounds: int = 4


@dataclass
class EvalConfig:
    """Greedy held-out evaluation before and after GRPO."""

    num_problems: Optional[int] = None
    batch_size: int = 100
    max_new_tokens: int = MISSING
    # name -> reward definition (conf/rewards options, scored at text level) whose held-out mean is reported.
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    seed: int = MISSING
    threads: int = 1
    reward_level: RewardLevel = RewardLevel.text
    optimized_metric: str = "eval_after.accuracy"
    resume: bool = False
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The prompt preparation of the tokenizer mode (grpolab.data.prepare.TextPrompts / TokenIdPrompts).
    tokenizer_mode: Any = MISSING
    data: Any = MISSING
    rewards: dict[str, Any] = field(default_factory=dict)
    optimizer: Any = MISSING
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    warmstart: Any = None
    batch: Optional[BatchConfig] = None
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: Any = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    # debug=smoke only: the tiny models and tasks that stand in for an experiment's, by model.modality.
    stand_ins: Any = None


def register_schemas() -> None:
    """Register ``TrainConfig`` as ``grpolab_schema`` (the first entry of ``train.yaml``'s defaults)."""
    ConfigStore.instance().store(name="grpolab_schema", node=TrainConfig)
