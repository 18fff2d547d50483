"""Checks on the composed config that need no model, tokenizer or dataset: they run first and fail in one line.

Every error is a ``ConfigError`` whose message names the config key, what is wrong and what would be valid.
Importing this module imports no torch, transformers or trl.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from hydra.errors import InstantiationException

from omegaconf import DictConfig, OmegaConf

from grpolab.config.batch import BatchSpec, BatchSpecError, derive_grpo_fields

#: trainer keys that have another home in grpolab's config, with that home.
OWNED_ELSEWHERE = {
    "learning_rate": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "optim": "the optimizer group (optimizer=adamw|sgd|adafactor)",
    "optim_args": "the optimizer group (optimizer=adamw|sgd|adafactor)",
    "adam_beta1": "optimizer.betas",
    "adam_beta2": "optimizer.betas",
    "adam_epsilon": "optimizer.eps",
    "reward_weights": "rewards.<name>.weight",
    "report_to": "the logger group (logger=wandb|tensorboard|none)",
    "output_dir": "hydra.run.dir / hydra.sweep.dir",
    "seed": "seed",
    "lr_scheduler_type": "the scheduler group (scheduler=constant|linear|cosine)",
    "warmup_steps": "scheduler.warmup_steps",
}
#: trainer keys derived from the ``batch`` node when it is set.
BATCH_DERIVED = {
    "per_device_train_batch_size": "batch.micro_batch_size / batch.prompts_per_step",
    "gradient_accumulation_steps": "batch.updates_per_rollout and batch.micro_batch_size",
    "steps_per_generation": "batch.updates_per_rollout",
    "generation_batch_size": "batch.prompts_per_step",
    "num_generations": "batch.generations_per_prompt",
    "num_iterations": "batch.num_iterations",
}


class ConfigError(ValueError):
    """A configuration mistake, reported as one line naming the key and the valid choices."""


def closest(word: str, choices: Collection[str], n: int = 3) -> str:
    """``"did you mean: a, b"`` for the closest choices, or ``""``.

    >>> closest("num_generation", ["num_generations", "beta"])
    'did you mean: num_generations'
    """
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f"did you mean: {', '.join(matches)}" if matches else ""


def validate(cfg: DictConfig, num_processes: int = 1) -> dict[str, Any]:
    """Check everything that can be checked from the config alone; return the derived batch fields (may be empty)."""
    _check_learning_rate(cfg.optimizer)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    _check_owned_keys(trainer)
    derived = _derive_batch(cfg.batch, trainer, num_processes)
    _check_group_division({**trainer, **derived}, num_processes)
    if cfg.eval.num_problems is not None and cfg.eval.num_problems <= 0:
        raise ConfigError(f"eval.num_problems={cfg.eval.num_problems} must be positive or null (whole held-out split)")
    if not cfg.rewards:
        raise ConfigError("rewards is empty; select at least one, e.g. rewards=[accuracy,format]")
    if cfg.dynamic_sampling.enabled and cfg.dynamic_sampling.max_generation_rounds < 1:
        raise ConfigError("dynamic_sampling.max_generation_rounds must be at least 1")
    return derived


def _check_learning_rate(optimizer: Mapping[str, Any]) -> None:
    if "lr" not in optimizer:
        raise ConfigError("optimizer.lr is missing; the optimizer node owns the learning rate (e.g. optimizer.lr=1e-5)")
    lr = optimizer["lr"]
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r} must be a positive finite number (e.g. optimizer.lr=3e-5)")


def _check_owned_keys(trainer: Mapping[str, Any]) -> None:
    for key, home in OWNED_ELSEWHERE.items():
        if key in trainer:
            raise ConfigError(f"trainer.{key} is not set in the trainer node; set {home} instead")


def _derive_batch(batch: DictConfig | None, trainer: Mapping[str, Any], num_processes: int) -> dict[str, Any]:
    if batch is None:
        return {}
    clashes = [key for key in BATCH_DERIVED if key in trainer]
    if clashes:
        key = clashes[0]
        raise ConfigError(
            f"trainer.{key} is derived from the batch node; set {BATCH_DERIVED[key]} instead (or batch=null to "
            "give TRL's batch fields directly)"
        )
    try:
        return derive_grpo_fields(BatchSpec.from_mapping(batch), num_processes)
    except BatchSpecError as error:
        raise ConfigError(str(error)) from None


def _check_group_division(trainer: Mapping[str, Any], num_processes: int) -> None:
    """TRL needs whole groups per generation batch; say so before TRL's own, later, error."""
    generations = trainer.get("num_generations", 8)
    per_device = trainer.get("per_device_train_batch_size", 8)
    steps = trainer.get("steps_per_generation") or trainer.get("gradient_accumulation_steps", 1)
    generation_batch = trainer.get("generation_batch_size") or per_device * num_processes * steps
    if generations < 2 or generation_batch % generations:
        raise ConfigError(
            f"trainer.num_generations={generations} must be at least 2 and divide the generation batch of "
            f"{generation_batch} completions (per_device_train_batch_size={per_device} x {num_processes} processes x "
            f"steps_per_generation={steps}); valid group sizes: "
            f"{', '.join(str(d) for d in range(2, generation_batch + 1) if generation_batch % d == 0)}"
        )


@contextmanager
def config_errors(key: str) -> Iterator[None]:
    """Report a ``ValueError``/``FileNotFoundError`` raised while building ``key`` as a one-line ``ConfigError``.

    Hydra wraps errors raised by a ``_target_`` in an ``InstantiationException`` whose message spans several lines;
    the original error is its cause, and that is what the user needs to read.
    """
    try:
        yield
    except ConfigError:
        raise
    except InstantiationException as error:
        cause = error.__cause__ or error
        if not isinstance(cause, (ValueError, FileNotFoundError, TypeError)):
            raise
        raise ConfigError(f"{key}: {_one_line(cause)}") from error
    except (ValueError, FileNotFoundError) as error:
        message = _one_line(error)
        raise ConfigError(message if message.startswith(key) else f"{key}: {message}") from error


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
