"""The ``trainer`` node becomes a ``trl.GRPOConfig``: keys are GRPOConfig field names, checked with suggestions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trl import GRPOConfig

from grpolab.config.validate import ConfigError, closest


def grpo_field_names() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(GRPOConfig) if f.init)


def check_trainer_keys(trainer: Mapping[str, Any]) -> None:
    """Reject keys that are not GRPOConfig fields, naming the closest valid ones."""
    valid = grpo_field_names()
    for key in trainer:
        if key not in valid:
            hint = closest(key, valid)
            raise ConfigError(
                f"trainer.{key} is not a trl.GRPOConfig field" + (f"; {hint}" if hint else "; see trl.GRPOConfig")
            )


def build_grpo_config(trainer: Mapping[str, Any], **owned: Any) -> GRPOConfig:
    """``GRPOConfig(**trainer, **owned)``; its own validation errors come back as one ``ConfigError`` line."""
    check_trainer_keys(trainer)
    try:
        return GRPOConfig(**trainer, **owned)
    except (ValueError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"trainer: trl.GRPOConfig rejected the trainer node: {first_line}") from error
