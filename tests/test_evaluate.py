"""The trained model is kept: ``<run_dir>/model`` loads with ``from_pretrained`` (tokenizer with identical IDs), is a
``model.name_or_path`` for a further run, and ``python -m grpolab.evaluate <run_dir>`` re-evaluates it to the
``eval_after`` the run recorded. The training runs are jobs in this process; the evaluation of the trained run is the
real CLI in a process of its own, that of the tool run its ``main`` in this process (the process start is tested once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpolab.models.load import load_model, load_tokenizer
from grpolab.models.tokenizer import build_char_tokenizer
from tests_support import module_in_process, train_in_process

# One worker of pytest-xdist runs this module's tests, so the module's trained run is trained once.
pytestmark = pytest.mark.xdist_group("evaluate")

#: A warm start long enough for held-out scores that are not all zero (after 100 steps: format 1.0, accuracy 0.05 of
#: 64 problems), then a few GRPO steps.
TRAINED_RUN = ["logger=none", "trainer.max_steps=4", "trainer.logging_steps=2", "warmstart.steps=100",
               "data.train_size=256", "data.eval_size=64", "data.untagged_solution_rate=0.3",
               "batch.prompts_per_step=4", "batch.generations_per_prompt=4"]
SCORES = ("accuracy", "format", "num_samples")


def grpolab(module: str, *arguments: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <module> *arguments``: grpolab.train in this process, any other module in a subprocess."""
    env = {"GRPOLAB_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}
    if module == "grpolab.train":
        return train_in_process(arguments, cwd, env)
    return subprocess.run([sys.executable, "-m", module, *arguments], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env}, cwd=cwd)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    result = grpolab("grpolab.train", f"hydra.run.dir={root / 'run'}", *TRAINED_RUN, cache=root / "cache", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def scores(evaluation: dict) -> dict:
    return {key: evaluation[key] for key in SCORES}


@pytest.mark.slow
def test_evaluate_cli_reproduces_eval_after_from_the_saved_model(trained_run: Path) -> None:
    recorded = json.loads((trained_run / "summary.json").read_text())["eval_after"]
    assert recorded["format"] > 0  # a comparison of zeros would prove little
    result = grpolab("grpolab.evaluate", str(trained_run), cache=trained_run.parent / "cache", cwd=trained_run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    printed, verdict = result.stdout.strip().splitlines()[-2:]
    assert scores(json.loads(printed)) == scores(recorded)
    assert verdict.startswith(f"held-out accuracy {recorded['accuracy']}: the same as summary.json's eval_after")


@pytest.mark.slow
def test_the_saved_model_loads_with_from_pretrained_and_starts_a_further_run(trained_run: Path) -> None:
    model_dir = trained_run / "model"
    info = json.loads((model_dir / "grpolab_model.json").read_text())
    assert info["use_in_a_run"] == f"python -m grpolab.train model=causal_lm model.name_or_path={model_dir}"
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {
        path.name for path in model_dir.iterdir()}
    # transformers 5 would load the character tokenizer next to a Qwen2 config as Qwen2Tokenizer (spaces dropped).
    text = "12 + 7 =\n<answer>19</answer>  done\t<|im_end|>"
    reloaded, built = load_tokenizer(str(model_dir)), build_char_tokenizer()
    assert reloaded(text)["input_ids"] == built(text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"]) == text
    model = load_model(str(model_dir), reloaded, "text")
    assert model.generation_config.eos_token_id == built.eos_token_id

    further = trained_run.parent / "further"
    without_warm_start = [override for override in TRAINED_RUN if not override.startswith("warmstart.")]
    result = grpolab("grpolab.train", f"hydra.run.dir={further}", *without_warm_start, "model=causal_lm",
                     f"model.name_or_path={model_dir}", "warmstart=none", "trainer.max_steps=1",
                     cache=trained_run.parent / "cache", cwd=trained_run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (json.loads((d / "summary.json").read_text()) for d in (trained_run, further))
    assert scores(second["eval_before"]) == scores(first["eval_after"])  # the same policy, the same tokens


@pytest.mark.slow
def test_evaluate_cli_runs_the_tool_loop_of_a_tool_run_and_reproduces_eval_after(tool_run: Path) -> None:
    env = {"GRPOLAB_CACHE_DIR": str(tool_run.parent / "evaluate-cache"), "WANDB_MODE": "offline"}
    result = module_in_process("grpolab.evaluate", [str(tool_run)], tool_run.parent, env)
    assert result.returncode == 0, result.stderr[-3000:]
    printed, verdict = result.stdout.strip().splitlines()[-2:]
    metrics = json.loads(printed)
    recorded = json.loads((tool_run / "summary.json").read_text())["eval_after"]
    keys = ("accuracy", "tool_use", "tool_call_frequency", "tool_failure_frequency", "num_samples")
    assert {key: metrics[key] for key in keys} == {key: recorded[key] for key in keys}
    assert metrics["tool_call_frequency"] > 0 and "the same as summary.json's eval_after" in verdict
