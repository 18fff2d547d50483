"""The committed GRPOConfig field table is exactly what the generator makes from the installed trl."""

from __future__ import annotations

import difflib
from typing import Any, Optional

import pytest

from grpolab.config import grpo_fields
from grpolab.config.generate_grpo_fields import COMMAND, TABLE_PATH, describe, omegaconf_type, render


def test_committed_table_matches_the_installed_trl() -> None:
    expected = render()
    committed = TABLE_PATH.read_text()
    if committed != expected:
        diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True), expected.splitlines(keepends=True),
                                            "grpo_fields.py (committed)", "grpo_fields.py (installed trl)", n=0))
        pytest.fail(f"trl.GRPOConfig changed (a field added, removed, retyped or re-defaulted): regenerate the table "
                    f"with `{COMMAND}`, review the diff and the trainer-node checks, and commit it.\n{diff}")


def test_table_has_every_grpo_config_field() -> None:
    import dataclasses

    from trl import GRPOConfig

    assert [row.name for row in grpo_fields.GRPO_FIELDS] == [f.name for f in dataclasses.fields(GRPOConfig) if f.init]


@pytest.mark.parametrize(("annotation", "expected"), [
    (bool, ("bool", ())),
    (Optional[int], ("Optional[int]", ())),
    (float | None, ("Optional[float]", ())),
    (list[str], ("list[str]", ())),
    (list[str] | None, ("Optional[list[str]]", ())),
    (dict[str, bool] | None, ("Optional[dict[str, bool]]", ())),
    (dict | str | None, ("Any", ())),  # OmegaConf has no unions beyond Optional
    (str | bool, ("Any", ())),
    (int | str | None, ("Any", ())),
])
def test_omegaconf_type_of_trl_annotations(annotation: Any, expected: tuple[str, tuple[str, ...]]) -> None:
    assert omegaconf_type(annotation) == expected


def test_enum_or_str_becomes_str_with_the_enum_values_as_choices() -> None:
    from transformers.trainer_utils import IntervalStrategy

    assert omegaconf_type(IntervalStrategy | str) == ("str", ("no", "steps", "epoch"))
    assert describe(IntervalStrategy | str) == "transformers.trainer_utils.IntervalStrategy | str"
