"""Preflight's value checks: compose the command line's values and run ``validate`` on them, before any job starts.

``grpolab.config.preflight`` checks names (groups, options, keys); this module checks values. It composes the
config with every override at its first value, then once more per other value of each sweep (a grid sweep on the
command line or in ``hydra.sweeper.params``; ``interval(...)`` search spaces are sampled later and are not checked),
at most ``MAX_VALUE_VARIANTS`` compositions. A value of the wrong type (``seed=zero``) is reported in one line from
the schema, a value out of range (``trainer.beta=-1``) or an untrusted ``_target_`` by ``validate``, whose message
the job would print for the same config. Imports hydra and omegaconf, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

from hydra import compose
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

from grpolab.config.errors import ConfigError, PreflightError
from grpolab.config.trainer_node import unknown_key_message

MAX_VALUE_VARIANTS = 16
_MERGING = re.compile(r"Error merging override (.+)")
_IN_FILE = re.compile(r"In '([^']+)': \w+ raised while composing config:")


def value_variants(overrides: Sequence[Override]) -> list[list[str]]:
    """Override lists: every override at its first value, then one other value of one sweep at a time."""
    base = [_with_value(o, next(iter(_value_strings(o)), None)) for o in overrides]  # None: an interval
    variants = [[line for line in base if line is not None]]
    for index, override in enumerate(overrides):
        for value in _value_strings(override)[1:]:
            variant = [*base[:index], _with_value(override, value), *base[index + 1:]]
            variants.append([line for line in variant if line is not None])
    return variants[:MAX_VALUE_VARIANTS]


def _value_strings(override: Override) -> list[str]:
    if override.is_delete():
        return [""]
    if override.is_interval_sweep():
        return []  # sampled by the search sweeper; nothing to enumerate
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _with_value(override: Override, value: str | None) -> str | None:
    if override.is_delete() or not override.is_sweep_override():
        return str(override.input_line)  # as typed: Hydra's messages quote it back
    if value is None:
        return None  # an interval: the key keeps its configured value
    return f"{override.get_key_element()}={value}"


def compose_checked(config_name: str, overrides: Sequence[str], extra: Sequence[str],
                    schema: DictConfig | None) -> DictConfig | None:
    """The composed config (Hydra node included), or ``None`` if it fails for a reason Hydra explains better.

    Raises ``PreflightError`` in one line for a value that does not fit its key's type, or a config file that sets a
    key the schema does not have; ``schema`` (a config composed without these values) supplies the expected type.
    """
    try:
        return compose(config_name, overrides=[*overrides, *extra], return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        line = composition_error(error, schema)
        if line is None:
            return None
        raise PreflightError(line) from None


def composition_error(error: BaseException, schema: DictConfig | None) -> str | None:
    """One line for a composition error caused by a value or a config file; ``None`` for anything else."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else None
    merging = _MERGING.fullmatch(str(error).strip())
    if cause is not None and merging is not None and getattr(cause, "full_key", None):
        key, value = str(cause.full_key), merging.group(1).partition("=")[2]
        expected = expected_value(schema, key)
        if expected is not None:
            return f"{key}={value} must be {expected}"
        return f"{merging.group(1)}: {_first_line(cause)}"
    text = str(error).strip()
    in_file = _IN_FILE.match(text)
    full_key = re.search(r"full_key: (\S+)", text)
    if in_file is None or full_key is None:
        return None
    key, message = full_key.group(1), text.splitlines()[1].strip() if len(text.splitlines()) > 1 else text
    if key.startswith("trainer.") and key.count(".") == 1 and "not in 'TrainerConfig'" in message:
        return f"config error: {unknown_key_message(key.partition('.')[2])} (set in {in_file.group(1)})"
    return f"config error: {key}: {message} (set in {in_file.group(1)})"


def expected_value(cfg: DictConfig | None, key: str) -> str | None:
    """What the schema accepts at ``key``: ``"an integer"``, ``"true or false"``, ``"one of text, token"``."""
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig) and part in node.keys():
            node = node._get_node(part)
        else:
            return None
    kinds = {IntegerNode: "an integer", FloatNode: "a number", BooleanNode: "true or false", StringNode: "a string"}
    kind = next((text for node_type, text in kinds.items() if isinstance(node, node_type)), None)
    if isinstance(node, EnumNode):
        enum: type[Enum] = node._metadata.ref_type
        kind = f"one of {', '.join(member.name for member in enum)}"
    elif isinstance(node, ListConfig):
        kind = "a list"
    elif isinstance(node, DictConfig):
        kind = "a mapping" if node._metadata.object_type in (None, dict) else \
            f"a mapping of {node._metadata.object_type.__name__} keys"
    if kind is None:
        return None
    return f"{kind} or null" if node._is_optional() else kind


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def check_values(config_name: str, overrides: Sequence[Override], sweeper_params: Iterable[Override],
                 extra: Sequence[str], schema: DictConfig, run_checks: bool) -> None:
    """Compose each value variant (type errors) and, with ``run_checks``, ``validate`` it (ranges, targets)."""
    from grpolab.config.validate import validate
    from grpolab.tracking.processes import launched_processes

    num_processes = launched_processes().world_size  # under torchrun, the batch must split over its processes
    for variant in value_variants([*overrides, *sweeper_params]):
        cfg = compose_checked(config_name, variant, extra, schema)
        if cfg is None or not run_checks:
            continue
        try:
            validate(cfg, num_processes, import_targets=False)
        except ConfigError as error:
            raise PreflightError(f"config error: {error}") from None
        except (OmegaConfBaseException, KeyError, TypeError, AttributeError, ValueError):
            continue  # something validate does not handle: the job reports it with the run's context
