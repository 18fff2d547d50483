"""The char tokenizer's chat template with tools: what it renders, that TRL can run a tool loop on it, the EOS choice."""

from __future__ import annotations

import pytest
from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response, supports_tool_calling

from grpolab.models.tokenizer import (
    CHAT_TEMPLATE,
    DEFAULT_TAG_TOKENS,
    RESPONSE_TEMPLATE,
    TOOL_TAG_TOKENS,
    add_tool_call_parsing,
    build_char_tokenizer,
    prepare_for_tool_calls,
)


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


CALL = {"type": "function", "function": {"name": "multiply", "arguments": {"a": 123, "b": 456}}}
CONVERSATION = [
    {"role": "user", "content": "123*456"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "name": "multiply", "content": "56088"},
    {"role": "assistant", "content": "<answer>56088</answer>"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(tag_tokens=[*DEFAULT_TAG_TOKENS, *TOOL_TAG_TOKENS], eos_token="<|im_end|>")


def test_conversations_without_tools_render_as_before():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "12+7="}]
    assert build_char_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n12+7=<|im_end|>\n<|im_start|>assistant\n")


def test_a_tool_conversation_renders_qwen2_5_style_compactly(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION, tools=[multiply], tokenize=False)
    assert text == (
        "<|im_start|>system\n<tools>multiply(a,b)</tools><|im_end|>\n"
        "<|im_start|>user\n123*456<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name":"multiply","arguments":{"a":123,"b":456}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n56088\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<answer>56088</answer><|im_end|>\n")
    with_system = tokenizer.apply_chat_template([{"role": "system", "content": "Be exact."}, *CONVERSATION[:1]],
                                                tools=[multiply], tokenize=False)
    assert with_system.startswith("<|im_start|>system\nBe exact.\n<tools>multiply(a,b)</tools><|im_end|>\n"
                                  "<|im_start|>user\n")
    ids = tokenizer.apply_chat_template(CONVERSATION, tools=[multiply], tokenize=True, return_dict=False)
    for tag in TOOL_TAG_TOKENS:
        assert tokenizer.convert_tokens_to_ids(tag) in ids  # one token each


def test_consecutive_tool_results_share_one_user_turn(tokenizer):
    two = [CONVERSATION[0], {"role": "assistant", "content": "Both.", "tool_calls": [CALL, CALL]},
           {"role": "tool", "name": "multiply", "content": "1"}, {"role": "tool", "name": "multiply", "content": "2"}]
    text = tokenizer.apply_chat_template(two, tokenize=False, add_generation_prompt=True)
    assert text.endswith('<|im_start|>assistant\nBoth.\n<tool_call>\n{"name":"multiply","arguments":{"a":123,"b":456}}'
                         '\n</tool_call>\n<tool_call>\n{"name":"multiply","arguments":{"a":123,"b":456}}\n</tool_call>'
                         "<|im_end|>\n<|im_start|>user\n<tool_response>\n1\n</tool_response>\n<tool_response>\n2\n"
                         "</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_trl_can_run_its_tool_loop_on_the_template(tokenizer):
    assert supports_tool_calling(tokenizer) and is_chat_template_prefix_preserving(tokenizer)
    assert prepare_for_tool_calls(tokenizer).response_template is RESPONSE_TEMPLATE
    prompt = tokenizer.apply_chat_template(CONVERSATION[:1], tools=[multiply], add_generation_prompt=True,
                                           tokenize=True, return_dict=False)
    completion = tokenizer('<tool_call>\n{"name":"multiply","arguments":{"a":123,"b":456}}\n</tool_call><|im_end|>',
                           add_special_tokens=False)["input_ids"]
    assert parse_response(tokenizer, completion, prefix=prompt, tools=[multiply]) == {
        "role": "assistant", "content": "", "tool_calls": [CALL]}
    answer = tokenizer("<answer>56088</answer><|im_end|>", add_special_tokens=False)["input_ids"]
    assert parse_response(tokenizer, answer, prefix=prompt) == {"role": "assistant",
                                                                 "content": "<answer>56088</answer>"}


def test_the_eos_token_is_a_choice_among_the_special_tokens():
    default, chat = build_char_tokenizer(), build_char_tokenizer(eos_token="<|im_end|>")
    assert (default.eos_token, chat.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert default.get_vocab() == chat.get_vocab()
    with pytest.raises(ValueError, match=r"^model.tokenizer.eos_token='<answer>' is not one of the tokenizer's "
                                         "special tokens"):
        build_char_tokenizer(eos_token="<answer>")


def test_a_template_that_cannot_carry_tool_calls_fails_in_one_line():
    plain = build_char_tokenizer(chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match="^environment: the chat template of model.tokenizer cannot render a "
                                         "tool-calling conversation"):
        prepare_for_tool_calls(plain)


def test_a_template_trl_does_not_know_needs_a_response_template():
    other = build_char_tokenizer(chat_template=CHAT_TEMPLATE + " ")
    with pytest.raises(ValueError, match="^environment: the model's chat template has no response template"):
        add_tool_call_parsing(other)
    other.response_template = RESPONSE_TEMPLATE  # one set by hand is kept
    assert add_tool_call_parsing(other).response_template is RESPONSE_TEMPLATE
