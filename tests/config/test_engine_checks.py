"""The engine groups (distributed, generation, peft): what an option needs installed and what cannot run together,
one line before any model. This machine has neither DeepSpeed nor vLLM (the GPU extra), so the missing-package
messages are the real ones."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from grpolab.config import engine_checks
from grpolab.config.engine_checks import distributed_option, generation_option, is_installed
from grpolab.config.errors import ConfigError
from grpolab.config.validate import validate

no_deepspeed = pytest.mark.skipif(is_installed("deepspeed"), reason="deepspeed is installed here")
no_vllm = pytest.mark.skipif(is_installed("vllm"), reason="vllm is installed here")


def check(compose_cfg, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(compose_cfg(list(overrides)), import_targets=False)
    return str(caught.value)


@no_deepspeed
@pytest.mark.parametrize("option", ["zero2", "zero3"])
def test_a_deepspeed_engine_without_deepspeed_names_the_option_and_the_install(compose_cfg, option: str) -> None:
    assert check(compose_cfg, f"distributed={option}") == (
        f"distributed={option} needs DeepSpeed, which is not installed: pip install deepspeed (or pip install "
        "'grpolab[gpu]'); without it use distributed=ddp or distributed=fsdp")


@no_vllm
@pytest.mark.parametrize("option", ["vllm_colocate", "vllm_server"])
def test_vllm_generation_without_vllm_names_the_option_and_the_install(compose_cfg, option: str) -> None:
    assert check(compose_cfg, f"generation={option}") == (
        f"generation={option} needs vLLM, which is not installed: pip install vllm (or pip install 'grpolab[gpu]'); "
        "without it use generation=hf")


def test_every_option_that_needs_nothing_extra_validates(compose_cfg) -> None:
    for overrides in (["distributed=none"], ["distributed=ddp"], ["distributed=fsdp"], ["generation=hf"],
                      ["peft=none"], ["peft=lora"], ["peft=lora", "model=tiny_vlm", "data=shapes"]):
        validate(compose_cfg(overrides), import_targets=False)


def test_zero3_cannot_take_the_warm_start(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    # Past the package check (as where DeepSpeed is installed): a model sharded as it loads cannot be warm-started.
    monkeypatch.setattr(engine_checks, "is_installed", lambda package: True)
    assert check(compose_cfg, "distributed=zero3") == (
        "distributed=zero3 shards the model as it loads, so it cannot take the supervised warm start "
        "(warmstart.steps=1500); use warmstart=none")
    validate(compose_cfg(["distributed=zero3", "warmstart=none"]), import_targets=False)
    validate(compose_cfg(["distributed=zero2"]), import_targets=False)


def test_one_engine_at_a_time(compose_cfg) -> None:
    assert check(compose_cfg, "distributed=fsdp", "distributed.deepspeed={zero_optimization: {stage: 2}}") == (
        "distributed.fsdp=true and distributed.deepspeed are both set; one engine at a time: distributed=fsdp, "
        "distributed=zero2 or distributed=zero3")


def test_lora_has_no_synced_reference(compose_cfg) -> None:
    assert check(compose_cfg, "peft=lora", "trainer.beta=0.04", "trainer.sync_ref_model=true").startswith(
        "trainer.sync_ref_model=true cannot be used with peft=lora")


def test_engine_fields_are_checked_where_they_live(compose_cfg) -> None:
    assert check(compose_cfg, "generation.vllm_mode=remote") == (
        "generation.vllm_mode=remote must be one of server, colocate")
    assert check(compose_cfg, "distributed.ddp_backend=carrier_pigeon").startswith(
        "distributed.ddp_backend=carrier_pigeon must be one of nccl, gloo")


def test_options_are_named_as_typed(compose_cfg) -> None:
    def node(*overrides: str, key: str) -> dict:
        return OmegaConf.to_container(compose_cfg(list(overrides))[key], resolve=True)

    assert distributed_option(node("distributed=zero2", key="distributed")) == "distributed=zero2"
    assert distributed_option(node("distributed=fsdp", key="distributed")) == "distributed=fsdp"
    assert generation_option(node("generation=vllm_server", key="generation")) == "generation=vllm_server"
    assert generation_option(node("generation=hf", key="generation")) == "generation=hf"
