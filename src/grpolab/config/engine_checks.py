"""Checks on the engine groups (``distributed``, ``generation``, ``peft``): the packages an option needs and the
combinations that cannot run, each one line naming the option, before any model is loaded. Preflight runs them too,
so ``distributed=zero3`` without DeepSpeed stops before Hydra starts a job. Imports nothing heavy: whether a package
is installed is asked with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpolab.config.errors import ConfigError

#: The optional dependencies of the GPU engines (pyproject.toml's ``gpu`` extra: deepspeed, vllm, flash-attn).
GPU_EXTRA = "pip install 'grpolab[gpu]'"


def distributed_option(distributed: Mapping[str, Any]) -> str:
    """The ``distributed`` option a node amounts to, as typed on the command line.

    >>> distributed_option({"fsdp": None, "deepspeed": {"zero_optimization": {"stage": 3}}})
    'distributed=zero3'
    >>> distributed_option({"fsdp": None, "deepspeed": "ds_config.json"})
    'distributed.deepspeed=ds_config.json'
    """
    deepspeed = distributed["deepspeed"]
    if isinstance(deepspeed, Mapping):
        return f"distributed=zero{deepspeed.get('zero_optimization', {}).get('stage', 0)}"
    if deepspeed is not None:
        return f"distributed.deepspeed={deepspeed}"
    return "distributed=fsdp" if distributed["fsdp"] else "distributed=ddp"


def generation_option(generation: Mapping[str, Any]) -> str:
    """``generation=vllm_colocate`` / ``generation=vllm_server`` / ``generation=hf``."""
    return f"generation=vllm_{generation['vllm_mode']}" if generation["use_vllm"] else "generation=hf"


def is_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_engines(cfg: DictConfig) -> None:
    """The engine, generation and adapter choices can run here and together."""
    distributed = OmegaConf.to_container(cfg.distributed, resolve=True)
    generation = OmegaConf.to_container(cfg.generation, resolve=True)
    option = distributed_option(distributed)
    if distributed["fsdp"] and distributed["deepspeed"] is not None:
        raise ConfigError("distributed.fsdp=true and distributed.deepspeed are both set; one engine at a time: "
                          "distributed=fsdp, distributed=zero2 or distributed=zero3")
    if distributed["deepspeed"] is not None:
        if not is_installed("deepspeed"):
            raise ConfigError(f"{option} needs DeepSpeed, which is not installed: pip install deepspeed (or "
                              f"{GPU_EXTRA}); without it use distributed=ddp or distributed=fsdp")
        warm_steps = OmegaConf.select(cfg, "warmstart.steps") if cfg.warmstart else None
        if option == "distributed=zero3" and warm_steps:
            raise ConfigError(f"{option} shards the model as it loads, so it cannot take the supervised warm start "
                              f"(warmstart.steps={warm_steps}); use warmstart=none")
    if generation["use_vllm"] and not is_installed("vllm"):
        raise ConfigError(f"{generation_option(generation)} needs vLLM, which is not installed: pip install vllm (or "
                          f"{GPU_EXTRA}); without it use generation=hf")
    if cfg.peft and cfg.trainer.sync_ref_model:
        raise ConfigError("trainer.sync_ref_model=true cannot be used with peft=lora: the KL reference is the base "
                          "model with the adapters disabled, which TRL does not sync; set trainer.sync_ref_model=false "
                          "or peft=none")
