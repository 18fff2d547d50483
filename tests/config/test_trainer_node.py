"""The trainer node: every GRPOConfig field settable and typed at composition, owned keys pointing home."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from grpolab.config.errors import ConfigError
from grpolab.config.trainer_node import (
    BATCH_DERIVED, DISTRIBUTED_FIELDS, GENERATION_FIELDS, OWNED_ELSEWHERE, TRL_DEFAULTS, TRL_STRING_CHOICES,
    DistributedConfig, GenerationConfig, TrainerConfig, unknown_key_message,
)
from grpolab.trainer.args import grpo_kwargs  # the trainer node's way into GRPOConfig


def test_every_grpo_config_field_but_the_owned_ones_is_in_the_schema() -> None:
    from trl import GRPOConfig

    trl_fields = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    schema_fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    assert schema_fields == trl_fields - set(OWNED_ELSEWHERE)
    assert set(BATCH_DERIVED) <= schema_fields


def test_the_engine_groups_hold_their_grpo_config_fields_at_trls_defaults(tmp_path: Path) -> None:
    # distributed and generation are GRPOConfig fields under TRL's names: untouched, they change nothing.
    from trl import GRPOConfig

    for schema, names in ((DistributedConfig, DISTRIBUTED_FIELDS), (GenerationConfig, GENERATION_FIELDS)):
        node = OmegaConf.to_container(OmegaConf.structured(schema))
        assert tuple(node) == names and set(names) <= set(OWNED_ELSEWHERE)
        assert grpo_kwargs(node) == {}
        owned = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False)
        assert GRPOConfig(**{**node, **owned}).to_dict() == GRPOConfig(**owned).to_dict()
    assert {"use_vllm", "vllm_mode", "vllm_server_host", "vllm_server_port", "vllm_gpu_memory_utilization",
            "vllm_tensor_parallel_size", "vllm_importance_sampling_correction"} <= set(GENERATION_FIELDS)


def test_fields_are_set_without_plus_and_reach_grpo_config(compose_cfg, tmp_path: Path) -> None:
    from grpolab.trainer.args import build_grpo_config

    cfg = compose_cfg(["trainer.save_steps=50", "trainer.save_strategy=steps",
                       "trainer.mask_truncated_completions=true", "trainer.generation_kwargs={repetition_penalty: 1.1}"])
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    args = build_grpo_config(trainer, output_dir=str(tmp_path), report_to=[])
    assert (args.save_steps, args.save_strategy, args.mask_truncated_completions) == (50, "steps", True)
    assert args.generation_kwargs == {"repetition_penalty": 1.1}


@pytest.mark.parametrize(("override", "error"), [
    ("trainer.beta=lots", "could not be converted to Float"),
    ("generation.use_vllm=maybe", "is not a valid bool"),
    ("distributed.ddp_timeout=soon", "could not be converted to Integer"),
    ("trainer.max_steps=1.5", "could not be converted to Integer"),
    ("trainer.top_k=null", "is not Optional"),
])
def test_types_are_checked_when_the_config_is_composed(compose_cfg, override: str, error: str) -> None:
    with pytest.raises(ConfigCompositionException) as caught:
        compose_cfg([override])
    assert error in str(caught.value.__cause__)


def test_schema_defaults_are_grpo_config_defaults(tmp_path: Path) -> None:
    # Passing every key of an untouched node gives GRPOConfig's own defaults: the table's defaults are TRL's, so
    # what --cfg job prints is what GRPOConfig runs with, and passing only changed keys loses nothing.
    from trl import GRPOConfig

    node = OmegaConf.to_container(OmegaConf.structured(TrainerConfig))
    every_key = {key: value for key, value in node.items() if key not in BATCH_DERIVED}
    owned = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False)  # no GPU here
    assert GRPOConfig(**{**every_key, **owned}).to_dict() == GRPOConfig(**owned).to_dict()
    assert grpo_kwargs(node) == {}


def test_grpo_kwargs_passes_what_differs_and_keeps_whole_steps_integers() -> None:
    node = OmegaConf.to_container(OmegaConf.structured(TrainerConfig))
    node.update(temperature=0.7, warmup_steps=320.0, logging_steps=0.5, num_generations=4)
    assert grpo_kwargs(node) == {"temperature": 0.7, "warmup_steps": 320, "logging_steps": 0.5, "num_generations": 4}
    assert TRL_DEFAULTS["warmup_steps"] == 0 and isinstance(grpo_kwargs(node)["warmup_steps"], int)


@pytest.mark.parametrize(("key", "message"), [
    ("learning_rate", "trainer.learning_rate is not set in the trainer node; set optimizer.lr instead"),
    ("lerning_rate", "trainer.lerning_rate is not a trl.GRPOConfig field; the closest, trainer.learning_rate, is not "
                     "set in the trainer node: set optimizer.lr instead"),
    ("reward_weights", "trainer.reward_weights is not set in the trainer node; set rewards.<name>.weight instead"),
    ("max_step", "trainer.max_step is not a trl.GRPOConfig field; did you mean: max_steps, save_steps, eval_steps"),
    ("zzz", "trainer.zzz is not a trl.GRPOConfig field; see trl.GRPOConfig"),
])
def test_keys_that_are_no_trainer_field_point_home(key: str, message: str) -> None:
    assert unknown_key_message(key) == message


@pytest.mark.parametrize("field", sorted(TRL_STRING_CHOICES))
def test_string_choices_are_the_ones_trl_documents(field: str) -> None:
    from trl import GRPOConfig

    help_text = next(f.metadata["help"] for f in dataclasses.fields(GRPOConfig) if f.name == field)
    for choice in TRL_STRING_CHOICES[field]:
        assert re.search(f"[`']{choice}[`']", help_text), (field, choice)  # TRL quotes with ' or ` (or both)


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.min_p=1.5"], "trainer.min_p=1.5 must be in [0, 1], or null"),
    (["trainer.epsilon_high=0.1"], "trainer.epsilon_high=0.1 must be >= trainer.epsilon=0.2 (the upper clipping "
                                   "range), or null (= epsilon)"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 must be an integer >= 1, or -1 to train for "
                              "trainer.num_train_epochs"),
    (["trainer.save_strategy=steps", "trainer.save_steps=0"], "trainer.save_steps=0.0 must be an integer >= 1 or a "
                                                              "fraction of the run in (0, 1) (trainer.save_strategy="
                                                              "steps)"),
    (["trainer.save_strategy=best"], "trainer.save_strategy=best must be no, steps or epoch: the best checkpoint "
                                     "needs TRL's evaluation, which grpolab does not run"),
    (["trainer.load_best_model_at_end=true"], "trainer.load_best_model_at_end=true must be false: the best "
                                              "checkpoint needs TRL's evaluation, which grpolab does not run"),
    (["trainer.loss_type=ppo"], "trainer.loss_type=ppo must be one of grpo, dr_grpo, dapo, bnpo, cispo, sapo, luspo, "
                                "vespo"),
    (["generation.vllm_mode=remote"], "generation.vllm_mode=remote must be one of server, colocate"),
    (["generation.vllm_gpu_memory_utilization=0"], "generation.vllm_gpu_memory_utilization=0.0 must be in (0, 1]"),
    (["batch=null", "trainer.gradient_accumulation_steps=0"], "trainer.gradient_accumulation_steps=0 must be an "
                                                              "integer >= 1"),
])
def test_the_schemas_check_their_values(compose_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        OmegaConf.to_object(compose_cfg(overrides))  # the schemas' __post_init__, as validate runs it
    assert str(caught.value) == message


def test_rules_grpo_config_owns_come_from_grpo_config_in_one_line(compose_cfg, tmp_path: Path) -> None:
    from grpolab.trainer.args import build_grpo_config

    overrides = ["batch=null", "trainer.generation_batch_size=16", "trainer.steps_per_generation=2"]
    trainer = {**OmegaConf.to_container(compose_cfg(overrides).trainer, resolve=True), "use_cpu": True, "bf16": False}
    with pytest.raises(ConfigError) as caught:
        build_grpo_config(trainer, output_dir=str(tmp_path))
    assert str(caught.value) == ("trainer: trl.GRPOConfig rejected the trainer node: 'generation_batch_size' and "
                                 "'steps_per_generation' can not be both configured at the same time")
    with pytest.raises(ConfigError, match=r"^trainer: trl\.GRPOConfig rejected the trainer node: [^\n]*$"):
        build_grpo_config({"loss_type": "nonsense"}, output_dir=str(tmp_path))


def test_cfg_job_and_config_errors_import_no_torch(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    shown = subprocess.run([sys.executable, "-X", "importtime", "-m", "grpolab.train", "--cfg", "job"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "  use_vllm: false" in shown.stdout and "  save_on_each_node: false" in shown.stdout
    heavy = {"torch", "trl", "transformers"}
    imported = {line.rsplit("|", 1)[-1].strip() for line in shown.stderr.splitlines() if line.startswith("import time")}
    assert not heavy & imported
    probe = (
        "import sys; from grpolab.train import CONF_DIR\n"
        "from grpolab.preflight import preflight, PreflightError\n"
        "for args in (['trainer.beta=-1'], ['+rewards.x._target_=os.system'], ['seed=zero'], ['-m', 'seed=0,1']):\n"
        "    try: preflight(['x', *args], CONF_DIR)\n"
        "    except PreflightError: pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
