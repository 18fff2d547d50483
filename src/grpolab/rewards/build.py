"""Build the reward functions of a run from the ``rewards`` config node, failing fast with one line per mistake.

Each entry of ``rewards`` is ``<name>: {_target_: ..., weight: ..., **kwargs}``. The builder pops ``weight`` (and
``completions_as`` for plain callables), instantiates the rest with Hydra, names the result after ``<name>`` (so TRL
logs ``rewards/<name>/mean`` at either level) and binds the rewards to one description of the tokenizer's vocabulary
(``describe_vocabulary``), so no reward holds the tokenizer.

Three kinds of reward reach TRL: synchronous callables, async callables (TRL awaits them together) and reward models
(``RewardModel``: TRL runs the model itself, with its own tokenizer). ``BuiltRewards.trainer_reward_funcs`` and
``reward_processing_classes`` are what ``GRPOTrainer`` takes, each entry guarded so that a failure names the reward
and the sample, and each kind still seen by TRL as what it is.

A ``Reward`` runs at its own ``level`` key when it has one (the option files interpolate ``${reward_level}``, so a
per-reward override such as ``rewards.accuracy.level=text`` is possible), else at the run's level. Plain callables
(TRL's functions) are text-level unless they read ``completion_ids`` only.

>>> from grpolab.models.tokenizer import build_char_tokenizer
>>> built = build_rewards({"format": {"_target_": "grpolab.rewards.format.Format", "weight": 0.5}}, "token",
...                       tokenizer=build_char_tokenizer())
>>> built.trainer_reward_funcs, built.reward_processing_classes, built.weights
([GuardedReward(Format(name='format', level='token'))], [None], [0.5])
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grpolab.config.errors import ConfigError
from grpolab.rewards.base import Reward, RewardLevel, RewardLevelError
from grpolab.rewards.model import RewardModel
from grpolab.rewards.vocabulary import describe_vocabulary
from grpolab.rewards.wrappers import AsyncNamedReward, NamedReward, guard_reward, is_async_reward

# The conf/rewards options; a test keeps these in step with the yaml files.
BUILTIN_REWARDS = (
    "accuracy", "format", "length", "overlong", "think_format", "soft_overlong", "reasoning_steps", "cosine_length",
    "repetition",
)
TOKEN_LEVEL_REWARDS = ("accuracy", "format", "length", "overlong", "soft_overlong", "cosine_length", "repetition")
# Options that need a task of their own (a box answer for iou) or a checkpoint (reward_model), kept apart from the
# rule-based text-task rewards above.
VISION_REWARDS = ("iou",)
MODEL_REWARDS = ("reward_model",)
# Options that score the use of tools, for runs with an environment (both levels).
TOOL_REWARDS = ("tool_use",)

# Third-party rewards that read completion_ids only (never completions), so they are valid at level=token as they are.
IDS_ONLY_CALLABLES = frozenset(
    {"trl.rewards.other_rewards._SoftOverlongPunishment", "trl.rewards.other_rewards._RepetitionPenalty"}
)
MISSING = "???"


@dataclass(frozen=True)
class BuiltRewards:
    """Rewards in config order (callables, or ``RewardModel``s) with their weights (for ``GRPOConfig.reward_weights``)
    and the dataset columns they read."""

    funcs: list[Callable[..., list[float | None]] | RewardModel]
    weights: list[float]
    names: list[str]
    required_columns: dict[str, set[str]]
    level: RewardLevel

    def __str__(self) -> str:
        return ", ".join(f"{name} x{weight:g}" for name, weight in zip(self.names, self.weights))

    @property
    def all_required_columns(self) -> set[str]:
        """Every dataset column some reward reads: what data preparation must provide (e.g. ``answer_ids``)."""
        return set().union(*self.required_columns.values())

    @property
    def trainer_reward_funcs(self) -> list[Any]:
        """``GRPOTrainer(reward_funcs=...)``: each function guarded (async ones by an async guard, so TRL still awaits
        them), each reward model as the model itself (its guard is its ``forward``), so TRL runs it as a model."""
        return [func.model if isinstance(func, RewardModel) else guard_reward(func) for func in self.funcs]

    @property
    def reward_processing_classes(self) -> list[Any]:
        """``GRPOTrainer(reward_processing_classes=...)``: a reward model's tokenizer, None for every function."""
        return [func.processing_class if isinstance(func, RewardModel) else None for func in self.funcs]


