"""Provenance for the manifest: the version lock against the installed packages, the command as typed, git state."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from grpolab.tracking.provenance import git_state, lock_state


def test_lock_state_hashes_the_lock_and_names_every_package_installed_at_another_version(tmp_path: Path) -> None:
    lock = tmp_path / "constraints.txt"
    torch_version = metadata.version("torch")  # 2.13.0+cpu here: a local label satisfies a pin without one
    lock.write_text(f"# generated\ntorch=={torch_version.split('+')[0]}\ntrl==0.0.1\nnot-a-package-xyz==1.0\n")
    state = lock_state(lock)
    assert state["file"] == str(lock) and len(state["sha256"]) == 64
    assert state["differs"] == {"trl": {"locked": "0.0.1", "installed": metadata.version("trl")},
                                "not-a-package-xyz": {"locked": "1.0", "installed": None}}
    assert lock_state(tmp_path / "missing.txt") == {"file": None, "sha256": None, "differs": {}}


PROBE = """\
import sys
from grpolab.tracking.rundir import RunDirectory
RunDirectory(sys.argv[1]).write_manifest(seed=0, config={}, overrides=[])
"""
WORKER_PROBE = """\
import sys
from joblib import Parallel, delayed
from grpolab.tracking.rundir import RunDirectory

def write(run_dir):
    RunDirectory(run_dir).write_manifest(seed=0, config={}, overrides=[])
    return sys.orig_argv

if __name__ == "__main__":
    (worker_argv,) = Parallel(n_jobs=2)(delayed(write)(sys.argv[1]) for _ in range(1))
    assert "loky" in " ".join(worker_argv), worker_argv  # really written in a worker process
"""


def recorded_command(run_dir: Path) -> list[str]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["command_line"] == shlex.join(manifest["command"])
    return manifest["command"]


@pytest.mark.slow  # a new interpreter
def test_manifest_records_the_command_as_typed(tmp_path: Path) -> None:
    """``python -m`` with interpreter options, a console script found on PATH, and a sweep's joblib worker."""
    (tmp_path / "probe_command.py").write_text(PROBE)
    (tmp_path / "probe_worker.py").write_text(WORKER_PROBE)
    script = tmp_path / "bin" / "probe-train"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\n{PROBE}")
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}

    def run(*command: str) -> None:
        subprocess.run(command, check=True, cwd=tmp_path, env=env, timeout=120)

    typed = [sys.executable, "-X", "utf8", "-m", "probe_command", str(tmp_path / "m"), "seed=1", "name='a b'"]
    run(*typed)
    assert recorded_command(tmp_path / "m") == typed
    run("probe-train", str(tmp_path / "script"), "model=tiny")
    assert recorded_command(tmp_path / "script") == ["probe-train", str(tmp_path / "script"), "model=tiny"]
    run(sys.executable, "-m", "probe_worker", str(tmp_path / "worker"), "seed=0,1")
    # the worker cannot know the interpreter's options; it rebuilds a command that runs the same thing
    assert recorded_command(tmp_path / "worker") == [sys.executable, str(tmp_path / "probe_worker.py"),
                                                     str(tmp_path / "worker"), "seed=0,1"]


def test_git_state_is_null_outside_a_checkout(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None, "root": None}
