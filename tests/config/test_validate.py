"""One-line configuration errors raised before anything is built."""

from __future__ import annotations

import pytest

from grpolab.config.validate import ConfigError, validate
from grpolab.trainer.args import build_grpo_config, check_trainer_keys


@pytest.mark.parametrize("lr", ["0", "-1e-4"])
def test_non_positive_learning_rate(compose_cfg, lr):
    with pytest.raises(ConfigError, match=r"optimizer\.lr=.* must be a positive"):
        validate(compose_cfg([f"optimizer.lr={lr}"]))


def test_learning_rate_in_trainer_points_to_optimizer(compose_cfg):
    with pytest.raises(ConfigError, match=r"trainer\.learning_rate .* set optimizer\.lr instead"):
        validate(compose_cfg(["+trainer.learning_rate=1e-4"]))


def test_reward_weights_in_trainer_point_to_rewards(compose_cfg):
    with pytest.raises(ConfigError, match=r"rewards\.<name>\.weight"):
        validate(compose_cfg(["+trainer.reward_weights=[1.0]"]))


def test_batch_derived_field_in_trainer_is_rejected(compose_cfg):
    with pytest.raises(ConfigError, match=r"trainer\.num_generations is derived .* batch\.generations_per_prompt"):
        validate(compose_cfg(["+trainer.num_generations=4"]))


def test_group_size_must_divide_the_generation_batch(compose_cfg):
    cfg = compose_cfg(["batch=null", "+trainer.per_device_train_batch_size=12", "+trainer.num_generations=8"])
    with pytest.raises(ConfigError, match=r"trainer\.num_generations=8 .* divide .* 12 .*valid group sizes: 2, 3, 4"):
        validate(cfg)


def test_batch_spec_that_does_not_divide(compose_cfg):
    with pytest.raises(ConfigError, match=r"batch\."):
        validate(compose_cfg(["batch.updates_per_rollout=3"]))


def test_batch_is_derived_into_trl_fields(compose_cfg):
    derived = validate(compose_cfg(["batch.prompts_per_step=4", "batch.generations_per_prompt=6"]))
    assert derived["num_generations"] == 6
    assert derived["per_device_train_batch_size"] * derived["steps_per_generation"] == 24


def test_unknown_trainer_key_suggests_the_closest(compose_cfg):
    with pytest.raises(ConfigError, match=r"trainer\.max_step is not a trl\.GRPOConfig field; did you mean: max_steps"):
        check_trainer_keys({"max_step": 3})


def test_grpo_config_rejection_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer: trl\.GRPOConfig rejected") as info:
        build_grpo_config({"loss_type": "nonsense"}, output_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_empty_rewards(compose_cfg):
    cfg = compose_cfg()
    cfg.rewards = {}
    with pytest.raises(ConfigError, match=r"rewards is empty"):
        validate(cfg)
