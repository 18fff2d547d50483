"""Command-line checks that run before Hydra starts any job, so a typo in a sweep costs one line, not a sweep.

``grpolab.train.main`` calls ``run_preflight(sys.argv, CONF_DIR)`` before ``hydra_entry()`` (the same ``CONF_DIR`` as
``@hydra.main``). It parses the overrides with Hydra's own parsers and fails with one line on stderr and exit status
2 on what the command line itself gets wrong (a config group option or key that does not exist, a trainer key another
node owns, a numeric range over a group or a non-numeric key, ``interval(...)`` with the grid sweeper) and, at each
value of a sweep (on the command line or in ``hydra.sweeper.params``), on a value of the wrong type or one that breaks
a rule of the layer owning it: the config's (``grpolab.config.validate``), the rewards' (``build_rewards``, reward
models not loaded) and the model's (``grpolab.models.hub.check_checkpoint``). Preflight holds no value rule itself.

Hydra composes the config once per distinct choice of config group options (the first value of every swept group,
then each other value of one group at a time); every other override is applied to a copy of that composition as
Hydra applies it (``ConfigLoaderImpl._apply_overrides_to_config``), once per value. An error of preflight itself is
not caught: a bug must not pass for a valid command line. For a multirun, ``on_multirun``
(``grpolab.sweeps.with_resumed_sweep_dir``) may extend the command line. With ``--cfg``/``--resolve`` (nothing runs)
only types are checked. Imports hydra and omegaconf, no torch.
"""

from __future__ import annotations

import copy
import difflib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException
from omegaconf.nodes import BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode, ValueNode

from grpolab.config.errors import ConfigError, first_line
from grpolab.config.paths import CONF_DIR, PACKAGE_DIR
from grpolab.config.schema import register_schemas
from grpolab.config.trainer_node import OWNED_ELSEWHERE, TRL_FIELDS, unknown_key_message

PROGRAM = "grpolab"
PREFLIGHT_EXIT_CODE = 2
# Each swept config group option is composed once to learn its keys and check its values; beyond this many, no more.
MAX_COMPOSED_VARIANTS = 16
_MERGING = re.compile(r"Error merging override (.+)")
_IN_FILE = re.compile(r"In '([^']+)': \w+ raised while composing config:")


class PreflightError(ValueError):
    """A command-line mistake found before Hydra starts, described in one line naming the override and what is valid."""


#: ``on_multirun(argv, overrides, composed_config) -> argv``: what a multirun adds to the command line once it is
#: known to be good (``grpolab.sweeps.with_resumed_sweep_dir`` points a ``resume=true`` sweep at its earlier dir).
MultirunHook = Callable[[list[str], Sequence[Override], DictConfig], list[str]]


def run_preflight(argv: Sequence[str], config_dir: str = CONF_DIR, config_name: str = "train",
                  on_multirun: MultirunHook | None = None) -> list[str]:
    """Check ``argv``; return it (as ``on_multirun`` extends it for a multirun), or exit 2 with one line.

    >>> sys.argv = run_preflight(sys.argv, on_multirun=with_resumed_sweep_dir)  # doctest: +SKIP
    """
    try:
        return preflight(argv, config_dir, config_name, on_multirun)
    except PreflightError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        raise SystemExit(PREFLIGHT_EXIT_CODE) from None


def preflight(argv: Sequence[str], config_dir: str = CONF_DIR, config_name: str = "train",
              on_multirun: MultirunHook | None = None) -> list[str]:
    """``run_preflight`` without the exit: raises ``PreflightError``.

    >>> preflight(["train", "-m", "trainer.bta=0,0.1"])
    Traceback (most recent call last):
    ...
    grpolab.preflight.PreflightError: trainer.bta=0,0.1: no such key trainer.bta; closest valid keys: trainer.beta
    """
    args, _unknown = get_args_parser().parse_known_args(list(argv[1:]))  # Hydra's own command line
    overrides = _parse(args.overrides or [])
    if overrides is None or args.help or args.hydra_help or args.info or args.shell_completion or \
            args.experimental_rerun:  # nothing will run, or Hydra's own message on a line it cannot parse is better
        return list(argv)
    if args.config_path is not None:
        config_dir = str(PACKAGE_DIR / args.config_path)  # Hydra: relative to the @hydra.main module
    register_schemas()  # train.yaml's defaults start with grpolab_schema
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        compositions = _Compositions(args.config_name or config_name, _search_path(overrides, args.config_dir))
        for override in overrides:
            if compositions.is_group_override(override):
                compositions.check_choice(override)
        base = compositions.of([_lines(o)[0] for o in overrides if compositions.is_group_override(o)])
        if base is None:
            return list(argv)  # the config does not compose, for a reason Hydra explains better
        variants = [cfg for cfg in map(compositions.of, _value_variants(overrides, compositions, groups=True)) if cfg]
        for override in overrides:
            if not compositions.is_group_override(override):
                _check_key(override, variants)
        sweeper_params = list(_sweeper_params(base)) if args.multirun else []
        if args.multirun:
            _check_interval_needs_search(overrides, base)
            for override in sweeper_params:
                if compositions.is_group_override(override):
                    compositions.check_choice(override, "hydra.sweeper.params: ")
                else:
                    _check_key(override, variants, "hydra.sweeper.params: ")
        for variant in _value_variants([*overrides, *sweeper_params], compositions):
            _check_values(compositions, variant, run_checks=not args.cfg)  # --cfg: printed, nothing runs
    if args.multirun and on_multirun is not None:
        return on_multirun(list(argv), overrides, base)
    return list(argv)


