"""STAND-IN for the sandbox another branch provides (same API); deleted before this branch is merged.

Runs code in a child ``python -I`` with resource limits and a wall-clock limit, in a fresh temporary directory.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    wall_time_s: float = 5.0
    cpu_time_s: float = 5.0
    memory_mb: int = 512
    file_size_mb: int = 16
    max_processes: int = 64
    max_output_chars: int = 4000


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    stdout: str
    stderr: str
    exit_code: int | None
    reason: str


@dataclass(frozen=True)
class Isolation:
    backend: str
    summary: str


def isolation() -> Isolation:
    return Isolation("rlimits", "stand-in sandbox: rlimits and a wall-clock limit only; no namespaces")


def run_python(code: str, limits: SandboxLimits) -> SandboxResult:
    def limit() -> None:
        cpu = max(1, int(limits.cpu_time_s))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        memory = limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = limits.file_size_mb * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    with tempfile.TemporaryDirectory() as workdir:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", code], cwd=workdir, capture_output=True, text=True,
                                  timeout=limits.wall_time_s, preexec_fn=limit, env={"PATH": os.defpath},
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            return SandboxResult(False, "", "", None, f"wall-clock limit of {limits.wall_time_s:g} s")
    cut = limits.max_output_chars
    ok = done.returncode == 0
    return SandboxResult(ok, done.stdout[:cut], done.stderr[-cut:], done.returncode,
                         "" if ok else f"exit code {done.returncode}")
