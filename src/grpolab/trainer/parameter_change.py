"""Whether GRPO moved the weights, and how many of them train: a TrainerCallback that reports into ``summary.json``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback

from grpolab.tracking.processes import launched_processes

log = logging.getLogger(__name__)


def trainable_parameters(model: torch.nn.Module) -> dict[str, Any]:
    """How many of the model's parameters train: ``{"trainable": 3360, "total": 133792, "trainable_fraction":
    0.0251}`` (a tied embedding counted once)."""
    parameters = list(model.parameters())  # unique tensors
    trainable = sum(_numel(p) for p in parameters if p.requires_grad)
    total = sum(_numel(p) for p in parameters)
    return {"trainable": trainable, "total": total, "trainable_fraction": trainable / total if total else 0.0}


def _numel(param: torch.nn.Parameter) -> int:
    return getattr(param, "ds_numel", param.numel())  # a ZeRO-3 parameter holds only its shard (ds_tensor)


def _local(param: torch.nn.Parameter) -> torch.Tensor:
    """This process's values of a parameter: the whole tensor, or its shard under FSDP (DTensor) or ZeRO-3."""
    if hasattr(param, "ds_tensor"):
        return param.ds_tensor
    return param.to_local() if hasattr(param, "to_local") else param


class ParameterChangeCallback(TrainerCallback):
    """Records whether GRPO moved the weights: a cheap fingerprint (the first ``sample`` values of every trainable
    tensor) is copied when training begins and compared when it ends.

    A run whose reward is flat and whose parameters did not change is a silent failure (frozen parameters, zero
    learning rate, every group with zero reward variance); this makes it visible in ``summary.json``. The trainable
    share of the parameters (all of them, or the adapters with ``peft=lora``) is logged and reported when training
    begins.
    """

    def __init__(self, report: Callable[..., Any], sample: int = 1024) -> None:
        self.report = report
        self.sample = sample
        self._before: dict[str, torch.Tensor] = {}
        self._counts: dict[str, Any] = {}

    def _fingerprint(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {
            name: _local(param).detach().flatten()[: self.sample].float().cpu().clone()
            for name, param in model.named_parameters()
            if param.requires_grad
        }

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._before = self._fingerprint(model)
        self._counts = trainable_parameters(model)
        log.info("trainable parameters: %d of %d (%.4f%%)", self._counts["trainable"], self._counts["total"],
                 100 * self._counts["trainable_fraction"])
        self.report(parameters=self._counts)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        after = self._fingerprint(model)
        changes = {name: (after[name] - before).abs().max().item() for name, before in self._before.items()}
        changed = sum(change > 0 for change in changes.values())
        # Data parallelism keeps one copy of the weights per process, equal bit for bit when the gradients were
        # averaged; FSDP and ZeRO hold shards, which differ by design (null).
        sharded = bool(args.fsdp) or args.deepspeed is not None
        replicas = None if sharded else launched_processes().agree([param.detach().double().sum().item()
                                                                    for param in model.parameters()])
        self.report(
            parameters={
                **self._counts,
                "replicas_identical": replicas,
                "tensors_checked": len(changes),
                "tensors_changed": changed,
                "max_abs_change": max(changes.values(), default=0.0),
            }
        )
