"""GuardedReward and NamedReward: failures name the reward and the sample; names and pickling survive wrapping."""

from __future__ import annotations

import asyncio
import functools
import pickle
from collections.abc import Sequence

import pytest
import trl.rewards

from grpolab.rewards import Accuracy, AsyncGuardedReward, Format, GuardedReward, NamedReward, RewardError, guard_reward
from grpolab.rewards.wrappers import AsyncNamedReward, is_async_reward
from grpolab.rewards.vocabulary import Vocabulary


class LazyCompletions(Sequence):
    """Like ids mode's lazily decoded completions: counts decodes, and can be told to fail."""

    def __init__(self, texts, broken=False):
        self.texts, self.broken, self.decodes = texts, broken, 0

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, index):
        if self.broken:
            raise RuntimeError("decode failed")
        self.decodes += 1
        return self.texts[index]


class FailsOnSeven:
    """A picklable reward that breaks on one specific sample (a stand-in for a buggy user reward)."""

    __name__ = "fails_on_seven"

    def __call__(self, completions, answer, **kwargs):
        return [1.0 / (int(a) - 7) for a in answer]


class ReturnsWhat:
    __name__ = "returns_what"

    def __init__(self, output):
        self.output = output

    def __call__(self, **kwargs):
        return self.output


def call(func, n=3, completions=None, **columns):
    completions = completions if completions is not None else [f"<answer>{i}</answer>" for i in range(n)]
    return func(prompts=[f"prompt {i}" for i in range(n)], completions=completions,
                completion_ids=[[10 + i, 1] for i in range(n)], trainer_state=None, log_extra=None, log_metric=None,
                **columns)


def test_exception_is_localised_to_the_sample():
    guarded = GuardedReward(FailsOnSeven())
    with pytest.raises(RewardError) as excinfo:
        call(guarded, answer=["5", "7", "9"])
    message = str(excinfo.value)
    assert message.startswith("rewards.fails_on_seven raised ZeroDivisionError")
    sample = "prompt='prompt 1', completion='<answer>1</answer>', completion_ids=[11, 1], answer='7'"
    assert f"on sample 1 of 3: {sample}" in message
    assert isinstance(excinfo.value.__cause__, ZeroDivisionError)


def test_batch_only_failure_is_reported_as_such():
    def needs_pairs(completions, **kwargs):
        if len(completions) == 3:
            raise ValueError("batch of three")
        return [0.0] * len(completions)

    with pytest.raises(RewardError, match=r"raised ValueError\('batch of three'\) on a batch of 3 \(no single sample"):
        call(GuardedReward(needs_pairs), n=3)


def test_level_is_part_of_the_name():
    with pytest.raises(RewardError, match=r"^rewards\.accuracy \(text\) raised ValueError.*needs dataset column"):
        call(GuardedReward(Accuracy()), solution=["1"] * 3)


@pytest.mark.parametrize(
    ("output", "expected"),
    [([1.0, 0.0], r"returned 2 rewards for 3 completions; first sample without a reward: 2: prompt='prompt 2'"),
     ([1.0] * 4, r"returned 4 rewards for 3 completions$"),
     ([1.0, "1.0", 0.0], r"returned '1.0' \(str\), not a number or None for sample 1 of 3: prompt='prompt 1'"),
     ([1.0, None, float("-inf")], r"returned -inf, an infinite reward for sample 2 of 3"),
     (1.0, r"returned float, not a list of rewards"),
     ("abc", r"returned str, not a list of rewards")],
)
def test_bad_outputs_name_the_reward_and_sample(output, expected):
    with pytest.raises(RewardError, match=r"^rewards\.returns_what " + expected):
        call(GuardedReward(ReturnsWhat(output)))


def test_good_outputs_pass_through_unchanged():
    output = [1.0, None, float("nan")]
    assert call(GuardedReward(ReturnsWhat(output))) is output


def test_guard_does_not_decode_at_token_level_when_all_is_well():
    lazy = LazyCompletions(["x"] * 3, broken=True)
    reward = Format(level="token")
    reward.bind_tokens(Vocabulary(special_ids=frozenset({0, 1}), whitespace_ids=frozenset({6}),
                                  encodings={"<think>": (2,), "</think>": (3,), "<answer>": (4,), "</answer>": (5,)}))
    assert call(GuardedReward(reward), completions=lazy) == [0.0, 0.0, 0.0]


def test_diagnosis_survives_a_failing_lazy_decode():
    with pytest.raises(RewardError) as excinfo:
        call(GuardedReward(Format()), completions=LazyCompletions(["x"] * 3, broken=True))
    message = str(excinfo.value)
    assert "rewards.format (text) raised RuntimeError('decode failed')" in message
    assert "completion=<unavailable: RuntimeError('decode failed')>" in message


