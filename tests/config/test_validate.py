"""validate: the checks of the composed config, composed in one call, each mistake one line naming its key."""

from __future__ import annotations

import pytest

from grpolab.config.errors import ConfigError
from grpolab.config.validate import check_required_values, check_schema_keys, validate


def error_of(compose_cfg, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(compose_cfg(overrides), import_targets=False)
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("overrides", [
    ["trainer.beta=0", "trainer.top_p=1", "trainer.top_k=0", "trainer.epsilon_high=0.2", "trainer.min_p=0"],
    ["trainer.logging_steps=0.5", "scheduler.warmup_steps=3", "trainer.save_strategy=steps", "trainer.save_steps=1"],
    ["trainer.max_steps=-1", "trainer.num_train_epochs=0.5"],
    ["seed=4294967295", "threads=2", "model.dtype=bfloat16", "eval.num_problems=1", "eval.batch_size=1"],
    ["optimized_metric=eval_after.format", "warmstart=none", "optimizer=sgd", "optimizer.momentum=0"],
    ["batch=null", "trainer.per_device_train_batch_size=4", "trainer.num_generations=4", "trainer.top_k=5"],
])
def test_boundary_values_are_accepted(compose_cfg, overrides: list[str]) -> None:
    validate(compose_cfg(overrides), import_targets=False)


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer.lr=0"], "optimizer.lr=0 must be a positive finite number (e.g. optimizer.lr=3e-5)"),
    (["optimizer.lr=-1e-4"], "optimizer.lr=-0.0001 must be a positive finite number (e.g. optimizer.lr=3e-5)"),
    (["~optimizer.lr"], "optimizer.lr is missing; the optimizer node owns the learning rate (e.g. optimizer.lr=1e-5)"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0] must be two numbers in [0, 1), e.g. [0.9, 0.999]"),
    (["warmstart.lr=0"], "warmstart.lr=0 must be > 0"),
    (["data.eval_size=0"], "data.eval_size=0 must be an integer >= 1 (the held-out split)"),
    (["data=jsonl"], "data.path is required (??? in its config): set it, e.g. data.path=<value>"),
    (["+trainer.learning_rate=1e-4"], "trainer.learning_rate is not set in the trainer node; set optimizer.lr instead"),
    (["+trainer.reward_weights=[1.0]"], "trainer.reward_weights is not set in the trainer node; set "
                                        "rewards.<name>.weight instead"),
    (["+trainer.max_step=3"], "trainer.max_step is not a trl.GRPOConfig field; did you mean: max_steps, save_steps, "
                              "eval_steps"),
    (["+batch.mini_batch_size=512"], "unknown key batch.mini_batch_size; known keys: batch.prompts_per_step, "
                                     "batch.generations_per_prompt, batch.updates_per_rollout, batch.num_iterations, "
                                     "batch.micro_batch_size"),
    (["+trainer.num_generations=4"], "trainer.num_generations is derived from the batch node; set "
                                     "batch.generations_per_prompt instead (or batch=null to give TRL's batch fields "
                                     "directly)"),
    (["batch=null", "+trainer.per_device_train_batch_size=12", "+trainer.num_generations=8"],
     "trainer.num_generations=8 must be at least 2 and divide the generation batch of 12 completions "
     "(per_device_train_batch_size=12 x 1 processes x steps_per_generation=1); valid group sizes: 2, 3, 4, 6, 12"),
    (["batch.updates_per_rollout=3"], "batch.prompts_per_step * batch.generations_per_prompt = 128 samples cannot be "
                                      "split into batch.updates_per_rollout=3 equal mini-batches (128 % 3 = 2)"),
])
def test_mistakes_fail_in_one_line_naming_the_key(compose_cfg, overrides: list[str], message: str) -> None:
    assert error_of(compose_cfg, overrides) == message


def test_the_batch_is_derived_into_trl_fields(compose_cfg) -> None:
    derived = validate(compose_cfg(["batch.prompts_per_step=4", "batch.generations_per_prompt=6"]))
    assert derived["num_generations"] == 6
    assert derived["per_device_train_batch_size"] * derived["steps_per_generation"] == 24
    assert validate(compose_cfg(["batch=null"]), import_targets=False) == {}


def test_the_parts_run_alone(compose_cfg) -> None:
    check_required_values(compose_cfg(["data=jsonl", "data.path=rows.jsonl"]))
    with pytest.raises(ConfigError, match=r"^unknown key seed2; known keys: seed, threads, "):
        check_schema_keys(compose_cfg(["+seed2=3"]))
