"""The schema of grpolab's own knobs: each dataclass checks its values in ``__post_init__``, on the composed config."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from grpolab.config.errors import ConfigError
from grpolab.config.schema import DynamicSamplingConfig, EvalConfig, TrainConfig, register_schemas


@pytest.mark.parametrize(("overrides", "message"), [
    (["seed=-1"], "seed=-1 must be an integer in [0, 4294967295]"),
    (["threads=0"], "threads=0 must be an integer >= 1 (torch threads)"),
    (["eval.batch_size=0"], "eval.batch_size=0 must be an integer >= 1"),
    (["eval.num_problems=0"], "eval.num_problems=0 must be an integer >= 1, or null (the whole held-out split)"),
    (["eval.every_steps=0"], "eval.every_steps=0 must be an integer >= 1 (optimizer steps between held-out "
                             "evaluations), or null (before and after only)"),
    (["scheduler.warmup_steps=-1"], "scheduler.warmup_steps=-1 must be an integer >= 0 (optimizer steps of linear "
                                    "warm-up)"),
    (["scheduler.name=cosine_decay"], "scheduler.name=cosine_decay must be one of linear, cosine, "
                                      "cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt, "
                                      "reduce_lr_on_plateau, cosine_with_min_lr, cosine_warmup_with_min_lr, "
                                      "warmup_stable_decay, greedy"),
    (["dynamic_sampling.max_generation_rounds=0"], "dynamic_sampling.max_generation_rounds=0 must be an integer >= 1"),
    (["optimized_metric=eval_after.acc"], "optimized_metric=eval_after.acc names no held-out metric; valid: "
                                          "eval_after.accuracy, eval_after.format, eval_after.num_samples (the "
                                          "eval.metrics keys)"),
    (["model=tiny_vlm", "model.tokenizer.min_pixels=4000"],
     "model.tokenizer.min_pixels=4000 must be <= model.tokenizer.max_pixels=3136"),
])
def test_a_value_the_type_allows_but_the_knob_does_not_fails_in_one_line(compose_cfg, overrides, message) -> None:
    with pytest.raises(ConfigError) as caught:
        OmegaConf.to_object(compose_cfg(overrides))
    assert str(caught.value) == message


def test_composing_instantiates_no_schema() -> None:
    # A nested schema's default is its class: composing leaves ??? unchecked until the config is complete.
    register_schemas()
    node = OmegaConf.structured(TrainConfig)
    assert OmegaConf.is_missing(node.eval, "max_new_tokens") and OmegaConf.is_missing(node, "seed")
    assert OmegaConf.to_object(OmegaConf.structured(EvalConfig(max_new_tokens=8))).max_new_tokens == 8
    with pytest.raises(ConfigError, match="max_new_tokens"):
        EvalConfig()  # ??? is no length
    assert DynamicSamplingConfig().max_generation_rounds == 4
