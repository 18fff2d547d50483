"""Multi-turn sequences outside TRL's rollout: demonstrations laid out as TRL lays out rollouts, and the greedy
held-out tool loop, checked against TRL's own pieces (``_get_tool_suffix_ids``, ``parse_response``)."""

from __future__ import annotations

import pytest
import torch

from grpolab.data.prompts import PromptEncoder
from grpolab.environments.calculator import Calculator
from grpolab.environments.tools import ToolEnvironment
from grpolab.models.tiny import build_tiny_qwen2
from grpolab.models.tokenizer import DEFAULT_TAG_TOKENS, TOOL_TAG_TOKENS, build_char_tokenizer, prepare_for_tool_calls
from grpolab.trainer.grpo import tool_suffix_ids
from grpolab.trainer.multiturn import ToolRollout, assistant_turn_ids, clean_message, run_tool_calls, trajectory

PROMPT = [{"role": "user", "content": "12*34"}]
CALL = {"type": "function", "function": {"name": "multiply", "arguments": {"a": 12, "b": 34}}}
TRACE = [{"role": "assistant", "content": "", "tool_calls": [CALL]},
         {"role": "tool", "name": "multiply", "content": "408"},
         {"role": "assistant", "content": "<answer>408</answer>"}]


@pytest.fixture(scope="module")
def environment():
    return ToolEnvironment(tools=[Calculator(["multiply"])], max_tool_calling_iterations=1)


@pytest.fixture(scope="module")
def encoder(environment):
    tokenizer = build_char_tokenizer(tag_tokens=[*DEFAULT_TAG_TOKENS, *TOOL_TAG_TOKENS], eos_token="<|im_end|>")
    return PromptEncoder(prepare_for_tool_calls(tokenizer), tools=environment.prompt_tools())


def test_a_demonstration_is_the_rendered_conversation_token_for_token(encoder):
    prompt_ids = encoder.encode_texts([PROMPT])[0]
    laid_out = trajectory(encoder, PROMPT, TRACE)
    ids, mask = laid_out.ids, laid_out.mask
    rendered = encoder.tokenizer.apply_chat_template([*PROMPT, *TRACE], tokenize=True, return_dict=False,
                                                     **encoder.template_arguments())
    # The template ends the last turn with "<|im_end|>\n"; generation stops at the EOS, <|im_end|>.
    assert prompt_ids + ids == rendered[:-1] and encoder.tokenizer.decode(rendered[-1:]) == "\n"
    text = encoder.tokenizer.decode
    tool = [token for token, trained in zip(ids, mask) if not trained]
    assert text(tool) == "\n<|im_start|>user\n<tool_response>\n408\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    assert tool == tool_suffix_ids(encoder.processing_class, [TRACE[1]])
    assert text([t for t, trained in zip(ids, mask) if trained]) == (
        '<tool_call>\n{"name":"multiply","arguments":{"a":12,"b":34}}\n</tool_call><|im_end|><answer>408</answer>'
        "<|im_end|>")


def test_an_assistant_turn_ends_at_the_eos_even_when_the_template_ends_it_otherwise():
    encoder = PromptEncoder(build_char_tokenizer())  # EOS <|endoftext|>, turns end with <|im_end|>\n
    ids = assistant_turn_ids(encoder, PROMPT, {"role": "assistant", "content": "<answer>408</answer>"})
    assert encoder.tokenizer.decode(ids) == "<answer>408</answer><|im_end|>\n<|endoftext|>"


def test_messages_read_back_from_arrow_lose_their_unset_keys():
    from datasets import Dataset

    row = Dataset.from_list([{"solution": [{**TRACE[0], "name": None}, {**TRACE[1], "tool_calls": None}]}])[0]
    assert [clean_message(message) for message in row["solution"]] == TRACE[:2]


def test_tool_calls_run_with_trls_failure_semantics(environment):
    tools = {tool.__name__: tool for tool in environment.guarded}
    bad = {"type": "function", "function": {"name": "multiply", "arguments": {"a": "x", "b": 2}}}
    unknown = {"type": "function", "function": {"name": "divide", "arguments": {}}}
    messages, failures = run_tool_calls([CALL, bad, unknown, {"type": "retrieval"}], tools)
    assert failures == 3
    assert [m["content"] for m in messages] == ["408", str({"error": "a must be an integer, got str 'x'"}),
                                                "{'error': 'Tool divide not found.'}",
                                                "{'error': 'Unsupported tool call type: retrieval'}"]
    assert [m["name"] for m in messages] == ["multiply", "multiply", "divide", "unknown"]


@pytest.mark.slow
def test_the_greedy_tool_loop_runs_the_calls_the_model_makes(encoder, environment):
    # A model that has memorised one demonstration: the loop must parse its call, run the calculator, append TRL's
    # suffix and let it answer; the completion is then exactly the demonstration.
    model = build_tiny_qwen2(encoder.processing_class, 32, 64, 1, 2, 1, 256, True, seed=0)
    prompt_ids = encoder.encode_texts([PROMPT])[0]
    laid_out = trajectory(encoder, PROMPT, TRACE)
    ids, mask = laid_out.ids, laid_out.mask
    sequence = torch.tensor([prompt_ids + ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + [t if m else -100 for t, m in zip(ids, mask)]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        model(input_ids=sequence, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    [rollout] = ToolRollout(encoder, environment, max_new_tokens=len(ids))(model, [prompt_ids], [{"prompt": PROMPT}])
    assert (rollout.completion_ids, rollout.tool_mask) == (ids, mask)
    assert rollout.messages == TRACE and (rollout.tool_calls, rollout.tool_failures) == (1, 0)
    [short] = ToolRollout(encoder, environment, max_new_tokens=len(ids) - 3)(model, [prompt_ids], [{}])
    # The tool result still fits, the answer is cut at the budget, as TRL truncates.
    assert short.completion_ids == ids[:-3] and short.tool_calls == 1
    call_only = mask.index(0)
    [cut] = ToolRollout(encoder, environment, max_new_tokens=call_only + 5)(model, [prompt_ids], [{}])
    # The result would not fit: TRL drops it (the call was made) and the completion ends with the call.
    assert (cut.completion_ids, cut.tool_mask, cut.tool_calls) == (ids[:call_only], mask[:call_only], 1)
    assert cut.messages == TRACE[:1]


class Game:
    """An environment class: TRL resets one instance per rollout with the row; its observation joins the prompt."""

    def reset(self, answer=None, **row):
        self.answer = answer
        return " (hint: think)"

    def guess(self, value: int) -> str:
        """Guess the answer.

        Args:
            value: The guess.
        """
        return "right" if str(value) == self.answer else "wrong"


def test_each_row_gets_a_reset_environment_whose_observation_joins_its_prompt(encoder):
    environment = ToolEnvironment(tools=[Calculator(["multiply"])], environment_factory=Game)
    rollout = ToolRollout(encoder, environment, max_new_tokens=8)
    sequences = [[0]]
    tools = rollout._row_tools({"prompt": PROMPT, "answer": "408"}, 0, sequences)
    assert sorted(tools) == ["guess", "multiply"] and tools["guess"](408) == "right"
    assert sequences[0] == encoder.encode_texts([[{"role": "user", "content": "12*34 (hint: think)"}]])[0]
    with pytest.raises(ValueError, match="^environment: reset\\(\\) returned an observation"):
        rollout._row_tools({"prompt": [5, 6], "answer": "408"}, 0, sequences)
