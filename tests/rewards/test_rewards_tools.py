"""Rewards on tool-calling trajectories: both levels read the model's turns, never a tool's output, and agree.

The trajectories are laid out as training lays them out (``grpolab.trainer.multiturn.trajectory``: the assistant
turns as generated, the tool results as TRL appends them, ``tool_mask`` 0 on those), with the messages TRL hands text
rewards, for the char tokenizer and a byte-level BPE (tags several tokens each).
"""

from __future__ import annotations

import pytest

from grpolab.data.prompts import PromptEncoder
from grpolab.models.bpe import bpe_tokenizer_from_jsonl
from grpolab.models.tokenizer import DEFAULT_TAG_TOKENS, TOOL_TAG_TOKENS, build_char_tokenizer, prepare_for_tool_calls
from grpolab.rewards import build_rewards
from grpolab.rewards.base import Reward
from grpolab.rewards.tools import ToolUse
from grpolab.trainer.multiturn import trajectory


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


def call(a, b):
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "multiply", "arguments": {"a": a, "b": b}}}]}


PROMPT = [{"role": "user", "content": "123*456"}]
TRACES = {
    # name: (messages after the prompt, accuracy, format, tool_use)
    "tool, right answer": ([call(123, 456), {"role": "tool", "name": "multiply", "content": "56088"},
                            {"role": "assistant", "content": "<answer>56088</answer>"}], 1.0, 1.0, 1.0),
    "tool, wrong copy": ([call(123, 456), {"role": "tool", "name": "multiply", "content": "56088"},
                          {"role": "assistant", "content": "<answer>56089</answer>"}], 0.0, 1.0, 1.0),
    # The tool's output holds a well-formed right answer; the model's own turn does not.
    "answer only in the tool output": ([call(123, 456), {"role": "tool", "name": "multiply",
                                                         "content": "<answer>56088</answer>"},
                                        {"role": "assistant", "content": "done"}], 0.0, 0.0, 1.0),
    "failed call": ([call(123, 456), {"role": "tool", "name": "multiply", "content": "{'error': 'a must be an "
                                                                                    "integer'}"},
                     {"role": "assistant", "content": "<answer>56088</answer>"}], 1.0, 1.0, 0.0),
    "no tool": ([{"role": "assistant", "content": "<answer>56000</answer>"}], 0.0, 1.0, 0.0),
}
REWARDS = {
    "accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy", "fallbacks": False},
    "format": {"_target_": "grpolab.rewards.format.Format"},
    "tool_use": {"_target_": "grpolab.rewards.tools.ToolUse"},
}


@pytest.fixture(scope="module", params=["char", "bpe"])
def encoder(request, gsm8k_test_split):
    if request.param == "char":
        tokenizer = build_char_tokenizer(tag_tokens=[*DEFAULT_TAG_TOKENS, *TOOL_TAG_TOKENS], eos_token="<|im_end|>")
    else:
        tokenizer = bpe_tokenizer_from_jsonl(str(gsm8k_test_split), ["question", "answer"], 1024,
                                             eos_token="<|im_end|>")
    return PromptEncoder(prepare_for_tool_calls(tokenizer), tools=[multiply])


def scores(encoder, level):
    layouts = [trajectory(encoder, PROMPT, trace) for trace, *_ in TRACES.values()]
    built = build_rewards(REWARDS, level, tokenizer=encoder.tokenizer)
    return {name: func(prompts=[PROMPT] * len(TRACES), completions=[trace for trace, *_ in TRACES.values()],
                       completion_ids=[laid_out.ids for laid_out in layouts],
                       tool_mask=[laid_out.mask for laid_out in layouts],
                       answer=["56088"] * len(TRACES), answer_ids=[encoder.answer_ids("56088")] * len(TRACES))
            for name, func in zip(built.names, built.funcs, strict=True)}


@pytest.mark.parametrize("level", ["text", "token"])
def test_both_levels_score_the_models_turns_and_never_the_tools_output(encoder, level):
    expected = {name: [values[index] for values in TRACES.values()]
                for index, name in enumerate(REWARDS, start=1)}
    assert scores(encoder, level) == expected


def test_the_token_view_of_a_tool_trajectory_is_the_text_views_content(encoder):
    laid_out = trajectory(encoder, PROMPT, TRACES["tool, right answer"][0])
    ids, mask = laid_out.ids, laid_out.mask
    [reward] = build_rewards({"format": REWARDS["format"]}, "token", tokenizer=encoder.tokenizer).funcs
    own = reward.content_ids(reward.model_ids(ids, mask))
    assert encoder.tokenizer.decode(own, skip_special_tokens=True) == "<answer>56088</answer>"


def test_tool_use_can_ask_for_the_tool_only_where_it_is_needed():
    reward = ToolUse(needed_column="needs_tool")
    trace = TRACES["tool, right answer"][0]
    assert reward.required_columns == {"needs_tool"}
    assert reward(prompts=[None] * 2, completions=[trace, trace], completion_ids=[[], []],
                  needs_tool=[True, False]) == [1.0, 0.0]


def test_without_a_tool_mask_token_rewards_read_every_id_as_before():
    reward = Reward()
    assert reward.model_ids([5, 6], [1, 1]) == [5, 6]
