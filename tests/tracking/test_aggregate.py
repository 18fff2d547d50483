"""The report (``build_report``) over run directories in the documented file format (``grpolab.tracking.rundir``)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from grpolab.tracking.aggregate import build_report
from tests_support import COST_METRICS, make_run, write_study, write_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SQRT2 = math.sqrt(2)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return write_sweep(tmp_path)


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["optimizer.lr"]: row for row in csv.DictReader(handle)}


def test_sweep_table_means_stds_and_failed_jobs(sweep: Path) -> None:
    report = build_report(sweep, last_k=2)

    assert report.swept_keys == ["optimizer.lr"]  # seed excluded, model=tiny constant
    rows = {row.values["optimizer.lr"]: row for row in report.rows}
    assert [row.values["optimizer.lr"] for row in report.rows] == ["0.01", "0.1", "1.0"]

    high = rows["0.1"].stats  # seeds 0 and 1; final reward = mean of the last 2 logged rewards
    assert rows["0.1"].n_seeds == 2 and not rows["0.1"].failed
    assert high["train_reward_final"].mean == pytest.approx((0.5 + 0.65) / 2, abs=1e-15)
    assert high["train_reward_final"].std == pytest.approx(0.15 / SQRT2, abs=1e-15)
    assert high["eval_after_accuracy"].mean == pytest.approx(0.6, abs=1e-15)
    assert high["eval_after_accuracy"].std == pytest.approx(0.2 / SQRT2, abs=1e-15)
    assert high["eval_before_accuracy"].mean == pytest.approx(0.1) and high["eval_before_accuracy"].std == 0.0
    assert high["wall_time_s"].mean == 11.0 and high["step_time_s"].mean == 1.25
    assert high["step_time_s"].std == pytest.approx(0.5 / SQRT2, abs=1e-15)

    low = rows["0.01"].stats  # seeds 0 and 2 completed; seed 1 failed and is not averaged in
    assert rows["0.01"].n_seeds == 2 and [run.name for run in rows["0.01"].failed] == ["3"]
    assert low["train_reward_final"].mean == pytest.approx((0.15 + 0.3) / 2, abs=1e-15)
    assert low["train_reward_final"].std == pytest.approx(0.15 / SQRT2, abs=1e-15)
    assert low["eval_after_accuracy"].mean == pytest.approx(0.3, abs=1e-15)
    assert low["eval_before_accuracy"].mean == pytest.approx(0.1, abs=1e-15)
    assert low["wall_time_s"].mean == 10.0 and low["step_time_s"].mean == pytest.approx(0.6)

    killed = rows["1.0"]
    assert killed.n_seeds == 0 and killed.failed[0].status == "running"
    assert killed.stats["train_reward_final"].mean is None and killed.stats["eval_after_accuracy"].mean is None

    table = csv_rows(sweep / "report.csv")
    assert float(table["0.1"]["train_reward_final_mean"]) == high["train_reward_final"].mean
    assert float(table["0.1"]["eval_after_accuracy_std"]) == high["eval_after_accuracy"].std
    assert (table["0.01"]["n_seeds"], table["0.01"]["n_failed"], table["0.01"]["seeds"]) == ("2", "1", "0;2")
    assert table["1.0"]["eval_after_accuracy_mean"] == "" and table["1.0"]["n_failed"] == "1"

    markdown = (sweep / "report.md").read_text()
    assert "| optimizer.lr | seeds | failed | final reward (last 2) |" in markdown
    assert "Final reward = mean of the last 2 logged train rewards;" in markdown
    assert ("| 0.1 | 2 | 0 | 0.5750 ± 0.1061 | 0.6000 ± 0.1414 | 0.1000 ± 0.0000 | 11.0 ± 1.4 | 1.250 ± 0.354 |"
            in markdown)
    assert "| 0.01 | 2 | **1** | 0.2250 ± 0.1061 | 0.3000 ± 0.1414 |" in markdown
    assert "| 1.0 | 0 | **1** | — | — |" in markdown
    assert "| 3 | optimizer.lr=0.01 | 1 | FAILED | RuntimeError: out of memory |" in markdown
    assert "| 10 | optimizer.lr=1.0 | 0 | RUNNING | no final status" in markdown

    for name in ("reward_curves.png", "accuracy_vs_optimizer.lr.png"):
        assert (sweep / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in markdown


def test_final_reward_falls_back_to_the_summary_without_metrics(sweep: Path) -> None:
    (sweep / "0" / "metrics.jsonl").unlink()  # e.g. deleted to save space: the summary value is used
    report = build_report(sweep, last_k=1, plots=False)
    high = next(row for row in report.rows if row.values["optimizer.lr"] == "0.1")
    assert high.stats["train_reward_final"].mean == pytest.approx((0.6 + 0.8) / 2, abs=1e-15)
    assert not (sweep / "reward_curves.png").exists()


def test_two_swept_keys_and_a_directory_of_single_runs_found_recursively(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    values = [("adamw", "0.0", 0, 0.5), ("adamw", "0.1", 0, 0.6), ("sgd", "0.0", 0, 0.1), ("sgd", "0.0", 1, 0.3)]
    for index, (optimizer, beta, seed, accuracy) in enumerate(values):
        make_run(root / "2024-05-01" / f"12-00-0{index}", [f"optimizer={optimizer}", f"trainer.beta={beta}",
                 f"seed={seed}"], [0.0, accuracy], eval_after=accuracy)
    make_run(root / "2024-05-01" / "12-00-09" / "wandb" / "stray", ["seed=0"], [0.0], eval_after=0.0)  # ignored

    report = build_report(root, last_k=1)
    assert len(report.runs) == 4
    assert report.swept_keys == ["optimizer", "trainer.beta"]
    sgd = next(row for row in report.rows if row.values == {"optimizer": "sgd", "trainer.beta": "0.0"})
    assert sgd.n_seeds == 2 and sgd.stats["eval_after_accuracy"].mean == pytest.approx(0.2, abs=1e-15)
    assert (root / "accuracy_vs_optimizer.png").exists() and (root / "accuracy_vs_trainer.beta.png").exists()


def test_a_single_run(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", ["seed=3"], [0.25, 0.75], eval_after=0.5)
    report = build_report(run_dir, last_k=2)
    assert report.swept_keys == [] and len(report.rows) == 1
    row = report.rows[0]
    assert row.n_seeds == 1 and row.stats["train_reward_final"].mean == 0.5
    assert row.stats["train_reward_final"].std is None
    markdown = (run_dir / "report.md").read_text()
    assert "| all runs | 1 | 0 | 0.5000 | 0.5000 | 0.1000 | 10.0 | 1.000 |" in markdown
    assert (run_dir / "reward_curves.png").exists() and (run_dir / "report.csv").exists()


def test_header_says_how_many_rewards_were_averaged_when_runs_logged_fewer(sweep: Path) -> None:
    build_report(sweep, last_k=5, plots=False)  # the completed runs logged 4 rewards each
    markdown = (sweep / "report.md").read_text()
    assert "| optimizer.lr | seeds | failed | final reward (last 4) |" in markdown
    assert ("Final reward = mean of the last 4 logged train rewards (5 asked for; runs that logged fewer average all "
            "of theirs)") in markdown and "last 5" not in markdown
    (sweep / "0" / "metrics.jsonl").write_text(json.dumps({"split": "train", "step": 1, "reward": 0.5}) + "\n")
    build_report(sweep, last_k=5, plots=False)
    assert "| optimizer.lr | seeds | failed | final reward (last 1-4) |" in (sweep / "report.md").read_text()


# ------------------------------------------------------------------------------------ --group-by and --metrics

@pytest.fixture
def study(tmp_path: Path) -> Path:
    return write_study(tmp_path)


def test_group_by_gives_one_row_per_group_with_the_per_step_metrics(study: Path) -> None:
    report = build_report(study, group_by=["tokenizer_mode", "reward_level"], metrics=COST_METRICS)

    assert [tuple(row.values.values()) for row in report.rows] == [  # in the order the sweep ran them
        ("text", "text"), ("text", "token"), ("ids", "text"), ("ids", "token")]
    with (study / "report.csv").open() as handle:
        table = {(row["tokenizer_mode"], row["reward_level"]): row for row in csv.DictReader(handle)}
    text_text, ids_token = table["text", "text"], table["ids", "token"]
    assert (ids_token["n_seeds"], ids_token["n_failed"], ids_token["seeds"]) == ("2", "1", "0;1")
    assert float(text_text["tokenizer/calls_mean"]) == 256.0 and float(text_text["tokenizer/calls_std"]) == 0.0
    assert float(table["ids", "text"]["tokenizer/encode_calls_mean"]) == 64.0
    assert float(ids_token["tokenizer/calls_mean"]) == 0.0
    assert float(text_text["timing/rewards_s_mean"]) == pytest.approx(0.45, abs=1e-15)  # mean of 0.3 and 0.6
    assert float(ids_token["timing/rewards_s_mean"]) == pytest.approx(0.015, abs=1e-15)
    assert float(ids_token["train_reward_final_mean"]) == pytest.approx(0.35, abs=1e-15)  # seeds: 0.3, 0.4
    assert float(ids_token["eval_after_accuracy_mean"]) == pytest.approx(0.375, abs=1e-15)
    assert float(ids_token["eval_after_accuracy_std"]) == pytest.approx(0.25 / SQRT2, abs=1e-15)
    assert float(ids_token["step_time_s_mean"]) == pytest.approx(0.25, abs=1e-15)
    assert float(ids_token["step_time_s_std"]) == pytest.approx(0.1 / SQRT2, abs=1e-15)

    markdown = (study / "report.md").read_text()
    assert "Grouped by `tokenizer_mode`, `reward_level` (a run's override" in markdown
    assert "also varying" not in markdown  # the group keys are exactly the swept ones
    assert "Final reward = mean of the last 2 logged train rewards (5 asked for;" in markdown
    assert ("| tokenizer_mode | reward_level | seeds | failed | final reward (last 2) | accuracy after | "
            "accuracy before | wall time (s) | step time (s) | timing/rewards_s / step | tokenizer/calls / step | "
            "tokenizer/encode_calls / step | tokenizer/decode_calls / step |") in markdown
    assert ("| ids | token | 2 | **1** | 0.3500 ± 0.0707 | 0.3750 ± 0.1768 | 0.1000 ± 0.0000 | 10.0 ± 0.0 | "
            "0.250 ± 0.071 | 0.0150 ± 0.0000 | 0.0 ± 0.0 | 0.0 ± 0.0 | 0.0 ± 0.0 |") in markdown  # per column
    assert "| text | text | 2 | 0 | 0.3500 ± 0.0707 |" in markdown and "| 256.0 ± 0.0 | 128.0 ± 0.0 |" in markdown
    assert "| 8 | tokenizer_mode=ids, reward_level=token | 2 | FAILED | RewardError: boom |" in markdown

    curves = ["reward_curve_text_text.png", "reward_curve_text_token.png", "reward_curve_ids_text.png",
              "reward_curve_ids_token.png"]
    assert sorted(path.name for path in study.glob("reward_curve_*.png")) == sorted(curves)
    for name in [*curves, "reward_curves.png", "accuracy_vs_tokenizer_mode.png", "accuracy_vs_reward_level.png"]:
        assert (study / name).read_bytes()[:8] == PNG_MAGIC and f"]({name})" in markdown, name


def test_group_by_values_come_from_override_then_config_group_then_config(tmp_path: Path) -> None:
    def config(level: str) -> dict[str, Any]:  # as manifest.json records it: tokenizer_mode is a group's node
        return {"reward_level": level, "tokenizer_mode": {"mode": "unused"}, "trainer": {"beta": 0.0},
                "dynamic_sampling": {"enabled": False}}

    choices = {"model": "tiny", "tokenizer_mode": "text", "experiment": None, "hydra/launcher": "basic"}
    make_run(tmp_path / "a", [], [0.5], eval_after=0.5, config=config("text"), choices=choices)
    make_run(tmp_path / "b", ["tokenizer_mode=ids"], [0.2], eval_after=0.2, config=config("text"),
             choices={**choices, "tokenizer_mode": "ids"})
    make_run(tmp_path / "c", ["reward_level=token"], [0.1], eval_after=0.1, config=config("token"), choices=choices)
    make_run(tmp_path / "d", ["tokenizer_mode=ids"], [0.3], eval_after=0.3)  # no hydra.yaml, empty config

    report = build_report(tmp_path, group_by=["tokenizer_mode", "reward_level"], plots=False)
    rows = {tuple(row.values.values()): [run.name for run in row.completed] for row in report.rows}
    assert rows == {("text", "text"): ["a"], ("ids", "text"): ["b"], ("text", "token"): ["c"],
                    ("ids", "(not set)"): ["d"]}
    assert [tuple(row.values.values()) for row in report.rows][:2] == [("text", "text"), ("text", "token")]

    report = build_report(tmp_path, group_by=["model", "trainer.beta", "dynamic_sampling.enabled"], plots=False)
    assert [tuple(row.values.values()) for row in report.rows] == [
        ("tiny", "0.0", "false"), ("(not set)", "(not set)", "(not set)")]
    report = build_report(tmp_path, group_by=["tokenizer_mode"], plots=False)
    assert report.rows[0].stats["eval_after_accuracy"].mean == pytest.approx(0.3, abs=1e-15)  # a and c
    assert "; also varying within groups: `reward_level`." in (tmp_path / "report.md").read_text()


def test_group_by_key_or_metric_no_run_has_is_a_one_line_error(study: Path) -> None:
    with pytest.raises(ValueError, match=r"^group-by key 'tokenizer_mod' is set in no run .*overridden keys: "
                                         r"experiment, reward_level, seed, tokenizer_mode$"):
        build_report(study, group_by=["tokenizer_mod"])
    with pytest.raises(ValueError, match=r"^metric 'tokenizer/call' is in no run's train rows of metrics.jsonl; "
                                         r"logged: .*tokenizer/calls"):
        build_report(study, metrics=["tokenizer/call"])
    assert not (study / "report.md").exists()


def test_runs_with_tools_get_trls_tool_frequencies_and_the_held_out_tool_calls(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed, calls in ((0, 0.5), (1, 0.7)):
        run = make_run(root / str(seed), [f"seed={seed}", "environment=calculator"], [0.1, 0.5], eval_after=0.8,
                       per_step=lambda step, calls=calls: {"tools/call_frequency": calls * step,
                                                           "tools/failure_frequency": 0.25})
        summary = json.loads((run / "summary.json").read_text())
        summary["eval_after"]["tool_call_frequency"] = 1.0
        (run / "summary.json").write_text(json.dumps(summary))
    make_run(root / "2", ["seed=0", "environment=none"], [0.0, 0.0], eval_after=0.0)
    report = build_report(root, plots=False)
    calculator, without = report.rows
    assert calculator.stats["tools/call_frequency"].mean == pytest.approx((0.75 + 1.05) / 2)
    assert calculator.stats["tools/failure_frequency"].mean == 0.25
    assert calculator.stats["eval_after_tool_call_frequency"].mean == 1.0
    assert without.stats["tools/call_frequency"].mean is None  # a run without tools: "—", not 0
    assert "| tool calls / completion (train) | failed calls / call (train) |" in report.markdown
    assert "tools/call_frequency_mean" in (root / "report.csv").read_text().splitlines()[0]
    plain = tmp_path / "plain"
    make_run(plain / "0", ["seed=0"], [0.1], eval_after=0.5)
    assert "tool calls" not in build_report(plain, plots=False).markdown  # only runs with tools get the columns
