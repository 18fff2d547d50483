"""Tool-calling conversations as token IDs outside TRL's rollout: warm-start traces and greedy held-out rollouts.

Both build sequences the way TRL 1.16's tool loop (``GRPOTrainer._tool_call_loop``) builds them during training:
an assistant turn is the IDs the model generates, up to and including its EOS; tool results enter as the IDs
``grpolab.trainer.grpo.tool_suffix_ids`` returns (TRL's own ``_get_tool_suffix_ids``), marked 0 in the tool mask;
completions are read by TRL's ``parse_response``; nothing generated is ever decoded and encoded again. So the warm
start teaches the very token layout GRPO samples and trains on, and the held-out accuracy is measured on it.

- :func:`trajectory`: a demonstration (``solution`` given as chat messages) -> the IDs after
  the prompt, the mask of the ones the model is trained to produce, and the images tool results add. A tool message
  without ``content`` is left for the run's environment: the preceding calls are run with the row's tools
  (:func:`row_tools`), so the demonstration shows exactly what the tool returns (an image tool's image);
- :class:`ToolRollout`: greedy generation that executes the tool calls it finds (with TRL's failure semantics:
  an exception becomes an ``{"error": ...}`` tool message) until no call is left, the tool-calling rounds
  (``environment.max_tool_calling_iterations``) or the completion budget run out. Images a tool returns (a list of
  content blocks, TRL's multimodal tool results) join the row's images for the turns after them, as in TRL's loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from trl.chat_template_utils import parse_response

from grpolab.data.prompts import ImageInputs, PromptEncoder, is_token_ids
from grpolab.trainer.grpo import tool_suffix_ids


def clean_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message read back from Arrow, whose struct columns give every message every key (None where unset):
    the None-valued keys dropped, in tool calls and their arguments too.

    >>> clean_message({"role": "assistant", "content": None, "name": None, "tool_calls": [{"type": "function",
    ...     "function": {"name": "add", "arguments": {"a": 1, "b": 2, "code": None}}}]})["tool_calls"][0]
    {'type': 'function', 'function': {'name': 'add', 'arguments': {'a': 1, 'b': 2}}}
    """
    def cleaned(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: cleaned(item) for key, item in value.items() if item is not None}
        if isinstance(value, list):
            return [cleaned(item) for item in value]
        return value

    message = cleaned(message)
    if message.get("role") == "assistant":
        message.setdefault("content", "")
    return message


def is_trace(solution: Any) -> bool:
    """A ``solution`` given as chat messages (a multi-turn demonstration) rather than as completion text."""
    return isinstance(solution, list) and bool(solution) and isinstance(solution[0], Mapping)


def _render(encoder: PromptEncoder, messages: Sequence[Mapping[str, Any]], generation_prompt: bool) -> list[int]:
    # The text tokenizer with the processing class's template: a processor would want the images of every image part
    # (a prompt's placeholder has none), and an assistant turn is what two renderings of the same history differ by,
    # whether the history's images are expanded into their tokens or not.
    processing_class = encoder.processing_class
    template = {} if processing_class is encoder.tokenizer else {"chat_template": processing_class.chat_template}
    ids = encoder.tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=generation_prompt, tokenize=True, return_dict=False,
        **template, **encoder.template_arguments())
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def assistant_turn_ids(encoder: PromptEncoder, history: Sequence[Mapping[str, Any]],
                       message: Mapping[str, Any]) -> list[int]:
    """The IDs a model generates for ``message`` after ``history``: what the chat template renders for it after
    the generation prompt, up to and including EOS (EOS appended when the template ends a turn otherwise)."""
    before = _render(encoder, history, generation_prompt=True)
    after = _render(encoder, [*history, message], generation_prompt=False)
    if after[: len(before)] != before:
        raise ValueError("warmstart: the chat template renders an assistant turn that does not continue the "
                         "generation prompt, so its IDs cannot be the model's own (is it prefix-preserving?)")
    turn = after[len(before):]
    eos = encoder.tokenizer.eos_token_id
    return turn[: turn.index(eos) + 1] if eos in turn else [*turn, eos]


@dataclass
class Trajectory:
    """A demonstration laid out after its prompt: IDs, the mask of those trained on (0 on tool output), and the
    images its tool results show, in order (PIL images; their tokens are in ``ids``)."""

    ids: list[int]
    mask: list[int]
    images: list[Any] = field(default_factory=list)


