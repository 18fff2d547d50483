"""build_rewards and check_columns on the real conf/rewards files, composed the way train.yaml composes them."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import (
    BUILTIN_REWARDS,
    TOKEN_LEVEL_REWARDS,
    GuardedReward,
    NamedReward,
    Reward,
    RewardLevel,
    RewardLevelError,
    build_rewards,
    check_columns,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "rewards"
# Values the yaml files leave as ??? (required), as a user would pass them on the command line.
REQUIRED = {
    "length": {"target": 12},
    "overlong": {"max_length": 16, "cache": 4},
    "cosine_length": {"max_length": 38},
}


class Untouchable(Sequence):
    def __len__(self):
        raise AssertionError("completions was touched at token level")

    def __getitem__(self, index):
        raise AssertionError("completions was touched at token level")


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def compose(names, level="text", overrides=None, max_completion_length=16):
    """Root config with `rewards` merged from the chosen option files, like `rewards=[a,b]` in train.yaml."""
    rewards = OmegaConf.merge(*(OmegaConf.load(CONF / f"{name}.yaml") for name in names)) if names else {}
    cfg = OmegaConf.create({"reward_level": level, "trainer": {"max_completion_length": max_completion_length}})
    cfg.rewards = rewards
    for name in names:
        for key, value in {**REQUIRED.get(name, {}), **(overrides or {}).get(name, {})}.items():
            OmegaConf.update(cfg, f"rewards.{name}.{key}", value, force_add=True)
    return cfg


def build(cfg, tokenizer):
    return build_rewards(cfg.rewards, cfg.reward_level, tokenizer=tokenizer)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_builtin_names_match_the_option_files():
    from grpolab.rewards.build import MODEL_REWARDS, TOOL_REWARDS, VISION_REWARDS

    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(BUILTIN_REWARDS + VISION_REWARDS + MODEL_REWARDS + TOOL_REWARDS)


def test_token_level_list_is_exactly_what_builds_at_token_level(tokenizer):
    buildable = []
    for name in BUILTIN_REWARDS:
        try:
            build(compose([name], level="token"), tokenizer)
            buildable.append(name)
        except RewardLevelError:
            pass
    assert buildable == list(TOKEN_LEVEL_REWARDS)


def test_all_options_build_at_text_level_with_yaml_names_and_weights(tokenizer):
    from trl.trainer.utils import get_callable_name

    built = build(compose(BUILTIN_REWARDS), tokenizer)
    assert built.names == list(BUILTIN_REWARDS)
    assert built.weights == [1.0, 0.2, 0.2, 1.0, 0.2, 0.2, 1.0, 1.0]
    assert built.level is RewardLevel.text
    # TRL logs rewards/<get_callable_name(func)>/mean: the yaml key, also for TRL's own functions and when guarded.
    assert [get_callable_name(f) for f in built.funcs] == list(BUILTIN_REWARDS)
    assert [get_callable_name(GuardedReward(f)) for f in built.funcs] == list(BUILTIN_REWARDS)
    assert built.required_columns == {
        name: ({"answer"} if name in ("accuracy", "cosine_length") else set()) for name in BUILTIN_REWARDS
    }
    assert built.reward_processing_classes == [None] * len(BUILTIN_REWARDS)


def test_text_and_token_builds_log_under_the_same_names(tokenizer):
    text = build(compose(TOKEN_LEVEL_REWARDS, level="text"), tokenizer)
    token = build(compose(TOKEN_LEVEL_REWARDS, level="token"), tokenizer)
    assert text.names == token.names
    assert [f.__name__ for f in text.funcs] == [f.__name__ for f in token.funcs]
    assert all(f.level is RewardLevel.token for f in token.funcs)
    assert token.required_columns["accuracy"] == token.required_columns["cosine_length"] == {"answer_ids"}
    assert token.all_required_columns == {"answer_ids"}


def test_built_rewards_score_a_batch_at_both_levels(tokenizer):
    texts = ["<think>12+7</think><answer>19</answer>", "<answer>18</answer>", "x" * 13, "x x x x x x x x x x"]
    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
    n = len(texts)
    columns = {"answer": ["19"] * n, "answer_ids": [tokenizer.encode("19", add_special_tokens=False)] * n,
               "trainer_state": None, "log_extra": None, "log_metric": None}
    text = build(compose(BUILTIN_REWARDS), tokenizer)
    scores = {name: f(prompts=["q"] * n, completions=texts, completion_ids=ids, **columns)
              for name, f in zip(text.names, text.funcs)}
    assert scores["accuracy"] == [1.0, 0.0, 0.0, 0.0]
    assert scores["format"] == [1.0, 1.0, 0.0, 0.0]
    assert scores["think_format"] == [1.0, 0.0, 0.0, 0.0]
    # Characters (38, 19, 13 and 19) against L_max 16, cache 4: the ramp starts after 12.
    assert scores["overlong"] == [-1.0, -1.0, -0.25, -1.0]
    assert scores["reasoning_steps"] == [0.0] * 4
    # 38 characters is max_length: the correct answer earns min_value_correct; wrong ones at 19 characters, -0.75.
    assert scores["cosine_length"] == [0.5, -0.75, pytest.approx(-0.5 - 0.25 * (1 + math.cos(math.pi * 13 / 38))),
                                       -0.75]
    assert scores["repetition"] == [0.0, 0.0, 0.0, -(1 - 1 / 8)]  # ten "x" words: 8 trigrams, one distinct

    token = build(compose(TOKEN_LEVEL_REWARDS, level="token"), tokenizer)
    token_scores = {name: f(prompts=["q"] * n, completions=Untouchable(), completion_ids=ids, **columns)
                    for name, f in zip(token.names, token.funcs)}
    assert token_scores["accuracy"] == scores["accuracy"]
    assert token_scores["format"] == scores["format"]
    # Tokens without the EOS: 10, 4, 13 and 20.
    assert token_scores["overlong"] == [0.0, 0.0, -0.25, -1.0]
    # Tokens, not characters: 10 and 4 tokens for the tagged answers (a tag is one token).
    assert token_scores["cosine_length"] == [pytest.approx(0.75 + 0.25 * math.cos(math.pi * 10 / 38)),
                                             pytest.approx(-0.75 - 0.25 * math.cos(math.pi * 4 / 38)),
                                             scores["cosine_length"][2], -0.75]
    # Token trigrams: "xxx..." repeats one trigram; "x x x ..." alternates two of its 17.
    assert token_scores["repetition"] == [0.0, 0.0, -(1 - 1 / 11), -(1 - 2 / 17)]


@pytest.mark.parametrize("level", ["text", "token"])
def test_built_rewards_pickle(tokenizer, level):
    names = BUILTIN_REWARDS if level == "text" else TOKEN_LEVEL_REWARDS
    for func in build(compose(names, level=level), tokenizer).funcs:
        guarded = GuardedReward(func)
        clone = pickle.loads(pickle.dumps(guarded))
        assert clone.__name__ == func.__name__
        call = dict(prompts=["q"], completions=["<answer>19</answer>"], answer=["19"],
                    completion_ids=[tokenizer.encode("<answer>19</answer>", add_special_tokens=False)],
                    answer_ids=[tokenizer.encode("19", add_special_tokens=False)])
        assert clone(**call) == guarded(**call)


def test_think_format_at_token_level_lists_the_alternatives(tokenizer):
    with pytest.raises(RewardLevelError) as excinfo:
        build(compose(["accuracy", "think_format"], level="token"), tokenizer)
    assert one_line_error(excinfo) == (
        "rewards.think_format has no token variant, so it cannot run with reward_level=token; use reward_level=text, "
        "or only rewards with a token variant: accuracy, format, length, overlong, cosine_length, repetition"
    )


def test_a_text_only_reward_with_a_level_key_suggests_the_per_reward_override(tokenizer):
    with pytest.raises(RewardLevelError) as excinfo:
        build(compose(["accuracy", "reasoning_steps"], level="token"), tokenizer)
    assert one_line_error(excinfo).startswith(
        "rewards.reasoning_steps has no token variant, so it cannot run with reward_level=token; set "
        "rewards.reasoning_steps.level=text, use reward_level=text"
    )
    built = build(compose(["accuracy", "reasoning_steps"], level="token",
                          overrides={"reasoning_steps": {"level": "text"}}), tokenizer)
    assert [f.level for f in built.funcs] == [RewardLevel.token, RewardLevel.text]


def test_a_reward_may_override_the_run_level(tokenizer):
    built = build(compose(["accuracy", "format"], level="token", overrides={"accuracy": {"level": "text"}}), tokenizer)
    assert [f.level for f in built.funcs] == [RewardLevel.text, RewardLevel.token]
    assert built.required_columns == {"accuracy": {"answer"}, "format": set()}


@pytest.mark.parametrize("weight", ["heavy", float("nan"), float("inf"), True, None])
def test_weight_must_be_a_finite_number(tokenizer, weight):
    with pytest.raises(ValueError) as excinfo:
        build(compose(["format"], overrides={"format": {"weight": weight}}), tokenizer)
    assert one_line_error(excinfo).startswith("rewards.format.weight must be a finite number")


def test_weight_override_and_default(tokenizer):
    cfg = compose(["accuracy", "format"], overrides={"accuracy": {"weight": 2}})
    del cfg.rewards.format["weight"]
    assert build(cfg, tokenizer).weights == [2.0, 1.0]


def test_empty_rewards_fail_with_the_options(tokenizer):
    with pytest.raises(ValueError) as excinfo:
        build(compose([]), tokenizer)
    assert one_line_error(excinfo) == (
        "rewards is empty: select at least one, e.g. rewards=[accuracy,format] (options: accuracy, format, length, "
        "overlong, think_format, reasoning_steps, cosine_length, repetition)"
    )


def test_a_value_left_at_required_is_not_passed_on(tokenizer):
    # The job's validate names it first (rewards.length.target is required ...); building alone stops here too.
    cfg = compose(["length"])
    cfg.rewards.length.target = "???"
    with pytest.raises(ValueError) as excinfo:
        build(cfg, tokenizer)
    assert one_line_error(excinfo) == "rewards.length: Missing mandatory value: target"


def test_broken_interpolation_names_the_reward(tokenizer):
    cfg = compose(["overlong"], overrides={"overlong": {"max_length": "${trainer.max_completion_length}"}})
    del cfg.trainer["max_completion_length"]
    with pytest.raises(ValueError) as excinfo:
        build(cfg, tokenizer)
    message = one_line_error(excinfo)
    assert message.startswith("rewards.overlong: ") and "max_completion_length" in message


def test_constructor_errors_name_the_config_key(tokenizer):
    with pytest.raises(ValueError) as excinfo:
        build(compose(["length"], overrides={"length": {"target": 0}}), tokenizer)
    assert one_line_error(excinfo).startswith("rewards.length: target and tolerance must be positive")
    with pytest.raises(ValueError) as excinfo:
        build(compose(["format"], overrides={"format": {"require_thinking": True}}), tokenizer)
    message = one_line_error(excinfo)
    assert message.startswith("rewards.format: cannot build grpolab.rewards.format.Format")
    assert "require_thinking" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [({"_target_": "grpolab.rewards.nope.Nope"}, "rewards.bad._target_ 'grpolab.rewards.nope.Nope' cannot be imported"),
     ({"weight": 1.0}, "rewards.bad must be a mapping with a _target_"),
     ("accuracy", "rewards.bad must be a mapping with a _target_"),
     ({"_target_": "grpolab.rewards.build.BUILTIN_REWARDS"}, "rewards.bad: cannot build"),
     ({"_target_": "grpolab.rewards.accuracy.Accuracy", "level": "ids"},
      "rewards.bad.level=ids must be one of text, token"),
     ({"_target_": "grpolab.rewards.format.Format", "completions_as": "chat"}, "rewards.bad.completions_as applies to"),
     ({"_target_": "trl.rewards.think_format_reward", "_partial_": True, "completions_as": "json"},
      "rewards.bad.completions_as must be one of as_is, chat")],
)
def test_malformed_specs_fail_in_one_line(tokenizer, spec, expected):
    with pytest.raises(ValueError) as excinfo:
        build(OmegaConf.create({"reward_level": "text", "rewards": {"bad": spec}}), tokenizer)
    assert one_line_error(excinfo).startswith(expected)


def test_token_level_needs_the_tokenizer():
    with pytest.raises(ValueError, match=r"rewards\.format runs at level=token but build_rewards got no tokenizer"):
        build_rewards({"format": {"_target_": "grpolab.rewards.format.Format"}}, "token")
    built = build_rewards({"format": {"_target_": "grpolab.rewards.format.Format"}}, "text")
    assert isinstance(built.funcs[0], Reward) and built.funcs[0].level is RewardLevel.text


def test_plain_callables_get_their_columns_from_their_signature():
    built = build_rewards({"trl_accuracy": {"_target_": "trl.rewards.accuracy_reward", "_partial_": True,
                                            "completions_as": "chat"}}, "text")
    assert isinstance(built.funcs[0], NamedReward)
    assert built.required_columns == {"trl_accuracy": {"solution"}}


def test_check_columns_reports_every_missing_column_in_one_line(tokenizer):
    built = build(compose(["accuracy", "format"], level="token"), tokenizer)
    check_columns(built, ["prompt", "answer", "answer_ids"])
    with pytest.raises(ValueError) as excinfo:
        check_columns(built, ["prompt", "answer", "solution"])
    assert one_line_error(excinfo) == (
        "rewards.accuracy needs dataset column 'answer_ids' but the dataset has: prompt, answer, solution"
    )
    two = build_rewards({"accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy"},
                         "trl_accuracy": {"_target_": "trl.rewards.accuracy_reward", "_partial_": True}}, "text")
    with pytest.raises(ValueError) as excinfo:
        check_columns(two, ["prompt"])
    assert one_line_error(excinfo) == (
        "rewards.accuracy needs dataset column 'answer'; rewards.trl_accuracy needs dataset column 'solution' but the "
        "dataset has: prompt"
    )
