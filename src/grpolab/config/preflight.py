"""Command-line checks that run before Hydra starts any job, so a typo in a sweep costs one line, not a sweep.

``grpolab.train.main`` calls ``run_preflight(sys.argv, CONF_DIR)`` before ``hydra_entry()`` (``CONF_DIR`` from
``grpolab.config.paths``, the directory ``@hydra.main`` reads, so both compose the same configs). It parses the
overrides with Hydra's own parsers, composes the config with Hydra's compose API (the non-sweep group choices plus the
first value of every swept group) and fails with one line on stderr and exit status 2 when

- a config group option does not exist: ``model=foo: no such option; valid choices: qwen2_5_0_5b_instruct, ..., tiny``
- a key does not exist: ``optimizer.lrr=1`` or, in a sweep, ``trainer.bta=0,0.1`` (named, with the closest keys)
- a numeric range (``interval(...)``, ``range(...)``) sweeps a non-numeric key, on the command line or in
  ``hydra.sweeper.params`` (an Optuna search space), e.g. ``optimizer._target_: interval(0, 1)``
- a key another node owns: ``trainer.learning_rate=1e-3`` (``set optimizer.lr instead``)
- a value of the wrong type (``seed=zero``), out of range (``trainer.beta=-1``), or an untrusted ``_target_``, at
  each value of a sweep (``grpolab.config.preflight_values``: the schema and ``validate``, as the job would).

For a multirun, ``on_multirun`` (handed in by the entry point: ``grpolab.sweeps.with_resumed_sweep_dir``) may extend
the command line, e.g. point a ``resume=true`` sweep at its earlier sweep dir. Jobs validate their
own config again (``grpolab.config.validate``). With ``--cfg``/``--resolve`` (print the config, run nothing) value
ranges and targets are not checked, so a config can be inspected. Imports hydra and omegaconf, no torch.
"""

from __future__ import annotations

import difflib
import sys
from enum import Enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import FloatNode, IntegerNode, ValueNode

from grpolab.config.errors import PreflightError
from grpolab.config.preflight_values import check_values, compose_checked
from grpolab.config.trainer_node import OWNED_ELSEWHERE, TRL_FIELDS, unknown_key_message

from grpolab.config.paths import CONF_DIR, PACKAGE_DIR
from grpolab.config.schema import register_schemas

PROGRAM = "grpolab"
PREFLIGHT_EXIT_CODE = 2
# Each swept config group value is composed once to learn its keys; beyond this many, the rest are not composed.
MAX_COMPOSED_VARIANTS = 16


@dataclass(frozen=True)
class CommandLine:
    """What preflight needs from ``sys.argv``, parsed by Hydra's own argument parser."""

    overrides: list[str]
    multirun: bool
    config_name: str | None
    config_path: str | None
    config_dir: str | None
    informational: bool  # --help, --info, --shell-completion, ...: nothing will run
    prints_config: bool  # --cfg job|hydra|all: the config is printed, no job runs

    @classmethod
    def parse(cls, argv: Sequence[str]) -> CommandLine:
        from hydra._internal.utils import get_args_parser

        args, _unknown = get_args_parser().parse_known_args(list(argv[1:]))
        return cls(
            overrides=list(args.overrides or []),
            multirun=bool(args.multirun),
            config_name=args.config_name,
            config_path=args.config_path,
            config_dir=args.config_dir,
            informational=bool(args.help or args.hydra_help or args.info or args.shell_completion
                               or args.experimental_rerun),
            prints_config=bool(args.cfg),
        )


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
    except Exception as error:  # a preflight bug must not block runs: Hydra still checks everything itself
        print(f"{PROGRAM}: preflight skipped after an internal error ({type(error).__name__}: {error})",
              file=sys.stderr)
        return list(argv)


