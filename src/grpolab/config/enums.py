"""The modes grpolab's config selects between, as Enums.

Members are spelled in lower case because OmegaConf matches an Enum by member *name* and prints the name back: the
value a user types on the command line (``reward_level=token``) is then exactly what ``--cfg job`` shows. Imports
nothing heavy, so every package may use it.
"""

from __future__ import annotations

from enum import Enum

from grpolab.config.checks import require


class TokenizerMode(str, Enum):
    """How prompts reach the trainer: as text TRL tokenizes every step, or as token IDs prepared once."""

    text = "text"
    ids = "ids"


class Modality(str, Enum):
    """What a model reads: text only, or images and text."""

    text = "text"
    vision = "vision"


class DType(str, Enum):
    """``model.dtype``: the weights' dtype as loaded (``auto``: the checkpoint's own)."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    auto = "auto"


class RewardLevel(str, Enum):
    """What a reward reads: decoded completion text, or the completion's token IDs."""

    text = "text"
    token = "token"

    @classmethod
    def parse(cls, value: RewardLevel | str, where: str = "reward_level") -> RewardLevel:
        """``RewardLevel.parse("token") is RewardLevel.token``; anything else fails naming ``where``."""
        require(where, value, lambda v: v in set(cls), f"one of {', '.join(cls.__members__)}")
        return cls(value)
