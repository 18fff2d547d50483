"""Every bad command line of bad_inputs.yaml answers with one stderr line, exit code 2, caught where stated.

The same cases make docs/bad_inputs.md (benchmarks/bad_inputs_table.py, through the real CLI). Here each case runs
``grpolab.train.main()`` in this process, with its arguments as ``sys.argv``, in an empty working directory: the CLI's
own path (preflight, then Hydra and the job's checks), without a Python start per case. The cases marked ``cli``
(one per exit path, and those that set environment variables huggingface_hub reads when imported) run as
``python -m grpolab.train`` subprocesses.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).with_name("bad_inputs.yaml")).read_text())["cases"]
CLI_CASES = [case for case in CASES if case.get("cli")]


def case_id(case: dict[str, Any]) -> str:
    return " ".join([*(f"{name}={value}" for name, value in case.get("env", {}).items()), *case["args"]])


def write_files(case: dict[str, Any], workdir: Path) -> None:
    for name, content in case.get("files", {}).items():  # the case's input files (bytes: written !!binary)
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``run(args) -> (stderr, exit code)``: ``grpolab.train.main()`` as ``python -m grpolab.train <args>`` runs it,
    with what a job changes in the process (logging, warnings, torch threads) put back afterwards."""
    import torch

    from grpolab import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    root, threads = logging.getLogger(), torch.get_num_threads()
    handlers, level = list(root.handlers), root.level

    def run(args: list[str]) -> tuple[str, int | str | None]:
        monkeypatch.setattr(sys, "argv", ["grpolab-train", *args])
        GlobalHydra.instance().clear()
        with pytest.raises(SystemExit) as exited:
            train.main()
        return capsys.readouterr().err, exited.value.code

    yield run
    GlobalHydra.instance().clear()
    for handler in set(root.handlers) - set(handlers):
        handler.close()
    root.handlers[:], root.level = handlers, level
    logging.captureWarnings(False)
    torch.set_num_threads(threads)


def check(case: dict[str, Any], stderr: str, code: int | str | None, workdir: Path) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("grpolab: ")]
    assert len(lines) == 1, stderr[-3000:]
    if "line" in case:
        assert lines[0] == case["line"]
    else:
        assert lines[0].startswith(case["prefix"]), lines[0]
    assert code == case.get("exit", 2)
    if case["caught_by"] == "preflight":  # before Hydra starts: nothing else printed, no run or sweep directory
        assert stderr.splitlines() == lines
        assert not (workdir / "outputs").exists()
    else:
        assert (workdir / "outputs").exists()
        assert "model:" not in stderr  # the job logs "model: ..." once it has built the model


def test_the_table_is_large_and_has_no_duplicates() -> None:
    commands = [case_id(case) for case in CASES]
    assert len(commands) >= 30 and len(set(commands)) == len(commands)
    assert all(("line" in case) != ("prefix" in case) and case["caught_by"] in ("preflight", "job") for case in CASES)
    # through the real CLI: each caught_by at least once, and every case whose environment huggingface_hub reads
    assert {case["caught_by"] for case in CLI_CASES} == {"preflight", "job"}
    assert all(case.get("cli") for case in CASES if "env" in case)


@pytest.mark.parametrize("case", [case for case in CASES if not case.get("cli")],
                         ids=[case_id(case) for case in CASES if not case.get("cli")])
def test_bad_input_is_answered_in_one_line(case: dict[str, Any], in_process, tmp_path: Path) -> None:
    write_files(case, tmp_path)
    stderr, code = in_process(case["args"])
    check(case, stderr, code, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES, ids=[case_id(case) for case in CLI_CASES])
def test_bad_input_is_answered_in_one_line_by_the_cli(case: dict[str, Any], tmp_path: Path) -> None:
    write_files(case, tmp_path)
    env = {**os.environ, "GRPOLAB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline",
           "PYTHONWARNINGS": "ignore", **{name: str(value).replace("$PWD", str(tmp_path))
                                          for name, value in case.get("env", {}).items()}}
    result = subprocess.run([sys.executable, "-m", "grpolab.train", *case["args"]], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    check(case, result.stderr.replace(str(tmp_path), "$PWD"), result.returncode, tmp_path)
