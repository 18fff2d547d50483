"""A character-level tokenizer built from config, so the embedded default needs no hub download.

Every printable ASCII character is one token, and each special/tag token (``<answer>``, ``<|im_start|>``, image
placeholders, ...) is one token too. Being character-level makes the text <-> ID round trip lossless for ASCII text,
which is what lets the ``text`` and ``ids`` tokenizer modes produce identical prompt IDs.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"

# A ChatML-style template (the Qwen family's) so chat-formatted prompts work with the tiny model too. With `tools` it
# renders what Qwen2.5's template renders, more compactly (the tiny model's context is short): a system block listing
# each tool as `name(param,...)`, assistant `tool_calls` as `<tool_call>\n{"name":...,"arguments":{...}}\n</tool_call>`
# (compact JSON) and consecutive `tool` messages as one user turn of `<tool_response>` blocks. It is prefix-preserving
# (a message renders the same whatever follows it), which TRL's multi-turn loop needs.
_CONTENT = (
    "{% if content is string %}{{ content }}"
    "{% elif content %}{% for part in content %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)
CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\n' }}"
    "{% if messages[0]['role'] == 'system' %}{% set content = messages[0]['content'] %}" + _CONTENT
    + "{{ '\n' }}{% endif %}{{ '<tools>' }}"
    "{% for tool in tools %}{% set function = tool['function'] if tool['function'] is defined else tool %}"
    "{% if not loop.first %}{{ '\n' }}{% endif %}"
    "{{ function['name'] + '(' + (function['parameters']['properties'] | join(',')) + ')' }}"
    "{% endfor %}{{ '</tools><|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{ '<|im_start|>assistant' }}{% if content %}{{ '\n' }}" + _CONTENT + "{% endif %}"
    "{% for call in message['tool_calls'] %}{% set call = call['function'] if call['function'] is defined else call %}"
    "{{ '\n<tool_call>\n{\"name\":\"' + call['name'] + '\",\"arguments\":' }}"
    "{{ call['arguments'] | tojson(separators=(',', ':')) }}{{ '}\n</tool_call>' }}"
    "{% endfor %}{{ '<|im_end|>\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{ '\n<tool_response>\n' }}" + _CONTENT + "{{ '\n</tool_response>' }}"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}" + _CONTENT + "{{ '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# How TRL's `parse_response` reads a completion rendered by CHAT_TEMPLATE: the text up to `<|im_end|>` is the content,
# each `<tool_call>` block one JSON tool call (transformers' response-template format, as TRL's Qwen template).
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}

DEFAULT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")
# Tags are single tokens but not "special": decoding with skip_special_tokens=True (as TRL does) must keep them,
# or text-level format rewards could never see them.
DEFAULT_TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
# Tool-calling tags, single tokens in the tool experiments' character tokenizer (as `<tool_call>` is in Qwen2.5's).
TOOL_TAG_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")


def char_vocabulary() -> list[str]:
    """Printable ASCII (letters, digits, punctuation, space, newline, tab) in a fixed order."""
    return list(dict.fromkeys(string.printable))


def build_char_tokenizer(
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    tag_tokens: Sequence[str] = DEFAULT_TAG_TOKENS,
    chat_template: str | None = CHAT_TEMPLATE,
    eos_token: str = EOS,
) -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer: ``[pad, eos, unk] + special_tokens + tag_tokens + printable ASCII``.

    ``eos_token`` is the token generation stops at: ``<|endoftext|>``, or ``<|im_end|>`` (one of the special tokens)
    for multi-turn tool calling, where an assistant turn ends as the chat template renders it (Qwen2.5-Instruct's
    choice); the vocabulary is the same either way.

    >>> tok = build_char_tokenizer()
    >>> tok.decode(tok("12+7=")["input_ids"])
    '12+7='
    """
    specials = [PAD, EOS, UNK, *special_tokens]
    vocab = {token: i for i, token in enumerate([*specials, *tag_tokens, *char_vocabulary()])}
    # BPE without merges is a character model that still honours added special tokens as single units.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = wrap_backend(backend, special_tokens, chat_template, eos_token=eos_token, unk_token=UNK)
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in tag_tokens])
    return tokenizer


def wrap_backend(backend: Tokenizer, special_tokens: Sequence[str], chat_template: str | None, eos_token: str = EOS,
                 **extra: str) -> PreTrainedTokenizerFast:
    """The transformers tokenizer around a ``tokenizers`` backend, as every tokenizer grpolab builds has it: its pad
    and EOS tokens, left padding (generation continues the prompt), no clean-up of spaces (decoding stays lossless)."""
    if eos_token not in (EOS, *special_tokens):
        raise ValueError(f"model.tokenizer.eos_token={eos_token!r} is not one of the tokenizer's special tokens "
                         f"({', '.join((EOS, *special_tokens))})")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=eos_token,
                                        additional_special_tokens=list(special_tokens),
                                        clean_up_tokenization_spaces=False, padding_side="left", **extra)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def add_tool_call_parsing(processing_class: Any) -> Any:
    """Let TRL's ``parse_response`` find tool calls in completions: grpolab's chat template gets
    :data:`RESPONSE_TEMPLATE`, a template TRL knows (Qwen, Llama, ...) TRL's own, one that already has a response
    template or schema keeps it; any other template fails in one line.

    >>> add_tool_call_parsing(build_char_tokenizer()).response_template is RESPONSE_TEMPLATE
    True
    """
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if any(getattr(tokenizer, name, None) is not None for name in ("response_template", "response_schema")):
        return processing_class
    if processing_class.chat_template == CHAT_TEMPLATE:
        tokenizer.response_template = RESPONSE_TEMPLATE
        return processing_class
    from trl.chat_template_utils import add_response_schema

    try:
        return add_response_schema(processing_class)
    except ValueError as error:
        raise ValueError("environment: the model's chat template has no response template TRL can parse tool calls "
                         "with; set tokenizer.response_template, or use a Qwen/Llama-family model or grpolab's "
                         "tiny models") from error


def prepare_for_tool_calls(processing_class: Any) -> Any:
    """Check that ``processing_class``'s chat template can carry a tool-calling conversation and make it ready, before
    any prompt is rendered: it must render ``tool_calls`` and ``tool`` messages (else one line), get a response
    template (:func:`add_tool_call_parsing`), and be prefix-preserving; a template that is not gets TRL's training
    variant (which TRL would otherwise swap in for generation only), installed here so that the warm start, the
    held-out evaluation and the ids-mode prompts render exactly what TRL renders.

    >>> prepare_for_tool_calls(build_char_tokenizer()).chat_template == CHAT_TEMPLATE
    True
    """
    from trl.chat_template_utils import (
        get_training_chat_template,
        is_chat_template_prefix_preserving,
        supports_tool_calling,
    )

    if not supports_tool_calling(processing_class):
        raise ValueError("environment: the chat template of model.tokenizer cannot render a tool-calling conversation "
                         "(user -> assistant with tool_calls -> tool); use a model whose template can (Qwen2.5, "
                         "Qwen3, Llama 3.1, grpolab's tiny models) or environment=none")
    add_tool_call_parsing(processing_class)
    if not is_chat_template_prefix_preserving(processing_class):
        processing_class.chat_template = get_training_chat_template(processing_class)
    return processing_class
