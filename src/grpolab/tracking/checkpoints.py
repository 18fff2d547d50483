"""Checkpoints in a run directory: which ones are complete, which one a resume continues from, and how the run
directory is brought back to that point. Imports neither torch nor transformers (the resume lookup runs before them).

The Trainer writes ``<run_dir>/checkpoint-<step>/`` (weights or LoRA adapter, optimizer, scheduler, RNG states,
``trainer_state.json``); grpolab adds ``grpolab_state.json`` (its own state: ``grpolab.trainer.resume_state``) and
``grpolab_process_<rank>.pt`` (per-process pending state), and then, last, ``checkpoint_complete.json``: every file
of the checkpoint with its size. A checkpoint is complete when that marker parses and every file it lists is there
with that size, so neither a checkpoint a kill interrupted (no marker yet) nor one that the Trainer's rotation was
deleting (files missing) is ever resumed from.

    >>> checkpoint = prepare_resume(Path("outputs/2024-05-01/12-00-00"))  # doctest: +SKIP
    PosixPath('outputs/2024-05-01/12-00-00/checkpoint-150')
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from grpolab.tracking.jsonfiles import read_json, utc_now_iso, write_json_atomic
from grpolab.tracking.rundir import METRICS_FILE, SUMMARY_FILE

log = logging.getLogger(__name__)

#: transformers' ``PREFIX_CHECKPOINT_DIR``: the Trainer names its checkpoints ``checkpoint-<global_step>``.
CHECKPOINT_PREFIX = "checkpoint"
COMPLETE_MARKER = "checkpoint_complete.json"
GRPOLAB_STATE_FILE = "grpolab_state.json"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The step of a ``checkpoint-<step>`` directory name; None for any other name.

    >>> checkpoint_step(Path("run/checkpoint-150")), checkpoint_step(Path("run/model"))
    (150, None)
    """
    match = _CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Every ``checkpoint-<step>`` directory of ``run_dir``, complete or not, in step order."""
    if not run_dir.is_dir():
        return []
    found = [path for path in run_dir.iterdir() if path.is_dir() and checkpoint_step(path) is not None]
    return sorted(found, key=lambda path: checkpoint_step(path) or 0)


def _files_with_sizes(checkpoint: Path) -> dict[str, int]:
    return {str(path.relative_to(checkpoint)): path.stat().st_size
            for path in sorted(checkpoint.rglob("*")) if path.is_file() and path.name != COMPLETE_MARKER}


def mark_complete(checkpoint: Path) -> None:
    """Write the completeness marker, last and atomically: the checkpoint's files and their sizes."""
    write_json_atomic(checkpoint / COMPLETE_MARKER, {
        "step": checkpoint_step(checkpoint), "written_at": utc_now_iso(), "files": _files_with_sizes(checkpoint)})


def unmark(checkpoint: Path) -> None:
    """A checkpoint being (re)written is incomplete until ``mark_complete`` runs again."""
    (checkpoint / COMPLETE_MARKER).unlink(missing_ok=True)


def is_complete(checkpoint: Path) -> bool:
    """Whether the marker is there and every file it lists exists with the size it recorded."""
    marker = read_json(checkpoint / COMPLETE_MARKER)
    files = marker.get("files") if marker else None
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        try:
            if (checkpoint / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step in ``run_dir``; None when there is none."""
    return next((path for path in reversed(checkpoint_dirs(run_dir)) if is_complete(path)), None)


def read_grpolab_state(checkpoint: Path) -> dict[str, Any]:
    """grpolab's part of a checkpoint (``grpolab_state.json``); empty when missing (a checkpoint of other code)."""
    return read_json(checkpoint / GRPOLAB_STATE_FILE) or {}


def resume_requested(resume: bool, run_dir: Path) -> bool:
    """``resume=true``; or a requeued job, which reruns the same command (without ``resume=true``): a job that Slurm
    restarted (``SLURM_RESTART_COUNT`` > 0: requeued after preemption, or after a node failure), or a submitit job
    whose run directory records ``status: preempted`` (submitit's local executor requeues without a restart count).
    """
    if resume or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        return True
    return bool(os.environ.get("SUBMITIT_EXECUTOR")) and (read_json(run_dir / SUMMARY_FILE) or {}).get(
        "status") == "preempted"


def prepare_resume(run_dir: Path) -> Path | None:
    """The checkpoint a resume continues from, with the run directory brought back to it; None when there is none.

    Incomplete checkpoints (a kill landed while one was written) are deleted, and ``metrics.jsonl`` is cut back to
    the rows written before the checkpoint was saved (this drops the rows of steps the resumed run does again, and a
    torn last line), so every step ends up in it exactly once.
    """
    checkpoint = newest_complete_checkpoint(run_dir)
    if checkpoint is None:
        return None
    for stale in checkpoint_dirs(run_dir):
        if not is_complete(stale):
            log.warning("resume: deleting the incomplete checkpoint %s (a kill interrupted its writing)", stale)
            shutil.rmtree(stale, ignore_errors=True)
    position = read_grpolab_state(checkpoint).get("metrics_file_bytes")
    if isinstance(position, int):
        cut_metrics_file(run_dir / METRICS_FILE, position)
    log.info("resume: continuing from %s", checkpoint)
    return checkpoint


def cut_metrics_file(path: Path, position: int) -> None:
    """Keep the first ``position`` bytes of a ``metrics.jsonl`` (the file as it was when a checkpoint was saved).

    A file shorter than that, or whose kept part does not end a line, was changed by something else: it is then
    only repaired (a torn last line removed), never cut at a point that is not a row boundary.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return
    with path.open("rb+") as handle:
        if position <= size and (position == 0 or _byte_at(handle, position - 1) == b"\n"):
            handle.truncate(position)
        else:
            log.warning("resume: %s is not as the checkpoint left it (%d bytes, %d recorded); keeping its complete "
                        "rows", path, size, position)
            handle.truncate(_end_of_last_line(handle, size))


def _byte_at(handle: Any, offset: int) -> bytes:
    handle.seek(offset)
    return handle.read(1)


def _end_of_last_line(handle: Any, size: int) -> int:
    """Offset just after the last newline (0 when there is none), reading backwards in blocks."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        handle.seek(start)
        block = handle.read(end - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def archive_checkpoints(run_dir: Path, attempt: int) -> None:
    """Move the checkpoints of an attempt that will not be continued out of the resume lookup's way
    (``checkpoint-<step>`` -> ``checkpoint.attempt-<n>-<step>``)."""
    for checkpoint in checkpoint_dirs(run_dir):
        checkpoint.rename(run_dir / f"{CHECKPOINT_PREFIX}.attempt-{attempt}-{checkpoint_step(checkpoint)}")
