"""Every option of every config group composes, and the composed config passes grpolab's own validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grpolab.config.validate import validate
from grpolab.train import CONF_DIR

# Options that need a value the option file leaves as ??? (required): supplied here.
REQUIRED = {
    ("rewards", "length"): ["rewards.length.target=6"],
    ("rewards", "overlong"): ["rewards.overlong.max_length=8", "rewards.overlong.cache=2"],
    ("rewards", "soft_overlong"): ["rewards.soft_overlong.soft_punish_cache=2"],
    ("data", "jsonl"): ["data.path=prompts.jsonl"],
    ("data", "image_jsonl"): ["data.path=images.jsonl"],
}
# Groups whose options are selected with Hydra's own syntax or belong to Hydra itself.
SKIPPED_GROUPS = {"hydra", "experiment"}


def group_options() -> list[tuple[str, str]]:
    pairs = []
    for group in sorted(p for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in SKIPPED_GROUPS):
        for option in sorted(group.glob("*.yaml")):
            pairs.append((group.name, option.stem))
    return pairs


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def test_every_group_has_options():
    groups = {group for group, _ in group_options()}
    assert {"model", "tokenizer_mode", "modality", "rewards", "optimizer", "data", "trainer", "logger"} <= groups


@pytest.mark.parametrize(("group", "option"), group_options())
def test_option_composes_and_validates(compose_cfg, group, option):
    selection = f"{group}=[{option}]" if group == "rewards" else f"{group}={option}"
    cfg = compose_cfg([selection, *REQUIRED.get((group, option), [])])
    if group in ("model", "data") and OmegaConf.select(cfg, "model.modality").value != cfg.modality.kind.value:
        # a vision model or vision data only makes sense with modality=vision (and the reverse)
        cfg = compose_cfg(["modality=vision", selection, *REQUIRED.get((group, option), [])])
    OmegaConf.resolve(cfg)
    if OmegaConf.select(cfg, "modality.kind") is not None:
        validate(cfg)
    assert OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_composes_and_validates(compose_cfg, name):
    cfg = compose_cfg([f"experiment={name}"])
    validate(cfg)


def test_default_config_is_the_offline_tiny_setup(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.name_or_path is None
    assert cfg.model.network._target_.endswith("build_tiny_qwen2")
    assert cfg.tokenizer_mode.mode.value == "text"
    assert cfg.modality.kind.value == "text"
    assert cfg.logger.mode == "offline"
    assert list(cfg.rewards) == ["accuracy", "format"]