def preflight(argv: Sequence[str], config_dir: str = CONF_DIR, config_name: str = "train",
              on_multirun: MultirunHook | None = None) -> list[str]:
    """``run_preflight`` without the exit: raises ``PreflightError``.

    >>> preflight(["train", "-m", "trainer.bta=0,0.1"], "conf")  # doctest: +SKIP
    PreflightError: trainer.bta=0,0.1: no such key trainer.bta; closest valid keys: trainer.beta
    """
    command = CommandLine.parse(argv)
    if command.informational:
        return list(argv)
    if command.config_path is not None:
        config_dir = str(PACKAGE_DIR / command.config_path)  # Hydra: relative to the @hydra.main module
    overrides = _parse(command.overrides)
    if overrides is None:
        return list(argv)  # unparsable: Hydra's own message is the better one
    extra = _search_path(overrides, command.config_dir)
    register_schemas()  # train.yaml's defaults start with grpolab_schema
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        groups = _ConfigGroups(command.config_name or config_name, extra)
        group_overrides = [o for o in overrides if groups.is_group_override(o)]
        for override in group_overrides:
            groups.check_choice(override)
        variants = _compose_variants(command.config_name or config_name, group_overrides, extra)
        if not variants:  # the config does not compose: one line if a config file is at fault, else Hydra's message
            compose_checked(command.config_name or config_name, [_first_value_override(o) for o in group_overrides],
                            extra, None)
            return list(argv)
        for override in overrides:
            if override not in group_overrides:
                _check_key(override, variants)
        sweeper_params = list(_sweeper_params(variants[0]))
        if command.multirun:
            _check_interval_needs_search(overrides, variants[0])
            for override in sweeper_params:
                if groups.is_group_override(override):
                    groups.check_choice(override, "hydra.sweeper.params: ")
                else:
                    _check_key(override, variants, "hydra.sweeper.params: ")
        check_values(command.config_name or config_name, overrides, sweeper_params, extra, variants[0],
                     run_checks=not command.prints_config)
    if command.multirun and on_multirun is not None:
        return on_multirun(list(argv), overrides, variants[0])
    return list(argv)


def _parse(overrides: Sequence[str]) -> list[Override] | None:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return None


class _ConfigGroups:
    """Config groups and their options as Hydra sees them, including ``--config-dir`` and ``hydra.searchpath``."""

    def __init__(self, config_name: str, overrides: Sequence[str]) -> None:
        self._loader = GlobalHydra.instance().config_loader()
        self._config_name = config_name
        self._overrides = list(overrides)  # the search path additions

    def _list(self, path: str, kind: ObjectType) -> list[str]:
        return list(self._loader.get_group_options(path, results_filter=kind, config_name=self._config_name,
                                                   overrides=self._overrides))

    def exists(self, group: str) -> bool:
        parent, _, name = group.rpartition("/")
        return name in self._list(parent, ObjectType.GROUP)

    def options(self, group: str) -> list[str]:
        return self._list(group, ObjectType.CONFIG)

    def is_group_override(self, override: Override) -> bool:
        """Hydra's rule (defaults_list.Overrides): it names an existing group and its value is not a dict."""
        if not override.is_sweep_override() and isinstance(override.value(), dict):
            return False
        return self.exists(override.key_or_group)

    def check_choice(self, override: Override, label: str = "") -> None:
        if override.is_delete():
            return
        group = override.key_or_group
        options = self.options(group)
        if override.is_interval_sweep() or override.is_range_sweep():
            raise PreflightError(f"{label}{override.input_line}: a numeric range over the config group {group}; "
                                 f"sweep its options instead, e.g. {group}={','.join(options[:2]) or '<option>'}")
        for value in _values(override):
            for choice in value if isinstance(value, list) else [value]:
                if choice is not None and str(choice) not in options:
                    raise PreflightError(f"{label}{group}={choice}: no such option; valid choices: "
                                         f"{', '.join(options) or '(none: the group is empty)'}")


def _values(override: Override) -> list[Any]:
    """Every value an override stands for (each choice of a sweep; the value itself otherwise)."""
    if override.is_interval_sweep():
        return []
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    return [override.value()]


def _first_value_override(override: Override) -> str:
    if not override.is_sweep_override():
        return str(override.input_line)
    return f"{override.get_key_element()}={next(override.sweep_string_iterator())}"


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
    if not paths:
        return []
    quoted = ("'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'" for path in paths)
    return [f"hydra.searchpath=[{','.join(quoted)}]"]


