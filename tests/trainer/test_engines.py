"""The engine in the forms transformers, accelerate and TRL take it: GRPOConfig fields, CPU mode for several processes,
the optimizer for the Trainer to build, and the engine configurations that need GPUs, validated as far as this CPU
machine (no DeepSpeed) allows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from grpolab.config.batch import derive_grpo_fields
from grpolab.config.errors import ConfigError
from grpolab.config.validate import validate
from grpolab.trainer.args import grpo_kwargs
from grpolab.trainer.engines import engine_fields, optimizer_class_and_arguments, training_precision

no_accelerator = pytest.mark.skipif(torch.accelerator.is_available(), reason="this machine has a GPU")


@no_accelerator
def test_several_processes_without_a_gpu_switch_cpu_mode_on(compose_cfg) -> None:
    cfg = compose_cfg(["distributed=ddp"])
    assert engine_fields(cfg, world_size=2)["use_cpu"] is True  # else accelerate leaves every process on its own
    assert "use_cpu" not in engine_fields(cfg, world_size=1)
    assert "use_cpu" not in engine_fields(compose_cfg(["trainer.use_cpu=true"]), world_size=2)  # set by the user


def test_the_engine_groups_reach_grpo_config(compose_cfg, tmp_path: Path) -> None:
    from grpolab.trainer.build import grpo_arguments

    cfg = compose_cfg(["distributed=ddp", "distributed.ddp_bucket_cap_mb=50", "optimizer.weight_decay=0.1"])
    args = grpo_arguments(cfg, validate(cfg, import_targets=False), [1.0, 0.2], [], tmp_path)
    assert (args.ddp_find_unused_parameters, args.ddp_broadcast_buffers, args.ddp_bucket_cap_mb) == (False, False, 50)
    assert args.weight_decay == 0.1  # the Trainer's decay group gets the optimizer group's weight decay
    assert not args.use_vllm and args.deepspeed is None and not args.fsdp


@pytest.mark.parametrize(("option", "expected"), [
    ("adamw", (torch.optim.AdamW, {"lr": 3e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0})),
    ("sgd", (torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0})),
])
def test_the_optimizer_group_is_handed_to_the_trainer_unbuilt(compose_cfg, option: str, expected: Any) -> None:
    assert optimizer_class_and_arguments(compose_cfg([f"optimizer={option}"]).optimizer) == expected


def test_an_optimizer_node_without_partial_is_named(compose_cfg) -> None:
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 0.1})
    with pytest.raises(ConfigError, match=r"^optimizer: torch.optim.AdamW must be built with _partial_: true"):
        optimizer_class_and_arguments(node)


def test_the_trainer_builds_the_optimizer_from_the_group(compose_cfg, tmp_path: Path) -> None:
    from transformers import Trainer

    from grpolab.models.tiny import build_tiny_qwen2
    from grpolab.models.tokenizer import build_char_tokenizer

    cfg = compose_cfg(["optimizer=sgd", "optimizer.weight_decay=0.01"])
    network = OmegaConf.to_container(cfg.model.network, resolve=True)
    network.pop("_target_")
    model = build_tiny_qwen2(tokenizer=build_char_tokenizer(), **network)
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], weight_decay=0.01)
    trainer = Trainer(model=model, args=args, optimizer_cls_and_kwargs=optimizer_class_and_arguments(cfg.optimizer))
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    decays = sorted({group["weight_decay"] for group in optimizer.param_groups})
    assert decays == [0.0, 0.01]  # norms and biases undecayed, weights decayed
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))


@no_accelerator
@pytest.mark.parametrize("option", ["fsdp", "zero2", "zero3"])
def test_sharding_engines_ask_for_gpus_before_any_model(compose_cfg, option: str) -> None:
    with pytest.raises(ConfigError, match=rf"^distributed={option} needs GPUs: accelerate runs FSDP and DeepSpeed "
                                          r"only on accelerators; on this machine use distributed=ddp"):
        engine_fields(compose_cfg([f"distributed={option}"]), world_size=2)


def test_the_fsdp_option_is_a_valid_accelerate_fsdp_plugin(compose_cfg, tmp_path: Path) -> None:
    # What runs on GPUs, validated here: transformers reads the node into its FSDP arguments and accelerate's plugin
    # accepts them (the plugin checks every value).
    from accelerate.utils import FullyShardedDataParallelPlugin
    from trl import GRPOConfig

    distributed = OmegaConf.to_container(compose_cfg(["distributed=fsdp"]).distributed, resolve=True)
    args = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **grpo_kwargs(distributed))
    assert args.fsdp_plugin_args["fsdp_version"] == 2 and args.fsdp_plugin_args["reshard_after_forward"] is True
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    assert plugin.fsdp_version == 2 and plugin.auto_wrap_policy is not None
    assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT") and not plugin.cpu_ram_efficient_loading


def _filled_deepspeed_config(config: dict, args: Any, model: Any) -> dict:
    """transformers' own filling of DeepSpeed's "auto" values (HfTrainerDeepSpeedConfig), run on accelerate's config
    reader: transformers defines that class only when DeepSpeed is installed, its methods need only the dict."""
    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    class Filling(HfDeepSpeedConfig):
        is_auto = HfTrainerDeepSpeedConfig.is_auto
        fill_match = HfTrainerDeepSpeedConfig.fill_match
        fill_only = HfTrainerDeepSpeedConfig.fill_only
        trainer_config_process = HfTrainerDeepSpeedConfig.trainer_config_process
        trainer_config_finalize = HfTrainerDeepSpeedConfig.trainer_config_finalize

    filling = Filling(config)
    filling.mismatches = []
    filling.trainer_config_process(args)
    filling.trainer_config_finalize(args, model, num_training_steps=args.max_steps)
    return filling.config


def _values(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [value for child in node.values() for value in _values(child)]
    return [node]


@pytest.mark.parametrize(("option", "stage"), [("zero2", 2), ("zero3", 3)])
def test_the_deepspeed_options_are_complete_once_transformers_fills_them(compose_cfg, tmp_path: Path,
                                                                          option: str, stage: int) -> None:
    from trl import GRPOConfig

    from grpolab.models.tiny import build_tiny_qwen2
    from grpolab.models.tokenizer import build_char_tokenizer

    cfg = compose_cfg([f"distributed={option}", "warmstart=none", "trainer.bf16=true", "trainer.max_steps=10"])
    derived = derive_grpo_fields(OmegaConf.to_object(cfg.batch), num_processes=1)
    deepspeed = OmegaConf.to_container(cfg.distributed, resolve=True)["deepspeed"]
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    args = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True,
                      **grpo_kwargs({**trainer, **derived}), learning_rate=cfg.optimizer.lr)
    network = OmegaConf.to_container(cfg.model.network, resolve=True)
    network.pop("_target_")
    filled = _filled_deepspeed_config(deepspeed, args, build_tiny_qwen2(tokenizer=build_char_tokenizer(), **network))
    assert "auto" not in _values(filled)  # every "auto" is one transformers knows how to fill
    assert filled["zero_optimization"]["stage"] == stage
    assert filled["bf16"] == {"enabled": True} and filled["fp16"] == {"enabled": False}
    assert filled["train_micro_batch_size_per_gpu"] == args.per_device_train_batch_size
    assert filled["gradient_clipping"] == args.max_grad_norm and "optimizer" not in filled
    assert filled["zero_optimization"]["reduce_bucket_size"] == 64 * 64  # the tiny model's hidden size, squared


def test_evaluation_and_warm_start_compute_in_the_training_precision(compose_cfg, tmp_path: Path) -> None:
    from trl import GRPOConfig

    layer = torch.nn.Linear(4, 4)
    mixed = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=True)
    with training_precision(mixed):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    full = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False)
    with training_precision(full):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
