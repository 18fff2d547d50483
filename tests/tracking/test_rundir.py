"""RunDirectory: summary merging and atomicity, failure recording, the manifest, metrics reading."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from grpolab.tracking.rundir import (
    SUMMARY_FIELDS,
    RunDirectory,
    RunPreempted,
    lookup_metric,
    mean_of_last,
    read_metrics,
)


def test_write_summary_merges_stages_and_always_has_the_full_schema(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path)
    run_dir.write_summary(status="running", eval_before={"accuracy": 0.25})
    run_dir.write_summary(steps=3, eval_after={"accuracy": 0.75}, extra="kept")

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["status"] == "running"
    assert summary["eval_before"] == {"accuracy": 0.25}
    assert summary["eval_after"] == {"accuracy": 0.75}
    assert summary["steps"] == 3 and summary["extra"] == "kept"
    assert summary["reason"] is None and summary["wall_time_s"] is None
    # tmp + rename leaves no temporary files behind
    assert sorted(path.name for path in tmp_path.iterdir()) == ["summary.json"]


def test_write_summary_writes_strict_json_and_rejects_unknown_status(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path)
    run_dir.write_summary(train_reward_final=float("nan"), step_time_s=float("inf"))
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["train_reward_final"] is None
    with pytest.raises(ValueError, match="status"):
        run_dir.write_summary(status="done")


def test_record_outcome_marks_failure_with_reason_and_reraises(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path)
    with pytest.raises(RuntimeError, match="out of memory"):
        with run_dir.record_outcome():
            run_dir.write_summary(steps=2)
            assert run_dir.read_summary()["status"] == "running"
            raise RuntimeError("out of memory")
    summary = run_dir.read_summary()
    assert summary["status"] == "failed"
    assert summary["reason"] == "RuntimeError: out of memory"
    assert summary["steps"] == 2  # progress written before the failure is kept
    assert summary["wall_time_s"] >= 0 and summary["finished_at"].endswith("Z")


def test_record_outcome_records_keyboard_interrupt(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with run_dir.record_outcome():
            raise KeyboardInterrupt
    assert run_dir.read_summary()["status"] == "failed"
    assert run_dir.read_summary()["reason"] == "KeyboardInterrupt"


def test_record_outcome_marks_completion(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path)
    run_dir.write_summary(status="failed", reason="ValueError: from an earlier attempt")
    with run_dir.record_outcome():
        run_dir.write_summary(eval_after={"accuracy": 1.0})
    summary = run_dir.read_summary()
    assert summary["status"] == "completed" and summary["reason"] is None
    assert summary["eval_after"] == {"accuracy": 1.0}
    assert isinstance(summary["wall_time_s"], float)


def test_record_outcome_records_a_preemption_and_lets_the_process_exit(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        with run_dir.record_outcome():
            raise RunPreempted("SIGTERM at step 7: saved checkpoint-7", 143)
    summary = run_dir.read_summary()
    assert (summary["status"], summary["reason"]) == ("preempted", "SIGTERM at step 7: saved checkpoint-7")
    assert stopped.value.code == 143 and isinstance(summary["wall_time_s"], float)


@pytest.mark.slow  # a new interpreter
def test_manifest_records_provenance_without_importing_torch(tmp_path: Path) -> None:
    # A fresh interpreter, so "torch not imported" is about this code and not about other tests.
    script = (
        "import sys; from grpolab.tracking.rundir import RunDirectory; "
        f"RunDirectory({str(tmp_path)!r}).write_manifest(seed=7, config={{'seed': 7, 'optimizer': {{'lr': 0.1}}}}, "
        "overrides=['seed=7', 'optimizer.lr=0.1']); "
        "assert 'torch' not in sys.modules, 'manifest imported torch'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 7
    assert manifest["config"] == {"seed": 7, "optimizer": {"lr": 0.1}}
    assert manifest["overrides"] == ["seed=7", "optimizer.lr=0.1"]
    assert manifest["versions"]["torch"] == metadata.version("torch")
    assert manifest["versions"]["trl"] == metadata.version("trl")
    assert manifest["versions"]["math-verify"] == metadata.version("math-verify")
    assert manifest["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    for key in ("hostname", "platform", "command", "command_line", "started_at"):
        assert manifest[key], key
    assert manifest["started_at"].endswith("Z")
    assert set(manifest["lock"]) == {"file", "sha256", "differs"}
    # grpolab is installed editable from its git checkout
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git"]["commit"])
    assert isinstance(manifest["git"]["dirty"], bool)


def test_read_metrics_skips_a_truncated_line_and_keeps_the_last_row_per_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [
        {"split": "train", "step": 1, "reward": 0.1},
        {"split": "train", "step": 2, "reward": 0.2},
        {"split": "eval", "step": 2, "reward": 0.9},
        {"split": "train", "step": 2, "reward": 0.25},  # written again after a resume
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"split": "train", "step": 3, "rew')
    assert [row["reward"] for row in read_metrics(path)] == [0.1, 0.25]
    assert [row["reward"] for row in read_metrics(path, split="eval")] == [0.9]
    assert len(read_metrics(path, split=None)) == 3
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_mean_of_last_and_lookup_metric() -> None:
    assert mean_of_last([1.0, 2.0, None, 4.0], 2) == 3.0
    assert mean_of_last([1.0], 5) == 1.0
    assert mean_of_last([None], 3) is None
    assert lookup_metric({"eval_after": {"accuracy": 0.5}}, "eval_after.accuracy") == 0.5
    with pytest.raises(KeyError, match="eval_after.accuracy"):
        lookup_metric({"eval_after": None}, "eval_after.accuracy")


def test_only_the_main_process_writes_but_any_process_records_its_failure(tmp_path: Path) -> None:
    main, other = RunDirectory(tmp_path, main_process=True), RunDirectory(tmp_path, main_process=False)
    main.write_summary(steps=3)
    assert other.write_summary(eval_after={"accuracy": 0.5})["steps"] == 3  # what the summary would hold
    assert other.write_manifest(seed=0, config={}, overrides=[]) == {} and not other.manifest_path.exists()
    assert json.loads(main.summary_path.read_text())["eval_after"] is None
    with pytest.raises(ValueError), other.record_outcome():
        raise ValueError("out of memory")
    summary = json.loads(main.summary_path.read_text())
    assert summary["status"] == "failed" and summary["steps"] == 3
    assert summary["reason"].startswith("ValueError: out of memory (process ")


def test_the_launchers_rank_decides_the_main_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert RunDirectory(tmp_path / "one").main_process
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    other = RunDirectory(tmp_path / "two")
    assert not other.main_process
    other.mark_failed(RuntimeError("boom"))
    assert json.loads(other.summary_path.read_text())["reason"] == "RuntimeError: boom (process 1 of 2)"
