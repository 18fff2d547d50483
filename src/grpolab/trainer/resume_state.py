"""grpolab's part of the Trainer's checkpoints: saved with them, restored when training resumes from one.

The Trainer's own checkpoint (``Trainer._save_checkpoint``) holds the weights (or the LoRA adapter), optimizer,
scheduler, RNG states and ``trainer_state.json``, and ``trainer.train(resume_from_checkpoint=...)`` restores them and
skips the dataloader forward to the step. What it does not hold, and what a resumed run needs to take exactly the
steps an uninterrupted run takes:

- the data order across epochs: TRL's ``RepeatSampler`` draws one permutation per epoch from a generator seeded once,
  so a fresh sampler would give a resumed epoch ``e > 0`` epoch 0's order. ``EpochRepeatSampler`` draws epoch ``e``'s
  permutation whatever happened before (``set_epoch``, which the Trainer calls at the start of every epoch);
- where the step is inside a rollout (TRL's micro-step counter, and the rollout's generated completions when the
  checkpoint falls between two updates of one rollout: ``updates_per_rollout`` or ``num_iterations`` > 1);
- the open log window (steps since the last log: the Trainer's summed loss, TRL's metric lists, grpolab's cost
  counters), so the first log after a resume averages the steps an uninterrupted run's would;
- the dynamic-sampling refill stream's position;
- the position of ``metrics.jsonl`` (the resumed run cuts the file back there: ``grpolab.tracking.checkpoints``);
- the identity of the starting policy (the warm start) and of the KL reference: a resume that would continue from
  another one stops with an error.

``GrpolabTrainer._save_checkpoint`` writes ``grpolab_state.json`` (process 0; shared state) and
``grpolab_process_<rank>.pt`` (every process; its own pending loss and rollout) before the Trainer's files, then the
completeness marker after all of them, then rotates old checkpoints (the Trainer's rotation is deferred until the new
checkpoint is complete, so ``save_total_limit=1`` never leaves only an incomplete one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import rotate_checkpoints
from trl.trainer.utils import RepeatSampler

from grpolab.tracking.checkpoints import GRPOLAB_STATE_FILE, mark_complete, read_grpolab_state
from grpolab.tracking.jsonfiles import write_json_atomic
from grpolab.tracking.rundir import METRICS_FILE

log = logging.getLogger(__name__)

STATE_FORMAT = 1


def process_state_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"grpolab_process_{rank}.pt"


def policy_fingerprint(model: torch.nn.Module | None, sample: int = 1024) -> str | None:
    """A cheap identity of a model's weights: a hash of the first ``sample`` values of every tensor, in name order.

    >>> policy_fingerprint(torch.nn.Linear(2, 2)) == policy_fingerprint(torch.nn.Linear(2, 2))
    False
    """
    if model is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().flatten()[:sample].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class EpochRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` whose epoch ``e`` has the same order whether or not epochs ``0..e-1`` ran in this
    process: ``set_epoch(e)`` replays the generator to the state the uninterrupted run has at that epoch.

    >>> sampler = EpochRepeatSampler(range(6), mini_repeat_count=1, batch_size=2, seed=0)
    >>> first, second = list(sampler), list(sampler)
    >>> resumed = EpochRepeatSampler(range(6), mini_repeat_count=1, batch_size=2, seed=0)
    >>> resumed.set_epoch(1)
    >>> list(resumed) == second != first
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epochs_drawn = 0

    @classmethod
    def like(cls, sampler: RepeatSampler) -> EpochRepeatSampler:
        return cls(sampler.data_source, mini_repeat_count=sampler.mini_repeat_count, batch_size=sampler.batch_size,
                   repeat_count=sampler.repeat_count, shuffle=sampler.shuffle, seed=sampler.seed)

    def set_epoch(self, epoch: int) -> None:
        if not self.shuffle or epoch == self._epochs_drawn:
            return
        self.generator.manual_seed(self.seed) if self.seed is not None else self.generator.seed()
        for _ in range(epoch):  # one permutation per epoch, as RepeatSampler.__iter__ draws it
            torch.randperm(self.num_samples, generator=self.generator)
        self._epochs_drawn = epoch

    def __iter__(self) -> Iterator[int]:
        self._epochs_drawn += 1
        yield from super().__iter__()


def save_grpolab_state(trainer: Any, checkpoint: Path) -> None:
    """Write grpolab's state of ``trainer`` into ``checkpoint`` (every process its own file, process 0 the shared)."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    shared, local = trainer.pending_state()
    _save_torch_atomic(local, process_state_file(checkpoint, trainer.args.process_index))
    if trainer.args.should_save:
        metrics_file = Path(trainer.args.output_dir) / METRICS_FILE
        write_json_atomic(checkpoint / GRPOLAB_STATE_FILE, {
            "format": STATE_FORMAT,
            "step": trainer.state.global_step,
            "metrics_file_bytes": metrics_file.stat().st_size if metrics_file.exists() else None,
            "identity": trainer.run_identity,
            **shared,  # NaN in TRL's metric lists (a reward that scored nothing in a step) is written as null
        })


