"""The checks of the composed config that need no model, tokenizer or dataset, each failing in one ``ConfigError`` line.

``validate`` calls the schemas' own checks, the trusted targets and the engines, and holds the rules of the untyped
nodes (``optimizer``, ``warmstart``, ``data``) and of what spans nodes (keys added with ``+``, ``???`` left, the
batch). The job runs it before building anything, preflight at every value of a sweep; reward rules live with the
rewards (``grpolab.rewards.build``). Imports no torch, transformers or trl; ``validate`` itself imports the
(trusted) modules of the ``_target_``s in its last step only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from grpolab.config.batch import derive_grpo_fields
from grpolab.config.checks import above, at_least, between, or_null, require_each
from grpolab.config.engine_checks import check_engines
from grpolab.config.errors import ConfigError, first_line
from grpolab.config.schema import TrainConfig
from grpolab.config.targets import check_resolved_targets, check_trusted_targets
from grpolab.config.trainer_node import BATCH_DERIVED, TRL_DEFAULTS, unknown_key_message

__all__ = ["ConfigError", "check_required_values", "check_schema_keys", "config_errors", "validate"]

#: Rules of the nodes a ``_target_`` builds (their keys differ by option: sgd has momentum, adamw betas).
UNTYPED_NODE_RULES = {
    "optimizer": {
        "lr": (above(0), "a positive finite number (e.g. optimizer.lr=3e-5)"),
        "weight_decay": (at_least(0), ">= 0"), "eps": (above(0), "> 0"), "momentum": (at_least(0), ">= 0"),
        "betas": (lambda v: isinstance(v, list) and len(v) == 2 and all(between(0, 1)(b) and b < 1 for b in v),
                  "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    },
    "warmstart": {
        "steps": (at_least(0, True), "an integer >= 0 (0 skips the warm start)"),
        "batch_size": (at_least(1, True), "an integer >= 1"), "lr": (above(0), "> 0"),
        "weight_decay": (at_least(0), ">= 0"), "warmup_steps": (at_least(0, True), "an integer >= 0"),
        "log_every": (at_least(1, True), "an integer >= 1"),
    },
    "data": {
        "train_size": (or_null(at_least(1, True)), "an integer >= 1, or null (every row)"),
        "eval_size": (at_least(1, True), "an integer >= 1 (the held-out split)"),
    },
}


def validate(cfg: DictConfig, num_processes: int = 1, *, import_targets: bool = True) -> dict[str, Any]:
    """Check everything that can be checked from the job config alone; return the derived batch fields (may be empty).

    ``num_processes`` is the job's process count (``grpolab.tracking.processes.launched_processes().world_size``):
    ``batch.*`` are global numbers, and each process's micro batches are derived for that many processes. With
    ``import_targets`` (the job) the ``_target_``s are also followed into their modules
    (``grpolab.config.targets.check_resolved_targets``), which imports them; preflight skips that step.
    """
    if "hydra" in cfg:  # composed with return_hydra_config: Hydra's node is not the job's (and not typed)
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    check_trusted_targets(cfg)
    check_required_values(cfg)
    check_schema_keys(cfg)
    job: TrainConfig = OmegaConf.to_object(cfg)  # every schema's __post_init__, on the resolved values
    if "lr" not in job.optimizer:
        raise ConfigError("optimizer.lr is missing; the optimizer node owns the learning rate (e.g. optimizer.lr=1e-5)")
    for name, rules in UNTYPED_NODE_RULES.items():
        require_each(getattr(job, name) or {}, name, rules)
    if job.batch is None:  # TRL's batch fields as given (the batch node's own check makes whole groups otherwise)
        _check_group_division(job, num_processes)
    derived = _derive_batch(job, num_processes)
    check_engines(cfg)
    if import_targets:
        check_resolved_targets(cfg)
    return derived


def check_schema_keys(node: DictConfig, path: str = "") -> None:
    """Refuse a key added with ``+`` to a typed node (composing refuses any other unknown key): the typed values
    would silently drop it. A trainer key is named with its closest GRPOConfig field, or the node that owns it."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    known = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        if key not in known:
            prefix = f"{path}." if path else ""
            raise ConfigError(unknown_key_message(str(key)) if path == "trainer" else
                              f"unknown key {prefix}{key}; known keys: {', '.join(prefix + k for k in known)}")
    for key in known:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            check_schema_keys(child, f"{path}.{key}" if path else key)


def check_required_values(cfg: DictConfig) -> None:
    """Every ``???`` left in the job config (``rewards.length.target``, ``data.path``) named before anything runs."""
    for key in _missing_keys(cfg, ""):
        raise ConfigError(f"{key} is required (??? in its config): set it, e.g. {key}=<value>")


def _missing_keys(node: Any, path: str) -> Iterator[str]:
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node)) if isinstance(node, ListConfig) else ()
    for key in keys:
        child, child_path = node._get_node(key), f"{path}.{key}" if path else str(key)
        if child is None or child._is_interpolation():
            continue
        if child._is_missing():
            yield child_path
        else:
            yield from _missing_keys(child, child_path)


def _derive_batch(job: TrainConfig, num_processes: int) -> dict[str, Any]:
    if job.batch is None:
        return {}
    for key, home in BATCH_DERIVED.items():
        if getattr(job.trainer, key) is not None:
            raise ConfigError(f"trainer.{key} is derived from the batch node; set {home} instead (or batch=null to "
                              "give TRL's batch fields directly)")
    return derive_grpo_fields(job.batch, num_processes)


def _check_group_division(job: TrainConfig, num_processes: int) -> None:
    """TRL needs whole groups per generation batch; say so before TRL's own, later, error, naming the keys."""
    def value(key: str) -> Any:  # unset (null): TRL's default
        return TRL_DEFAULTS[key] if getattr(job.trainer, key) is None else getattr(job.trainer, key)

    generations, per_device = value("num_generations"), value("per_device_train_batch_size")
    steps = value("steps_per_generation") or value("gradient_accumulation_steps")
    generation_batch = value("generation_batch_size") or per_device * num_processes * steps
    if generations < 2 or generation_batch % generations:
        raise ConfigError(
            f"trainer.num_generations={generations} must be at least 2 and divide the generation batch of "
            f"{generation_batch} completions (per_device_train_batch_size={per_device} x {num_processes} processes x "
            f"steps_per_generation={steps}); valid group sizes: "
            f"{', '.join(str(d) for d in range(2, generation_batch + 1) if generation_batch % d == 0)}"
        )


@contextmanager
def config_errors(key: str) -> Iterator[None]:
    """Report a ``ValueError``/``FileNotFoundError`` raised while building ``key`` as a one-line ``ConfigError``.

    Hydra wraps errors raised by a ``_target_`` in an ``InstantiationException`` whose message spans several lines;
    the original error is its cause, and that is what the user needs to read.
    """
    try:
        yield
    except ConfigError:
        raise
    except InstantiationException as error:
        cause = error.__cause__ or error
        if not isinstance(cause, (ValueError, FileNotFoundError, TypeError)):
            raise
        raise _naming(key, cause) from error
    except (ValueError, FileNotFoundError) as error:
        raise _naming(key, error) from error


def _naming(key: str, error: BaseException) -> ConfigError:
    message = first_line(error)
    return ConfigError(message if isinstance(error, ConfigError) or message.startswith(key) else f"{key}: {message}")
