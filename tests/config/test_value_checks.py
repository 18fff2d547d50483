"""Range and consistency checks: boundaries accepted, one line per violation (the CLI table is test_bad_inputs.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from grpolab.config.errors import ConfigError
from grpolab.config.validate import validate
from grpolab.config.value_checks import TRL_STRING_CHOICES, check_run_values


@pytest.mark.parametrize("field", sorted(TRL_STRING_CHOICES))
def test_string_choices_are_the_ones_trl_documents(field: str) -> None:
    from trl import GRPOConfig

    help_text = next(f.metadata["help"] for f in dataclasses.fields(GRPOConfig) if f.name == field)
    for choice in TRL_STRING_CHOICES[field]:
        assert re.search(f"[`']{choice}[`']", help_text), (field, choice)  # TRL quotes with ' or ` (or both)


@pytest.mark.parametrize("overrides", [
    ["trainer.beta=0", "trainer.top_p=1", "trainer.top_k=0", "trainer.epsilon_high=0.2", "trainer.min_p=0"],
    ["trainer.logging_steps=0.5", "scheduler.warmup_steps=3", "trainer.save_strategy=steps", "trainer.save_steps=1"],
    ["trainer.max_steps=-1", "trainer.num_train_epochs=0.5"],
    ["seed=4294967295", "threads=2", "model.dtype=bfloat16", "eval.num_problems=1", "eval.batch_size=1"],
    ["rewards=[accuracy,soft_overlong]", "rewards.soft_overlong.soft_punish_cache=7"],
    ["rewards=[accuracy,overlong]", "reward_level=token", "rewards.overlong.max_length=8", "rewards.overlong.cache=1"],
    ["rewards=[accuracy,overlong]", "rewards.overlong.max_length=100", "rewards.overlong.cache=10"],  # characters
    ["optimized_metric=eval_after.format", "warmstart=none", "optimizer=sgd", "optimizer.momentum=0"],
    ["batch=null", "trainer.per_device_train_batch_size=4", "trainer.num_generations=4", "trainer.top_k=5"],
])
def test_boundary_values_are_accepted(compose_cfg, overrides: list[str]) -> None:
    validate(compose_cfg(overrides), import_targets=False)


@pytest.mark.parametrize(("overrides", "message"), [
    (["scheduler.warmup_steps=-1"], "scheduler.warmup_steps=-1 must be an integer >= 0 (optimizer steps of linear "
                                    "warm-up)"),
    (["scheduler.name=cosine_decay"], "scheduler.name=cosine_decay must be one of linear, cosine, "
                                      "cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt, "
                                      "reduce_lr_on_plateau, cosine_with_min_lr, cosine_warmup_with_min_lr, "
                                      "warmup_stable_decay, greedy"),
    (["trainer.min_p=1.5"], "trainer.min_p=1.5 must be in [0, 1], or null"),
    (["trainer.save_strategy=best"], "trainer.save_strategy=best must be no, steps or epoch: the best checkpoint "
                                     "needs TRL's evaluation, which grpolab does not run"),
    (["trainer.load_best_model_at_end=true"], "trainer.load_best_model_at_end=true must be false: the best "
                                              "checkpoint needs TRL's evaluation, which grpolab does not run"),
    (["batch=null", "trainer.generation_batch_size=16", "trainer.steps_per_generation=2"],
     "trainer.generation_batch_size=16 and trainer.steps_per_generation=2 cannot both be set; set one (TRL derives "
     "the other)"),
    (["data=jsonl"], "data.path is required (??? in its config): set it, e.g. data.path=<value>"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0] must be two numbers in [0, 1), e.g. [0.9, 0.999]"),
])
def test_out_of_range_values_fail_in_one_line(compose_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(compose_cfg(overrides), import_targets=False)
    assert str(caught.value) == message


def test_image_bounds_must_be_ordered(compose_cfg) -> None:
    with pytest.raises(ConfigError) as caught:
        check_run_values(compose_cfg(["model=tiny_vlm", "model.tokenizer.min_pixels=4000"]))
    assert str(caught.value) == "model.tokenizer.min_pixels=4000 must be <= model.tokenizer.max_pixels=3136"
