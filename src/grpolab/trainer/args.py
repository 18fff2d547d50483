"""The ``trainer`` node becomes a ``trl.GRPOConfig``: every field is in the node (``grpolab.config.trainer_node``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trl import GRPOConfig

from grpolab.config.errors import ConfigError, first_line
from grpolab.config.trainer_node import BATCH_DERIVED, TRL_DEFAULTS

__all__ = ["build_grpo_config", "grpo_kwargs"]
_ABSENT = object()


def build_grpo_config(trainer: Mapping[str, Any], **owned: Any) -> GRPOConfig:
    """``GRPOConfig(**changed, **owned)``, ``changed`` being the trainer keys that differ from GRPOConfig's defaults.

    ``trainer`` is the resolved trainer node (every GRPOConfig field but the owned ones; its keys were checked by
    ``grpolab.config.validate``) merged with the batch-derived fields; ``owned`` are the fields other nodes set
    (learning_rate, reward_weights, report_to, output_dir, seed). GRPOConfig's own validation errors (the rules it
    owns, e.g. ``generation_batch_size`` and ``steps_per_generation`` both set) come back as one ``ConfigError`` line.
    """
    try:
        return GRPOConfig(**grpo_kwargs(trainer), **owned)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"trainer: trl.GRPOConfig rejected the trainer node: {first_line(error)}") from error


def grpo_kwargs(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """The keys GRPOConfig must receive: those whose value differs from its default (unset batch fields dropped).

    Passing only these keeps GRPOConfig's own defaults (and its None-means-unset logic) in charge of everything the
    config leaves alone, exactly as ``GRPOConfig(**only_what_was_set)`` did before the schema listed every field.

    >>> grpo_kwargs({"beta": 0.0, "temperature": 0.7, "num_generations": None, "logging_steps": 10.0})
    {'temperature': 0.7}
    >>> grpo_kwargs({"warmup_steps": 320.0, "logging_steps": 0.5})
    {'warmup_steps': 320, 'logging_steps': 0.5}
    """
    return {
        key: _as_typed(key, value) for key, value in trainer.items()
        if not (value is None and key in BATCH_DERIVED) and not _same(value, TRL_DEFAULTS.get(key, _ABSENT))
    }


def _as_typed(key: str, value: Any) -> Any:
    """A whole number back as an int where TRL's float field counts steps and defaults to an int (warmup_steps,
    logging_steps, save_steps: ``int or float``, a float below 1 being a fraction of the run): OmegaConf's float
    node turned the YAML's ``320`` into ``320.0``, and GRPOConfig gets the 320 it got before the schema."""
    default = TRL_DEFAULTS.get(key)
    if isinstance(value, float) and value.is_integer() and isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    return value


def _same(value: Any, default: Any) -> bool:
    if default is _ABSENT or isinstance(value, bool) != isinstance(default, bool):
        return False
    if isinstance(value, (int, float)) and isinstance(default, (int, float)):
        return value == default  # OmegaConf turns a float field's 10 into 10.0
    return type(value) is type(default) and value == default