def load_grpolab_state(trainer: Any, checkpoint: Path) -> None:
    """Restore what ``save_grpolab_state`` wrote, after checking the run starts from the same policy and reference."""
    shared = read_grpolab_state(checkpoint)
    if shared.get("format") != STATE_FORMAT:
        raise RuntimeError(f"resume: {checkpoint} has no grpolab state of format {STATE_FORMAT} "
                           f"({GRPOLAB_STATE_FILE}); it was not written by this version of grpolab")
    recorded, current = shared.get("identity") or {}, trainer.run_identity
    for key in current:
        if recorded.get(key) != current[key]:
            raise RuntimeError(
                f"resume: {checkpoint} was trained from another {key.replace('_', ' ')} ({recorded.get(key)}) than "
                f"this run builds ({current[key]}): the model, data or warm-start config changed since; run without "
                "resume=true (or in a new run directory) to start over")
    local_file = process_state_file(checkpoint, trainer.args.process_index)
    if not local_file.exists():
        raise RuntimeError(f"resume: {local_file} is missing: resume with the number of processes the checkpoint "
                           "was written with")
    local = torch.load(local_file, map_location=trainer.accelerator.device, weights_only=True)
    trainer.restore_pending_state(_null_as_nan(shared), local)
    log.info("resume: restored grpolab's state of step %s from %s", shared.get("step"), checkpoint)


def load_checkpoint_weights(model: torch.nn.Module, checkpoint: Path) -> bool:
    """Load a checkpoint's safetensors weights into ``model`` as ``from_pretrained`` would, renaming the keys back;
    False when the checkpoint has none (the Trainer's own loading then handles it).

    Why: ``save_pretrained`` writes a checkpoint in the original layout of the architecture (transformers 5 reverts
    the renames ``from_pretrained`` applies: Qwen2-VL's ``model.language_model.*`` is saved as ``model.*``), but the
    Trainer resumes with ``model.load_state_dict(..., strict=False)`` on the saved keys, so a VLM silently resumed with
    none of its trained weights (transformers issue 43701). A key that is still missing or unexpected after the
    renames stops the resume.
    """
    from safetensors.torch import load_file
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

    index = checkpoint / SAFE_WEIGHTS_INDEX_NAME
    if (checkpoint / SAFE_WEIGHTS_NAME).exists():
        files = [checkpoint / SAFE_WEIGHTS_NAME]
    elif index.exists():
        files = sorted({checkpoint / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        return False
    own = model.state_dict()
    own_key = {id(tensor): key for key, tensor in own.items()}
    saved_layout = revert_weight_conversion(model, dict(own))  # the same tensors, under the keys save_pretrained writes
    renamed = {saved: own_key.get(id(tensor), saved) for saved, tensor in saved_layout.items()}
    loaded, unexpected = set(), []
    for file in files:
        state = {renamed.get(key, key): tensor for key, tensor in load_file(file, device="cpu").items()}
        unexpected += model.load_state_dict(state, strict=False).unexpected_keys
        loaded |= set(state) & set(own)
    missing = set(own) - loaded - set(getattr(model, "all_tied_weights_keys", None) or {})
    if missing or unexpected:
        raise RuntimeError(f"resume: the weights in {checkpoint} do not fit the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    return True


def finish_checkpoint(trainer: Any, checkpoint: Path, save_total_limit: int | None, started: float) -> None:
    """Once every process has written its files: mark ``checkpoint`` complete, then delete old checkpoints."""
    trainer.accelerator.wait_for_everyone()
    if not trainer.args.should_save:
        return
    mark_complete(checkpoint)
    rotate_checkpoints(output_dir=str(checkpoint.parent), save_total_limit=save_total_limit,
                       best_model_checkpoint=trainer.state.best_model_checkpoint)
    size = sum(path.stat().st_size for path in checkpoint.rglob("*") if path.is_file())
    log.info("checkpoint %s: %.1f MB in %.2f s", checkpoint, size / 1e6, time.perf_counter() - started)


@contextmanager
def rotation_deferred(args: Any) -> Iterator[int | None]:
    """The Trainer deletes old checkpoints at the end of its ``_save_checkpoint``, before grpolab's marker makes the
    new one complete; with the limit lifted for that call, ``finish_checkpoint`` rotates once the marker is written."""
    limit = args.save_total_limit
    args.save_total_limit = None
    try:
        yield limit
    finally:
        args.save_total_limit = limit


class ResumeGrpolabState(TrainerCallback):
    """Restores grpolab's state when training resumes: at ``on_train_begin``, after the Trainer has reset its log
    window (``_tr_loss``, ``_globalstep_last_logged``) and before the first step."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.resumed_from is not None:
            load_grpolab_state(self.trainer, self.trainer.resumed_from)


def _save_torch_atomic(data: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def _null_as_nan(shared: dict[str, Any]) -> dict[str, Any]:
    metrics = {key: [math.nan if value is None else value for value in values]
               for key, values in (shared.get("pending_metrics") or {}).items()}
    return {**shared, "pending_metrics": metrics}
