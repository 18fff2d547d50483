"""Batch semantics in the papers' own terms, translated into TRL ``GRPOConfig`` fields.

GRPO papers describe a training step as *rollout, then updates*: sample ``P`` prompts, draw ``G`` completions for
each (one rollout of ``P * G`` samples), split the rollout into ``U`` mini-batches and take one optimizer step per
mini-batch, optionally repeating that pass ``mu`` times. TRL describes the same loop with per-device micro batches:

* an optimizer step ("TRL step", ``state.global_step``) accumulates ``gradient_accumulation_steps`` micro batches of
  ``per_device_train_batch_size`` samples on each of ``num_processes`` processes;
* generation runs once every ``steps_per_generation * num_iterations`` micro batches and produces
  ``generation_batch_size = per_device_train_batch_size * num_processes * steps_per_generation`` samples, which
  ``GRPOTrainer._prepare_inputs`` shuffles and slices into ``steps_per_generation`` micro batches per process;
* ``generation_batch_size`` must hold whole groups (``num_generations`` divides it); ``GRPOConfig.__post_init__``
  rejects setting both ``generation_batch_size`` and ``steps_per_generation``, so only the latter is derived here.

Matching the two gives, with ``m`` the per-device micro batch and ``n`` the process count::

    per_device_train_batch_size = m
    gradient_accumulation_steps = (P * G / U) / (m * n)        # one mini-batch per optimizer step
    steps_per_generation        = (P * G) / (m * n) = U * gradient_accumulation_steps
    num_generations             = G
    num_iterations              = mu                           # U * mu optimizer steps per rollout

``BatchSpec`` is also the schema of the ``batch`` node, so its check runs on the composed node. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from grpolab.config.checks import at_least, require
from grpolab.config.errors import ConfigError


@dataclass
class BatchSpec:
    """One rollout-and-update cycle as the GRPO papers describe it.

    Attributes:
        prompts_per_step: distinct prompts per rollout (DAPO's "prompt batch size", R1-Zero's 512 = 8,192 / 16).
        generations_per_prompt: completions sampled per prompt, the group size ``G``.
        updates_per_rollout: optimizer steps per pass over the rollout, i.e. the number of mini-batches it is
            split into (DAPO: 16, "16 gradient updates for each rollout step"; DeepSeekMath: 1).
        num_iterations: passes ``mu`` over the same rollout (GRPO's inner loop); each pass takes
            ``updates_per_rollout`` optimizer steps.
        micro_batch_size: samples per process per forward/backward pass. ``None`` uses each process's whole share
            of a mini-batch (no gradient accumulation), which suits tiny models; set it for large ones.

    Example (DAPO, arXiv 2503.14476 Sec. 4.1): 512 prompts x 16 samples, mini-batches of 512 samples:

    >>> dapo = BatchSpec(prompts_per_step=512, generations_per_prompt=16, updates_per_rollout=16,
    ...                  micro_batch_size=8)
    >>> dapo.samples_per_rollout, dapo.samples_per_update, dapo.optimizer_steps_per_rollout
    (8192, 512, 16)
    """

    prompts_per_step: int  # no default: required (???) in the schema
    generations_per_prompt: int
    updates_per_rollout: int = 1
    num_iterations: int = 1
    micro_batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "generations_per_prompt", "updates_per_rollout", "num_iterations"):
            require(f"batch.{name}", getattr(self, name), at_least(1, integer=True), "an integer >= 1")
        if self.micro_batch_size is not None:
            require("batch.micro_batch_size", self.micro_batch_size, at_least(1, integer=True), "an integer >= 1")
        if self.generations_per_prompt < 2:
            # TRL refuses G < 2 too, but only after the heavy import; a group of one has no relative advantage.
            raise ConfigError(
                f"batch.generations_per_prompt={self.generations_per_prompt} is too small: group-relative "
                "advantages need at least 2 completions per prompt"
            )
        if self.samples_per_rollout % self.updates_per_rollout:
            raise ConfigError(
                f"batch.prompts_per_step * batch.generations_per_prompt = {self.samples_per_rollout} samples cannot "
                f"be split into batch.updates_per_rollout={self.updates_per_rollout} equal mini-batches "
                f"({self.samples_per_rollout} % {self.updates_per_rollout} = "
                f"{self.samples_per_rollout % self.updates_per_rollout})"
            )

    @property
    def samples_per_rollout(self) -> int:
        """Completions generated per rollout: ``prompts_per_step * generations_per_prompt``."""
        return self.prompts_per_step * self.generations_per_prompt

    @property
    def samples_per_update(self) -> int:
        """Completions per optimizer step (the papers' "mini-batch size")."""
        return self.samples_per_rollout // self.updates_per_rollout

    @property
    def optimizer_steps_per_rollout(self) -> int:
        """Optimizer steps (TRL steps) taken on one rollout: ``updates_per_rollout * num_iterations``."""
        return self.updates_per_rollout * self.num_iterations


def derive_grpo_fields(spec: BatchSpec, num_processes: int) -> dict[str, int]:
    """Translate ``spec`` into the ``GRPOConfig`` fields that make TRL run exactly the paper's loop.

    Returns ``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``steps_per_generation``,
    ``num_generations`` and ``num_iterations``; TRL then derives ``generation_batch_size`` =
    ``prompts_per_step * generations_per_prompt``. Raises ``ConfigError`` (one line, naming the ``batch.*`` keys
    and the numbers) when the rollout cannot be split evenly over processes and micro batches.

    Worked example, DAPO (512 prompts x 16 samples = 8,192 per rollout, 16 updates of 512 samples each) with
    micro batches of 8 samples:

    >>> dapo = BatchSpec(512, 16, updates_per_rollout=16, micro_batch_size=8)
    >>> derive_grpo_fields(dapo, num_processes=8)  # 512 / (8 * 8) = 8 accumulation steps per update
    {'per_device_train_batch_size': 8, 'gradient_accumulation_steps': 8, 'steps_per_generation': 128, \
'num_generations': 16, 'num_iterations': 1}
    >>> derive_grpo_fields(dapo, num_processes=1)
    {'per_device_train_batch_size': 8, 'gradient_accumulation_steps': 64, 'steps_per_generation': 1024, \
'num_generations': 16, 'num_iterations': 1}

    Check: generation_batch_size = 8 * 8 * 128 = 8,192 (one rollout), and 128 micro steps / 8 accumulation steps
    = 16 optimizer steps per rollout.

    >>> derive_grpo_fields(BatchSpec(512, 16, updates_per_rollout=16, micro_batch_size=8), num_processes=5)
    Traceback (most recent call last):
    ...
    grpolab.config.errors.ConfigError: batch.prompts_per_step * batch.generations_per_prompt = 8192 samples \
cannot be split into batch.updates_per_rollout=16 updates of micro batches of batch.micro_batch_size=8 on 5 processes: \
each update's 512 samples are not a multiple of 8 * 5 = 40 (512 % 40 = 32); 512 samples do not split evenly over 5 \
processes, change the process count or batch.updates_per_rollout
    """
    require("num_processes", num_processes, at_least(1, integer=True), "an integer >= 1")
    per_update, micro = spec.samples_per_update, spec.micro_batch_size
    cannot = (f"batch.prompts_per_step * batch.generations_per_prompt = {spec.samples_per_rollout} samples cannot be "
              f"split into batch.updates_per_rollout={spec.updates_per_rollout} updates")
    if micro is None and per_update % num_processes:
        raise ConfigError(f"{cannot} on {num_processes} processes: each update's {per_update} samples do not split "
                          f"evenly over {num_processes} processes ({per_update} % {num_processes} = "
                          f"{per_update % num_processes})")
    micro = micro or per_update // num_processes
    samples_per_micro_step = micro * num_processes
    if per_update % samples_per_micro_step:
        raise ConfigError(f"{cannot} of micro batches of batch.micro_batch_size={micro} on {num_processes} processes: "
                          f"each update's {per_update} samples are not a multiple of {micro} * {num_processes} = "
                          f"{samples_per_micro_step} ({per_update} % {samples_per_micro_step} = "
                          f"{per_update % samples_per_micro_step}); {_micro_batch_hint(per_update, num_processes)}")
    accumulation = per_update // samples_per_micro_step
    return {
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accumulation,
        "steps_per_generation": spec.updates_per_rollout * accumulation,
        "num_generations": spec.generations_per_prompt,
        "num_iterations": spec.num_iterations,
    }


def _micro_batch_hint(per_update: int, num_processes: int) -> str:
    if per_update % num_processes:
        return (f"{per_update} samples do not split evenly over {num_processes} processes, change the process count "
                "or batch.updates_per_rollout")
    share = per_update // num_processes
    divisors = [d for d in range(1, share + 1) if share % d == 0]
    return f"valid batch.micro_batch_size values on {num_processes} processes: {', '.join(map(str, divisors))}"