def test_diagnosis_does_not_log_twice():
    logged = []

    def logs_then_fails(completions, log_metric, **kwargs):
        log_metric("seen", 1.0)
        raise KeyError("boom")

    with pytest.raises(RewardError):
        GuardedReward(logs_then_fails)(prompts=["a", "b"], completions=["x", "y"], completion_ids=[[1], [2]],
                                       log_metric=lambda *args: logged.append(args))
    assert logged == [("seen", 1.0)]


def test_guarded_and_named_rewards_pickle_with_their_names():
    named = NamedReward(functools.partial(trl.rewards.think_format_reward), "think_format", completions_as="chat")
    for func in (GuardedReward(FailsOnSeven()), GuardedReward(named), GuardedReward(Accuracy(name="acc"))):
        clone = pickle.loads(pickle.dumps(func))
        assert clone.__name__ == func.__name__
    clone = pickle.loads(pickle.dumps(GuardedReward(named)))
    assert call(clone, completions=["<think>a</think>b", "b", "<think>c</think>"]) == [1.0, 0.0, 1.0]


def test_named_reward_leaves_chat_completions_alone_and_wraps_strings():
    named = NamedReward(functools.partial(trl.rewards.think_format_reward), "think_format", completions_as="chat")
    chat = [[{"role": "assistant", "content": "<think>a</think>b"}]]
    assert named(prompts=["q"], completions=chat, completion_ids=[[]]) == [1.0]
    as_is = NamedReward(functools.partial(trl.rewards.think_format_reward), "think_format")
    with pytest.raises(RewardError, match=r"rewards\.think_format \(text\) raised TypeError"):
        GuardedReward(as_is)(prompts=["q"], completions=["<think>a</think>b"], completion_ids=[[]])


class AsyncJudge:
    """A picklable async reward (an LLM judge stand-in): awaits, then fails on one specific sample."""

    __name__ = "judge"

    async def __call__(self, completions, answer, **kwargs):
        await asyncio.sleep(0)
        return [1.0 / (int(a) - 7) for a in answer]


def test_async_rewards_stay_async_for_trl_and_are_guarded():
    from trl.trainer.utils import is_async_callable

    guarded = guard_reward(AsyncJudge())
    assert isinstance(guarded, AsyncGuardedReward) and is_async_callable(guarded)
    assert asyncio.run(call(guarded, answer=["8", "9", "11"])) == [1.0, 0.5, 0.25]
    with pytest.raises(RewardError) as excinfo:
        asyncio.run(call(guarded, answer=["5", "7", "9"]))
    assert str(excinfo.value).startswith("rewards.judge raised ZeroDivisionError")
    assert "on sample 1 of 3: prompt='prompt 1', completion='<answer>1</answer>'" in str(excinfo.value)
    with pytest.raises(RewardError, match=r"^rewards\.judge returned 2 rewards for 3 completions"):
        asyncio.run(call(guard_reward(ReturnsWhatAsync([1.0, 0.0], "judge"))))


class ReturnsWhatAsync:
    def __init__(self, output, name):
        self.output, self.__name__ = output, name

    async def __call__(self, **kwargs):
        return self.output


def test_sync_rewards_get_the_sync_guard():
    from trl.trainer.utils import is_async_callable

    guarded = guard_reward(FailsOnSeven())
    assert type(guarded) is GuardedReward and not is_async_callable(guarded)


@pytest.mark.parametrize(
    "func",
    [AsyncJudge(), functools.partial(AsyncJudge()), FailsOnSeven(), functools.partial(FailsOnSeven()),
     trl.rewards.think_format_reward],
    ids=["async object", "partial of async object", "object", "partial", "function"],
)
def test_async_detection_is_trls(func):
    from trl.trainer.utils import is_async_callable

    assert is_async_reward(func) is is_async_callable(func)
    named = NamedReward(func, "named") if not is_async_reward(func) else AsyncNamedReward(func, "named")
    assert is_async_callable(named) is is_async_callable(func)
    assert is_async_callable(guard_reward(func)) is is_async_callable(func)


def test_guards_refuse_what_they_would_hide_from_trl():
    with pytest.raises(TypeError, match=r"rewards\.judge is an async reward, so GuardedReward would hide that"):
        GuardedReward(AsyncJudge())
    with pytest.raises(TypeError, match=r"rewards\.fails_on_seven is a synchronous reward, so AsyncGuardedReward"):
        AsyncGuardedReward(FailsOnSeven())
    import torch

    module = torch.nn.Linear(2, 1)
    with pytest.raises(TypeError, match=r"is a model: TRL must receive it as a model"):
        GuardedReward(module)


def test_async_guard_pickles():
    clone = pickle.loads(pickle.dumps(guard_reward(AsyncJudge())))
    assert isinstance(clone, AsyncGuardedReward) and clone.__name__ == "judge"
    assert asyncio.run(call(clone, answer=["8"] * 3)) == [1.0, 1.0, 1.0]
