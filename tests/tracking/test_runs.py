"""Reading run directories back (grpolab.tracking.runs) from files written by the real writer, RunDirectory."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from grpolab.tracking.rundir import RunDirectory, read_hydra_choices, read_overrides
from grpolab.tracking.runs import find_run_dirs, load_run


def write_run(path: Path, overrides: list[str], rewards: list[float | None], hydra: bool = True) -> RunDirectory:
    run = RunDirectory(path)
    config = {"reward_level": "token", "tokenizer_mode": {"mode": "ids"}, "trainer": {"beta": 0.04},
              "rewards": {"accuracy": {"weight": 1.0}}, "eval": {"metrics": ["accuracy"]}}
    run.write_manifest(seed=3, config=config, overrides=overrides)
    if hydra:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        choices = {"model": "tiny", "tokenizer_mode": "ids", "experiment": None, "hydra/launcher": "joblib"}
        (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    run.write_summary(status="completed", train_reward_final=0.25, train_reward_final_window=5)
    run.metrics_path.write_text("".join(json.dumps({"split": "train", "step": step, "reward": reward}) + "\n"
                                        for step, reward in enumerate(rewards, start=1)))
    return run


def test_values_come_from_the_override_then_the_config_group_then_the_config(tmp_path: Path) -> None:
    write_run(tmp_path / "run", ["reward_level=text", "+extra=1"], [0.0, None, 1.0])
    assert read_hydra_choices(tmp_path / "run") == {"model": "tiny", "tokenizer_mode": "ids"}
    assert read_overrides(tmp_path / "run") == ["reward_level=text", "+extra=1"]
    run = load_run(tmp_path / "run", tmp_path)
    assert (run.name, run.seed, run.status, run.overrides) == ("run", 3, "completed",
                                                               {"reward_level": "text", "extra": "1"})
    assert run.value_of("reward_level") == "text"  # the override, not the config's "token"
    assert run.value_of("tokenizer_mode") == "ids"  # the group option, not the config node
    assert run.value_of("trainer.beta") == "0.04" and run.value_of("model") == "tiny"
    assert run.value_of("rewards") is None and run.value_of("eval.metrics") is None  # no single value to name
    assert run.value_of("trainer.missing") is None and run.value_of("reward_level.deeper") is None


def test_final_reward_and_how_many_rewards_it_averaged(tmp_path: Path) -> None:
    short = load_run(write_run(tmp_path / "0", [], [0.0, None, 1.0]).path, tmp_path)
    assert short.final_reward(5) == 0.5 and short.final_reward_window(5) == 2
    assert short.final_reward(1) == 1.0 and short.final_reward_window(1) == 1
    no_metrics = write_run(tmp_path / "1", [], [], hydra=False)
    no_metrics.metrics_path.unlink()
    record = load_run(no_metrics.path, tmp_path)
    assert record.final_reward(3) == 0.25 and record.final_reward_window(3) == 5  # the summary's own window
    assert [path.name for path in find_run_dirs(tmp_path)] == ["0", "1"]
