"""Every ``>>>`` example in ``src/grpolab`` (and in the ``benchmarks/`` and ``tools/`` scripts) runs here, module by
module, and must hold. The modules that have examples are pinned: a module whose examples disappear (deleted, or moved
where doctest cannot find them) fails, as does a module with examples that is not in the list (add it)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where the examples live: a module's dotted name starts with the folder's name.
SOURCE_ROOTS = {"grpolab": REPO_ROOT / "src" / "grpolab", "benchmarks": REPO_ROOT / "benchmarks",
                "tools": REPO_ROOT / "tools"}

#: The modules with ``>>>`` examples. A module that moves or is renamed moves here too; one that loses its examples
#: must not simply be dropped from this list.
EXAMPLE_MODULES = frozenset({
    "benchmarks.gpu_check", "benchmarks.gpu_check_runs", "benchmarks.gpu_check_trl", "benchmarks.ids_vs_text",
    "benchmarks.processor_variation", "benchmarks.readme_block", "benchmarks.suite_time",
    "grpolab.preflight", "grpolab.sweeps",
    "grpolab.config.batch", "grpolab.config.checks", "grpolab.config.engine_checks", "grpolab.config.errors",
    "grpolab.config.generate_grpo_fields", "grpolab.config.hashing", "grpolab.config.paths",
    "grpolab.config.schema", "grpolab.config.trainer_node",
    "grpolab.data.arithmetic", "grpolab.data.columns", "grpolab.data.context", "grpolab.data.counting",
    "grpolab.data.gsm8k", "grpolab.data.image_tasks", "grpolab.data.images", "grpolab.data.jsonl",
    "grpolab.data.math_problems", "grpolab.data.prepare", "grpolab.data.prompts", "grpolab.data.shapes",
    "grpolab.data.task", "grpolab.data.tool_arithmetic",
    "grpolab.environments.calculator", "grpolab.environments.guard", "grpolab.environments.image_crop",
    "grpolab.environments.python",
    "grpolab.environments.sandbox", "grpolab.environments.tools",
    "grpolab.models.bpe", "grpolab.models.hub", "grpolab.models.load", "grpolab.models.tiny",
    "grpolab.models.tokenizer", "grpolab.models.vision",
    "grpolab.rewards.accuracy", "grpolab.rewards.agreement", "grpolab.rewards.answers", "grpolab.rewards.base",
    "grpolab.rewards.build", "grpolab.rewards.format", "grpolab.rewards.length", "grpolab.rewards.model",
    "grpolab.rewards.reasoning", "grpolab.rewards.repetition", "grpolab.rewards.tags", "grpolab.rewards.tools",
    "grpolab.rewards.vision", "grpolab.rewards.vocabulary", "grpolab.rewards.wrappers",
    "grpolab.tracking.aggregate", "grpolab.tracking.checkpoints", "grpolab.tracking.console",
    "grpolab.tracking.jsonfiles", "grpolab.tracking.loggers", "grpolab.tracking.metrics_file",
    "grpolab.tracking.plots", "grpolab.tracking.processes", "grpolab.tracking.progress",
    "grpolab.tracking.provenance", "grpolab.tracking.rundir", "grpolab.tracking.runs", "grpolab.tracking.session",
    "grpolab.trainer.args", "grpolab.trainer.dynamic_sampling", "grpolab.trainer.evaluation",
    "grpolab.trainer.multiturn", "grpolab.trainer.refill_prompts", "grpolab.trainer.resume_state",
    "grpolab.trainer.scored_batches", "grpolab.trainer.tokenizer_calls", "grpolab.trainer.warmstart",
    "tools.collect_wheels",
})

#: Modules whose every example is marked ``# doctest: +SKIP``: each shows a call on a run directory, a trainer or a
#: command line that the example does not build. Listed so that a module cannot silently end up with nothing that
#: runs; make one of its examples run and take it off the list.
ONLY_SKIPPED = frozenset({"grpolab.tracking.aggregate", "grpolab.tracking.metrics_file", "grpolab.tracking.session"})


def modules_with_examples() -> dict[str, Path]:
    """Dotted name -> file of every module under ``SOURCE_ROOTS`` with a ``>>>`` line."""
    found = {}
    for package, folder in SOURCE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            if prompt_lines(path):
                found[".".join([package, *path.relative_to(folder).with_suffix("").parts])] = path
    return found


def prompt_lines(path: Path) -> int:
    return sum(line.lstrip().startswith(">>>") for line in path.read_text(encoding="utf-8").splitlines())


def test_the_modules_with_examples_are_the_pinned_ones() -> None:
    found = set(modules_with_examples())
    lost, new = sorted(EXAMPLE_MODULES - found), sorted(found - EXAMPLE_MODULES)
    assert not lost, f"these modules lost their examples (or moved; then rename them in EXAMPLE_MODULES): {lost}"
    assert not new, f"new modules with examples: add them to EXAMPLE_MODULES: {new}"
    assert ONLY_SKIPPED <= EXAMPLE_MODULES


def import_module(name: str, monkeypatch: pytest.MonkeyPatch):
    package, _, rest = name.partition(".")
    if package in ("benchmarks", "tools"):  # folders of scripts, imported as top-level modules the way they import
        monkeypatch.syspath_prepend(str(SOURCE_ROOTS[package]))  # each other
        return importlib.import_module(rest)
    return importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(EXAMPLE_MODULES | set(modules_with_examples())))
def test_the_examples_of_a_module_run_and_hold(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = modules_with_examples().get(name)
    assert path is not None, f"{name} has no >>> example (any more)"
    module = import_module(name, monkeypatch)
    tests = doctest.DocTestFinder().find(module)
    # A >>> line outside the docstrings doctest reads (a comment, a nested function's docstring) would never run.
    assert sum(len(test.examples) for test in tests) == prompt_lines(path), "examples doctest does not find"
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    runner, report = doctest.DocTestRunner(), []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    if name in ONLY_SKIPPED:
        assert result.attempted == 0, f"{name} runs an example now: take it off ONLY_SKIPPED"
    else:
        assert result.attempted > 0, f"every example of {name} is skipped"
