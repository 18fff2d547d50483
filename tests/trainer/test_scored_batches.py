"""Selecting samples of TRL's scored batches and concatenating batches padded to different widths; a pin on the keys
TRL 1.16's ``_generate_and_score_completions`` returns."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap

import pytest
import torch

from grpolab.trainer.scored_batches import (
    KNOWN_KEYS,
    concatenate_scored_batches,
    take_rows,
)


def test_unknown_batch_keys_are_refused() -> None:
    with pytest.raises(NotImplementedError, match="new_tensor"):
        take_rows({"prompt_ids": torch.zeros(2, 1), "new_tensor": torch.zeros(2)}, [0])


def test_concatenation_pads_prompt_and_completion_sides_and_whole_sequence_keys() -> None:
    short = {
        "prompt_ids": torch.tensor([[5]]), "prompt_mask": torch.tensor([[1]]),
        "completion_ids": torch.tensor([[7, 1]]), "completion_mask": torch.tensor([[1, 1]]),
        "token_type_ids": torch.tensor([[3, 4, 4]]), "num_images": [1], "num_items_in_batch": torch.tensor(2),
    }
    wide = {
        "prompt_ids": torch.tensor([[5, 6, 6]]), "prompt_mask": torch.tensor([[1, 1, 1]]),
        "completion_ids": torch.tensor([[8]]), "completion_mask": torch.tensor([[1]]),
        "token_type_ids": torch.tensor([[3, 3, 3, 4]]), "num_images": [2], "num_items_in_batch": torch.tensor(1),
    }
    merged = concatenate_scored_batches([short, wide], pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[0, 0, 5], [5, 6, 6]]
    assert merged["prompt_mask"].tolist() == [[0, 0, 1], [1, 1, 1]]
    assert merged["completion_ids"].tolist() == [[7, 1], [8, 0]]
    assert merged["completion_mask"].tolist() == [[1, 1], [1, 0]]
    assert merged["token_type_ids"].tolist() == [[0, 0, 3, 4, 4], [3, 3, 3, 4, 0]]
    assert merged["num_images"] == [1, 2] and merged["num_items_in_batch"] is None


def test_every_key_trl_returns_is_known_to_the_concatenation() -> None:
    from trl import GRPOTrainer

    tree = ast.parse(textwrap.dedent(inspect.getsource(GRPOTrainer._generate_and_score_completions)))
    returned: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "output" for t in node.targets):
            if isinstance(node.value, ast.Dict):
                returned |= {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "output":
            if isinstance(node.slice, ast.Constant) and isinstance(node.ctx, ast.Store):
                returned.add(node.slice.value)
    assert {"prompt_ids", "completion_ids", "advantages", "num_items_in_batch"} <= returned
    assert returned <= KNOWN_KEYS, sorted(returned - KNOWN_KEYS)
    assert re.search(r"\breturn output\b", inspect.getsource(GRPOTrainer._generate_and_score_completions))
