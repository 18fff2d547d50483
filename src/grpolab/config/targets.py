"""Trusted ``_target_``s: a config may only name callables of grpolab, its dependencies, and ``trusted_modules``.

Hydra imports and calls whatever a ``_target_`` names, so ``+rewards.x._target_=os.system`` on a command line (or in
an experiment file) would run it. Every ``_target_`` of the job config (the ``hydra`` node is Hydra's own and is not
checked) must lie in ``TRUSTED_MODULES`` or in a module the config lists under ``trusted_modules``:

- ``check_trusted_targets`` reads the dotted path only and imports nothing; preflight and ``validate`` run it.
- ``check_resolved_targets`` then follows each path the way Hydra does, importing only trusted modules, and refuses
  paths that leave them (``grpolab.train.os.system``: the module ``os`` reached through a trusted one) or that end in
  a callable defined elsewhere (``from os import system`` inside a trusted module). ``validate`` runs it last, in the
  job, where importing the targets' modules costs nothing extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from hydra._internal.utils import _locate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grpolab.config.errors import ConfigError

#: Packages whose public callables the shipped configs name (conf/**/*.yaml), plus the libraries grpolab builds on.
TRUSTED_MODULES = ("grpolab", "trl", "torch.optim", "transformers", "peft", "datasets")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def trusted_modules(cfg: DictConfig) -> tuple[str, ...]:
    """``TRUSTED_MODULES`` plus the config's ``trusted_modules`` (each a dotted module name)."""
    extra = list(cfg.trusted_modules)
    for index, name in enumerate(extra):
        if not isinstance(name, str) or not _DOTTED.fullmatch(name):
            raise ConfigError(f"trusted_modules.{index}={name!r} must be a dotted module name, e.g. "
                              "trusted_modules=[my_rewards]")
    return (*TRUSTED_MODULES, *extra)


def is_trusted(dotted: str, modules: Sequence[str]) -> bool:
    """``dotted`` is one of ``modules`` or inside one (``torch.optim.AdamW`` is inside ``torch.optim``)."""
    return any(dotted == module or dotted.startswith(f"{module}.") for module in modules)


def iter_targets(node: Any, path: str = "", seen: set[int] | None = None) -> Iterator[tuple[str, Any]]:
    """``(dotted key of the _target_, its value)`` for every ``_target_`` in the job config (not under ``hydra``)."""
    seen = set() if seen is None else seen
    if not isinstance(node, (DictConfig, ListConfig)) or id(node) in seen or node._is_missing() or node._is_none() \
            or node._is_interpolation():
        return
    seen.add(id(node))
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        child_path, child = f"{path}.{key}" if path else str(key), node._get_node(key)
        if child_path == "hydra":
            continue  # Hydra's launcher, sweeper and callbacks: Hydra's own config, not the job's
        if key == "_target_":
            yield child_path, _value(node, key)
            continue
        if child is not None and child._is_interpolation():
            try:  # an interpolation may produce a node with targets of its own (oc.create, a copied subtree)
                child = child._dereference_node()
            except (OmegaConfBaseException, ValueError, TypeError):
                continue
        yield from iter_targets(child, child_path, seen)


def _value(node: DictConfig, key: Any) -> Any:
    try:
        return node[key]
    except OmegaConfBaseException:
        return OmegaConf.to_container(node, resolve=False)[key]  # unresolvable: judge the text as written


def _refusal(key: str, target: Any, modules: Sequence[str], why: str = "") -> ConfigError:
    allowed = ", ".join(f"{module}.*" for module in modules)
    return ConfigError(f"{key}={target} is not trusted{why}; allowed: {allowed}; add the module to "
                       "trusted_modules to allow it")


def check_trusted_targets(cfg: DictConfig) -> None:
    """Refuse a ``_target_`` outside the trusted modules, from its text alone (imports nothing)."""
    modules = trusted_modules(cfg)
    for key, target in iter_targets(cfg):
        if not isinstance(target, str) or not _DOTTED.fullmatch(target):
            raise ConfigError(f"{key}={target!r} must be a dotted path to a callable, e.g. "
                              "grpolab.rewards.accuracy.Accuracy")
        if any(part.startswith("__") for part in target.split(".")):
            raise _refusal(key, target, modules, " (a dunder attribute)")
        if not is_trusted(target, modules):
            raise _refusal(key, target, modules)


def check_resolved_targets(cfg: DictConfig, under: str = "") -> None:
    """Follow each (textually trusted) ``_target_`` (``under`` a node: only there) as Hydra would and refuse it if it
    leaves the trusted modules. Imports the targets' modules, all trusted by then; a path that does not resolve is
    left to Hydra's own error.
    """
    check_trusted_targets(cfg)  # nothing outside the trusted modules gets imported below
    modules = trusted_modules(cfg)
    for key, target in iter_targets(OmegaConf.select(cfg, under) if under else cfg, under):
        why = _untrusted_hop(target, modules)
        if why:
            raise _refusal(key, target, modules, f": {why}")


def _untrusted_hop(target: str, modules: Sequence[str]) -> str:
    """Why following ``target`` the way Hydra does (``_locate``: import the first part, then attributes, importing
    submodules as needed) leaves the trusted modules, or ``""``; each textually trusted prefix is resolved in turn."""
    parts = target.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if not is_trusted(prefix, modules):
            continue  # e.g. `torch` on the way to torch.optim.AdamW: text the first check already judged
        try:
            obj = _locate(prefix)
        except ImportError:
            return ""  # Hydra reports the unresolvable path itself
        if isinstance(obj, ModuleType) and not is_trusted(obj.__name__, modules):
            return f"it {'is' if end == len(parts) else 'leads through'} the module {obj.__name__}"
    if isinstance(obj, ModuleType):
        return ""
    home = getattr(obj, "__module__", None) if isinstance(obj, type) or callable(obj) else None
    home = home if isinstance(home, str) else type(obj).__module__
    if not is_trusted(home, modules):
        return f"it is {home}.{getattr(obj, '__qualname__', parts[-1])}, defined outside the trusted modules"
    return ""
