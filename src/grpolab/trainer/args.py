"""The ``trainer`` node becomes a ``trl.GRPOConfig``: every field is in the node (``grpolab.config.trainer_node``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trl import GRPOConfig

from grpolab.config.errors import ConfigError
from grpolab.config.trainer_node import check_trainer_keys, grpo_kwargs

__all__ = ["build_grpo_config", "check_trainer_keys", "grpo_field_names"]


def grpo_field_names() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(GRPOConfig) if f.init)


def build_grpo_config(trainer: Mapping[str, Any], **owned: Any) -> GRPOConfig:
    """``GRPOConfig(**changed, **owned)``, ``changed`` being the trainer keys that differ from GRPOConfig's defaults.

    ``trainer`` is the resolved trainer node (every GRPOConfig field but the owned ones) merged with the batch-derived
    fields; ``owned`` are the fields other nodes set (learning_rate, reward_weights, report_to, output_dir, seed).
    GRPOConfig's own validation errors come back as one ``ConfigError`` line.
    """
    check_trainer_keys(trainer)
    try:
        return GRPOConfig(**grpo_kwargs(trainer), **owned)
    except (ValueError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"trainer: trl.GRPOConfig rejected the trainer node: {first_line}") from error