def trajectory(encoder: PromptEncoder, prompt: Sequence[Mapping[str, Any]], trace: Sequence[Mapping[str, Any]],
               tools: Mapping[str, Callable[..., Any]] | None = None) -> Trajectory:
    """A demonstration after its prompt: each assistant turn as the model generates it (mask 1), each run of tool
    messages as TRL appends it (mask 0: tool output is never the model's to learn). Tool messages without ``content``
    get the results of running the preceding turn's calls with ``tools`` (the row's: :func:`row_tools`)."""
    history = [clean_message(message) for message in prompt]
    messages = [clean_message(message) for message in trace]
    ids: list[int] = []
    mask: list[int] = []
    images: list[Any] = []
    index = 0
    while index < len(messages):
        if messages[index]["role"] == "tool":
            end = index
            while end < len(messages) and messages[end]["role"] == "tool":
                end += 1
            if any("content" not in message for message in messages[index:end]):
                messages[index:end] = _replayed(messages[index - 1] if index else {}, tools)
                end = index + len(messages[index - 1]["tool_calls"])
            segment, trained = tool_suffix_ids(encoder.processing_class, messages[index:end],
                                               encoder.chat_template_kwargs), 0
            images += [image for message in messages[index:end] for image in image_blocks(message["content"])]
        else:
            end = index + 1
            segment, trained = assistant_turn_ids(encoder, history, messages[index]), 1
        ids += segment
        mask += [trained] * len(segment)
        history += messages[index:end]
        index = end
    return Trajectory(ids, mask, images)


def _replayed(caller: Mapping[str, Any], tools: Mapping[str, Callable[..., Any]] | None) -> list[dict[str, Any]]:
    if tools is None:
        raise ValueError("warmstart: a demonstration leaves a tool result out (content null) for the environment to "
                         "compute, but the run has no environment (set environment=..., e.g. environment=crop)")
    if not caller.get("tool_calls"):
        raise ValueError("warmstart: a demonstration leaves a tool result out, but no assistant turn with tool_calls "
                         "comes before it")
    messages, _ = run_tool_calls(caller["tool_calls"], tools)
    return messages


def image_blocks(content: Any) -> list[Any]:
    """The images in a message's content, in order, as TRL's tool loop collects a tool's images (a result that is
    a list of content blocks; any other result is text).

    >>> image_blocks([{"type": "text", "text": "a"}, {"type": "image", "image": "<img>"}]), image_blocks("text")
    (['<img>'], [])
    """
    if not isinstance(content, list):
        return []
    return [part["image"] for part in content if isinstance(part, Mapping) and part.get("type") == "image"]


def uniform_contents(conversations: Any) -> None:
    """Where a logged completion holds a message whose content is a list of blocks (a tool's image), every message's
    text content becomes one text block: TRL 1.16 writes its completion log (``trainer.log_completions``) with
    pandas/Arrow, which cannot store text and lists in one column ("cannot mix list and non-list").

    >>> log = [[{"role": "assistant", "content": "a"}, {"role": "tool", "content": [{"type": "image"}]}]]
    >>> uniform_contents(log); log[0][0]["content"]
    [{'type': 'text', 'text': 'a'}]
    """
    messages = [message for conversation in conversations if isinstance(conversation, list)
                for message in conversation if isinstance(message, dict)]
    if not any(isinstance(message.get("content"), list) for message in messages):
        return
    for message in messages:
        if isinstance(message.get("content"), str):
            message["content"] = [{"type": "text", "text": message["content"]}]


def row_tools(environment: Any, row: Mapping[str, Any]) -> tuple[dict[str, Callable[..., Any]], Any]:
    """``(tools by name, observation)`` for one row, as TRL gives a rollout its tools: the environment's functions,
    plus the methods of a fresh instance of its environment class reset with the row's columns (the observation is
    what ``reset`` returned; None without an environment class)."""
    tools = {tool.__name__: tool for tool in environment.guarded}
    if environment.factory is None:
        return tools, None
    instance = environment.factory()
    observation = instance.reset(**{key: value for key, value in row.items() if key != "prompt_ids"})
    return {**tools, **{name: getattr(instance, name) for name in environment.method_names}}, observation


def run_tool_calls(tool_calls: Sequence[Mapping[str, Any]],
                   tools: Mapping[str, Callable[..., Any]]) -> tuple[list[dict[str, Any]], int]:
    """Execute one turn's tool calls as TRL 1.16's tool loop does: ``(tool messages, failures)``. An exception, an
    unknown tool or a call that is not a function call is a failure whose message is ``str({"error": ...})``."""
    messages, failures = [], 0
    for call in tool_calls:
        if call.get("type") != "function":
            failures += 1
            name, result = call.get("name", "unknown"), {"error": f"Unsupported tool call type: {call.get('type')}"}
        else:
            name = call["function"]["name"]
            try:
                if name not in tools:
                    raise ValueError(f"Tool {name} not found.")
                result = tools[name](**call["function"]["arguments"])
            except Exception as error:  # any failure of the model's call is the model's to read
                failures += 1
                result = {"error": str(error)}
        messages.append({"role": "tool", "name": name, "content": result if isinstance(result, list) else str(result)})
    return messages, failures


@dataclass
class Rollout:
    """One greedy multi-turn completion: its IDs after the prompt (generated and tool-suffix), the tool mask (0 on
    tool output), the messages TRL would hand rewards, and the tool calls made and failed."""

    completion_ids: list[int] = field(default_factory=list)
    tool_mask: list[int] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: int = 0
    tool_failures: int = 0


