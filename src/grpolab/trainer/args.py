"""The ``trainer`` node becomes a ``trl.GRPOConfig``: every field is in the node (``grpolab.config.trainer_node``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trl import GRPOConfig

from grpolab.config.errors import ConfigError, first_line
from grpolab.config.trainer_node import grpo_kwargs

__all__ = ["build_grpo_config"]


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
