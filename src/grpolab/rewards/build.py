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

import math
import numbers
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from hydra._internal.utils import _locate  # what hydra.utils.get_object calls, without its error log line
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grpolab.config.errors import ConfigError, first_line
from grpolab.rewards.base import TOKEN_LEVEL_REWARDS, Reward, RewardLevel
from grpolab.rewards.model import RewardModel
from grpolab.rewards.vocabulary import describe_vocabulary
from grpolab.rewards.wrappers import AsyncNamedReward, NamedReward, guard_reward, is_async_reward

__all__ = ["BUILTIN_REWARDS", "TOKEN_LEVEL_REWARDS", "BuiltRewards", "build_rewards", "check_columns"]

# The conf/rewards options; a test keeps these in step with the yaml files.
BUILTIN_REWARDS = (
    "accuracy", "format", "length", "overlong", "think_format", "reasoning_steps", "cosine_length", "repetition",
)
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
    rewards_cfg: Mapping[str, Mapping[str, Any]], level: RewardLevel | str, tokenizer: Any = None,
    max_completion_length: int | None = None, load_models: bool = True,
) -> BuiltRewards:
    """Instantiate every reward in ``rewards_cfg``; ``tokenizer`` (the policy's) is required for token-level rewards.

    The tokenizer is read once (``describe_vocabulary``: special IDs, whitespace-only IDs, the rewards' tag IDs) and
    not kept. Without it, every reward must be text-level. ``max_completion_length`` (the trainer's) is handed to
    each reward's ``check_budget``. ``load_models=False`` checks a reward model's entry without loading it (and leaves
    it out): what preflight runs at every value of a sweep. Every mistake is one ``ConfigError`` line naming its key.

    >>> built = build_rewards({"accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy", "weight": 1.0}}, "text")
    >>> built.names, built.weights, built.required_columns
    (['accuracy'], [1.0], {'accuracy': {'answer'}})
    """
    level = RewardLevel.parse(level)
    if not rewards_cfg:
        raise ConfigError(
            f"rewards is empty: select at least one, e.g. rewards=[accuracy,format] (options: "
            f"{', '.join(BUILTIN_REWARDS)})"
        )
    funcs, weights, names, required = [], [], [], {}
    for key, raw_spec in rewards_cfg.items():
        spec = _plain_spec(key, raw_spec)
        weight = _weight(key, spec.pop("weight", 1.0))
        completions_as = spec.pop("completions_as", "as_is")
        func = _instantiate(key, spec, level, load_models)
        if func is None:
            continue  # a reward model, not loaded
        if isinstance(func, (Reward, RewardModel)):
            if completions_as != "as_is":
                raise ConfigError(f"rewards.{key}.completions_as applies to plain callables only; remove it")
        else:
            reads_only_ids = f"{type(func).__module__}.{type(func).__qualname__}" in IDS_ONLY_CALLABLES
            named = AsyncNamedReward if is_async_reward(func) else NamedReward
            func = named(func, key, completions_as=completions_as, reads_only_ids=reads_only_ids, level=level)
        if isinstance(func, Reward) and max_completion_length is not None:
            func.check_budget(max_completion_length)
        funcs.append(func)
        weights.append(weight)
        names.append(key)
        required[key] = set(func.required_columns)
    if load_models:
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
    """A resolved plain dict of one reward's config; the job's ``validate`` has named any ``???`` left in it first."""
    if isinstance(spec, DictConfig):
        try:
            spec = OmegaConf.to_container(spec, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as error:
            raise ConfigError(f"rewards.{key}: {first_line(error)}") from error  # later lines repeat the key
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(f"rewards.{key} must be a mapping with a _target_ (e.g. _target_: "
                          f"grpolab.rewards.accuracy.Accuracy); got {spec!r}")
    return dict(spec)


def _weight(key: str, weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ConfigError(f"rewards.{key}.weight must be a finite number, e.g. rewards.{key}.weight=0.5; got {weight!r}")
    return float(weight)


def _instantiate(key: str, spec: dict[str, Any], level: RewardLevel, load_models: bool) -> Any:
    from hydra.utils import instantiate

    target_path = spec["_target_"]
    try:
        target = _locate(target_path)
    except ImportError as error:
        raise ConfigError(f"rewards.{key}._target_ {target_path!r} cannot be imported: "
                          f"{first_line(error.__cause__ or error)}") from error
    if isinstance(target, type) and issubclass(target, (Reward, RewardModel)):
        # A reward without its own `level` runs at the run's level; an explicit one (per-reward override) wins.
        spec["level"] = RewardLevel.parse(spec.get("level", level), where=f"rewards.{key}.level").value
        spec.setdefault("name", key)
        if issubclass(target, RewardModel) and not load_models:
            return None
    try:
        func = instantiate(spec, _convert_="all")
    except Exception as error:
        cause = error.__cause__ or error
        if isinstance(cause, ConfigError):
            raise cause from None  # the reward's own line (and type, e.g. RewardLevelError), naming its key
        message = first_line(cause)
        prefix = "" if message.startswith(f"rewards.{key}") else f"rewards.{key}: cannot build {target_path}: "
        raise ConfigError(f"{prefix}{message}") from error
    if isinstance(func, (Reward, RewardModel)):
        func.__name__ = key  # the metric key, even if a subclass ignored `name`
    elif not callable(func):
        raise ConfigError(f"rewards.{key}: {target_path} gave a {type(func).__name__}, not a callable reward")
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
