"""Rewards: text and token-ID variants of each reward under one metric name, TRL's calling contract, picklable.

Importing this package loads neither torch, transformers, trl nor math-verify; those load when a reward needs them.
"""

from grpolab.rewards.accuracy import Accuracy
from grpolab.rewards.answers import answers_match, extract_final_answer, gsm8k_final_answer
from grpolab.rewards.base import Reward, RewardLevel, RewardLevelError, completion_text, strip_trailing_special
from grpolab.rewards.build import BUILTIN_REWARDS, TOKEN_LEVEL_REWARDS, BuiltRewards, build_rewards, check_columns
from grpolab.rewards.format import Format
from grpolab.rewards.length import CosineLength, Length, Overlong
from grpolab.rewards.model import RewardModel
from grpolab.rewards.reasoning import ReasoningSteps
from grpolab.rewards.repetition import Repetition
from grpolab.rewards.tools import ToolUse
from grpolab.rewards.vocabulary import Vocabulary, describe_vocabulary
from grpolab.rewards.wrappers import AsyncGuardedReward, GuardedReward, NamedReward, RewardError, guard_reward

__all__ = [
    "BUILTIN_REWARDS",
    "TOKEN_LEVEL_REWARDS",
    "Accuracy",
    "AsyncGuardedReward",
    "BuiltRewards",
    "CosineLength",
    "Format",
    "GuardedReward",
    "Length",
    "NamedReward",
    "Overlong",
    "ReasoningSteps",
    "Repetition",
    "Reward",
    "RewardError",
    "RewardLevel",
    "RewardLevelError",
    "RewardModel",
    "ToolUse",
    "Vocabulary",
    "answers_match",
    "build_rewards",
    "check_columns",
    "completion_text",
    "describe_vocabulary",
    "extract_final_answer",
    "guard_reward",
    "gsm8k_final_answer",
    "strip_trailing_special",
]
