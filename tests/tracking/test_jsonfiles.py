"""Strict JSON files written atomically: the permissions they get (the examples run in tests/test_doctests.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from grpolab.tracking.rundir import RunDirectory


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_json_files_get_the_permissions_of_any_other_new_file(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        run_dir = RunDirectory(tmp_path)
        run_dir.write_summary(status="running")
        run_dir.write_summary(steps=1)  # rewritten: the replacement gets them too
        run_dir.write_manifest(seed=0, config={}, overrides=[])
        (tmp_path / "other.txt").write_text("written with open()")
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["summary.json", "manifest.json", "other.txt"], 0o666 & ~umask)
