"""GSM8K grade-school math (Cobbe et al. 2021): by hub id (``openai/gsm8k``) or a local JSONL file (``data.path``).

Rows are ``{"question": str, "answer": str}`` where the answer is a worked solution ending in ``#### <number>``.
The warm-start ``solution`` keeps the worked steps (calculator annotations removed) inside ``<think>`` and the number
inside ``<answer>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from grpolab.data.task import WordProblems
from grpolab.rewards.answers import GSM8K_MARKER, gsm8k_final_answer

_CALCULATOR = re.compile(r"<<[^>]*>>")


@dataclass
class GSM8K(WordProblems):
    """GSM8K as chat prompts (or plain text), with a held-out split.

    >>> GSM8K(path=None, hub_id="openai/gsm8k", hub_config="main", train_size=None, eval_size=200, seed=0,
    ...       conversational=False, system_prompt="Answer in <answer></answer>.").answer_and_steps(
    ...       "3 + 4 = <<3+4=7>>7\\n#### 7")
    ('7', '3 + 4 = 7')
    """

    def answer_and_steps(self, worked_solution: str) -> tuple[str, str]:
        steps = _CALCULATOR.sub("", worked_solution.rpartition(GSM8K_MARKER)[0]).strip()
        return gsm8k_final_answer(worked_solution), steps
