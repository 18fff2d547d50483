"""The ``trainer`` node: every ``trl.GRPOConfig`` field, typed from the generated table, except the keys grpolab sets.

``TrainerConfig`` is built from ``grpolab.config.grpo_fields`` (generated from the installed trl), so
``trainer.use_vllm=true`` or ``trainer.save_steps=50`` need no ``+`` and a wrong type (``trainer.beta=lots``) fails
when Hydra composes the config, before any job starts. Its defaults are TRL's, so ``--cfg job`` shows every value
GRPOConfig will see; ``grpo_kwargs`` passes GRPOConfig only the keys that differ from its defaults.

Two kinds of GRPOConfig fields are not plain trainer keys:

- ``OWNED_ELSEWHERE``: set by another node (the learning rate by ``optimizer.lr``, ``output_dir`` by Hydra's run
  directory, ...). They are not in the schema; setting them names their home.
- ``BATCH_DERIVED``: derived from the ``batch`` node. They are in the schema with ``null`` (= derived, or TRL's
  default when ``batch=null``) and may be set only with ``batch=null``.

Two groups hold GRPOConfig fields of their own, under TRL's names, typed and defaulted the same way: ``distributed``
(``DistributedConfig``: ``fsdp``, ``fsdp_config``, ``deepspeed`` and the ``ddp_*`` fields, i.e. the engine) and
``generation`` (``GenerationConfig``: ``use_vllm`` and every ``vllm_*`` field); ``config_key`` names a field's home.

Imports nothing heavy.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import field, make_dataclass
from typing import Any, Optional

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


def _schema_field(row: GrpoField) -> tuple[str, Any, Any]:
    if row.name in BATCH_DERIVED:
        return row.name, Optional[row.type], field(default=None)
    if isinstance(row.default, (list, dict)):
        return row.name, row.type, field(default_factory=lambda default=row.default: type(default)(default))
    return row.name, row.type, field(default=row.default)


TrainerConfig = make_dataclass(
    "TrainerConfig", [_schema_field(row) for row in GRPO_FIELDS if row.name not in OWNED_ELSEWHERE]
)
TrainerConfig.__module__ = __name__
TrainerConfig.__doc__ = (
    f"trl.GRPOConfig's fields (trl {TRL_VERSION}) with TRL's defaults, minus OWNED_ELSEWHERE; BATCH_DERIVED are null."
)


def _group_schema(name: str, fields: tuple[str, ...], doc: str) -> type:
    rows = [row for row in GRPO_FIELDS if row.name in fields]
    # transformers 5 reads fsdp as a switch (fsdp=True; the old option strings are deprecated): a boolean here.
    schema = make_dataclass(name, [(row.name, Optional[bool], field(default=None)) if row.name == "fsdp"
                                   else _schema_field(row) for row in rows])
    schema.__module__ = __name__
    schema.__doc__ = doc
    return schema


DistributedConfig = _group_schema("DistributedConfig", DISTRIBUTED_FIELDS, (
    f"The engine: trl.GRPOConfig's fsdp, fsdp_config, deepspeed and ddp_* fields (trl {TRL_VERSION})."))
GenerationConfig = _group_schema("GenerationConfig", GENERATION_FIELDS, (
    f"The generation engine: trl.GRPOConfig's use_vllm and vllm_* fields (trl {TRL_VERSION})."))


def config_key(name: str) -> str:
    """Where a GRPOConfig field is set: ``trainer.beta``, ``generation.vllm_server_port``, ``distributed.fsdp``.

    >>> config_key("beta"), config_key("vllm_mode"), config_key("ddp_timeout")
    ('trainer.beta', 'generation.vllm_mode', 'distributed.ddp_timeout')
    """
    if name in GENERATION_FIELDS:
        return f"generation.{name}"
    return f"distributed.{name}" if name in DISTRIBUTED_FIELDS else f"trainer.{name}"


def owned_elsewhere_message(key: str) -> str:
    """``trainer.learning_rate is not set in the trainer node; set optimizer.lr instead``."""
    return f"trainer.{key} is not set in the trainer node; set {OWNED_ELSEWHERE[key]} instead"


def unknown_key_message(key: str) -> str:
    """One line for a trainer key that is no GRPOConfig field, naming the closest fields (or the closest's home).

    >>> unknown_key_message("lerning_rate")
    'trainer.lerning_rate is not a trl.GRPOConfig field; the closest, trainer.learning_rate, is not set in the \
trainer node: set optimizer.lr instead'
    """
    if key in OWNED_ELSEWHERE:
        return owned_elsewhere_message(key)
    close = difflib.get_close_matches(key, list(TRL_FIELDS), n=3, cutoff=0.6)
    if close and close[0] in OWNED_ELSEWHERE:
        return (f"trainer.{key} is not a trl.GRPOConfig field; the closest, trainer.{close[0]}, is not set in the "
                f"trainer node: set {OWNED_ELSEWHERE[close[0]]} instead")
    # Fields of the engine groups are named where they are set (generation.vllm_max_model_length).
    close = [name if name in TRAINER_NODE_FIELDS else config_key(name) for name in close
             if name in TRAINER_NODE_FIELDS or name in GENERATION_FIELDS or name in DISTRIBUTED_FIELDS]
    hint = f"did you mean: {', '.join(close)}" if close else "see trl.GRPOConfig"
    return f"trainer.{key} is not a trl.GRPOConfig field; {hint}"


def check_trainer_keys(trainer: Mapping[str, Any]) -> None:
    """Reject keys that are not GRPOConfig fields (added with ``+``/``++``) or that another node owns."""
    for key in trainer:
        if key in OWNED_ELSEWHERE or key not in TRL_FIELDS:
            raise ConfigError(unknown_key_message(str(key)))


def trainer_value(trainer: Mapping[str, Any], key: str) -> Any:
    """The value GRPOConfig will use: the node's, or TRL's default for an unset (null) batch-derived field."""
    value = trainer.get(key)
    if key not in trainer or (value is None and key in BATCH_DERIVED):
        return TRL_DEFAULTS[key]
    return value


def grpo_kwargs(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """The keys GRPOConfig must receive: those whose value differs from its default (unset batch fields dropped).

    Passing only these keeps GRPOConfig's own defaults (and its None-means-unset logic) in charge of everything the
    config leaves alone, exactly as ``GRPOConfig(**only_what_was_set)`` did before the schema listed every field.

    >>> grpo_kwargs({"beta": 0.0, "temperature": 0.7, "num_generations": None, "logging_steps": 10.0})
    {'temperature': 0.7}
    >>> grpo_kwargs({"warmup_steps": 320.0, "logging_steps": 0.5})
    {'warmup_steps': 320, 'logging_steps': 0.5}
    """
    return {
        key: _as_typed(key, value) for key, value in trainer.items()
        if not (value is None and key in BATCH_DERIVED) and not _same(value, TRL_DEFAULTS.get(key, _ABSENT))
    }


def _as_typed(key: str, value: Any) -> Any:
    """A whole number back as an int where TRL's float field counts steps and defaults to an int (warmup_steps,
    logging_steps, save_steps: ``int or float``, a float below 1 being a fraction of the run): OmegaConf's float
    node turned the YAML's ``320`` into ``320.0``, and GRPOConfig gets the 320 it got before the schema."""
    default = TRL_DEFAULTS.get(key)
    if isinstance(value, float) and value.is_integer() and isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    return value


_ABSENT = object()


def _same(value: Any, default: Any) -> bool:
    if default is _ABSENT or isinstance(value, bool) != isinstance(default, bool):
        return False
    if isinstance(value, (int, float)) and isinstance(default, (int, float)):
        return value == default  # OmegaConf turns a float field's 10 into 10.0
    return type(value) is type(default) and value == default
