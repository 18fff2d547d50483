"""``environment=python``: a code interpreter tool, each call a fresh process in ``grpolab.environments.sandbox``.

What the model's code may do is decided by the sandbox's limits (wall-clock and CPU time, memory, file size, process
count, output length) and by the isolation the machine allows (:attr:`PythonInterpreter.isolation`, logged at start-up).
Code that fails (an exception, a non-zero exit, a limit reached) is a tool failure: the model reads why, in the error
TRL hands back, and the run goes on. The sandbox's wall-clock limit stops the code (and everything it started); the
environment's ``timeout_s``, set above it, is only the backstop every tool has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpolab.environments.sandbox import SandboxLimits, isolation, run_python


class PythonInterpreter:
    """The ``python`` tool: run a program, return what it printed.

    >>> from grpolab.environments.sandbox import SandboxLimits
    >>> PythonInterpreter(SandboxLimits(wall_time_s=10)).python("print(6 * 7)")
    '42\\n'
    """

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits

    def tools(self) -> list[Callable[..., Any]]:
        """The one tool this interpreter offers."""
        return [self.python]

    @property
    def time_limit_s(self) -> float:
        """How long a call may run before the sandbox stops it (and everything it started) itself."""
        return self.limits.wall_time_s

    @property
    def isolation(self) -> str:
        """What the sandbox isolates on this machine, in one line (logged when the environment is built)."""
        return f"python sandbox: {isolation().summary}"

    def python(self, code: str) -> str:
        """Run a Python program in a fresh sandboxed process and return what it printed.

        Args:
            code: A complete Python program; print the values you need.
        """
        return run_python(code, self.limits).tool_output()  # a failure raises ToolError: the model reads why
