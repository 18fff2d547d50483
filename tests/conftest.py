"""Shared fixtures: composing grpolab's real config, and running the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from grpolab.config.paths import CONF_DIR
from grpolab.config.schema import register_schemas

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


#: experiment=tools at test size: a warm start on demonstrations that all call the calculator (so the rollouts call it,
#: some with wrong operands), two GRPO steps, an 8-problem held-out evaluation that runs the tool loop.
TOOL_RUN = [
    "experiment=tools", "logger=none", "trainer.max_steps=2", "trainer.logging_steps=1", "warmstart.steps=150",
    "data.train_size=128", "data.eval_size=8", "data.tool_call_rate=1.0", "batch.prompts_per_step=2",
    "batch.generations_per_prompt=4",
]


@pytest.fixture(scope="session")
def tool_run(tmp_path_factory) -> Path:
    """One finished ``TOOL_RUN`` (its run directory; its cache, with the warm start, is ``<run>/../cache``), shared
    read-only by the tests of what a tool run leaves behind."""
    root = tmp_path_factory.mktemp("tool_run")
    env = {**os.environ, "GRPOLAB_CACHE_DIR": str(root / "cache"), "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-m", "grpolab.train", f"hydra.run.dir={root / 'run'}", *TOOL_RUN],
                            capture_output=True, text=True, timeout=900, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="session")
def gsm8k_test_split() -> Path:
    """The GSM8K test split vendored in tests/fixtures/gsm8k (a fixture: ``from conftest import`` is order-fragile)."""
    return GSM8K_TEST


@pytest.fixture
def compose_cfg():
    """compose(overrides) -> the composed config, with Hydra's global state reset around each call."""

    def _compose(overrides=(), return_hydra_config=False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def tiny_run() -> list[str]:
    """``TINY_RUN`` for test modules that cannot import it (``conftest`` is another module in tests/<package>/)."""
    return list(TINY_RUN)


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