def _parse(lines: Sequence[str]) -> list[Override] | None:
    try:
        return OverridesParser.create().parse_overrides(list(lines))
    except HydraException:
        return None


def _lines(override: Override) -> list[str]:
    """The override once per value it stands for (each value of a sweep, as ``key=value``); none for an
    ``interval(...)``, which a search sweeper samples later (the key keeps its configured value meanwhile)."""
    if override.is_interval_sweep():
        return []
    if not override.is_sweep_override():
        return [str(override.input_line)]  # as typed: Hydra's messages quote it back
    return [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]


def _value_variants(overrides: Sequence[Override], compositions: _Compositions,
                    groups: bool = False) -> Iterator[list[str]]:
    """Override lines: every override at its first value, then one other value of one sweep at a time (of the group
    overrides only, with ``groups``)."""
    chosen = [o for o in overrides if not groups or compositions.is_group_override(o)]
    values = [_lines(o) for o in chosen]
    base = [lines[0] for lines in values if lines]
    yield base
    for index, lines in enumerate(values):
        position = sum(1 for earlier in values[:index] if earlier)
        for line in lines[1:]:
            yield [*base[:position], line, *base[position + 1:]]


class _Compositions:
    """Hydra's config groups and options (``--config-dir`` and ``hydra.searchpath`` included), and the config composed
    once per distinct choice of group options."""

    def __init__(self, config_name: str, search_path: list[str]) -> None:
        self._loader = GlobalHydra.instance().config_loader()
        self._config_name = config_name
        self._search_path = search_path  # one override line, or none
        self._composed: dict[tuple[str, ...], DictConfig | None] = {}
        self._listed: dict[tuple[str, ObjectType], list[str]] = {}  # each listing reads the search path anew

    def _list(self, path: str, kind: ObjectType) -> list[str]:
        if (path, kind) not in self._listed:
            self._listed[path, kind] = list(self._loader.get_group_options(
                path, results_filter=kind, config_name=self._config_name, overrides=self._search_path))
        return self._listed[path, kind]

    def is_group_override(self, override: Override) -> bool:
        """Hydra's rule (defaults_list.Overrides): it names an existing group and its value is not a dict."""
        if not override.is_sweep_override() and isinstance(override.value(), dict):
            return False
        parent, _, name = override.key_or_group.rpartition("/")
        return name in self._list(parent, ObjectType.GROUP)

    def check_choice(self, override: Override, label: str = "") -> None:
        if override.is_delete():
            return
        group = override.key_or_group
        options = self._list(group, ObjectType.CONFIG)
        if override.is_interval_sweep() or override.is_range_sweep():
            raise PreflightError(f"{label}{override.input_line}: a numeric range over the config group {group}; "
                                 f"sweep its options instead, e.g. {group}={','.join(options[:2]) or '<option>'}")
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            for choice in value if isinstance(value, list) else [value]:
                if choice is not None and str(choice) not in options:
                    raise PreflightError(f"{label}{group}={choice}: no such option; valid choices: "
                                         f"{', '.join(options) or '(none: the group is empty)'}")

    def of(self, group_lines: Sequence[str]) -> DictConfig | None:
        """The config (Hydra node included) for these group options, or None if it fails to compose for a reason
        Hydra explains better; a config file that sets a wrong key or value fails in one line."""
        key = tuple(group_lines)
        if key not in self._composed:
            if len(self._composed) >= MAX_COMPOSED_VARIANTS:
                return None
            try:
                self._composed[key] = compose(self._config_name, overrides=[*key, *self._search_path],
                                              return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as error:
                self._composed[key] = None
                _raise_if_explained(error, None)
        return self._composed[key]


def _search_path(overrides: Sequence[Override], config_dir: str | None) -> list[str]:
    """The user's config folders (``hydra.searchpath=[...]`` and ``--config-dir``) as one override, or none.

    Their options (``experiment=my_study`` from ``<dir>/experiment/my_study.yaml``) must be valid choices here too.
    """
    paths = []
    for override in overrides:
        if override.key_or_group == "hydra.searchpath" and not override.is_sweep_override():
            value = override.value()
            paths += [str(path) for path in value] if isinstance(value, list) else [str(value)]
    if config_dir:
        paths.append(f"file://{Path(config_dir).resolve()}")
    quoted = ("'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'" for path in paths)
    return [f"hydra.searchpath=[{','.join(quoted)}]"] if paths else []


def _check_values(compositions: _Compositions, variant: list[str], run_checks: bool) -> None:
    """Apply one variant's values as Hydra would (a value of the wrong type fails here) and, with ``run_checks``,
    run the checks the job runs on them."""
    parsed = _parse(variant) or []
    groups = [line for line, override in zip(variant, parsed) if compositions.is_group_override(override)]
    composed = compositions.of(groups)
    if composed is None:
        return
    cfg = copy.deepcopy(composed)
    try:
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not compositions.is_group_override(o)], cfg)
    except (HydraException, OmegaConfBaseException) as error:
        _raise_if_explained(error, composed)
        return  # e.g. a key that only another swept option has: Hydra reports it for the jobs it concerns
    if not run_checks:
        return
    from grpolab.config.targets import check_resolved_targets
    from grpolab.config.validate import validate
    from grpolab.models.hub import check_checkpoint
    from grpolab.rewards.build import build_rewards
    from grpolab.tracking.processes import launched_processes

    with open_dict(cfg):
        del cfg["hydra"]  # the job's config, as the job sees it
    try:
        validate(cfg, launched_processes().world_size, import_targets=False)  # under torchrun: its process count
        check_resolved_targets(cfg, under="rewards")  # before the rewards are built (their modules are light)
        build_rewards(cfg.rewards, cfg.reward_level, max_completion_length=cfg.trainer.max_completion_length,
                      load_models=False)
        model, tokenizer = (OmegaConf.select(cfg, f"model.{key}name_or_path") for key in ("", "tokenizer."))
        if model:  # the preset's hub id: what a missing directory should hold
            check_checkpoint(model, hub_id=OmegaConf.select(composed, "model.name_or_path"))
        if tokenizer and tokenizer != model:
            check_checkpoint(tokenizer, "model.tokenizer.name_or_path")
    except ConfigError as error:
        raise PreflightError(f"config error: {error}") from None
    except InterpolationResolutionError:
        return  # e.g. ${hydra:runtime.output_dir}: resolvable only in a running job, which checks it itself


