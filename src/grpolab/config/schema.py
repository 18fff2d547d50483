"""Typed schemas for grpolab's own knobs, registered in Hydra's ConfigStore as the base of ``train.yaml``.

Each schema checks its own values in ``__post_init__``, which runs on the composed values (``OmegaConf.to_object``,
in ``grpolab.config.validate``); composing instantiates none, so ``???`` waits for the config to be complete. The
``trainer`` node is ``TrainerConfig``, generated from ``trl.GRPOConfig``'s fields (``grpolab.config.trainer_node``).
Nodes that name a ``_target_`` (models, tasks, optimizers, rewards, loggers) are typed by what they instantiate, not
mirrored here. Imports no torch, transformers or trl.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from grpolab.config.batch import BatchSpec
from grpolab.config.checks import at_least, or_null, require
from grpolab.config.enums import DType, Modality, RewardLevel
from grpolab.config.errors import ConfigError
from grpolab.config.trainer_node import TRL_FIELDS, DistributedConfig, GenerationConfig, TrainerConfig

#: The launch time every process of a multi-process launch agreed on (ISO 8601); unset for a single process.
LAUNCH_TIME_VARIABLE = "GRPOLAB_LAUNCH_TIME"
SEED_MAX = 2**32 - 1  # numpy's seed range, which transformers.set_seed also seeds


@dataclass
class PathsConfig:
    cache_dir: str = MISSING


@dataclass
class ModelConfig:
    """A model preset. ``modality`` is the one place that says whether the model reads images."""

    modality: Modality = MISSING
    name_or_path: Optional[str] = None
    dtype: DType = DType.float32
    attn_implementation: Optional[str] = None
    context_length: Optional[int] = None
    tokenizer: Any = MISSING
    network: Any = MISSING

    def __post_init__(self) -> None:
        bounds = self.tokenizer if isinstance(self.tokenizer, Mapping) else {}
        low, high = bounds.get("min_pixels"), bounds.get("max_pixels")
        if low is not None and high is not None and not low <= high:
            raise ConfigError(f"model.tokenizer.min_pixels={low} must be <= model.tokenizer.max_pixels={high}")


@dataclass
class SchedulerConfig:
    """The learning-rate schedule (``GRPOConfig.lr_scheduler_type``) and its linear warm-up in optimizer steps."""

    name: str = MISSING
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        schedules = TRL_FIELDS["lr_scheduler_type"].choices
        require("scheduler.name", self.name, schedules.__contains__, f"one of {', '.join(schedules)}")
        require("scheduler.warmup_steps", self.warmup_steps, at_least(0), "an integer >= 0 (optimizer steps of "
                "linear warm-up)")


@dataclass
class DynamicSamplingConfig:
    """DAPO's dynamic sampling (arXiv 2503.14476, Sec. 3.2): refill the batch with groups of unequal rewards."""

    enabled: bool = False
    max_generation_rounds: int = 4

    def __post_init__(self) -> None:
        require("dynamic_sampling.max_generation_rounds", self.max_generation_rounds, at_least(1), "an integer >= 1")


@dataclass
class EvalConfig:
    """Greedy held-out evaluation before and after GRPO, and every ``every_steps`` optimizer steps (null: never)."""

    num_problems: Optional[int] = None
    batch_size: int = 100
    max_new_tokens: int = MISSING
    every_steps: Optional[int] = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require("eval.batch_size", self.batch_size, at_least(1), "an integer >= 1")
        require("eval.num_problems", self.num_problems, or_null(at_least(1)), "an integer >= 1, or null (the whole "
                "held-out split)")
        require("eval.max_new_tokens", self.max_new_tokens, at_least(1), "an integer >= 1")
        require("eval.every_steps", self.every_steps, or_null(at_least(1)), "an integer >= 1 (optimizer steps between "
                "held-out evaluations), or null (before and after only)")


@dataclass
class TrainConfig:
    """The root. A nested schema's default is its class, not an instance: composing then instantiates none."""

    seed: int = MISSING
    threads: int = 1
    reward_level: RewardLevel = RewardLevel.text
    optimized_metric: str = "eval_after.accuracy"
    resume: bool = False
    trusted_modules: list[str] = field(default_factory=list)
    paths: PathsConfig = PathsConfig
    model: ModelConfig = ModelConfig
    tokenizer_mode: Any = MISSING
    data: Any = MISSING
    rewards: dict[str, Any] = field(default_factory=dict)
    optimizer: Any = MISSING
    scheduler: SchedulerConfig = SchedulerConfig
    warmstart: Any = None
    batch: Optional[BatchSpec] = None
    dynamic_sampling: DynamicSamplingConfig = DynamicSamplingConfig
    trainer: TrainerConfig = TrainerConfig
    distributed: DistributedConfig = DistributedConfig
    generation: GenerationConfig = GenerationConfig
    peft: Any = None
    # The tools (and environment class) of multi-turn rollouts (grpolab.environments.tools.ToolEnvironment); empty
    # (environment=none): single-turn completions.
    environment: Any = None
    logger: Any = MISSING
    eval: EvalConfig = EvalConfig
    stand_ins: Any = None

    def __post_init__(self) -> None:
        require("seed", self.seed, lambda seed: at_least(0)(seed) and seed <= SEED_MAX, f"an integer in [0, {SEED_MAX}]")
        require("threads", self.threads, at_least(1), "an integer >= 1 (torch threads)")
        phase, _, metric = self.optimized_metric.partition(".")
        names = [*self.eval.metrics, "num_samples"]
        if phase in ("eval_before", "eval_after") and metric not in names:  # other summary.json keys: known later
            raise ConfigError(f"optimized_metric={self.optimized_metric} names no held-out metric; valid: "
                              f"{', '.join(f'{phase}.{name}' for name in names)} (the eval.metrics keys)")


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
