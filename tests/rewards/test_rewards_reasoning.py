"""ReasoningSteps: Open-R1's reasoning-steps reward, with numbered lines counted on every line."""

from __future__ import annotations

import pickle
import re

import pytest

from grpolab.rewards import ReasoningSteps, RewardLevelError

OPEN_R1_PATTERN = r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)"

COMPLETIONS = [
    "Step 1: 12 + 7. Step 2: that is 19. Step 3: check.",
    "First, add the ones. Next, carry. Finally, add the tens.",
    "1. add\n2. carry\n3. check",
    "We need:\n- the ones\n- the tens\n* a check",
    "Second, we see\n1. a numbered line",
    "The answer is 19.",
    "",
]


def open_r1_reasoning_steps_reward(completions, **kwargs):
    """Open-R1's src/open_r1/rewards.py reasoning_steps_reward, as published (the oracle)."""
    pattern = r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [len(re.findall(pattern, content)) for content in completion_contents]
    return [min(1.0, count / 3) for count in matches]


def score(reward, completions):
    return reward(prompts=["q"] * len(completions), completions=completions, completion_ids=[[]] * len(completions))


def test_open_r1_pattern_reproduces_open_r1_exactly():
    chat = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    assert score(ReasoningSteps(pattern=OPEN_R1_PATTERN), COMPLETIONS) == open_r1_reasoning_steps_reward(chat)


def test_default_pattern_counts_numbered_lines_anywhere():
    assert score(ReasoningSteps(pattern=OPEN_R1_PATTERN), ["1. add\n2. carry\n3. check"]) == [pytest.approx(1 / 3)]
    assert score(ReasoningSteps(), COMPLETIONS) == [1.0, 1.0, 1.0, 1.0, pytest.approx(2 / 3), 0.0, 0.0]


def test_min_steps_sets_how_many_markers_earn_the_full_reward():
    reward = ReasoningSteps(min_steps=4)
    assert score(reward, ["Step 1: a Step 2: b", "Step 1: a Step 2: b Step 3: c Step 4: d Step 5: e"]) == [0.5, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"min_steps": 0}, r"rewards\.reasoning_steps\.min_steps must be at least 1; got 0"),
     ({"pattern": "(Step"}, r"rewards\.reasoning_steps\.pattern is not a valid regular expression")],
)
def test_bad_parameters_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReasoningSteps(**kwargs)


def test_text_level_only():
    assert not ReasoningSteps.has_token_variant()
    with pytest.raises(RewardLevelError, match=r"^rewards\.reasoning_steps has no token variant"):
        ReasoningSteps(level="token")


def test_pickles_and_scores_the_same():
    reward = ReasoningSteps(min_steps=2, name="steps")
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "steps" and score(clone, COMPLETIONS) == score(reward, COMPLETIONS)