def build_rewards(
    rewards_cfg: Mapping[str, Mapping[str, Any]], level: RewardLevel | str, tokenizer: Any = None
) -> BuiltRewards:
    """Instantiate every reward in ``rewards_cfg``; ``tokenizer`` (the policy's) is required for token-level rewards.

    The tokenizer is read once (``describe_vocabulary``: special IDs, whitespace-only IDs, the rewards' tag IDs) and
    not kept. Without it, every reward must be text-level.

    >>> built = build_rewards({"accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy", "weight": 1.0}}, "text")
    >>> built.names, built.weights, built.required_columns
    (['accuracy'], [1.0], {'accuracy': {'answer'}})
    """
    level = RewardLevel.parse(level)
    if not rewards_cfg:
        raise ValueError(
            f"rewards is empty: select at least one, e.g. rewards=[accuracy,format] (options: "
            f"{', '.join(BUILTIN_REWARDS)})"
        )
    funcs, weights, names, required = [], [], [], {}
    for key, raw_spec in rewards_cfg.items():
        spec = _plain_spec(key, raw_spec)
        weight = _weight(key, spec.pop("weight", 1.0))
        completions_as = spec.pop("completions_as", "as_is")
        func = _instantiate(key, spec, level)
        if isinstance(func, (Reward, RewardModel)):
            if completions_as != "as_is":
                raise ValueError(f"rewards.{key}.completions_as applies to plain callables only; remove it")
        else:
            qualified = f"{type(func).__module__}.{type(func).__qualname__}"
            reads_only_ids = qualified in IDS_ONLY_CALLABLES
            if level is RewardLevel.token and not reads_only_ids:
                raise _no_token_variant(key)
            named = AsyncNamedReward if is_async_reward(func) else NamedReward
            func = named(func, key, completions_as=completions_as, reads_only_ids=reads_only_ids, level=level)
        funcs.append(func)
        weights.append(weight)
        names.append(key)
        required[key] = set(func.required_columns)
    _bind([func for func in funcs if isinstance(func, Reward)], tokenizer)
    return BuiltRewards(funcs=funcs, weights=weights, names=names, required_columns=required, level=level)


def check_columns(built: BuiltRewards, dataset_columns: Collection[str], source: str | None = None) -> None:
    """Fail with one line if a reward needs a dataset column the dataset (``source``, e.g. ``data.path='x.jsonl'``)
    lacks.

    >>> built = build_rewards({"accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy"}}, "text")
    >>> check_columns(built, ["prompt"], "data.path='a.jsonl'")
    Traceback (most recent call last):
    ...
    grpolab.config.errors.ConfigError: rewards.accuracy needs dataset column 'answer' but data.path='a.jsonl' has: prompt
    """
    available = set(dataset_columns)
    problems = []
    for name in built.names:
        missing = sorted(built.required_columns[name] - available)
        if missing:
            noun = "column" if len(missing) == 1 else "columns"
            problems.append(f"rewards.{name} needs dataset {noun} {', '.join(map(repr, missing))}")
    if problems:
        # A ConfigError: already one line naming its key, reported as it is wherever it is raised.
        raise ConfigError(f"{'; '.join(problems)} but {source or 'the dataset'} has: "
                          f"{', '.join(dataset_columns) or 'no columns'}")


