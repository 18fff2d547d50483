"""Every bad command line of bad_inputs.yaml, through the real CLI: one stderr line, exit code 2, caught where stated.

The same cases make docs/bad_inputs.md (benchmarks/bad_inputs_table.py). Preflight cases take ~1.5 s each (no torch
import), the few job cases ~10 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).with_name("bad_inputs.yaml")).read_text())["cases"]


def test_the_table_is_large_and_has_no_duplicates() -> None:
    commands = [tuple(case["args"]) for case in CASES]
    assert len(commands) >= 30 and len(set(commands)) == len(commands)
    assert all(("line" in case) != ("prefix" in case) and case["caught_by"] in ("preflight", "job") for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[" ".join(case["args"]) for case in CASES])
def test_bad_input_is_answered_in_one_line(case: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "GRPOLAB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline",
           "PYTHONWARNINGS": "ignore"}
    for name, text in case.get("files", {}).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "grpolab.train", *case["args"]], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.startswith("grpolab: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    if "line" in case:
        assert lines[0] == case["line"]
    else:
        assert lines[0].startswith(case["prefix"]), lines[0]
    assert result.returncode == case.get("exit", 2)
    if case["caught_by"] == "preflight":  # before Hydra starts: nothing else printed, no run or sweep directory
        assert result.stderr.splitlines() == lines
        assert not (tmp_path / "outputs").exists()
    else:
        assert (tmp_path / "outputs").exists()
        assert "model:" not in result.stderr  # the job logs "model: ..." once it has built the model
