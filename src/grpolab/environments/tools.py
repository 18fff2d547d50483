"""The ``environment`` group's node: the tools (and environment class) a run offers the model, with their limits.

``conf/environment/<option>.yaml`` instantiates a :class:`ToolEnvironment`; the composition root hands TRL what it
holds (``GRPOTrainer(tools=..., environment_factory=...)``) and nothing else. Its parts:

- ``tools``: each entry is a plain typed, docstringed function (``{_target_: my_tools.lookup, _partial_: true}``) or
  a toolkit, an object whose ``tools()`` method returns its tool callables (``grpolab.environments.calculator
  .Calculator``, ``grpolab.environments.python.PythonInterpreter``: their settings are YAML keys). TRL renders each
  tool's JSON schema (name, parameters, docstring) into the prompt; a tool it cannot describe fails here in one line.
- ``environment_factory``: TRL's per-rollout environment (``{_target_: my_env.Game, _partial_: true}``): one instance
  per completion, ``reset(**row)`` before generation (its return value, when not None, is appended to the prompt),
  its public methods the tools, and an optional ``get_reward()`` that TRL adds as a reward.
- ``max_tool_calling_iterations`` (``trl.GRPOConfig``'s field of that name lives here), ``timeout_s`` and
  ``max_output_chars``: every tool call is held to them (``grpolab.environments.guard``). A toolkit that stops its own
  calls says after how long (``time_limit_s``), which must be below ``timeout_s``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grpolab.environments.guard import GuardedFactory, ToolLimits, guard_tool, public_methods

log = logging.getLogger(__name__)


def build_environment(environment_cfg: Any, processing_class: Any) -> ToolEnvironment | None:
    """The ``environment`` node instantiated (None for ``environment=none``), once the chat template of
    ``processing_class`` is known to carry tool calls (``grpolab.models.tokenizer.prepare_for_tool_calls``); logs one
    line of what it built, and what a sandboxed toolkit isolates."""
    if not environment_cfg:
        return None
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from grpolab.models.tokenizer import prepare_for_tool_calls

    prepare_for_tool_calls(processing_class)
    try:
        environment = instantiate(environment_cfg, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):  # already one line naming its key (environment.timeout_s=...)
            raise error.__cause__ from error
        raise
    if environment.returns_images and getattr(processing_class, "image_processor", None) is None:
        raise ValueError(f"environment: its tools ({environment.image_tool_names()}) return images, which a "
                         "text-only model cannot read; use a vision-language model (model.modality=vision), e.g. "
                         "model=tiny_vlm_tools or experiment=vision_tools")
    log.info("environment: %s", environment.describe())
    for note in environment.isolation_notes():
        log.info(note)
    return environment


def check_chat_prompts(splits: Any, source: str, environment: ToolEnvironment | None = None) -> None:
    """TRL's tool loop reads tool calls only from completions of chat prompts: fail in one line for text prompts;
    and tools that show the model a part of its input image need rows with images."""
    from grpolab.data.prompts import image_column

    for name, split in (("train", splits.train), ("eval", splits.eval)):
        prompt = split[0]["prompt"] if len(split) and "prompt" in split.column_names else None
        if not (isinstance(prompt, list) and prompt and isinstance(prompt[0], dict)):
            raise ValueError(f"environment: tools need chat prompts (lists of messages), but the {name} split of "
                             f"{source} has {type(prompt).__name__} prompts; use a conversational task (e.g. "
                             "data=tool_arithmetic, or data=gsm8k data.conversational=true) or environment=none")
        if environment is not None and environment.returns_images and image_column(split.column_names) is None:
            raise ValueError(f"environment: its tools ({environment.image_tool_names()}) work on the row's image, but "
                             f"the {name} split of {source} has no image column; use an image task (data=shapes, "
                             "clevr, image_jsonl) or another environment")


@dataclass
class ToolEnvironment:
    """What ``environment=<option>`` gives a run; see the module docstring.

    >>> from grpolab.environments.calculator import Calculator
    >>> environment = ToolEnvironment(tools=[Calculator(["multiply"])], max_tool_calling_iterations=2)
    >>> environment.describe()
    'tools multiply; at most 2 tool-calling rounds per completion, 10 s per call, results cut at 1000 characters'
    >>> environment.trainer_kwargs()["tools"][0](12, 34)
    408
    """

    tools: list[Any] = field(default_factory=list)
    environment_factory: Callable[[], Any] | None = None
    max_tool_calling_iterations: int | None = None
    timeout_s: float = 10.0
    max_output_chars: int = 1000

    def __post_init__(self) -> None:
        self.limits = ToolLimits(self.timeout_s, self.max_output_chars)
        iterations = self.max_tool_calling_iterations
        if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int)
                                       or iterations < 1):
            raise ValueError(f"environment.max_tool_calling_iterations={iterations!r} must be a positive integer "
                             "(tool-calling rounds per completion) or null (no limit but the completion length)")
        self.toolkits = [entry for entry in self.tools if hasattr(entry, "tools")]
        for index, toolkit in enumerate(self.tools):
            # A toolkit that stops its own calls (the python sandbox kills the code's processes) must get to do so:
            # the backstop interrupts the caller only, and would leave the code running.
            own = getattr(toolkit, "time_limit_s", None)
            if isinstance(own, (int, float)) and own >= self.timeout_s:
                raise ValueError(f"environment.timeout_s={self.timeout_s:g} must exceed the {own:g} s after which "
                                 f"environment.tools.{index} ({type(toolkit).__name__}) stops a call itself")
        self.functions = [tool for index, entry in enumerate(self.tools) for tool in _tool_callables(entry, index)]
        if self.environment_factory is not None and not callable(self.environment_factory):
            raise ValueError(f"environment.environment_factory={self.environment_factory!r} must make an environment "
                             "when called, e.g. {_target_: my_env.Game, _partial_: true}")
        self.factory = None if self.environment_factory is None else GuardedFactory(self.environment_factory,
                                                                                      self.limits)
        # One instance, as TRL probes one, for the tools' descriptions (prompt rendering, the start-up line).
        self.probe = probe = None if self.factory is None else self.factory()
        self.method_names = [] if probe is None else public_methods(type(probe))
        if not self.functions and not self.method_names:
            raise ValueError("environment: no tools; list functions or toolkits under environment.tools, or give an "
                             "environment_factory whose class has public methods (or use environment=none)")
        self._check_schemas([*self.functions, *(getattr(probe, name) for name in self.method_names)])
        self.guarded = [guard_tool(tool, self.limits) for tool in self.functions]

    def trainer_kwargs(self) -> dict[str, Any]:
        """``GRPOTrainer``'s ``tools`` and ``environment_factory`` arguments, each call held to the limits."""
        return {"tools": list(self.guarded) or None, "environment_factory": self.factory}

    def prompt_tools(self) -> list[Callable[..., Any]]:
        """What the chat template renders into every prompt, in TRL's order: the tools, then the environment's
        methods (of the probe instance; TRL renders those of its own probe, the same class)."""
        return [*self.guarded, *(getattr(self.probe, name) for name in self.method_names)]

    def describe(self) -> str:
        """One line: the tools, the environment class and the limits."""
        names = [tool.__name__ for tool in self.functions] + self.method_names
        parts = [f"tools {', '.join(names)}"]
        if self.probe is not None:
            parts[0] += f" (environment {type(self.probe).__name__}, one instance per rollout)"
        rounds = self.max_tool_calling_iterations
        parts.append(f"{'at most ' + str(rounds) if rounds else 'unlimited'} tool-calling round"
                     f"{'' if rounds == 1 else 's'} per completion, {self.timeout_s:g} s per call, results cut at "
                     f"{self.max_output_chars} characters")
        return "; ".join(parts)

    @property
    def returns_images(self) -> bool:
        """Whether a toolkit or the environment class says its tools return images (``returns_images = True``):
        the model must read images, and the tools may need the row's (``grpolab.environments.image_crop``)."""
        return bool(self.image_tool_names())

    def image_tool_names(self) -> str:
        """The tools of the parts that return images, comma-separated (empty: none)."""
        names = [tool.__name__ for entry in self.toolkits if getattr(entry, "returns_images", False)
                 for tool in entry.tools()]
        if self.probe is not None and getattr(self.probe, "returns_images", False):
            names += self.method_names
        return ", ".join(names)

    def isolation_notes(self) -> list[str]:
        """What sandboxed toolkits isolate on this machine, one line each (``environment=python``)."""
        return [entry.isolation for entry in self.toolkits if isinstance(getattr(entry, "isolation", None), str)]

    @staticmethod
    def _check_schemas(tools: list[Callable[..., Any]]) -> None:
        from transformers.utils import get_json_schema

        seen: set[str] = set()
        for tool in tools:
            name = getattr(tool, "__name__", repr(tool))
            try:
                get_json_schema(tool)
            except Exception as error:  # transformers raises several types, all meaning "cannot describe it"
                raise ValueError(f"environment.tools: TRL cannot describe the tool {name!r} to the model "
                                 f"({str(error).strip().splitlines()[0]}); a tool needs type hints on every "
                                 "parameter and a Google-style docstring with an Args section") from error
            if name in seen:
                raise ValueError(f"environment.tools: two tools are named {name!r}; the model calls tools by name")
            seen.add(name)


def _tool_callables(entry: Any, index: int) -> list[Callable[..., Any]]:
    """An entry of ``environment.tools`` as tool callables: a toolkit's ``tools()``, or the function itself
    (``_partial_: true`` without arguments gives ``functools.partial(function)``, unwrapped here)."""
    if hasattr(entry, "tools"):
        return list(entry.tools())
    if isinstance(entry, functools.partial):
        if entry.args or entry.keywords:
            raise ValueError(f"environment.tools.{index}: {entry.func.__name__} is given arguments "
                             f"({', '.join(entry.keywords) or 'positional'}); a tool's parameters are the model's to "
                             "fill; put settings on a toolkit class instead")
        entry = entry.func
    if not callable(entry) or not hasattr(entry, "__name__"):
        raise ValueError(f"environment.tools.{index}={entry!r} is neither a function ({{_target_: module.function, "
                         "_partial_: true}}) nor a toolkit (an object with a tools() method)")
    return [entry]
