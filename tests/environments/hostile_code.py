"""Run one case of hostile_code.yaml as a training run meets it, and list what (if anything) escaped the sandbox.

A disposable caller process stands in for the trainer (so code that kills its caller kills only this one), started
in a fresh run directory holding ``secret.txt``, with ``WANDB_API_KEY`` in its environment and a TCP port of ours
listening on 127.0.0.1; it calls ``run_python(code)``, then ``run_python("print(6 * 7)")``. Shared by
tests/environments/test_sandbox.py and benchmarks/sandbox_table.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grpolab.environments.sandbox import SANDBOX_ENV, Isolation

CASES: list[dict[str, Any]] = yaml.safe_load(Path(__file__).with_name("hostile_code.yaml").read_text())["cases"]
#: Small limits, so a case takes a fraction of a second, or the wall-clock limit at most.
LIMITS = {"wall_time_s": 2.0, "cpu_time_s": 1, "memory_mb": 256, "file_size_mb": 4, "max_processes": 16,
          "max_output_chars": 300, "max_output_mb": 1.0}
GUARANTEES = ("network", "files", "processes", "cleanup", "process_limit")

CALLER = """
import json, sys, time
from dataclasses import asdict
from grpolab.environments.sandbox import SandboxLimits, run_python
limits = SandboxLimits(**json.loads(sys.argv[2]))
started = time.monotonic()
result = run_python(sys.argv[1], limits)
seconds = time.monotonic() - started
after = run_python("print(6 * 7)", limits)
print(json.dumps({"result": asdict(result), "seconds": seconds, "after": asdict(after)}))
"""


@dataclass
class Outcome:
    """What one case did: the hostile call's result (None when the caller died) and what escaped."""

    result: dict[str, Any] | None
    seconds: float | None
    breaches: list[str] = field(default_factory=list)

    @property
    def contained(self) -> bool:
        return not self.breaches


def missing_guarantees(case: dict[str, Any], tier: Isolation) -> list[str]:
    """The guarantees the case needs that the tier does not give."""
    assert set(case.get("needs", [])) <= set(GUARANTEES), case["needs"]
    return [name for name in case.get("needs", []) if not getattr(tier, name)]


def code_of(case: dict[str, Any], run_dir: str, port: int) -> str:
    return (case["code"].replace("$RUN_DIR", run_dir).replace("$PORT", str(port))
            .replace("$CALLER_UID", str(os.getuid())))


def run_case(case: dict[str, Any], backend: str) -> Outcome:
    """Run ``case`` in the ``backend`` tier through a disposable caller; every breach found is listed."""
    secret, tag = f"secret-{uuid.uuid4().hex}", uuid.uuid4().hex
    with (tempfile.TemporaryDirectory(prefix="grpolab-run-") as run_dir,
          tempfile.TemporaryDirectory(prefix="grpolab-case-") as case_tmp, socket.socket() as listener):
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        Path(run_dir, "secret.txt").write_text(secret)
        os.chmod(run_dir, 0o755)  # as a run directory is made (umask 022), not 0700 as a temporary directory is
        os.chmod(Path(run_dir, "secret.txt"), 0o644)
        # The caller's own temporary folder (where the rlimits tier writes main.py) and a tag in its environment
        # (which bubblewrap's processes keep): what tells this case's processes from other tests' sandboxes.
        env = {**os.environ, SANDBOX_ENV: backend, "WANDB_API_KEY": secret, "TMPDIR": case_tmp, CASE_TAG: tag}
        caller = subprocess.run([sys.executable, "-c", CALLER, code_of(case, run_dir, listener.getsockname()[1]),
                                 json.dumps(LIMITS)], cwd=run_dir, env=env, capture_output=True, text=True,
                                timeout=60)
        outcome = Outcome(None, None)
        if caller.returncode != 0:
            outcome.breaches.append(f"the caller died ({_status(caller.returncode)})")
        else:
            report = json.loads(caller.stdout.splitlines()[-1])
            outcome.result, outcome.seconds = report["result"], report["seconds"]
            if report["after"]["stdout"] != "42\n":
                outcome.breaches.append(f"the next call failed: {report['after']['reason']}")
            if secret in outcome.result["stdout"] + outcome.result["stderr"]:
                outcome.breaches.append("the secret reached the output")
            for name in ("stdout", "stderr", "reason"):  # the same text from one run to the next
                outcome.result[name] = outcome.result[name].replace(run_dir, "$RUN_DIR").replace(secret, "$SECRET")
        if sorted(os.listdir(run_dir)) != ["secret.txt"]:
            outcome.breaches.append(f"the run directory gained {sorted(set(os.listdir(run_dir)) - {'secret.txt'})}")
        elif Path(run_dir, "secret.txt").read_text() != secret:
            outcome.breaches.append("the run's secret.txt was overwritten")
        try:
            listener.accept()[0].close()
            outcome.breaches.append("the caller's port got a connection")
        except BlockingIOError:
            pass
        time.sleep(0.1)
        left = _sandbox_processes(case_tmp, tag)
        if left:
            outcome.breaches.append(f"{len(left)} process(es) outlived the call")
            for pid in left:  # the harness cleans up after a tier that does not
                _kill(pid)
        return outcome


CASE_TAG = "GRPOLAB_HOSTILE_CASE"


def _sandbox_processes(case_tmp: str, tag: str) -> set[int]:
    """This case's processes running a sandboxed ``python -s -u -B .../main.py`` (forks of one keep its command
    line): main.py under ``case_tmp`` (the rlimits tier), or an ancestor with ``tag`` in its environment (bubblewrap
    clears the code's environment, not its own)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if argv[-4:-1] == [b"-s", b"-u", b"-B"] and argv[-1].endswith(b"main.py") and (
                argv[-1].startswith(case_tmp.encode()) or _ancestor_tagged(int(pid), tag)):
            found.add(int(pid))
    return found


def _ancestor_tagged(pid: int, tag: str) -> bool:
    marker = f"{CASE_TAG}={tag}".encode()
    while pid > 1:
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return True
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _status(returncode: int) -> str:
    return f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
