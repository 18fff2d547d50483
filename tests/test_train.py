"""The composition root end to end: real TRL training of the tiny model, the run directory, and failures. Jobs run in
this process (``run_job``); the CLI in a subprocess (``run_cli``) where the command itself is tested: the run
directory and manifest of a typed command, a config error's exit status and line, two processes agreeing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_RUN, TOOL_RUN
from grpolab.config.paths import CONF_DIR
from grpolab.preflight import PreflightError, preflight
from grpolab.tracking.rundir import read_metrics
from tests_support import train_in_process


def _summary(tmp_path):
    return json.loads((tmp_path / "run" / "summary.json").read_text())


@pytest.mark.slow
def test_tiny_run_trains_and_fills_the_run_directory(run_cli, tmp_path):
    # The length reward varies within every group, so the tiny policy gets a gradient from the first step.
    result = run_cli(*TINY_RUN, "rewards=[accuracy,format,length]", "rewards.length.target=5")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    for name in (".hydra/config.yaml", "metrics.jsonl", "summary.json", "manifest.json", "reward_curve.png"):
        assert (run_dir / name).exists(), name
    summary = _summary(tmp_path)
    assert summary["status"] == "completed"
    assert summary["steps"] == 3
    assert summary["parameters"]["tensors_changed"] > 0
    for phase in ("eval_before", "eval_after"):
        assert 0.0 <= summary[phase]["accuracy"] <= 1.0
        assert summary[phase]["num_samples"] == 16
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert {"loss", "reward", "rewards/accuracy/mean", "rewards/format/mean", "rewards/length/mean"} <= row.keys()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["hostname"] and "trl" in manifest["versions"]
    assert manifest["command"] == result.args  # as typed: python -m grpolab.train ..., not the path of train.py
    assert manifest["command"][1:3] == ["-m", "grpolab.train"]
    # the JSON files are as readable as the run's other files (not tempfile's private 0600)
    modes = {name: stat.S_IMODE((run_dir / name).stat().st_mode) for name in ("summary.json", "manifest.json")}
    assert modes == dict.fromkeys(modes, stat.S_IMODE((run_dir / "metrics.jsonl").stat().st_mode))
    assert "held-out accuracy" in result.stderr + result.stdout


#: Wall-clock measurements: the only keys allowed to differ between two runs of one command.
TIME_KEYS = frozenset({"time_s", "step_time_s", "step_time", "timing/rewards_s", "wall_time_s"})


#: The commands run twice by test_the_same_command_twice_gives_identical_metrics, by name.
TWICE = {"text": ["tokenizer_mode=text"], "ids": ["tokenizer_mode=ids"],
         "vision": ["experiment=vision", "warmstart.steps=20"]}
#: Run by a new Python process: each job of argv[1] ({name: [arguments, environment]}) by train_in_process, one after
#: another, in the directory argv[2]; prints {name: [exit status, the end of stderr]} on its last line.
_JOBS_IN_ONE_PROCESS = """
import json, sys
from pathlib import Path
from tests_support import train_in_process
outcomes = {}
for name, (arguments, env) in json.loads(sys.argv[1]).items():
    result = train_in_process(arguments, Path(sys.argv[2]), env)
    outcomes[name] = [result.returncode, result.stderr[-3000:]]
