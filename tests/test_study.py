"""The text-vs-token study table (``grpolab.study``) on a sweep dir laid out like Hydra and grpolab write it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra.types import RunMode
from omegaconf import OmegaConf

from grpolab.study import STUDY_CSV, STUDY_MD, StudyCallback, build_study


def write_job(sweep: Path, job: int, mode: str, level: str, seed: int, *, calls: float, reward_s: float,
              completed: bool = True) -> None:
    run = sweep / str(job)
    (run / ".hydra").mkdir(parents=True)
    overrides = [f"tokenizer_mode={mode}", f"reward_level={level}", f"seed={seed}", "experiment=text_vs_token"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    summary = {"status": "completed" if completed else "failed", "train_reward_final": 0.5 + seed / 10,
               "eval_after": {"accuracy": 0.25 * (seed + 1)}, "step_time_s": 0.2}
    if not completed:
        summary["reason"] = "RewardError: boom"
    (run / "summary.json").write_text(json.dumps(summary))
    rows = [{"split": "train", "step": step, "reward": 0.1 * step, "tokenizer/calls": calls,
             "tokenizer/encode_calls": calls / 2, "tokenizer/decode_calls": calls / 2,
             "timing/rewards_s": reward_s * step} for step in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def sweep(tmp_path):
    job = 0
    for mode, level, calls in (("text", "text", 256), ("text", "token", 256), ("ids", "text", 128),
                               ("ids", "token", 0)):
        for seed in (0, 1):
            write_job(tmp_path, job, mode, level, seed, calls=calls, reward_s=0.01 if level == "token" else 0.3)
            job += 1
    write_job(tmp_path, job, "ids", "token", 2, calls=0, reward_s=0.0, completed=False)
    return tmp_path


def test_table_has_one_row_per_variant_with_the_cost_columns(sweep):
    build_study(sweep)
    with (sweep / STUDY_CSV).open() as handle:
        rows = {(r["tokenizer_mode"], r["reward_level"]): r for r in csv.DictReader(handle)}
    assert list(rows) == [("text", "text"), ("text", "token"), ("ids", "text"), ("ids", "token")]
    ids_token = rows["ids", "token"]
    assert (ids_token["n_seeds"], ids_token["n_failed"]) == ("2", "1")
    assert float(ids_token["tokenizer calls / step mean"]) == 0.0
    assert float(rows["text", "text"]["tokenizer calls / step mean"]) == 256.0
    assert float(rows["text", "text"]["reward time / step (s) mean"]) == pytest.approx(0.45)  # mean of 0.3, 0.6
    assert float(ids_token["final train reward mean"]) == pytest.approx(0.55)
    assert float(ids_token["held-out accuracy mean"]) == pytest.approx(0.375)
    assert float(ids_token["held-out accuracy std"]) == pytest.approx(0.1767767, rel=1e-5)
    markdown = (sweep / STUDY_MD).read_text()
    assert "| ids | token | 2 | 1 | 0.5500 ± 0.0707 | 0.3750 ± 0.1768 |" in markdown
    assert "`8` (tokenizer_mode=ids, reward_level=token, seed 2): RewardError: boom" in markdown
    assert sorted(p.name for p in sweep.glob("reward_curve_*.png")) == [
        "reward_curve_ids_text.png", "reward_curve_ids_token.png", "reward_curve_text_text.png",
        "reward_curve_text_token.png"]


def test_callback_rebuilds_after_each_job_of_a_multirun_only(sweep, tmp_path):
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}}})
    StudyCallback().on_job_end(config)
    assert (sweep / STUDY_MD).exists()
    (sweep / STUDY_MD).unlink()
    config.hydra.mode = RunMode.RUN
    StudyCallback().on_job_end(config)
    assert not (sweep / STUDY_MD).exists()


def test_callback_never_raises(tmp_path, caplog):
    empty = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path / "none")}}})
    StudyCallback().on_multirun_end(empty)
    assert "study table not written" in caplog.text
