"""Do a reward's text and token variants agree on given completions with a given tokenizer? Check before choosing
``reward_level=token`` with a new tokenizer.

The token variant matches each tag as the IDs the tokenizer gives it in isolation. With a subword tokenizer a tag can
merge with its neighbours in context (``>`` and a following newline become one ``>\\n`` token once the tokenizer has
learnt that merge), and a model can spell a tag with other IDs than the canonical ones; either hides the tag from the
token variant while the text variant still sees it. ``score_both_levels`` scores completions the way a training step
hands them to each level, so the two lists can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from grpolab.rewards.base import Reward
from grpolab.rewards.vocabulary import describe_vocabulary

#: Ways a completion lays out the tags around its reasoning ``steps`` and ``answer``, the ones checked against a
#: tokenizer: where tags touch, newlines between blocks (what chat models write), spaces inside the tags, R1's newlines
#: inside them, and an answer alone. The format reward's text level accepts all of them; ``score_both_levels`` tells
#: whether the token level does with a given tokenizer.
SOLUTION_LAYOUTS = {
    "adjacent": "<think>{steps}</think><answer>{answer}</answer>",
    "newline": "<think>{steps}</think>\n<answer>{answer}</answer>",
    "spaced": "<think> {steps} </think> <answer> {answer} </answer>",
    "r1": "<think>\n{steps}\n</think>\n<answer>\n{answer}\n</answer>",
    "answer only": "<answer>{answer}</answer>",
}


def score_both_levels(
    make_reward: Callable[..., Reward],
    tokenizer: Any,
    completions: Sequence[str] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    answers: Sequence[str] | None = None,
) -> tuple[list[float | None], list[float | None]]:
    """(text-level scores, token-level scores) of ``make_reward(level=...)`` on the same completions.

    Give ``completions`` (encoded canonically, as a model that writes the tokenizer's own encoding would generate them)
    or ``completion_ids`` (any IDs, e.g. sampled ones); EOS is appended, as generation ends. The text level reads the
    IDs decoded with ``skip_special_tokens=True`` (as TRL decodes); ``answers`` reach the text level as ``answer`` and
    the token level as ``answer_ids`` encoded without special tokens (as data preparation encodes them).

    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> from grpolab.rewards.format import Format
    >>> score_both_levels(Format, build_char_tokenizer(), ["<answer>7</answer>", "<answer>7"])
    ([1.0, 0.0], [1.0, 0.0])
    """
    if (completions is None) == (completion_ids is None):
        raise ValueError("give completions (text, encoded canonically) or completion_ids, not both")
    if completion_ids is None:
        completion_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in completions]
    ids = [[*map(int, row), tokenizer.eos_token_id] for row in completion_ids]
    decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)
    columns: dict[str, Any] = {}
    if answers is not None:
        columns = {"answer": list(answers),
                   "answer_ids": [tokenizer(str(a), add_special_tokens=False)["input_ids"] for a in answers]}
    text_reward, token_reward = make_reward(level="text"), make_reward(level="token")
    token_reward.bind_tokens(describe_vocabulary(tokenizer, token_reward.token_strings()))
    prompts = [""] * len(ids)
    return (text_reward(prompts=prompts, completions=decoded, completion_ids=ids, **columns),
            token_reward(prompts=prompts, completions=decoded, completion_ids=ids, **columns))
