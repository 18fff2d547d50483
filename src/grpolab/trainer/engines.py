"""The engine a job trains with, in the forms transformers and TRL take it.

- ``engine_fields``: the GRPOConfig fields of the ``distributed`` and ``generation`` groups, plus CPU mode when
  several processes run on a machine without GPUs (accelerate joins CPU processes in a gloo group only in CPU mode:
  ``trainer.use_cpu`` is switched on for the user, and said so in the log).
- ``optimizer_class_and_arguments``: the ``optimizer`` group as the Trainer's ``optimizer_cls_and_kwargs``, so that the
  Trainer builds the optimizer itself once the engine has wrapped (FSDP) or sharded (ZeRO) the model; an optimizer
  built beforehand (``optimizers=(optimizer, None)``) is refused with FSDP and holds the unwrapped parameters.
- ``adapter_errors``: PEFT's refusal of the ``peft`` node, in one line.
- ``training_precision``: the held-out evaluation and the warm start compute as training does on that device
  (bf16/fp16 autocast when ``trainer.bf16``/``trainer.fp16`` turn mixed precision on).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from trl import GRPOConfig

from grpolab.config.engine_checks import distributed_option
from grpolab.config.errors import ConfigError, first_line

log = logging.getLogger(__name__)


def engine_fields(cfg: DictConfig, world_size: int) -> dict[str, Any]:
    """GRPOConfig fields of the ``generation`` and ``distributed`` nodes, and ``use_cpu`` when it must be on."""
    distributed = OmegaConf.to_container(cfg.distributed, resolve=True)
    generation = OmegaConf.to_container(cfg.generation, resolve=True)
    has_accelerator = torch.accelerator.is_available()
    if (distributed["fsdp"] or distributed["deepspeed"] is not None) and not has_accelerator:
        raise ConfigError(f"{distributed_option(distributed)} needs GPUs: accelerate runs FSDP and DeepSpeed only on "
                          "accelerators; on this machine use distributed=ddp (or distributed=none)")
    fields = {**generation, **distributed}
    if world_size > 1 and not has_accelerator and not cfg.trainer.use_cpu:
        log.info("%d processes and no GPU: trainer.use_cpu=true, so that accelerate joins them in one gloo process "
                 "group", world_size)
        fields["use_cpu"] = True
    return fields


def optimizer_class_and_arguments(optimizer: DictConfig) -> tuple[type, dict[str, Any]]:
    """``(torch.optim.AdamW, {"lr": 3e-5, "betas": [0.9, 0.999], ...})`` from the optimizer node (``_partial_: true``).

    The Trainer groups the parameters itself: the trainable weights get ``GRPOConfig.weight_decay`` (set from
    ``optimizer.weight_decay``), biases and normalisation weights none.
    """
    if OmegaConf.select(optimizer, "_partial_") is not True:
        raise ConfigError(f"optimizer: {optimizer._target_} must be built with _partial_: true (the Trainer passes "
                          "the parameters once the engine has wrapped the model)")
    built = instantiate(optimizer)
    return built.func, dict(built.keywords)


@contextmanager
def adapter_errors() -> Iterator[None]:
    """PEFT's refusal to wrap the model (no module matches ``peft.target_modules``, ...) as one line naming ``peft``."""
    from peft.utils.error import PeftError

    try:
        yield
    except PeftError as error:
        raise ConfigError(f"peft: {first_line(error)} (peft.target_modules names the model's "
                          "module names, e.g. q_proj)") from error


@contextmanager
def training_precision(args: GRPOConfig) -> Iterator[None]:
    """Autocast to bf16/fp16 when training runs in that mixed precision; the model's own dtype otherwise."""
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    with torch.autocast(args.device.type, dtype=dtype, enabled=dtype is not None):
        yield