def _plain_spec(key: str, spec: Any) -> dict[str, Any]:
    """A resolved plain dict of one reward's config; ``???`` and broken interpolations are reported by key."""
    if isinstance(spec, DictConfig):
        for field in spec:
            if OmegaConf.is_missing(spec, field):
                raise ValueError(_missing_message(key, str(field)))
        try:
            spec = OmegaConf.to_container(spec, resolve=True)
        except OmegaConfBaseException as error:
            raise ValueError(f"rewards.{key}: {str(error).splitlines()[0]}") from error  # later lines repeat the key
    if not isinstance(spec, Mapping):
        raise ValueError(f"rewards.{key} must be a mapping with a _target_; got {spec!r}")
    spec = dict(spec)
    for field, value in spec.items():
        if isinstance(value, str) and value == MISSING:
            raise ValueError(_missing_message(key, field))
    if "_target_" not in spec:
        raise ValueError(f"rewards.{key} has no _target_ (e.g. _target_: grpolab.rewards.accuracy.Accuracy)")
    return spec


def _missing_message(key: str, field: str) -> str:
    return f"rewards.{key}.{field} is required (??? in its config): set it, e.g. rewards.{key}.{field}=<value>"


def _weight(key: str, weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"rewards.{key}.weight must be a finite number, e.g. rewards.{key}.weight=0.5; got {weight!r}")
    return float(weight)


def _no_token_variant(key: str, has_level_key: bool = False) -> RewardLevelError:
    alternative = f"set rewards.{key}.level=text, " if has_level_key else ""
    return RewardLevelError(
        f"rewards.{key} has no token variant, so it cannot run with reward_level=token; {alternative}use "
        f"reward_level=text, or only rewards with a token variant: {', '.join(TOKEN_LEVEL_REWARDS)}"
    )


def _instantiate(key: str, spec: dict[str, Any], level: RewardLevel) -> Any:
    from hydra.utils import instantiate

    target_path = spec["_target_"]
    try:
        target = _locate(target_path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"rewards.{key}._target_ {target_path!r} cannot be imported: {_one_line(error)}") from error
    if isinstance(target, type) and issubclass(target, (Reward, RewardModel)):
        # A reward without its own `level` runs at the run's level; an explicit one (per-reward override) wins.
        reward_level = RewardLevel.parse(spec.get("level", level), where=f"rewards.{key}.level")
        if reward_level is RewardLevel.token and not target.has_token_variant():
            raise _no_token_variant(key, has_level_key=True)
        spec["level"] = reward_level.value
        spec.setdefault("name", key)
    try:
        func = instantiate(spec, _convert_="all")
    except Exception as error:
        cause = error.__cause__ or error
        message = _one_line(cause) or repr(cause)
        prefix = "" if message.startswith(f"rewards.{key}") else f"rewards.{key}: cannot build {target_path}: "
        raise ValueError(f"{prefix}{message}") from error
    if isinstance(func, (Reward, RewardModel)):
        func.__name__ = key  # the metric key, even if a subclass ignored `name`
    elif not callable(func):
        raise ValueError(f"rewards.{key}: {target_path} gave a {type(func).__name__}, not a callable reward")
    return func


def _bind(rewards: list[Reward], tokenizer: Any) -> None:
    """Bind every ``Reward`` to one description of the tokenizer's vocabulary (text-level ones too: a tag that is a
    special token would be invisible in decoded text as well)."""
    if tokenizer is None:
        token_level = [reward.__name__ for reward in rewards if reward.level is RewardLevel.token]
        if token_level:
            raise ValueError(
                f"rewards.{token_level[0]} runs at level=token but build_rewards got no tokenizer to resolve its "
                f"tags; pass tokenizer=<the policy's tokenizer>"
            )
        return
    if not rewards:
        return
    vocabulary = describe_vocabulary(tokenizer, dict.fromkeys(s for reward in rewards for s in reward.token_strings()))
    for reward in rewards:
        reward.bind_tokens(vocabulary)


def _locate(path: str) -> Any:
    """Import ``package.module.attribute`` the way Hydra resolves ``_target_`` (without Hydra's error logging)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and not module_name.startswith(error.name):
                raise  # the module exists but one of its own imports is missing
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())