def _raise_if_explained(error: BaseException, schema: DictConfig | None) -> None:
    """One line for a composition error caused by a value or a config file; nothing for the rest (Hydra's own)."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else None
    merging = _MERGING.fullmatch(str(error).strip())
    if cause is not None and merging is not None and getattr(cause, "full_key", None):
        key, value = str(cause.full_key), merging.group(1).partition("=")[2]
        expected = _expected_value(schema, key)
        raise PreflightError(f"{key}={value} must be {expected}" if expected else
                             f"{merging.group(1)}: {first_line(cause)}") from None
    text = str(error).strip()
    in_file, full_key = _IN_FILE.match(text), re.search(r"full_key: (\S+)", text)
    if in_file is None or full_key is None:
        return
    lines = text.splitlines()
    key, message = full_key.group(1), lines[1].strip() if len(lines) > 1 else text
    if key.startswith("trainer.") and key.count(".") == 1 and "not in 'TrainerConfig'" in message:
        message = unknown_key_message(key.partition(".")[2])
        raise PreflightError(f"config error: {message} (set in {in_file.group(1)})") from None
    raise PreflightError(f"config error: {key}: {message} (set in {in_file.group(1)})") from None


def _expected_value(cfg: DictConfig | None, key: str) -> str | None:
    """What the schema accepts at ``key``: ``"an integer"``, ``"true or false"``, ``"one of text, token"``."""
    node = _node(cfg, key) if cfg is not None else None
    kinds = {IntegerNode: "an integer", FloatNode: "a number", BooleanNode: "true or false", StringNode: "a string"}
    kind = next((text for node_type, text in kinds.items() if isinstance(node, node_type)), None)
    if isinstance(node, EnumNode):
        kind = f"one of {', '.join(member.name for member in node._metadata.ref_type)}"
    elif isinstance(node, ListConfig):
        kind = "a list"
    elif isinstance(node, DictConfig):
        kind = "a mapping" if node._metadata.object_type in (None, dict) else \
            f"a mapping of {node._metadata.object_type.__name__} keys"
    if kind is None:
        return None
    return f"{kind} or null" if node._is_optional() else kind


def _node(cfg: DictConfig, key: str) -> Any:
    """The node at a dotted key (through lists too), or None."""
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig) and part in node.keys():
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return None
    return node


def _check_key(override: Override, variants: Sequence[DictConfig], label: str = "") -> None:
    """The key exists in one of the compositions (a + adds it, ++ forces it; a non-struct node takes any key)."""
    key = override.key_or_group
    found = [cfg for cfg in variants if _node(cfg, key) is not None]
    if override.is_force_add():
        return
    if override.is_add():
        if len(found) == len(variants):
            raise PreflightError(f"{label}{override.input_line}: {key} already exists; drop the + to change it")
        return
    if not found:
        parent_path, _, missing = key.rpartition(".")
        while parent_path and _node(variants[0], parent_path) is None:
            parent_path, _, missing = parent_path.rpartition(".")
        parent = _node(variants[0], parent_path) if parent_path else variants[0]
        if isinstance(parent, DictConfig) and not OmegaConf.is_struct(parent):
            return  # an open node (no schema, not struct): Hydra adds the key
        if parent_path == "trainer" and _owned_or_close_to_owned(missing):
            raise PreflightError(f"{label}{override.input_line}: {unknown_key_message(missing)}")
        raise PreflightError(f"{label}{override.input_line}: no such key {key}; "
                             f"{_closest_keys(parent, parent_path, missing)}")
    if override.is_interval_sweep() or override.is_range_sweep():
        kind = _non_numeric_kind(_node(found[0], key))
        if kind is not None:
            raise PreflightError(f"{label}{override.input_line}: a numeric range over a non-numeric key "
                                 f"({key} is {kind}); use choice(...) for categorical values")


def _owned_or_close_to_owned(name: str) -> bool:
    """``learning_rate`` (set by optimizer.lr), or a misspelling whose closest GRPOConfig field is one of those."""
    close = difflib.get_close_matches(name, list(TRL_FIELDS), n=1, cutoff=0.6)
    return name in OWNED_ELSEWHERE or bool(close) and close[0] in OWNED_ELSEWHERE


def _closest_keys(parent: Any, parent_path: str, missing: str) -> str:
    if isinstance(parent, DictConfig):
        names = [str(name) for name in parent.keys()]
    elif isinstance(parent, ListConfig):
        names = [str(index) for index in range(len(parent))]
    else:
        return f"{parent_path} is a value, not a config node"
    prefix = f"{parent_path}." if parent_path else ""
    close = difflib.get_close_matches(missing, names, n=3, cutoff=0.6)
    if close:
        return "closest valid keys: " + ", ".join(prefix + name for name in close)
    shown = ", ".join(prefix + name for name in names[:12]) + (", ..." if len(names) > 12 else "")
    return f"valid keys under {parent_path or 'the root'}: {shown or '(none)'}"


def _non_numeric_kind(node: Any) -> str | None:
    """None for a node a numeric range may sweep (int/float, or untyped and empty); else what it is."""
    if isinstance(node, (DictConfig, ListConfig)):
        return "a config node"
    if isinstance(node, (IntegerNode, FloatNode)):
        return None
    if not isinstance(node, ValueNode):
        return "not a value"
    try:
        value = node._dereference_node()._value() if node._is_interpolation() else node._value()
    except OmegaConfBaseException:
        return None  # an interpolation that cannot resolve here: the job will say more
    if value is None or value == "???" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return None
    if isinstance(value, bool):
        return f"a boolean: {value}"
    if isinstance(value, Enum):
        return f"one of {', '.join(member.name for member in type(value))}: {value.name}"
    return f"a string: {value!r}" if isinstance(value, str) else f"a {type(value).__name__}"


def _check_interval_needs_search(overrides: Sequence[Override], cfg: DictConfig) -> None:
    """Hydra's grid sweeper stops at an ``interval(...)`` only after it has made the sweep dir; say so first."""
    if not str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")).endswith(".BasicSweeper"):
        return
    for override in overrides:
        if override.is_interval_sweep():
            raise PreflightError(f"{override.input_line}: interval(...) needs a search sweeper, e.g. "
                                 "hparams_search=optuna; the grid sweeper takes lists (a,b) and range(start, stop)")


def _sweeper_params(cfg: DictConfig) -> Iterator[Override]:
    """``hydra.sweeper.params`` entries (a sweep grid, an Optuna search space) as parsed overrides."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if not isinstance(params, DictConfig):
        return
    for key, value in OmegaConf.to_container(params, resolve=False).items():
        parsed = _parse([f"{key}={value}"])
        if parsed is None:
            raise PreflightError(f"hydra.sweeper.params: {key}={value}: not a valid sweep (e.g. 1e-4,3e-4 or "
                                 "tag(log, interval(1e-5, 1e-3)))")
        yield parsed[0]