print(json.dumps(outcomes))
"""


@pytest.mark.slow
def test_the_same_command_twice_gives_identical_metrics(tmp_path):
    """Each command of ``TWICE``, with fresh caches both times (the warm start is trained twice); held-out evaluations
    every 2 steps ride along. The first runs are jobs in this process, the second runs jobs in a new process (its own
    string hashing, its own imports): one for the three commands, since starting one costs more than a job."""
    from grpolab.tracking.plots import held_out_accuracy

    def job(attempt: str, name: str) -> tuple[list[str], dict[str, str]]:
        root = tmp_path / attempt / name
        root.mkdir(parents=True)
        env = {"GRPOLAB_CACHE_DIR": str(root / "cache"), "WANDB_MODE": "offline"}
        return [f"hydra.run.dir={root / 'run'}", *TINY_RUN, "trainer.max_steps=4", "eval.every_steps=2",
                "rewards=[accuracy,format,length]", "rewards.length.target=5", *TWICE[name]], env

    for name in TWICE:
        arguments, env = job("first", name)
        result = train_in_process(arguments, tmp_path, env)
        assert result.returncode == 0, (name, result.stderr[-3000:])
    second = {name: job("second", name) for name in TWICE}
    pythonpath = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", _JOBS_IN_ONE_PROCESS, json.dumps(second), str(tmp_path)],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": pythonpath})
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.splitlines()[-1])
    for name in TWICE:
        code, stderr = outcomes[name]
        assert code == 0, (name, stderr)
        runs = [tmp_path / attempt / name / "run" for attempt in ("first", "second")]
        rows = [[{key: value for key, value in json.loads(line).items() if key not in TIME_KEYS}
                 for line in (run_dir / "metrics.jsonl").read_text().splitlines()] for run_dir in runs]
        assert rows[0] == rows[1], name
        assert [(row["split"], row["step"]) for row in rows[0]] == [("train", 1), ("eval", 2), ("train", 2),
                                                                      ("train", 3), ("train", 4)], name
        assert {"accuracy", "format", "num_samples"} <= rows[0][1].keys(), name
        summaries = [json.loads((run_dir / "summary.json").read_text()) for run_dir in runs]
        assert [{k: v for k, v in s["eval_after"].items() if k not in TIME_KEYS} for s in summaries][0] == {
            k: v for k, v in summaries[1]["eval_after"].items() if k not in TIME_KEYS}, name
        # The run plot draws the periodic evaluation next to eval_before and eval_after.
        points = held_out_accuracy(read_metrics(runs[0] / "metrics.jsonl", split=None), summaries[0])
        assert [(point.step, point.when) for point in points] == [(0, "before"), (2, "during"), (4, "after")], name
        assert (runs[0] / "reward_curve.png").stat().st_size > 0, name


@pytest.mark.slow
def test_warm_start_is_cached_by_config(run_job, tmp_path):
    first = run_job(*TINY_RUN, "trainer.max_steps=1")
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_job(*TINY_RUN, "trainer.max_steps=1", "hydra.run.dir=" + str(tmp_path / "run2"))
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert summary["warmstart"]["cached"] is True
    assert list((tmp_path / "cache" / "warmstart").glob("warmstart-*.pt"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message", "caught_by", "runner"),
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1 must be a positive finite number", "preflight", "run_cli"),
        (["+trainer.bta=0.1"], "trainer.bta is not a trl.GRPOConfig field; did you mean: beta", "preflight",
         "run_job"),
        (["+trainer.learning_rate=0.1"], "trainer.learning_rate is not set in the trainer node; set optimizer.lr",
         "preflight", "run_job"),
        (["batch.prompts_per_step=3", "batch.generations_per_prompt=3", "batch.updates_per_rollout=2"], "batch.",
         "preflight", "run_job"),
        (["warmstart=none", "data=jsonl", "data.path=missing.jsonl"], "data.path='missing.jsonl' is not a file",
         "job", "run_job"),  # the same error through the real CLI: tests/config/bad_inputs.yaml
    ],
)
def test_bad_config_fails_in_one_line_before_any_model(request, tmp_path, overrides, message, caught_by, runner):
    """One error of each kind (caught before Hydra starts, caught in the job): one through the real CLI (the process's
    exit status and stderr), the others as jobs in this process."""
    result = request.getfixturevalue(runner)("logger=none", *overrides)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("grpolab: config error")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "model:" not in result.stderr  # the model step logs "model: ..." once it is built
    if caught_by == "preflight":  # validate() ran on the command line's values before Hydra started any job
        assert not (tmp_path / "run").exists()
    else:
        summary = _summary(tmp_path)
        assert summary["status"] == "failed" and message.split()[0] in summary["reason"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("reward", "message"),
    [("FailingReward", "raised ZeroDivisionError"), ("ShortReward", "returned 15 rewards for 16 completions")],
)
def test_misbehaving_reward_stops_the_run_naming_reward_and_sample(run_job, tmp_path, reward, message):
    result = run_job(*TINY_RUN, "rewards=[format]", f"+rewards.broken={{_target_:tests_support.{reward}}}",
                     "trusted_modules=[tests_support]")
    assert result.returncode != 0
    summary = _summary(tmp_path)
    assert summary["status"] == "failed"
    assert summary["reason"].startswith("RewardError: rewards.broken"), summary["reason"]
    assert message in summary["reason"] and "sample" in summary["reason"], summary["reason"]
    assert "completion=" in summary["reason"]


@pytest.mark.slow
def test_reward_needing_a_missing_column_fails_before_the_model(run_job, tmp_path):
    result = run_job("logger=none", "+rewards.hard={_target_:tests_support.NeedsDifficulty}",
                     "trusted_modules=[tests_support]")
    assert result.returncode == 2
    line = [line for line in result.stderr.splitlines() if line.startswith("grpolab: config error")][0]
    assert "rewards.hard needs dataset column 'difficulty' but the dataset has: prompt, answer, solution" in line
    assert "model:" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["optimizer=sgd", "optimizer=adafactor", "scheduler=cosine", "logger=tensorboard"])
def test_other_optimizers_schedulers_and_loggers_run(run_job, tmp_path, choice):
    result = run_job(*TINY_RUN, choice, cache="shared")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(tmp_path)
    assert summary["status"] == "completed"
    assert choice in (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_gsm8k_from_a_local_jsonl_file(run_job, tmp_path, gsm8k_test_split):
    without_data = [override for override in TINY_RUN if not override.startswith("data.")]
    # GSM8K chat prompts are up to 955 characters, one token each with the character tokenizer.
    # Two warm-start steps of 8 rows still go through GSM8K's solution column; each is a ~1,000-token sequence here.
    # One GRPO step: what is checked is that the run completes and evaluates the held-out rows.
    result = run_job(*without_data, "data=gsm8k", f"data.path={gsm8k_test_split}", "data.train_size=32",
                     "data.eval_size=8", "trainer.max_completion_length=16", "model.network.max_position_embeddings=1024",
                     "warmstart.steps=2", "warmstart.batch_size=8", "trainer.max_steps=1", cache="shared")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(tmp_path)
    assert summary["status"] == "completed" and summary["eval_before"]["num_samples"] == 8


@pytest.mark.slow
def test_learning_rate_is_owned_by_the_optimizer(run_job, tmp_path):
    result = run_job(*TINY_RUN, "optimizer.lr=0.0123", cache="shared")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["learning_rate"] == pytest.approx(0.0123)


@pytest.mark.slow  # Hydra builds the help text from every config group: seconds
def test_help_shows_the_groups_with_their_options_and_examples_that_compose(tmp_path, monkeypatch):
    result = train_in_process(["--help"], tmp_path, {})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("grpolab: configuration-driven GRPO")
    assert "optimized_metric" not in text and len(text.splitlines()) < 50  # not the whole composed config
    sections = {block.partition(" ==\n")[0]: block.partition(" ==\n")[2] for block in text.split("\n== ")[1:]}
    groups_section = next(body for title, body in sections.items() if title.startswith("Config groups"))
    listed = dict(line.split(": ", 1) for line in groups_section.strip().splitlines())
    expected = {group.name: ", ".join(sorted(option.stem for option in group.glob("*.yaml")))
                for group in Path(CONF_DIR).iterdir() if group.is_dir() and group.name != "hydra"}
    assert listed == expected
    examples = [line.split("#")[0].split() for line in sections["Examples"].split("\n\n")[0].strip().splitlines()]
    assert len(examples) == 5 and all(example[:3] == ["python", "-m", "grpolab.train"] for example in examples)
    # every example is a valid command: its options and keys exist (the user's own folder made for the last one)
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "my_study.yaml").write_text("# @package _global_\nseed: 1\n")
    monkeypatch.chdir(tmp_path)
    for example in examples:
        try:
            assert preflight(["grpolab-train", *example[3:]]) == ["grpolab-train", *example[3:]]
        except PreflightError as error:  # a hub preset composes, and then says why this offline machine lacks it
            assert "model=qwen2_5_0_5b_instruct" in example and "hf download Qwen/Qwen2.5-0.5B-Instruct" in str(error)


@pytest.mark.slow
def test_a_tool_run_calls_the_calculator_in_training_and_in_the_held_out_evaluation(tool_run):
    summary = json.loads((tool_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    for phase in ("eval_before", "eval_after"):
        # Greedy decoding of the warm-started model calls the tool on most held-out problems, and the calls run.
        assert summary[phase]["tool_call_frequency"] >= 0.5 and summary[phase]["tool_failure_frequency"] == 0.0
        assert summary[phase]["tool_use"] == summary[phase]["tool_call_frequency"]  # at most one call each
        assert summary[phase]["num_samples"] == 15
    rows = read_metrics(tool_run / "metrics.jsonl")
    assert all(row["tools/call_frequency"] > 0 and "tools/failure_frequency" in row for row in rows)
    assert all(row["rewards/tool_use/mean"] <= row["tools/call_frequency"] for row in rows)
    log = (tool_run / "train.log").read_text()
    assert "environment: tools add, subtract, multiply; at most 2 tool-calling rounds per completion, 5 s per call" in log
    assert "held-out tool calls per completion: " in log


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), [
    (["environment=calculator"], "environment: tools need chat prompts (lists of messages), but the train split of "
                                 "grpolab.data.arithmetic.ArithmeticTask has str prompts"),
    (["experiment=tools", "+model.tokenizer.chat_template='{{ messages[0].content }}'"],
     "environment: the chat template of model.tokenizer cannot render a tool-calling conversation"),
])
def test_an_environment_the_run_cannot_use_fails_in_one_line_before_any_model(run_job, tmp_path, overrides, message):
    result = run_job("logger=none", *overrides)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("grpolab: config error")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "model:" not in result.stderr


@pytest.mark.slow
def test_a_python_tool_run_executes_the_models_code_in_the_sandbox(run_job, tmp_path):
    # The teacher calls python(code="print(a*b)"): the rollouts' programs run in the sandbox, failures included.
    result = run_job(*TOOL_RUN, "environment=python", "data.code_tool=python", "data.eval_size=8", cache="shared")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert all(row["tools/call_frequency"] > 0 for row in rows)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "environment: tools python; at most 4 tool-calling rounds per completion, 15 s per call" in log
    assert "python sandbox: " in log
    summary = _summary(tmp_path)
    assert summary["status"] == "completed" and summary["eval_after"]["tool_call_frequency"] > 0
