"""The ``trainer`` node: every ``trl.GRPOConfig`` field, typed from the generated table, except the keys grpolab sets.

``TrainerConfig`` is built from ``grpolab.config.grpo_fields`` (generated from the installed trl): no field needs a
``+``, a wrong type (``trainer.beta=lots``) fails when Hydra composes the config, and the defaults are TRL's, so
``--cfg job`` shows every value GRPOConfig will see (``grpolab.trainer.args`` passes it the keys that differ from them).

Two kinds of GRPOConfig fields are not plain trainer keys:

- ``OWNED_ELSEWHERE``: set by another node (the learning rate by ``optimizer.lr``, ``output_dir`` by Hydra's run
  directory, ...). They are not in the schema; setting them names their home.
- ``BATCH_DERIVED``: derived from the ``batch`` node. They are in the schema with ``null`` (= derived, or TRL's
  default when ``batch=null``) and may be set only with ``batch=null``.

Two groups hold GRPOConfig fields of their own, under TRL's names, typed and defaulted the same way: ``distributed``
(``DistributedConfig``: ``fsdp``, ``fsdp_config``, ``deepspeed`` and the ``ddp_*`` fields, i.e. the engine) and
``generation`` (``GenerationConfig``: ``use_vllm`` and every ``vllm_*`` field); ``config_key`` names a field's home.

The three schemas check their values (``check_grpo_fields``, their ``__post_init__``): the ranges and choices TRL
leaves unchecked or checks only once training starts, named by config key. What GRPOConfig itself refuses in one
clear line (``generation_batch_size`` and ``steps_per_generation`` both set, ...) is left to it. Imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import field, make_dataclass
from typing import Any, Optional

from grpolab.config.checks import Check, above, at_least, between, or_null, require, show
from grpolab.config.errors import ConfigError
from grpolab.config.grpo_fields import GRPO_FIELDS, TRL_VERSION, GrpoField

#: trainer keys that have another home in grpolab's config, with that home.
OWNED_ELSEWHERE = {
    "learning_rate": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "optim": "the optimizer group (optimizer=adamw|sgd|adafactor)",
    "optim_args": "the optimizer group (optimizer=adamw|sgd|adafactor)",
    "adam_beta1": "optimizer.betas",
    "adam_beta2": "optimizer.betas",
    "adam_epsilon": "optimizer.eps",
    "reward_weights": "rewards.<name>.weight",
    "report_to": "the logger group (logger=wandb|tensorboard|none)",
    "output_dir": "hydra.run.dir / hydra.sweep.dir",
    "seed": "seed",
    "lr_scheduler_type": "the scheduler group (scheduler=constant|linear|cosine)",
    "warmup_steps": "scheduler.warmup_steps",
    "gradient_checkpointing": "trainer.activation_checkpointing (its transformers 5 name, which wins over it)",
    "gradient_checkpointing_kwargs": "trainer.activation_checkpointing_kwargs (its transformers 5 name)",
    "max_tool_calling_iterations": "environment.max_tool_calling_iterations (environment=calculator|python|...)",
}
#: GRPOConfig fields of the ``distributed`` group (conf/distributed: none, ddp, fsdp, zero2, zero3).
DISTRIBUTED_FIELDS = ("ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph",
                      "ddp_backend", "ddp_timeout", "fsdp", "fsdp_config", "deepspeed")
#: GRPOConfig fields of the ``generation`` group (conf/generation: hf, vllm_colocate, vllm_server).
GENERATION_FIELDS = tuple(row.name for row in GRPO_FIELDS if row.name == "use_vllm" or row.name.startswith("vllm_"))
OWNED_ELSEWHERE.update(
    {name: f"distributed.{name} (distributed=none|ddp|fsdp|zero2|zero3)" for name in DISTRIBUTED_FIELDS}
    | {name: f"generation.{name} (generation=hf|vllm_colocate|vllm_server)" for name in GENERATION_FIELDS}
)
OWNED_ELSEWHERE["use_vllm"] = "the generation group (generation=vllm_colocate or generation=vllm_server)"
#: trainer keys derived from the ``batch`` node when it is set.
BATCH_DERIVED = {
    "per_device_train_batch_size": "batch.micro_batch_size / batch.prompts_per_step",
    "gradient_accumulation_steps": "batch.updates_per_rollout and batch.micro_batch_size",
    "steps_per_generation": "batch.updates_per_rollout",
    "generation_batch_size": "batch.prompts_per_step",
    "num_generations": "batch.generations_per_prompt",
    "num_iterations": "batch.num_iterations",
}

TRL_FIELDS: dict[str, GrpoField] = {row.name: row for row in GRPO_FIELDS}
TRAINER_NODE_FIELDS = frozenset(name for name in TRL_FIELDS if name not in OWNED_ELSEWHERE)
TRL_DEFAULTS: dict[str, Any] = {row.name: row.default for row in GRPO_FIELDS}
#: Values TRL accepts for its free-text string fields (it checks them only when training starts, or never);
#: tests/config/test_trainer_node.py keeps each named in the field's own help text.
TRL_STRING_CHOICES = {
    "loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
    "scale_rewards": ("group", "batch", "none"),
    "importance_sampling_level": ("token", "sequence"),
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),
    "vllm_mode": ("server", "colocate"),
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
}
CHOICES = {**{row.name: row.choices for row in GRPO_FIELDS if row.choices}, **TRL_STRING_CHOICES}
#: field -> (check, what is valid), for the ranges TRL does not check (its batch fields: when set directly).
RANGES: dict[str, tuple[Check, str]] = {
    "beta": (at_least(0), ">= 0 (the KL coefficient; 0 turns the KL term off)"),
    "temperature": (above(0), "> 0"),
    "top_p": (between(0, 1, low_open=True), "in (0, 1]"),
    "top_k": (at_least(0, integer=True), "an integer >= 0 (0 disables top-k)"),
    "min_p": (or_null(between(0, 1)), "in [0, 1], or null"),
    "repetition_penalty": (above(0), "> 0 (1 is no penalty)"),
    "epsilon": (above(0), "> 0 (the lower clipping range)"),
    "delta": (or_null(above(1)), "> 1 (INTELLECT-2 recommends > 1 + epsilon), or null for no upper clip"),
    "max_completion_length": (at_least(1, integer=True), "an integer >= 1 (tokens per completion)"),
    "max_grad_norm": (at_least(0), ">= 0"),
    "ref_model_mixup_alpha": (between(0, 1), "in [0, 1]"),
    "ref_model_sync_steps": (at_least(1, integer=True), "an integer >= 1"),
    "top_entropy_quantile": (between(0, 1), "in [0, 1]"),
    "entropy_coef": (at_least(0), ">= 0"),
    "dataloader_num_workers": (at_least(0, integer=True), "an integer >= 0"),
    "vllm_gpu_memory_utilization": (between(0, 1, low_open=True), "in (0, 1]"),
    **{name: (or_null(at_least(1, integer=True)), "an integer >= 1") for name in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "generation_batch_size",
        "num_iterations")},
}
_NO_EVALUATION = "the best checkpoint needs TRL's evaluation, which grpolab does not run"


def check_grpo_fields(node: Any) -> None:
    """The ``__post_init__`` of the three schemas: ranges, choices and cross-field rules of the fields ``node`` has,
    each message naming the key where it is set (``trainer.beta``, ``generation.vllm_mode``)."""
    values = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
    for key, value in values.items():
        if key in RANGES:
            require(config_key(key), value, *RANGES[key])
        if key in CHOICES and value is not None and str(value) not in CHOICES[key]:
            raise ConfigError(f"{config_key(key)}={show(value)} must be one of {', '.join(CHOICES[key])}")
    if "beta" not in values:
        return  # the engine groups: no cross-field rules
    value = values.__getitem__
    if value("epsilon_high") is not None and not value("epsilon_high") >= value("epsilon"):
        raise ConfigError(f"trainer.epsilon_high={show(value('epsilon_high'))} must be >= "
                          f"trainer.epsilon={show(value('epsilon'))} (the upper clipping range), or null (= epsilon)")
    if value("max_steps") == 0:
        raise ConfigError("trainer.max_steps=0 must be an integer >= 1, or -1 to train for trainer.num_train_epochs")
    if value("max_steps") < 0 and not above(0)(value("num_train_epochs")):
        raise ConfigError(f"trainer.num_train_epochs={show(value('num_train_epochs'))} must be > 0 when "
                          f"trainer.max_steps={value('max_steps')} (train by epochs)")
    for kind in ("logging", "save"):
        steps = value(f"{kind}_steps")
        if value(f"{kind}_strategy") == "steps" and not (0 < steps < 1 or steps >= 1 and float(steps).is_integer()):
            raise ConfigError(f"trainer.{kind}_steps={show(steps)} must be an integer >= 1 or a fraction of the run "
                              f"in (0, 1) (trainer.{kind}_strategy=steps)")
    if value("eval_strategy") != "no":
        raise ConfigError(f"trainer.eval_strategy={show(value('eval_strategy'))} must be no: grpolab gives TRL no "
                          "eval dataset; its held-out evaluation is the eval node (eval.num_problems, eval.metrics)")
    if value("save_strategy") == "best":
        raise ConfigError(f"trainer.save_strategy=best must be no, steps or epoch: {_NO_EVALUATION}")
    if value("load_best_model_at_end"):
        raise ConfigError(f"trainer.load_best_model_at_end=true must be false: {_NO_EVALUATION}")


def _schema_field(row: GrpoField) -> tuple[str, Any, Any]:
    if row.name in BATCH_DERIVED:
        return row.name, Optional[row.type], field(default=None)
    if isinstance(row.default, (list, dict)):
        return row.name, row.type, field(default_factory=lambda default=row.default: type(default)(default))
    return row.name, row.type, field(default=row.default)


def _schema(name: str, fields: frozenset[str] | tuple[str, ...], doc: str) -> type:
    rows = [row for row in GRPO_FIELDS if row.name in fields]
    # transformers 5 reads fsdp as a switch (fsdp=True; the old option strings are deprecated): a boolean here.
    schema = make_dataclass(name, [(row.name, Optional[bool], field(default=None)) if row.name == "fsdp"
                                   else _schema_field(row) for row in rows],
                            namespace={"__post_init__": check_grpo_fields})
    schema.__module__ = __name__
    schema.__doc__ = doc
    return schema


TrainerConfig = _schema("TrainerConfig", TRAINER_NODE_FIELDS, (
    f"trl.GRPOConfig's fields (trl {TRL_VERSION}) with TRL's defaults, minus OWNED_ELSEWHERE; BATCH_DERIVED are null."))
DistributedConfig = _schema("DistributedConfig", DISTRIBUTED_FIELDS, (
    f"The engine: trl.GRPOConfig's fsdp, fsdp_config, deepspeed and ddp_* fields (trl {TRL_VERSION})."))
GenerationConfig = _schema("GenerationConfig", GENERATION_FIELDS, (
    f"The generation engine: trl.GRPOConfig's use_vllm and vllm_* fields (trl {TRL_VERSION})."))


def config_key(name: str) -> str:
    """Where a GRPOConfig field is set: ``trainer.beta``, ``generation.vllm_server_port``, ``distributed.fsdp``.

    >>> config_key("beta"), config_key("vllm_mode"), config_key("ddp_timeout")
    ('trainer.beta', 'generation.vllm_mode', 'distributed.ddp_timeout')
    """
    if name in GENERATION_FIELDS:
        return f"generation.{name}"
    return f"distributed.{name}" if name in DISTRIBUTED_FIELDS else f"trainer.{name}"


def unknown_key_message(key: str) -> str:
    """One line for a trainer key that is no GRPOConfig field, naming the closest fields (or the closest's home).

    >>> unknown_key_message("lerning_rate")
    'trainer.lerning_rate is not a trl.GRPOConfig field; the closest, trainer.learning_rate, is not set in the \
trainer node: set optimizer.lr instead'
    """
    if key in OWNED_ELSEWHERE:
        return f"trainer.{key} is not set in the trainer node; set {OWNED_ELSEWHERE[key]} instead"
    close = difflib.get_close_matches(key, list(TRL_FIELDS), n=3, cutoff=0.6)
    if close and close[0] in OWNED_ELSEWHERE:
        return (f"trainer.{key} is not a trl.GRPOConfig field; the closest, trainer.{close[0]}, is not set in the "
                f"trainer node: set {OWNED_ELSEWHERE[close[0]]} instead")
    # Fields of the engine groups are named where they are set (generation.vllm_max_model_length).
    close = [name if name in TRAINER_NODE_FIELDS else config_key(name) for name in close
             if name in TRAINER_NODE_FIELDS or name in GENERATION_FIELDS or name in DISTRIBUTED_FIELDS]
    hint = f"did you mean: {', '.join(close)}" if close else "see trl.GRPOConfig"
    return f"trainer.{key} is not a trl.GRPOConfig field; {hint}"
