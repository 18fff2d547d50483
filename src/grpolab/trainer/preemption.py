"""Preemption: SIGTERM or SIGUSR1 (what Slurm sends before it kills a job, e.g. with ``--signal=USR1@90``), or in a
submitit job its preemption signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default), makes the run save a checkpoint at
the end of the current optimizer step and stop; it then ends with ``status: preempted`` and ``resume=true`` (or a
Slurm requeue) continues it from that checkpoint.

``GrpolabTrainer`` holds one ``PreemptionSignals``: a callback, and a context manager its ``train`` enters (the
handlers are installed while training runs, the previous ones restored after). The handlers only note the signal (it
can land anywhere, inside a checkpoint write too); at the next step end the callback turns it into ``should_save`` +
``should_training_stop``, decided together by all processes, and once training has stopped ``stop_if_requested``
raises ``RunPreempted``: ``tracked_run`` records ``status: preempted`` and the process exits with 128 + the signal
number. When the handler it replaced is a Python function (submitit's checkpoint-and-requeue handler), the entry
point calls it after all that (``RunPreempted.hand_over``), so submitit requeues the job; the requeued job
(``SLURM_RESTART_COUNT`` > 0) resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import torch
from transformers import TrainerCallback

from grpolab.tracking.rundir import RunPreempted

log = logging.getLogger(__name__)


def preemption_signal_numbers() -> tuple[int, ...]:
    """SIGTERM and SIGUSR1, plus submitit's preemption signal inside a submitit job."""
    numbers = [signal.SIGTERM, signal.SIGUSR1]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        numbers.append(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))
    return tuple(dict.fromkeys(numbers))


class PreemptionSignals(TrainerCallback):
    """A context manager that installs the handlers (restoring the previous ones on exit) and the TrainerCallback that
    stops training with a checkpoint once one of them fired."""

    def __init__(self, signals: tuple[int, ...] | None = None) -> None:
        self.signals = preemption_signal_numbers() if signals is None else signals
        self.received: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():  # signal.signal works in the main thread only
            self._previous = {number: signal.signal(number, self._note) for number in self.signals}
        else:
            log.warning("preemption: not in the main thread; SIGTERM/SIGUSR1 keep their default action")
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)

    def _note(self, number: int, frame: Any) -> None:
        if self.received is None:
            self.received = number

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stopped_at is None and _any_process(self.received is not None):
            log.warning("preemption: %s received; saving a checkpoint at step %d and stopping",
                        _name(self.received), state.global_step)
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def stop_if_requested(self, trainer: Any) -> None:
        """Raise ``RunPreempted`` when training stopped for a signal (its checkpoint is saved by then)."""
        if self.stopped_at is None:
            return
        number = self.received if self.received is not None else signal.SIGTERM
        previous = self._previous.get(number)

        def hand_over() -> None:
            if callable(previous):
                previous(number, None)  # e.g. submitit: checkpoint the callable, requeue the job, exit

        raise RunPreempted(f"{_name(self.received)} at step {self.stopped_at}: saved {trainer.args.output_dir}/"
                           f"checkpoint-{self.stopped_at}; rerun the same command with resume=true to continue",
                           128 + number, hand_over)


def _name(number: int | None) -> str:
    return signal.Signals(number).name if number is not None else "a signal on another process"


def _any_process(flag: bool) -> bool:
    """The same decision on every process (a signal reaches them at slightly different times)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    from accelerate import PartialState

    tensor = torch.tensor([int(flag)], device=PartialState().device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())
