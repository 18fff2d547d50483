"""Helpers several test modules share (a training job run in this process, a free port), and reward callables that
misbehave on purpose (importable by the CLI subprocesses the tests start). Import them from here, not from
``conftest``: that name is taken by every folder's conftest.py."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous port of a two-process group a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: Signals a training job may take over (preemption handling); restored after an in-process job.
_JOB_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def train_in_process(arguments: Sequence[str], cwd: Path, env: Mapping[str, str | None],
                     merged_output: bool = False) -> subprocess.CompletedProcess:
    """``python -m grpolab.train *arguments`` run by this process: the same entry point (``grpolab.train.main``:
    preflight, Hydra, its callbacks and logging, the job), without an interpreter start and the imports of torch,
    transformers and TRL (seconds per run). Returns what ``subprocess.run`` would: the exit status (``sys.exit``'s
    code; 1 for an exception that escapes, its traceback in ``stderr``) and the text printed on stdout and stderr.

    The job starts from what a new process would give it: no Hydra job config and grpolab's loggers at their
    default level (a job of another process rank, or a test, may have raised it). What a job changes in the process is
    put back afterwards: the working directory, ``os.environ``, ``sys.argv``, the root logger's handlers (Hydra's
    file handler is closed), grpolab's logger levels, warning capture, signal handlers, Hydra's global state and job
    config, and torch's thread count if torch was imported before (a job that fails before it trains, or ``--help``,
    does not import it here)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import grpolab.train as entry

    saved_argv, saved_environ, saved_cwd = list(sys.argv), dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_captures_warnings = logging._warnings_showwarning is not None  # noqa: SLF001 (no public getter)
    torch = sys.modules.get("torch")
    saved_threads = torch.get_num_threads() if torch is not None else None
    saved_signals = {number: signal.getsignal(number) for number in _JOB_SIGNALS}
    saved_hydra_config = HydraConfig.instance().cfg
    own_loggers = [logging.getLogger(name) for name in ["grpolab", *logging.root.manager.loggerDict]
                   if name == "grpolab" or name.startswith("grpolab.")]
    saved_levels = {logger: logger.level for logger in own_loggers}
    stdout = io.StringIO()
    stderr = stdout if merged_output else io.StringIO()
    code: int | str | None = 0
    try:
        for name, value in env.items():
            if value is None:  # unset
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.chdir(cwd)
        sys.argv = [entry.__file__, *arguments]
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        for logger in own_loggers:
            logger.setLevel(logging.NOTSET)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                entry.main()
            except SystemExit as exit_:
                code = exit_.code
                if isinstance(code, str):  # sys.exit("message"): printed on stderr, status 1
                    print(code, file=sys.stderr)
                    code = 1
            except BaseException:  # noqa: BLE001 (what an uncaught exception does to a process)
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = saved_hydra_config
        for logger, level in saved_levels.items():
            logger.setLevel(level)
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.captureWarnings(saved_captures_warnings)
        if saved_threads is not None:
            torch.set_num_threads(saved_threads)
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.argv = saved_argv
    command = [sys.executable, "-m", "grpolab.train", *arguments]
    return subprocess.CompletedProcess(command, code or 0, stdout.getvalue(),
                                       None if merged_output else stderr.getvalue())


class FailingReward:
    """Divides by zero on problems with an even answer: a reward bug that should name itself and the sample."""

    def __call__(self, prompts, completions, completion_ids, answer, **kwargs):
        return [1.0 / (int(gold) % 2) for gold in answer]


class ShortReward:
    """Returns one reward too few."""

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        return [0.0] * (len(completions) - 1)


from grpolab.rewards.base import Reward  # noqa: E402


class NeedsDifficulty(Reward):
    """A reward that reads a dataset column the default task does not have."""

    text_columns = frozenset({"difficulty"})

    def score_text(self, completions, difficulty, **columns):
        return [float(d) for d in difficulty]
