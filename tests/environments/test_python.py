"""The code-interpreter tool: output back as the result, any failure a tool error the model reads."""

from __future__ import annotations

import pytest
from transformers.utils import get_json_schema

from grpolab.environments.python import PythonInterpreter
from grpolab.environments.sandbox import SandboxLimits, ToolError

INTERPRETER = PythonInterpreter(SandboxLimits(wall_time_s=5, cpu_time_s=5, memory_mb=512, file_size_mb=1,
                                              max_processes=32, max_output_chars=100, max_output_mb=1.0))


def test_the_tool_returns_what_the_program_printed():
    assert INTERPRETER.python("print(sum(range(10)))") == "45\n"
    assert get_json_schema(INTERPRETER.python)["function"]["parameters"]["required"] == ["code"]
    assert [tool.__name__ for tool in INTERPRETER.tools()] == ["python"]


def test_an_exception_is_a_failure_naming_the_error():
    with pytest.raises(ToolError, match="ZeroDivisionError: division by zero"):
        INTERPRETER.python("print(1 / 0)")


def test_a_program_that_never_ends_is_stopped():
    quick = PythonInterpreter(SandboxLimits(wall_time_s=1, cpu_time_s=5, memory_mb=512, file_size_mb=1,
                                            max_processes=32, max_output_chars=100, max_output_mb=1.0))
    with pytest.raises(ToolError, match="timed out after 1 s"):
        quick.python("import time\ntime.sleep(60)")


def test_the_isolation_line_says_what_the_sandbox_isolates():
    assert INTERPRETER.isolation.startswith("python sandbox: ")
