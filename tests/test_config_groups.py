"""Every option of every config group composes, validates, resolves, and names only importable targets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from grpolab.config.engine_checks import is_installed
from grpolab.config.errors import ConfigError
from grpolab.config.paths import CONF_DIR
from grpolab.config.validate import validate

# Options that need a value the option file leaves as ??? (required): supplied here.
REQUIRED = {
    ("rewards", "length"): ["rewards.length.target=6"],
    ("rewards", "overlong"): ["rewards.overlong.max_length=8", "rewards.overlong.cache=2"],
    ("rewards", "cosine_length"): ["rewards.cosine_length.max_length=8"],
    ("rewards", "reward_model"): ["rewards.reward_model.name_or_path=/models/any-reward-model"],
    ("model", "causal_lm"): ["model.name_or_path=/models/any-causal-lm"],
    ("model", "vlm"): ["model.name_or_path=/models/any-vlm"],
    ("model", "tiny_bpe"): ["model.tokenizer.path=/data/texts.jsonl"],
    ("model", "qwen2_5_0_5b_shape"): ["model.tokenizer.path=/data/texts.jsonl"],
    ("model", "qwen2_5_1_5b_shape"): ["model.tokenizer.path=/data/texts.jsonl"],
    ("data", "jsonl"): ["data.path=/data/rows.jsonl"],
    ("data", "columns"): ["data.path=/data/rows.csv"],
    ("data", "image_jsonl"): ["data.path=/data/images.jsonl"],
    ("distributed", "zero3"): ["warmstart=none"],  # sharded as it loads: no warm start
}
# Options whose engine is an optional GPU dependency (pip install 'grpolab[gpu]'): where it is not installed, validate
# stops with the one line that names the option and the install command.
NEEDS_PACKAGE = {("distributed", "zero2"): "deepspeed", ("distributed", "zero3"): "deepspeed",
                 ("generation", "vllm_colocate"): "vllm", ("generation", "vllm_server"): "vllm"}
# Hydra's own groups, and the experiment group (tested below with every experiment).
SKIPPED_GROUPS = {"hydra", "experiment"}


def group_options() -> list[tuple[str, str]]:
    pairs = []
    for group in sorted(p for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in SKIPPED_GROUPS):
        for option in sorted(group.glob("*.yaml")):
            pairs.append((group.name, option.stem))
    return pairs


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def targets(node, path="") -> list[tuple[str, str]]:
    """Every (key, _target_) in a resolved config container."""
    found = []
    if isinstance(node, dict):
        if "_target_" in node:
            found.append((path, node["_target_"]))
        for key, value in node.items():
            found += targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += targets(value, f"{path}.{index}")
    return found


def assert_targets_import(container) -> None:
    for key, target in targets(container):
        assert callable(get_method(target)), f"{key}._target_={target} is not callable"


def test_the_groups_users_pick_from_are_there():
    groups = {group for group, _ in group_options()}
    assert {"model", "tokenizer_mode", "rewards", "optimizer", "scheduler", "data", "trainer", "logger", "warmstart",
            "debug", "hparams_search", "paths", "distributed", "generation", "peft"} <= groups
    assert "modality" not in groups  # the modality is the model's (model.modality), stated once


@pytest.mark.parametrize(("group", "option"), group_options())
def test_option_composes_validates_and_names_importable_targets(compose_cfg, group, option):
    selection = f"{group}=[{option}]" if group == "rewards" else f"{group}={option}"
    overrides = [selection, *REQUIRED.get((group, option), [])]
    if group != "rewards":  # Hydra records single choices; the rewards list is checked on the config below
        assert compose_cfg(overrides, return_hydra_config=True).hydra.runtime.choices[group] == option
    cfg = compose_cfg(overrides)
    package = NEEDS_PACKAGE.get((group, option))
    if package is not None and not is_installed(package):
        with pytest.raises(ConfigError, match=rf"^{group}={option} needs .* pip install {package} "):
            validate(cfg)
    else:
        validate(cfg)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert_targets_import(container)
    if group == "rewards":
        assert list(container["rewards"]) == [option]


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_composes_validates_and_scales_down_with_debug_smoke(compose_cfg, name):
    full = compose_cfg([f"experiment={name}"])
    validate(full)
    assert_targets_import(OmegaConf.to_container(full, resolve=True))
    smoke = compose_cfg([f"experiment={name}", "debug=smoke"])
    validate(smoke)
    resolved = OmegaConf.to_container(smoke, resolve=True)
    assert_targets_import(resolved)
    # The tiny stand-in of the experiment's own modality replaces the model; the modality itself is kept.
    assert smoke.model.modality == full.model.modality and smoke.model.name_or_path is None
    assert resolved["model"]["network"]["_target_"] == (
        "grpolab.models.tiny.build_tiny_vlm" if full.model.modality.value == "vision"
        else "grpolab.models.tiny.build_tiny_qwen2")


def test_default_config_is_the_offline_tiny_setup(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.name_or_path is None and cfg.model.modality.value == "text"
    assert cfg.model.network._target_ == "grpolab.models.tiny.build_tiny_qwen2"
    assert cfg.tokenizer_mode._target_ == "grpolab.data.prepare.TextPrompts"
    assert cfg.logger.mode == "offline"
    assert list(cfg.rewards) == ["accuracy", "format"]
    # The held-out metrics are the reward option files themselves, not a second copy of their definitions.
    assert OmegaConf.to_container(cfg.eval.metrics) == OmegaConf.to_container(cfg.rewards)
