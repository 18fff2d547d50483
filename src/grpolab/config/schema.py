"""Typed schemas for grpolab's own knobs, registered in Hydra's ConfigStore as the base of ``train.yaml``.

grpolab's knobs are typed here, and the ``trainer`` node by ``TrainerConfig``, generated from ``trl.GRPOConfig``'s
fields (``grpolab.config.trainer_node``). Nodes that name a ``_target_`` (model builders, tasks, optimizers, rewards,
loggers) are validated by the signature of what they instantiate, so they are not mirrored. Importing this module
imports no torch, transformers or trl.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from grpolab.config.enums import Modality, RewardLevel, TokenizerMode
from grpolab.config.trainer_node import DistributedConfig, GenerationConfig, TrainerConfig

__all__ = ["Modality", "RewardLevel", "TokenizerMode", "TrainConfig", "TrainerConfig", "register_schemas"]

#: The launch time every process of a multi-process launch agreed on (ISO 8601); unset for a single process.
LAUNCH_TIME_VARIABLE = "GRPOLAB_LAUNCH_TIME"


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
    # Positions the model attends over (prompt + completion); null: the checkpoint's max_position_embeddings.
    context_length: Optional[int] = None
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
    """Greedy held-out evaluation before and after GRPO, and every ``every_steps`` optimizer steps (null: never)."""

    num_problems: Optional[int] = None
    batch_size: int = 100
    max_new_tokens: int = MISSING
    every_steps: Optional[int] = None
    # name -> reward definition (conf/rewards options, scored at text level) whose held-out mean is reported.
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    seed: int = MISSING
    threads: int = 1
    reward_level: RewardLevel = RewardLevel.text
    optimized_metric: str = "eval_after.accuracy"
    resume: bool = False
    # Modules (beyond grpolab's dependencies) whose callables a `_target_` may name (grpolab.config.targets).
    trusted_modules: list[str] = field(default_factory=list)
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
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # The engine (accelerate DDP/FSDP, DeepSpeed ZeRO) and the generation engine (model.generate, vLLM): GRPOConfig
    # fields under TRL's names, set by the distributed and generation groups.
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # A PEFT config (peft=lora: peft.LoraConfig) that TRL wraps the model with; empty (peft=none): every weight trains.
    peft: Any = None
    # The tools (and environment class) of multi-turn rollouts (grpolab.environments.tools.ToolEnvironment); empty
    # (environment=none): single-turn completions.
    environment: Any = None
    logger: Any = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    # debug=smoke only: the tiny models and tasks that stand in for an experiment's, by model.modality.
    stand_ins: Any = None


def fraction(total: int, share: float) -> int:
    """``${grpolab.fraction:total,share}``: ``share`` of a whole number, rounded down, e.g. a length that must scale
    with ``trainer.max_completion_length``.

    >>> fraction(20480, 0.2), fraction(8, 0.2)
    (4096, 1)
    """
    return int(total * share)


def launch_time(pattern: str) -> str:
    """``${grpolab.now:%H-%M-%S}``: Hydra's ``${now:...}``, except that the processes of a multi-process launch all
    format rank 0's launch time (``GRPOLAB_LAUNCH_TIME``, agreed before Hydra starts by
    ``grpolab.tracking.processes.join_before_hydra``), so that they resolve the same run directory.

    >>> os.environ[LAUNCH_TIME_VARIABLE] = "2024-05-01T12:00:00.000001"
    >>> launch_time("%Y-%m-%d/%H-%M-%S-%f")
    '2024-05-01/12-00-00-000001'
    >>> del os.environ[LAUNCH_TIME_VARIABLE]
    """
    agreed = os.environ.get(LAUNCH_TIME_VARIABLE)
    return (datetime.fromisoformat(agreed) if agreed else datetime.now()).strftime(pattern)


def register_schemas() -> None:
    """Register ``TrainConfig`` as ``grpolab_schema`` (the first entry of ``train.yaml``'s defaults) and grpolab's
    resolvers."""
    ConfigStore.instance().store(name="grpolab_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("grpolab.fraction"):
        OmegaConf.register_new_resolver("grpolab.fraction", fraction)
    if not OmegaConf.has_resolver("grpolab.now"):
        # Cached per config, like Hydra's now: a pattern resolves once per run.
        OmegaConf.register_new_resolver("grpolab.now", launch_time, use_cache=True)
