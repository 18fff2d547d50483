"""Range and consistency checks on the composed values, each failing in one line: ``<key>=<value> must be <range>``.

Types are checked by the schema when Hydra composes the config; these checks catch what a type cannot say (a
negative KL coefficient, a top_p above 1, a punishment cache longer than the completion budget) before any model is
built, and in preflight before any job of a sweep starts. Imports nothing heavy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from grpolab.config.errors import ConfigError
from grpolab.config.trainer_node import TRL_FIELDS, config_key, trainer_value

#: Values TRL accepts for its free-text string fields (it checks them only when training starts, or never);
#: tests/config/test_value_checks.py keeps each named in the field's own help text.
TRL_STRING_CHOICES = {
    "loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
    "scale_rewards": ("group", "batch", "none"),
    "importance_sampling_level": ("token", "sequence"),
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),
    "vllm_mode": ("server", "colocate"),
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
}
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")
SEED_MAX = 2**32 - 1  # numpy's seed range, which transformers.set_seed also seeds
SOFT_OVERLONG = "trl.rewards.get_soft_overlong_punishment"
OVERLONG = "grpolab.rewards.length.Overlong"


def show(value: Any) -> str:
    """A value as it is typed on the command line: ``null``, ``true``, ``0.1``, ``fp16``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require(key: str, value: Any, ok: bool, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={show(value)} must be {valid}")


def _at_least(low: float, integer: bool = False) -> Callable[[Any], bool]:
    return lambda v: (is_int(v) if integer else is_number(v)) and v >= low


def _above(low: float) -> Callable[[Any], bool]:
    return lambda v: is_number(v) and v > low


def _between(low: float, high: float, low_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: is_number(v) and (v > low if low_open else v >= low) and v <= high


def _or_null(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


#: trainer key -> (check, valid range), on the values GRPOConfig will see (batch-derived ones included).
TRAINER_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "beta": (_at_least(0), ">= 0 (the KL coefficient; 0 turns the KL term off)"),
    "temperature": (_above(0), "> 0"),
    "top_p": (_between(0, 1, low_open=True), "in (0, 1]"),
    "top_k": (_at_least(0, integer=True), "an integer >= 0 (0 disables top-k)"),
    "min_p": (_or_null(_between(0, 1)), "in [0, 1], or null"),
    "repetition_penalty": (_above(0), "> 0 (1 is no penalty)"),
    "epsilon": (_above(0), "> 0 (the lower clipping range)"),
    "delta": (_or_null(_above(1)), "> 1 (INTELLECT-2 recommends > 1 + epsilon), or null for no upper clip"),
    "max_completion_length": (_at_least(1, integer=True), "an integer >= 1 (tokens per completion)"),
    "max_grad_norm": (_at_least(0), ">= 0"),
    "ref_model_mixup_alpha": (_between(0, 1), "in [0, 1]"),
    "ref_model_sync_steps": (_at_least(1, integer=True), "an integer >= 1"),
    "top_entropy_quantile": (_between(0, 1), "in [0, 1]"),
    "entropy_coef": (_at_least(0), ">= 0"),
    "num_iterations": (_at_least(1, integer=True), "an integer >= 1"),
    "per_device_train_batch_size": (_at_least(1, integer=True), "an integer >= 1"),
    "gradient_accumulation_steps": (_at_least(1, integer=True), "an integer >= 1"),
    "steps_per_generation": (_or_null(_at_least(1, integer=True)), "an integer >= 1, or null"),
    "generation_batch_size": (_or_null(_at_least(1, integer=True)), "an integer >= 1, or null"),
    "dataloader_num_workers": (_at_least(0, integer=True), "an integer >= 0"),
    "vllm_gpu_memory_utilization": (_between(0, 1, low_open=True), "in (0, 1]"),
}


def _interval_steps(value: Any) -> bool:
    return is_number(value) and (0 < value < 1 or value >= 1 and float(value).is_integer())


def check_trainer_values(trainer: Mapping[str, Any]) -> None:
    """Ranges, choices and cross-field rules of the GRPOConfig fields: the trainer node with the batch-derived fields
    filled in, and the generation and distributed nodes (messages name each field where it is set)."""
    def value(key: str) -> Any:
        return trainer_value(trainer, key)

    for key, (ok, valid) in TRAINER_RANGES.items():
        require(config_key(key), value(key), ok(value(key)), valid)
    for key, choices in _choices():
        if value(key) is not None and str(value(key)) not in choices:
            raise ConfigError(f"{config_key(key)}={show(value(key))} must be one of {', '.join(choices)}")
    if value("epsilon_high") is not None and not value("epsilon_high") >= value("epsilon"):
        raise ConfigError(f"trainer.epsilon_high={show(value('epsilon_high'))} must be >= "
                          f"trainer.epsilon={show(value('epsilon'))} (the upper clipping range), or null (= epsilon)")
    if value("max_steps") == 0 or not is_int(value("max_steps")):
        raise ConfigError(f"trainer.max_steps={show(value('max_steps'))} must be an integer >= 1, or -1 to train "
                          "for trainer.num_train_epochs")
    if value("max_steps") < 0 and not _above(0)(value("num_train_epochs")):
        raise ConfigError(f"trainer.num_train_epochs={show(value('num_train_epochs'))} must be > 0 when "
                          f"trainer.max_steps={value('max_steps')} (train by epochs)")
    for kind in ("logging", "save"):
        if str(value(f"{kind}_strategy")) == "steps" and not _interval_steps(value(f"{kind}_steps")):
            raise ConfigError(f"trainer.{kind}_steps={show(value(f'{kind}_steps'))} must be an integer >= 1 or a "
                              f"fraction of the run in (0, 1) (trainer.{kind}_strategy=steps)")
    if str(value("eval_strategy")) != "no":
        raise ConfigError(f"trainer.eval_strategy={show(value('eval_strategy'))} must be no: grpolab gives TRL no "
                          "eval dataset; its held-out evaluation is the eval node (eval.num_problems, eval.metrics)")
    no_evaluation = "the best checkpoint needs TRL's evaluation, which grpolab does not run"
    if str(value("save_strategy")) == "best":
        raise ConfigError(f"trainer.save_strategy=best must be no, steps or epoch: {no_evaluation}")
    if value("load_best_model_at_end"):
        raise ConfigError(f"trainer.load_best_model_at_end=true must be false: {no_evaluation}")
    if trainer.get("generation_batch_size") is not None and trainer.get("steps_per_generation") is not None:
        raise ConfigError(f"trainer.generation_batch_size={trainer['generation_batch_size']} and "
                          f"trainer.steps_per_generation={trainer['steps_per_generation']} cannot both be set; "
                          "set one (TRL derives the other)")


def _choices() -> Iterator[tuple[str, tuple[str, ...]]]:
    for name, row in TRL_FIELDS.items():
        if row.choices:
            yield name, row.choices
    yield from TRL_STRING_CHOICES.items()


def check_run_values(cfg: DictConfig) -> None:
    """Ranges and consistency of the nodes around the trainer: seed, threads, model, eval, rewards, warm start, ..."""
    require("seed", cfg.seed, is_int(cfg.seed) and 0 <= cfg.seed <= SEED_MAX, f"an integer in [0, {SEED_MAX}]")
    require("threads", cfg.threads, _at_least(1, integer=True)(cfg.threads), "an integer >= 1 (torch threads)")
    require("model.dtype", cfg.model.dtype, cfg.model.dtype in MODEL_DTYPES, f"one of {', '.join(MODEL_DTYPES)}")
    _check_pixels(cfg.model.tokenizer)
    require("eval.batch_size", cfg.eval.batch_size, _at_least(1, integer=True)(cfg.eval.batch_size),
            "an integer >= 1")
    require("eval.num_problems", cfg.eval.num_problems, _or_null(_at_least(1, True))(cfg.eval.num_problems),
            "an integer >= 1, or null (the whole held-out split)")
    require("eval.max_new_tokens", cfg.eval.max_new_tokens, _at_least(1, True)(cfg.eval.max_new_tokens),
            "an integer >= 1")
    require("eval.every_steps", cfg.eval.every_steps, _or_null(_at_least(1, True))(cfg.eval.every_steps),
            "an integer >= 1 (optimizer steps between held-out evaluations), or null (before and after only)")
    _check_optimized_metric(cfg)
    schedules = TRL_FIELDS["lr_scheduler_type"].choices
    require("scheduler.name", cfg.scheduler.name, cfg.scheduler.name in schedules, f"one of {', '.join(schedules)}")
    require("scheduler.warmup_steps", cfg.scheduler.warmup_steps, _at_least(0, True)(cfg.scheduler.warmup_steps),
            "an integer >= 0 (optimizer steps of linear warm-up)")
    rounds = cfg.dynamic_sampling.max_generation_rounds
    require("dynamic_sampling.max_generation_rounds", rounds, _at_least(1, True)(rounds), "an integer >= 1")
    _check_present(cfg.optimizer, "optimizer", {
        "weight_decay": (_at_least(0), ">= 0"), "eps": (_above(0), "> 0"), "momentum": (_at_least(0), ">= 0"),
        "betas": (lambda v: isinstance(v, (list, ListConfig)) and len(v) == 2 and all(_between(0, 1)(b) and b < 1
                                                                                      for b in v),
                  "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    })
    if cfg.warmstart:
        _check_present(cfg.warmstart, "warmstart", {
            "steps": (_at_least(0, True), "an integer >= 0 (0 skips the warm start)"),
            "batch_size": (_at_least(1, True), "an integer >= 1"), "lr": (_above(0), "> 0"),
            "weight_decay": (_at_least(0), ">= 0"), "warmup_steps": (_at_least(0, True), "an integer >= 0"),
            "log_every": (_at_least(1, True), "an integer >= 1"),
        })
    _check_present(cfg.data, "data", {
        "train_size": (_or_null(_at_least(1, True)), "an integer >= 1, or null (every row)"),
        "eval_size": (_at_least(1, True), "an integer >= 1 (the held-out split)"),
    })
    for name, spec in cfg.rewards.items():
        _check_reward(str(name), spec, cfg)


def _check_present(node: Any, prefix: str, checks: Mapping[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Checks for the keys a ``_target_`` node has (its options differ: sgd has momentum, adamw betas)."""
    if not isinstance(node, DictConfig):
        return
    for key, (ok, valid) in checks.items():
        if key in node and not OmegaConf.is_missing(node, key):
            require(f"{prefix}.{key}", node[key], ok(node[key]), valid)


def _check_pixels(tokenizer: Any) -> None:
    if not isinstance(tokenizer, DictConfig) or "min_pixels" not in tokenizer or "max_pixels" not in tokenizer:
        return
    low, high = tokenizer.min_pixels, tokenizer.max_pixels
    if low is not None and high is not None and not low <= high:
        raise ConfigError(f"model.tokenizer.min_pixels={low} must be <= model.tokenizer.max_pixels={high}")


def _check_optimized_metric(cfg: DictConfig) -> None:
    phase, _, metric = str(cfg.optimized_metric).partition(".")
    if phase not in ("eval_before", "eval_after"):
        return  # another summary.json key (e.g. warmstart.steps): known only once the run writes it
    names = [*(str(name) for name in cfg.eval.metrics), "num_samples"]
    if metric not in names:
        raise ConfigError(f"optimized_metric={cfg.optimized_metric} names no held-out metric; valid: "
                          f"{', '.join(f'{phase}.{name}' for name in names)} (the eval.metrics keys)")


def _check_reward(name: str, spec: Any, cfg: DictConfig) -> None:
    key = f"rewards.{name}"
    if not isinstance(spec, DictConfig) or "_target_" not in spec:
        raise ConfigError(f"{key} must be a mapping with a _target_ (e.g. _target_: grpolab.rewards.accuracy."
                          f"Accuracy); got {show(spec)}")
    if "weight" in spec:
        weight = spec.weight
        if not is_number(weight):
            raise ConfigError(f"{key}.weight must be a finite number, e.g. {key}.weight=0.5; got {weight!r}")
    target = spec._target_
    if target == SOFT_OVERLONG:
        _check_overlong(key, spec, "max_completion_len", "soft_punish_cache", cfg, counts_tokens=True)
    elif target == OVERLONG:
        level = spec.level if "level" in spec else cfg.reward_level
        _check_overlong(key, spec, "max_length", "cache", cfg, counts_tokens=str(getattr(level, "value", level))
                        == "token")


def _check_overlong(key: str, spec: DictConfig, length_key: str, cache_key: str, cfg: DictConfig,
                    counts_tokens: bool) -> None:
    """DAPO's soft overlong punishment: 0 up to ``L - cache``, falling to -1 at ``L``; it must be reachable."""
    if OmegaConf.is_missing(spec, length_key) or OmegaConf.is_missing(spec, cache_key):
        return  # reported as required by check_required_values
    length, cache = spec[length_key], spec[cache_key]
    require(f"{key}.{length_key}", length, _at_least(1, True)(length), "an integer >= 1")
    require(f"{key}.{cache_key}", cache, is_int(cache) and 0 <= cache < length,
            f"an integer in [0, {key}.{length_key}={length}) (the punishment ramp below the length limit)")
    budget = cfg.trainer.max_completion_length
    if counts_tokens and length - cache >= budget:
        raise ConfigError(f"{key}.{cache_key}={cache} with {key}.{length_key}={length} starts the punishment at "
                          f"{length - cache} tokens, but trainer.max_completion_length={budget} cuts every "
                          f"completion before that; valid: {key}.{length_key} - {key}.{cache_key} < {budget}")


def check_required_values(cfg: DictConfig) -> None:
    """Every ``???`` left in the job config (``rewards.length.target``, ``data.path``) named before anything runs."""
    for key in _missing_keys(cfg, ""):
        raise ConfigError(f"{key} is required (??? in its config): set it, e.g. {key}=<value>")


def _missing_keys(node: Any, path: str) -> Iterator[str]:
    if isinstance(node, DictConfig):
        items = [(str(key), key) for key in node.keys()]
    elif isinstance(node, ListConfig):
        items = [(str(index), index) for index in range(len(node))]
    else:
        return
    for name, key in items:
        if not path and name == "hydra":
            continue
        child_path = f"{path}.{name}" if path else name
        child = node._get_node(key)
        if child is None or child._is_interpolation():
            continue
        if child._is_missing():
            yield child_path
        else:
            yield from _missing_keys(child, child_path)
