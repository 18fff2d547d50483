"""Shared fixtures: composing grpolab's real config, running a training job in this process (``run_job``, what most
end-to-end tests use) or through the real CLI in a subprocess (``run_cli``, for what only a process shows: the exit
status and output of the command itself, signals, launchers), and the warm-start cache the tests share."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from grpolab.config.paths import CONF_DIR
from grpolab.config.schema import register_schemas
from tests_support import train_in_process

REPO_ROOT = Path(__file__).resolve().parents[1]
register_schemas()  # train.yaml's defaults start with grpolab_schema; grpolab.train registers it when imported
#: Real data vendored with the tests (MIT; see tests/fixtures/gsm8k/README.md): the 1,319-problem GSM8K test split.
GSM8K_TEST = REPO_ROOT / "tests" / "fixtures" / "gsm8k" / "test.jsonl"

#: The cheapest settings that still run the whole real pipeline (warm start, eval, GRPO, run directory).
TINY_RUN = [
    "logger=none",
    "trainer.max_steps=3",
    "trainer.logging_steps=1",
    "warmstart.steps=10",
    "data.train_size=64",
    "data.eval_size=16",
    "batch.prompts_per_step=4",
    "batch.generations_per_prompt=4",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``--dist loadgroup`` (pyproject.toml) group the tests marked ``xdist_group``. pytest-xdist 3.8 marks a
    grouped test by appending ``@<group>`` to its node id through ``item._nodeid``, which pytest 9.2 no longer reads
    (the id is ``item._id``, a ``NodeId``): the groups were silently ignored. This appends it where pytest reads it
    (tests/test_distributed.py checks that it took effect)."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers under --dist loadgroup
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                 for mark in item.iter_markers("xdist_group")}
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)


#: experiment=tools at test size: a warm start on demonstrations that all call the calculator (so the rollouts call it,
#: some with wrong operands), two GRPO steps, a 15-problem held-out evaluation that runs the tool loop. TOOL_WARM_START
#: is what decides the warm start's cache key: the tool tests that take it share one warm start (``shared_cache``).
#: After its 80 steps of 16 demonstrations greedy decoding calls the tool on every held-out problem, and an eighth to a
#: half of the sampled rollouts call it (model=tiny_tools' wide initial weights: 150 steps were needed at 0.02).
TOOL_WARM_START = ["experiment=tools", "warmstart.steps=80", "data.train_size=128",
                   "data.eval_size=15", "data.tool_call_rate=1.0"]
TOOL_RUN = [*TOOL_WARM_START, "logger=none", "trainer.max_steps=2", "trainer.logging_steps=1",
            "batch.prompts_per_step=2", "batch.generations_per_prompt=4"]


@pytest.fixture(scope="session")
def tool_run(tmp_path_factory, shared_cache) -> Path:
    """One finished ``TOOL_RUN`` (its run directory), shared read-only by the tests of what a tool run leaves
    behind; its warm start is in the session's ``shared_cache``."""
    root = tmp_path_factory.mktemp("tool_run")
    env = {"GRPOLAB_CACHE_DIR": str(shared_cache), "WANDB_MODE": "offline"}
    result = train_in_process([f"hydra.run.dir={root / 'run'}", *TOOL_RUN], root, env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: the tiny models run fastest on one; more only contend on a shared 2-core
    machine (two intra-op threads made each step of a loaded machine ~10x slower). The count is put back after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def gsm8k_test_split() -> Path:
    """The GSM8K test split vendored in tests/fixtures/gsm8k (a fixture: ``from conftest import`` is order-fragile)."""
    return GSM8K_TEST


#: Configs composed in this process, by (overrides, return_hydra_config, working directory): composing takes Hydra
#: ~0.2 s, and many tests compose the same command (every experiment is composed by several test modules).
_COMPOSED: dict[tuple, DictConfig] = {}


@pytest.fixture
def compose_cfg():
    """compose(overrides) -> the composed config, with Hydra's global state reset around each call. A command
    composed before in this session is not composed again: the test gets a deep copy of that config (its own to
    change), which is what composing again would give, the config files being the same."""

    def _compose(overrides=(), return_hydra_config=False):
        key = (tuple(overrides), return_hydra_config, os.getcwd())
        if key not in _COMPOSED:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                _COMPOSED[key] = compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)
        return copy.deepcopy(_COMPOSED[key])

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def tiny_run() -> list[str]:
    """``TINY_RUN`` for test modules that cannot import it (``conftest`` is another module in tests/<package>/)."""
    return list(TINY_RUN)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``GRPOLAB_CACHE_DIR`` shared by every test of the session (and by every pytest-xdist worker: it lies beside
    the workers' own temporary folders), so a warm start of the same config is trained once. For tests that only need
    a trained-enough model; a test of the cache, or of what a fresh run prints and records about its warm start or
    prepared prompts, keeps a fresh one. Cache entries are written atomically, so two workers cannot tear one."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder above every worker's basetemp
    cache = root / "shared-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture
def run_job(tmp_path, shared_cache):
    """``run_job(*overrides, cache="shared"|"fresh", merged_output=False)``: ``python -m grpolab.train`` with these
    overrides (and flags such as ``-m``), run in this process by ``train_in_process``; the run directory is
    ``tmp_path / 'run'``, the working directory ``tmp_path``. ``cache="shared"`` points ``GRPOLAB_CACHE_DIR`` at the
    session's ``shared_cache``; ``"fresh"`` at ``tmp_path / 'cache'``."""

    def _run(*overrides: str, cache: str = "fresh", merged_output: bool = False) -> subprocess.CompletedProcess:
        assert cache in ("shared", "fresh"), cache
        env = {"GRPOLAB_CACHE_DIR": str(shared_cache if cache == "shared" else tmp_path / "cache"),
               "WANDB_MODE": "offline"}
        flags = [argument for argument in overrides if argument.startswith("-")]  # e.g. -m: before any override
        arguments = [*flags, f"hydra.run.dir={tmp_path / 'run'}", *[a for a in overrides if a not in flags]]
        return train_in_process(arguments, tmp_path, env, merged_output=merged_output)

    return _run


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m grpolab.train`` with overrides (and flags such as ``-m``); the run directory is
    ``tmp_path / 'run'``. ``merged_output=True``: stderr goes into ``stdout``, interleaved as a terminal shows them."""

    def _run(*overrides: str, timeout: int = 600, merged_output: bool = False) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "GRPOLAB_CACHE_DIR": str(tmp_path / "cache"),
            "WANDB_MODE": "offline",
            # tests_support.py (deliberately broken rewards) must be importable by the subprocess.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
        }
        flags = [argument for argument in overrides if argument.startswith("-")]  # e.g. -m: before any override
        command = [sys.executable, "-m", "grpolab.train", *flags, f"hydra.run.dir={tmp_path / 'run'}",
                   *[argument for argument in overrides if argument not in flags]]
        merged = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        streams = merged if merged_output else {"capture_output": True}
        return subprocess.run(command, **streams, text=True, timeout=timeout, env=env, cwd=tmp_path)

    return _run
