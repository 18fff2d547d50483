"""The code sandbox: its API in-process (in the tier $GRPOLAB_SANDBOX picks), then every case of hostile_code.yaml in
each tier through a disposable caller, asserting it was contained.

The bubblewrap tier is skipped, with the reason, where bubblewrap cannot run; a case whose containment a tier does
not guarantee is skipped naming the missing isolation (docs/sandbox.md shows what happens to it there).
"""

from __future__ import annotations

import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hostile_code import CASES, missing_guarantees, run_case

from grpolab.environments import sandbox
from grpolab.environments.sandbox import (INSTALL_STEP, SandboxLimits, SandboxResult, ToolError, isolation,
                                          run_python)

QUICK = SandboxLimits(wall_time_s=2.0, cpu_time_s=1, memory_mb=256, file_size_mb=4, max_output_chars=100)
def test_a_result_is_the_tool_output_or_a_tool_error() -> None:
    assert run_python("print(6 * 7)", QUICK).tool_output() == "42\n"
    failed = run_python("print('partial')\n{}['missing']", QUICK)
    assert (failed.ok, failed.exit_code, failed.reason) == (False, 1, "exit code 1: KeyError: 'missing'")
    with pytest.raises(ToolError) as error:
        failed.tool_output()
    reason, stderr, *_ = str(error.value).split("\n", 2)
    assert (reason, stderr) == ("exit code 1: KeyError: 'missing'", "stderr:")
    assert str(error.value).endswith("KeyError: 'missing'\n\nstdout:\npartial\n")


def test_output_is_cut_to_the_limit_saying_how_much() -> None:
    result = run_python("import sys\nprint('a' * 5000)\nprint('b' * 5000, file=sys.stderr)\nraise SystemExit(2)",
                        QUICK)
    assert result.stdout == "a" * 100 + "\n[... 4901 more bytes cut]"  # 5000 a's and a newline, 100 shown
    assert result.stderr == "[... 4901 earlier bytes cut]\n" + "b" * 99 + "\n"  # the tail, where tracebacks end
    assert result.reason == "exit code 2: " + "b" * 100  # the last line, cut like the output


def test_the_wall_clock_limit_stops_the_call() -> None:
    result = run_python("import time\nprint('started')\ntime.sleep(60)", SandboxLimits(wall_time_s=0.5))
    assert (result.ok, result.exit_code, result.stdout) == (False, None, "started\n")
    assert result.reason == "timed out after 0.5 s (the wall-clock limit)" and result.seconds < 5


def test_calls_run_side_by_side_from_threads_and_everything_pickles() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run_python(f"print({n} * {n})", QUICK), range(4)))
    assert [result.stdout for result in results] == ["0\n", "1\n", "4\n", "9\n"]
    for thing in (run_python, QUICK, results[0], isolation()):
        assert pickle.loads(pickle.dumps(thing)) == thing


def test_bad_limits_and_an_unknown_tier_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match=r"^sandbox limit wall_time_s=0 must be a positive number$"):
        SandboxLimits(wall_time_s=0)
    with pytest.raises(ValueError, match=r"^sandbox limit max_processes=True must be a positive integer$"):
        SandboxLimits(max_processes=True)
    with pytest.raises(ValueError, match=r"^sandbox limit cpu_time_s=2.5 must be a positive integer$"):
        SandboxLimits(cpu_time_s=2.5)
    assert SandboxLimits(wall_time_s=3, max_output_mb=2).wall_time_s == 3  # an integer where a number is asked
    with pytest.raises(ValueError, match=r"^GRPOLAB_SANDBOX=docker must be one of auto, bubblewrap, rlimits$"):
        isolation("docker")


def test_a_bubblewrap_that_cannot_start_a_sandbox_falls_back_saying_why(monkeypatch, tmp_path) -> None:
    fake = tmp_path / "bwrap"  # as bwrap answers where user namespaces are not allowed
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "bubblewrap 0.8.0" && exit 0\n'
                    'echo "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    sandbox._probe.cache_clear()
    try:
        fallback = isolation("auto")
    finally:
        sandbox._probe.cache_clear()
    assert fallback.backend == "rlimits"
    assert fallback.summary.startswith("code sandbox: rlimits only (bubblewrap cannot start a sandbox here: "
                                       "bwrap: setting up uid map: Permission denied): limits on wall and CPU time")


def test_without_bubblewrap_the_summary_names_what_is_missing_and_the_step(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    sandbox._probe.cache_clear()
    try:
        fallback = isolation("auto")
        with pytest.raises(RuntimeError, match=r"^GRPOLAB_SANDBOX=bubblewrap but bubblewrap is not installed$"):
            isolation("bubblewrap")
        assert run_python("print(1)", QUICK).stdout == "1\n"
    finally:
        sandbox._probe.cache_clear()
    assert fallback.backend == "rlimits" and not (fallback.network or fallback.files or fallback.cleanup)
    assert "\n" not in fallback.summary and "NOT isolated" in fallback.summary
    assert "(bubblewrap is not installed)" in fallback.summary and fallback.summary.endswith(INSTALL_STEP)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["bubblewrap", "rlimits"])
@pytest.mark.parametrize("case", CASES, ids=[case["what"] for case in CASES])
def test_hostile_code_is_contained(case: dict[str, Any], backend: str) -> None:
    tier = _tier(backend)
    missing = missing_guarantees(case, tier)
    if missing:
        pytest.skip(f"not guaranteed without {' and '.join(missing)} isolation: {tier.summary}")
    outcome = run_case(case, backend)
    assert outcome.breaches == [], outcome
    assert re.search(case["expect"], outcome.result["reason"]), outcome.result
    assert isinstance(SandboxResult(**outcome.result), SandboxResult)


def _tier(backend: str) -> sandbox.Isolation:
    try:
        return isolation(backend)
    except RuntimeError as error:  # bubblewrap missing or unusable here: say so, never pass silently
        pytest.skip(str(error))
