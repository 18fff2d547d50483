"""benchmarks/text_vs_token_table.py on the sweep directory ``experiment=text_vs_token`` leaves: the table of
docs/tokenizer_mode.md is the sweep report's, and it replaces only what stands between the markers.

The sweep directory is written here in the run directories' file formats (``grpolab.tracking.rundir``: the summary
by its writer, the manifest fields the report reads, the metric rows the trainer logs), for the 8 jobs the
experiment's grid gives; that the jobs themselves
count their tokenizer calls (none at all in ids mode with token-level rewards) is tested where they are counted
(tests/trainer/test_ids_mode.py, tests/trainer/test_grpo.py).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml

from grpolab.tracking.rundir import RunDirectory

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def table_script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # a folder of scripts, which import each other by name
    import text_vs_token_table

    return text_vs_token_table


def test_the_experiment_is_the_eight_job_grid_the_table_groups(compose_cfg, tmp_path) -> None:
    cfg = compose_cfg(["experiment=text_vs_token", f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    grid = {key: str(values).split(",") for key, values in cfg.hydra.sweeper.params.items()}
    assert grid == {"tokenizer_mode": ["text", "ids"], "reward_level": ["text", "token"], "seed": ["0", "1"]}
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.launcher.n_jobs == 2 and cfg.threads == 1
    assert list(cfg.hydra.callbacks.sweep.group_by) == ["tokenizer_mode", "reward_level"]


def write_study_sweep(sweep: Path) -> None:
    """What the experiment's 8 jobs leave in ``sweep``: Hydra's multirun.yaml and .hydra/overrides.yaml, and each
    run's manifest, summary and ``metrics.jsonl`` (2 train steps; a text prompt or a text-level reward costs
    tokenizer calls)."""
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN"}}))
    cells = itertools.product(("text", "ids"), ("text", "token"), (0, 1))
    for job, (mode, level, seed) in enumerate(cells):
        overrides = [f"tokenizer_mode={mode}", f"reward_level={level}", f"seed={seed}"]
        run = RunDirectory(sweep / str(job))
        (run.path / ".hydra").mkdir(parents=True)
        (run.path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        manifest = {"seed": seed, "overrides": overrides, "config": {"seed": seed, "reward_level": level}}
        run.manifest_path.write_text(json.dumps(manifest))
        encodes, decodes = (0 if mode == "ids" else 32), (0 if level == "token" else 32)
        rows = [{"split": "train", "step": step, "loss": 0.0, "reward": 0.2 * step + 0.1 * seed, "step_time_s": 0.5,
                 "timing/rewards_s": 0.01 if level == "token" else 0.03, "tokenizer/calls": encodes + decodes,
                 "tokenizer/encode_calls": encodes, "tokenizer/decode_calls": decodes} for step in (1, 2)]
        run.metrics_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        run.write_summary(status="completed", steps=2, eval_before={"accuracy": 0.0},
                          eval_after={"accuracy": 0.25 * (seed + 1)}, train_reward_final=rows[-1]["reward"],
                          wall_time_s=3.0, step_time_s=0.5)


def test_the_study_table_is_regenerated_into_the_page(table_script, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_study_sweep(sweep)
    page = tmp_path / "tokenizer_mode.md"
    page.write_text("# Title\n\nbefore\n<!-- text_vs_token table: start -->\nold table\n"
                      "<!-- text_vs_token table: end -->\nafter\n", encoding="utf-8")
    assert table_script.main([str(sweep), "--doc", str(page)]) == 0, capsys.readouterr().err
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n<!-- text_vs_token table: start -->\nMeasured ")
    assert text.endswith("<!-- text_vs_token table: end -->\nafter\n") and "old table" not in text
    assert "8 jobs, 8 completed" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| tokenizer_mode | reward_level | seeds | failed | final reward")
    assert rows[0].endswith("| timing/rewards_s / step | tokenizer/calls / step | tokenizer/encode_calls / step | "
                            "tokenizer/decode_calls / step |")
    assert [row.split(" | ")[:4] for row in rows[1:]] == [
        ["| text", "text", "2", "0"], ["| text", "token", "2", "0"], ["| ids", "text", "2", "0"],
        ["| ids", "token", "2", "0"]]
    calls = [cell.split(" ± ")[0] for cell in rows[-1].strip("| ").split(" | ")[-3:]]
    assert [float(cell) for cell in calls] == [0.0, 0.0, 0.0]  # ids/token: no tokenizer call at all
    text_calls = [cell.split(" ± ")[0] for cell in rows[1].strip("| ").split(" | ")[-3:]]
    assert [float(cell) for cell in text_calls] == [64.0, 32.0, 32.0]


def test_an_empty_sweep_dir_fails_in_one_line_and_the_file_is_left_alone(table_script, tmp_path, capsys):
    page = tmp_path / "tokenizer_mode.md"
    page.write_text("no markers\n", encoding="utf-8")
    (tmp_path / "sweep").mkdir()
    assert table_script.main([str(tmp_path / "sweep"), "--doc", str(page)]) == 1
    assert capsys.readouterr().err.startswith("text_vs_token_table: no run directories")
    assert page.read_text(encoding="utf-8") == "no markers\n"