def _compose_variants(config_name: str, groups: Sequence[Override], extra: Sequence[str]) -> list[DictConfig]:
    """The config with each swept group value in turn (others at their first value), Hydra node included."""
    base = [_first_value_override(o) for o in groups]
    variants = [base]
    for index, override in enumerate(groups):
        if override.is_sweep_override() and not override.is_interval_sweep():
            for value in list(override.sweep_string_iterator())[1:]:
                if len(variants) < MAX_COMPOSED_VARIANTS:
                    variants.append([*base[:index], f"{override.get_key_element()}={value}", *base[index + 1:]])
    composed = []
    for variant in variants:
        try:
            composed.append(compose(config_name, overrides=[*variant, *extra], return_hydra_config=True))
        except (HydraException, OmegaConfBaseException):
            continue
    return composed


@dataclass(frozen=True)
class _Lookup:
    """Where a dotted key leads in one composed config."""

    found: bool
    parent_path: str  # the deepest existing node on the way ("" = the root)
    missing: str  # the first path segment that does not exist
    parent: Any  # that node (DictConfig, ListConfig, or a value)
    node: Any = None  # the key's own node when found


def _lookup(cfg: DictConfig, key: str) -> _Lookup:
    node: Any = cfg
    walked: list[str] = []
    for part in key.split("."):
        child = None
        if isinstance(node, DictConfig) and part in node.keys():
            child = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            child = node._get_node(int(part))
        if child is None:
            return _Lookup(False, ".".join(walked), part, node)
        node, walked = child, [*walked, part]
    parent = node._get_parent()
    return _Lookup(True, ".".join(walked[:-1]), "", parent, node)


def _check_key(override: Override, variants: Sequence[DictConfig], label: str = "") -> None:
    key = override.key_or_group
    if override.is_force_add():
        return
    lookups = [_lookup(cfg, key) for cfg in variants]
    found = [lookup for lookup in lookups if lookup.found]
    if override.is_add():
        if len(found) == len(lookups):
            raise PreflightError(f"{label}{override.input_line}: {key} already exists; drop the + to change it")
        return
    if not found:
        lookup = lookups[0]
        if isinstance(lookup.parent, DictConfig) and not OmegaConf.is_struct(lookup.parent):
            return  # an open node (no schema, not struct): Hydra adds the key
        if lookup.parent_path == "trainer" and _owned_or_close_to_owned(lookup.missing):
            raise PreflightError(f"{label}{override.input_line}: {unknown_key_message(lookup.missing)}")
        raise PreflightError(f"{label}{override.input_line}: no such key {key}; {_closest_keys(lookup)}")
    if override.is_interval_sweep() or override.is_range_sweep():
        kind = _non_numeric_kind(found[0].node)
        if kind is not None:
            raise PreflightError(f"{label}{override.input_line}: a numeric range over a non-numeric key "
                                 f"({key} is {kind}); use choice(...) for categorical values")


def _owned_or_close_to_owned(name: str) -> bool:
    """``learning_rate`` (set by optimizer.lr), or a misspelling whose closest GRPOConfig field is one of those."""
    close = difflib.get_close_matches(name, list(TRL_FIELDS), n=1, cutoff=0.6)
    return name in OWNED_ELSEWHERE or bool(close) and close[0] in OWNED_ELSEWHERE


def _closest_keys(lookup: _Lookup) -> str:
    parent = lookup.parent
    if isinstance(parent, DictConfig):
        names = [str(name) for name in parent.keys()]
    elif isinstance(parent, ListConfig):
        names = [str(index) for index in range(len(parent))]
    else:
        return f"{lookup.parent_path} is a value, not a config node"
    prefix = f"{lookup.parent_path}." if lookup.parent_path else ""
    close = difflib.get_close_matches(lookup.missing, names, n=3, cutoff=0.6)
    if close:
        return "closest valid keys: " + ", ".join(prefix + name for name in close)
    shown = ", ".join(prefix + name for name in names[:12]) + (", ..." if len(names) > 12 else "")
    return f"valid keys under {lookup.parent_path or 'the root'}: {shown or '(none)'}"


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
    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    if not sweeper.endswith(".BasicSweeper"):
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
        line = f"{key}={value}"
        parsed = _parse([line])
        if parsed is None:
            raise PreflightError(f"hydra.sweeper.params: {line}: not a valid sweep (e.g. 1e-4,3e-4 or "
                                 "tag(log, interval(1e-5, 1e-3)))")
        yield parsed[0]
