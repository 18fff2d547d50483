"""Final-answer helpers shared by the accuracy reward and the data loaders: extraction and math-verify comparison.

math-verify (and sympy behind it) is imported on first use, so importing grpolab.rewards stays fast.
"""

from __future__ import annotations

import re
import threading
from functools import cache
from typing import Any

from grpolab.rewards.tags import last_answer, split_text

GSM8K_MARKER = "####"

# A number, with optional thousands separators and decimals. A minus sign counts only at the start or after a
# space, "=", "(", ":" or "$", so "10-3" ends in 3, not -3.
_NUMBER = re.compile(r"(?:(?<![^\s=(:$])-)?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)")
_BOXED = "\\boxed{"


def gsm8k_final_answer(solution: str) -> str:
    """The gold number of a GSM8K solution: the text after the last ``####``, thousands separators removed.

    >>> gsm8k_final_answer("She makes 9 * 2 = $<<9*2=18>>18 a day.\\n#### 1,018")
    '1018'
    """
    _, marker, tail = solution.rpartition(GSM8K_MARKER)
    if not marker:
        raise ValueError(f"not a GSM8K solution (no {GSM8K_MARKER!r} line): {solution[-80:]!r}")
    answer = tail.strip().replace(",", "")
    if not answer:
        raise ValueError(f"GSM8K solution has an empty final answer: {solution[-80:]!r}")
    return answer


def last_boxed(text: str) -> str | None:
    r"""Contents of the last ``\boxed{...}``, braces balanced; None if absent or unclosed.

    >>> last_boxed(r"so \boxed{\frac{1}{2}} and \boxed{7}")
    '7'
    """
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, begin = 1, start + len(_BOXED)
    for position in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[begin:position]
    return None


def last_number(text: str) -> str | None:
    """The last number in ``text`` as written (``"1,000"`` stays ``"1,000"``); None if there is none.

    >>> last_number("16 - 3 - 4 = 9 eggs, so 9 * 2 = 18.")
    '18'
    """
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_final_answer(text: str, fallbacks: bool = True) -> str | None:
    r"""The final answer of a completion: the last ``<answer>...</answer>``, else (with ``fallbacks``) the last
    ``\boxed{}``, else the last number. Surrounding whitespace is stripped; None if nothing is found.

    >>> extract_final_answer("<think>9 * 2</think><answer> 18 </answer>")
    '18'
    >>> extract_final_answer(r"The answer is \boxed{18}."), extract_final_answer("#### 18", fallbacks=False)
    ('18', None)
    """
    tagged = last_answer(split_text(text))
    if tagged is not None:
        return str(tagged).strip()
    if not fallbacks:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    return last_number(text)


@cache
def _extraction_config() -> tuple[Any, ...]:
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # math-verify's default turns on the deprecated `equations` normalisation, which logs a warning on every parse.
    latex = LatexExtractionConfig(
        normalization_config=NormalizationConfig(
            basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="all", equations=False
        )
    )
    return (latex, ExprExtractionConfig())


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether a predicted final answer equals the gold one, by math-verify (``"19.0"`` == ``"19"``, ``"1,000"`` ==
    ``"1000"``, ``"3/4"`` == ``"0.75"``). A gold answer math-verify cannot parse (a word, say) is compared as a
    stripped string instead, so non-numeric tasks still score.

    math-verify 0.3 enforces its timeouts with ``signal.alarm``, which Python allows only in the main thread; TRL
    calls synchronous rewards there.

    >>> answers_match("1,000", "1000"), answers_match("19", "18")
    (True, False)
    """
    if predicted is None or not predicted.strip():
        return False
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "math-verify answer checking must run in the main thread (its timeouts use signal.alarm); "
            "call the accuracy reward synchronously from the main thread"
        )
    from math_verify import parse, verify

    config = _extraction_config()
    gold_parsed = parse(gold, extraction_config=config)
    if not gold_parsed:
        return predicted.strip() == gold.strip()
    try:
        predicted_parsed = parse(predicted, extraction_config=config)
        return bool(verify(gold_parsed, predicted_parsed))
    except Exception:  # noqa: BLE001 - sympy rejects some model outputs ("-01"); an unparseable answer is wrong
        return False
