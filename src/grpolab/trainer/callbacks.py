"""Trainer callbacks that belong to the training loop itself (run-directory callbacks live in grpolab.tracking)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback


class ParameterChangeCallback(TrainerCallback):
    """Records whether GRPO moved the weights: a cheap fingerprint (the first ``sample`` values of every trainable
    tensor) is copied when training begins and compared when it ends.

    A run whose reward is flat and whose parameters did not change is a silent failure (frozen parameters, zero
    learning rate, every group with zero reward variance); this makes it visible in ``summary.json``.
    """

    def __init__(self, report: Callable[..., Any], sample: int = 1024) -> None:
        self.report = report
        self.sample = sample
        self._before: dict[str, torch.Tensor] = {}

    def _fingerprint(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {
            name: param.detach().flatten()[: self.sample].float().cpu().clone()
            for name, param in model.named_parameters()
            if param.requires_grad
        }

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._before = self._fingerprint(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        after = self._fingerprint(model)
        changes = {name: (after[name] - before).abs().max().item() for name, before in self._before.items()}
        changed = sum(change > 0 for change in changes.values())
        self.report(
            parameters={
                "tensors_checked": len(changes),
                "tensors_changed": changed,
                "max_abs_change": max(changes.values(), default=0.0),
            }
        )