class ToolRollout:
    """Greedy generation with tools for a batch of prompts; see the module docstring.

    ``environment`` is the run's ``grpolab.environments.tools.ToolEnvironment`` (its guarded tools, and one instance
    of its environment class per row, reset with the row as TRL resets it); ``max_new_tokens`` bounds each
    completion, tool output included, as ``trainer.max_completion_length`` does in training.
    """

    def __init__(self, encoder: PromptEncoder, environment: Any, max_new_tokens: int) -> None:
        self.encoder = encoder
        self.environment = environment
        self.max_new_tokens = max_new_tokens
        self.max_rounds = environment.max_tool_calling_iterations or sys.maxsize

    def __call__(self, model: Any, prompt_ids: Sequence[Sequence[int]], rows: Sequence[Mapping[str, Any]],
                 images: ImageInputs | None = None) -> list[Rollout]:
        """Roll out every row; ``images`` are the prompts' (``EncodedPrompts.images``; None for text rows)."""
        tokenizer = self.encoder.tokenizer
        sequences = [list(ids) for ids in prompt_ids]
        tools = [self._row_tools(row, index, sequences) for index, row in enumerate(rows)]
        rollouts = [Rollout() for _ in rows]
        # Each row's images in the order its sequence shows them: the prompt's, then those its tools returned.
        row_images: list[list[ImageInputs | None]] = [[row] for row in images.rows()] if images is not None \
            else [[] for _ in rows]
        context = model.config.get_text_config().max_position_embeddings
        active, rounds = list(range(len(rows))), 0
        while active:
            budgets = [self.max_new_tokens - len(rollouts[i].completion_ids) for i in active]
            batch_images = ImageInputs.join([ImageInputs.join(row_images[i], one_row=True) for i in active])
            generated = self._generate(model, [sequences[i] for i in active], budgets, batch_images)
            still_calling = []
            for i, ids in zip(active, generated, strict=True):
                rollout = rollouts[i]
                message = parse_response(tokenizer, ids, prefix=sequences[i], tools=list(tools[i].values())) \
                    if ids else {}
                sequences[i] += ids
                rollout.completion_ids += ids
                rollout.tool_mask += [1] * len(ids)
                if message or rounds == 0:
                    rollout.messages.append(message or {"role": "assistant", "content": ""})
                if rounds >= self.max_rounds or not message.get("tool_calls"):
                    continue
                rollout.tool_calls += len(message["tool_calls"])
                tool_messages, failures = run_tool_calls(message["tool_calls"], tools[i])
                rollout.tool_failures += failures
                suffix = tool_suffix_ids(self.encoder.processing_class, tool_messages,
                                         self.encoder.chat_template_kwargs)
                if len(rollout.completion_ids) + len(suffix) > self.max_new_tokens or \
                        len(sequences[i]) + len(suffix) >= context:
                    continue  # as TRL: results that would not fit are dropped and the completion ends here
                rollout.messages += tool_messages
                row_images[i].append(self.encoder.process_images(
                    [image for message in tool_messages for image in image_blocks(message["content"])]))
                sequences[i] += suffix
                rollout.completion_ids += suffix
                rollout.tool_mask += [0] * len(suffix)
                still_calling.append(i)
            active, rounds = still_calling, rounds + 1
        return rollouts

    def _row_tools(self, row: Mapping[str, Any], index: int, sequences: list[list[int]]) -> dict[str, Callable]:
        """The tools of one row: the environment's functions, plus the methods of a fresh environment instance reset
        with the row (an observation it returns joins the prompt, as in TRL; ids-form rows cannot take one)."""
        tools, observation = row_tools(self.environment, row)
        if observation is not None:
            prompt = row.get("prompt")
            if is_token_ids(prompt) or not isinstance(prompt, list) or not isinstance(observation, str):
                raise ValueError("environment: reset() returned an observation, which the held-out evaluation can "
                                 "only add to a chat prompt of text (tokenizer_mode=text)")
            prompt = [*prompt[:-1], {**prompt[-1], "content": prompt[-1]["content"] + observation}]
            sequences[index] = self.encoder.encode_texts([prompt])[0]
        return tools

    def _generate(self, model: Any, sequences: list[list[int]], budgets: list[int],
                  images: ImageInputs | None = None) -> list[list[int]]:
        """Greedy continuations of ``sequences`` (left-padded together, with their ``images``), each cut after EOS
        and at its budget."""
        pad = self.encoder.tokenizer.pad_token_id
        width = max(len(ids) for ids in sequences)
        device = next(model.parameters()).device
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in sequences], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences], device=device)
        extra = {} if images is None else images.to(device).model_inputs(input_ids, model.config.image_token_id,
                                                                          model.dtype)
        output = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max(budgets),
                                do_sample=False, pad_token_id=pad, **extra)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        continuations = []
        for ids, budget in zip(output[:, width:].tolist(), budgets, strict=True):
            end = next((i + 1 for i, token in enumerate(ids) if token in eos_ids), len(ids))
            continuations.append(ids[: min(end, budget)])
        return continuations
