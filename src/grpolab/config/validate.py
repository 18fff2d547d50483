"""Checks on the composed config that need no model, tokenizer or dataset: they run first and fail in one line.

Every error is a ``ConfigError`` whose message names the config key, the value and what would be valid. The job runs
``validate`` before building anything; preflight runs it too (``import_targets=False``) on the command line's
values, so a sweep with one bad value fails before its first job starts. Importing this module imports no torch,
transformers or trl, and neither does ``validate`` until its last step, which follows each ``_target_`` into its
(trusted) module.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from hydra.errors import InstantiationException

from omegaconf import DictConfig, OmegaConf

from grpolab.config.batch import BatchSpec, BatchSpecError, derive_grpo_fields
from grpolab.config.engine_checks import check_engines
from grpolab.config.errors import ConfigError
from grpolab.config.targets import check_resolved_targets, check_trusted_targets
from grpolab.config.trainer_node import BATCH_DERIVED, OWNED_ELSEWHERE, check_trainer_keys, trainer_value
from grpolab.config.value_checks import check_required_values, check_run_values, check_trainer_values

__all__ = ["BATCH_DERIVED", "OWNED_ELSEWHERE", "ConfigError", "config_errors", "validate"]


def validate(cfg: DictConfig, num_processes: int = 1, *, import_targets: bool = True) -> dict[str, Any]:
    """Check everything that can be checked from the config alone; return the derived batch fields (may be empty).

    ``num_processes`` is the job's process count (``grpolab.tracking.processes.launched_processes().world_size``):
    ``batch.*`` are global numbers, and each process's micro batches are derived for that many processes.

    With ``import_targets`` (the job) the ``_target_``s are also followed into their modules
    (``grpolab.config.targets.check_resolved_targets``), which imports them; preflight skips that step.
    """
    check_trusted_targets(cfg)
    check_required_values(cfg)
    _check_learning_rate(cfg.optimizer)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_trainer_keys(trainer)
    derived = _derive_batch(cfg.batch, trainer, num_processes)
    engines = {**OmegaConf.to_container(cfg.generation, resolve=True),
               **OmegaConf.to_container(cfg.distributed, resolve=True)}
    check_trainer_values({**trainer, **derived, **engines})
    _check_group_division({**trainer, **derived}, num_processes)
    if not cfg.rewards:
        raise ConfigError("rewards is empty; select at least one, e.g. rewards=[accuracy,format]")
    check_run_values(cfg)
    check_engines(cfg)
    if import_targets:
        check_resolved_targets(cfg)
    return derived


def _check_learning_rate(optimizer: Mapping[str, Any]) -> None:
    if "lr" not in optimizer:
        raise ConfigError("optimizer.lr is missing; the optimizer node owns the learning rate (e.g. optimizer.lr=1e-5)")
    lr = optimizer["lr"]
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r} must be a positive finite number (e.g. optimizer.lr=3e-5)")


def _derive_batch(batch: DictConfig | None, trainer: Mapping[str, Any], num_processes: int) -> dict[str, Any]:
    if batch is None:
        return {}
    clashes = [key for key in BATCH_DERIVED if trainer.get(key) is not None]
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
    generations = trainer_value(trainer, "num_generations")
    per_device = trainer_value(trainer, "per_device_train_batch_size")
    steps = trainer_value(trainer, "steps_per_generation") or trainer_value(trainer, "gradient_accumulation_steps")
    generation_batch = trainer_value(trainer, "generation_batch_size") or per_device * num_processes * steps
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
