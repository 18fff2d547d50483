"""Shared test helpers for tracking: reading what wandb wrote to disk in offline mode."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def read_wandb_records(run_file: Path) -> list[Any]:
    """Decode a ``run-<id>.wandb`` file: a 7-byte header, then LevelDB-log records in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, records, pending = run_file.read_bytes(), 32768, 7, [], b""
    while position + 7 <= len(data):
        left_in_block = block - position % block
        if left_in_block < 7:
            position += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:  # block padding
            position += left_in_block
            continue
        payload, position = data[position + 7 : position + 7 + length], position + 7 + length
        pending = payload if kind in (1, 2) else pending + payload  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@dataclass
class OfflineWandbRun:
    run: Any  # the RunRecord protobuf: run_id, project, run_group, tags, ...
    summary: dict[str, Any]
    history_keys: set[str]
    exit_code: int


def read_offline_wandb_run(run_dir: Path) -> OfflineWandbRun:
    """The single offline run under ``run_dir/wandb`` (asserts there is exactly one)."""
    run_files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, run_files
    # wandb-core writes the file asynchronously: wait (bounded) until the exit record has landed.
    deadline = time.monotonic() + 30
    records = read_wandb_records(run_files[0])
    while not any(record.WhichOneof("record_type") == "exit" for record in records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = read_wandb_records(run_files[0])
    by_type: dict[str, list[Any]] = {}
    for record in records:
        by_type.setdefault(record.WhichOneof("record_type"), []).append(record)
    summary = {
        item.key or "/".join(item.nested_key): json.loads(item.value_json)
        for record in by_type.get("summary", [])
        for item in record.summary.update
    }
    history_keys = {
        item.key or "/".join(item.nested_key) for record in by_type.get("history", []) for item in record.history.item
    }
    return OfflineWandbRun(by_type["run"][0].run, summary, history_keys, by_type["exit"][0].exit.exit_code)


@pytest.fixture
def offline_wandb_run() -> Callable[[Path], OfflineWandbRun]:
    return read_offline_wandb_run


@pytest.fixture
def clean_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No wandb/TensorBoard settings inherited from the shell."""
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(name, raising=False)
