"""``GrpolabTrainer``: grpolab's one point of contact with the private methods of TRL's ``GRPOTrainer``.

TRL 1.16 tokenizes prompt text on every step, decodes every completion for the rewards and processes images itself.
grpolab's ids mode, lazy decoding, image rows in ids form, dynamic sampling and per-step cost metrics need a hand in
that step. Every override of a ``GRPOTrainer`` private method lives in this class, listed below in the order TRL calls
them within one generation batch; each calls ``super()`` and is pinned by ``tests/trainer/test_grpo.py`` (which fails
when TRL renames or reshapes what it relies on):

1. ``_generate_and_score_completions(inputs)``: hands the batch to the dynamic sampler (a hook, which calls back
   ``score_round`` once per generation round) or scores it once. A round of ids-form image rows first collates their
   cached images (``PromptEncoder.encode``) and adds the image fields TRL's loss forward reads to the result; a round
   of ids-mode rows that keep their chat messages (a run with tools) keeps their ``prompt_ids`` for step 3.
2. ``_generate(prompts)``: in ids mode, the processing class's ``batch_decode`` returns lazily decoded text while it
   runs, so a completion is decoded only if something reads it; keeps the batch's prompt IDs and TRL's tool mask for
   the rewards.
3. ``_tokenize_prompts(prompts)``: a prompt that is already token IDs passes through (as an int64 array on TRL's
   ``model.generate`` path, which builds tensors from it); chat messages of ids-mode rows are replaced by the rows'
   prepared ``prompt_ids`` (TRL's tool loop needs the messages, the model the IDs); the tokenizer never sees text.
4. ``_generate_single_turn(...)``: passes the batch's cached image fields to generation (ids-form image rows).
4b. ``_tool_call_loop(...)``: ids-form image rows give TRL's tool loop their images and cached image fields, which it
   reads to generate again after a tool result (with images a tool returned: the row's images, then the tool's, all
   processed by the image processor, as in text mode); ``_generate`` then hands the forward passes the same list.
5. ``_calculate_rewards(...)``: rewards get ``prompt_ids`` (both modes), ``tool_mask`` (with tools: 0 on tool-output
   IDs) and the images under TRL's names; ids-mode text rewards read ``prompts`` as decoded text; the time spent is
   measured; the rewards are kept for the sampler.
6. ``_get_per_token_logps_and_entropies(...)``: the image fields for the forward passes TRL makes inside the step.

Checkpoints (the Trainer's own, plus grpolab's state: ``grpolab.trainer.resume_state``):

7. ``_get_train_sampler(dataset)``: TRL's sampler, made epoch-aware so a resumed epoch keeps its data order.
8. ``_save_checkpoint(model, trial)``: grpolab's state first, then the Trainer's checkpoint, then the completeness
   marker, then the rotation of old checkpoints (deferred until the new one is complete).
9. ``_load_from_checkpoint(resume_from_checkpoint, model)``: the weights loaded with the key renames ``save_pretrained``
   reverted (the Trainer's raw ``load_state_dict`` would load none of a VLM's: transformers issue 43701).

Public overrides: ``train`` (counts tokenizer calls while training; remembers the checkpoint it resumes from; stops
with a checkpoint on SIGTERM/SIGUSR1: ``grpolab.trainer.preemption``) and
``log`` (adds the per-step cost metrics ``tokenizer/encode_calls``, ``tokenizer/decode_calls``, ``tokenizer/calls``,
``timing/rewards_s``, and in ids mode decodes the logged prompts so completion tables show text). One attribute is
replaced: in ids mode ``data_collator`` (TRL's identity collator) returns ``HostRows``, so accelerate's data loader
does not walk every prompt ID looking for tensors. One private method is called from outside a training step:
``_get_tool_suffix_ids``, by ``tool_suffix_ids`` below, so that warm-start traces and held-out rollouts append tool
results exactly as TRL's tool loop does. Everything else is TRL's own code path, which is what lets the text and ids
modes take identical steps for the same seed.
The lazily decoded texts and the tokenizer call counter these overrides use are ``grpolab.trainer.tokenizer_calls``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from grpolab.data.prompts import (
    IMAGE_GRID,
    PIXEL_VALUES,
    PROMPT_IDS,
    SOURCE_PREFIX,
    HostRows,
    ImageInputs,
    PromptEncoder,
    SharedTokenIds,
    is_token_ids,
    row_images,
    text_tokenizer,
)
from grpolab.tracking.checkpoints import newest_complete_checkpoint, unmark
from grpolab.trainer.preemption import PreemptionSignals
from grpolab.trainer.resume_state import (
    EpochRepeatSampler,
    ResumeGrpolabState,
    finish_checkpoint,
    load_checkpoint_weights,
    policy_fingerprint,
    rotation_deferred,
    save_grpolab_state,
)
from grpolab.trainer.tokenizer_calls import DiscardedLog, LazyDecodedTexts, TokenizerCallCounter, lazy_batch_decode


class GrpolabTrainer(GRPOTrainer):
    """``GRPOTrainer`` with token-ID prompts, lazy decoding, ids-form image rows and an optional dynamic sampler.

    ``prompt_encoder`` is the run's encoder, the one the warm start and the evaluation use (None: one for TRL's
    processing class and ``args.chat_template_kwargs``); ``ids_mode`` (``tokenizer_mode=ids``): prompts arrive as
    token IDs, completions are decoded lazily and batches of rows skip accelerate's device walk; ``dynamic_sampling``
    is a ``grpolab.trainer.dynamic_sampling.DynamicSampler`` or None; ``optimizer_cls_and_kwargs`` is the Trainer's
    argument of that name, which GRPOTrainer does not pass on.
    """

    def __init__(self, *args: Any, prompt_encoder: PromptEncoder | None = None, ids_mode: bool = False,
                 dynamic_sampling: Any = None, optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read by Trainer.create_optimizer when training starts, after the engine has wrapped or sharded the model.
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self.prompt_encoder = prompt_encoder or PromptEncoder(self.processing_class, self.chat_template_kwargs)
        self.ids_mode = ids_mode
        self.dynamic_sampling = dynamic_sampling
        if dynamic_sampling is not None:
            dynamic_sampling.check(self)
        if ids_mode:
            self.data_collator = HostRows  # TRL's identity collator, minus ~35 ms/step walking the prompt IDs
            if not self.args.log_completions:
                # TRL appends every completion to this deque and reads it only when log_completions is on.
                self._logs["completion"] = DiscardedLog()
        self.tokenizer_calls = TokenizerCallCounter(self._tokenizer)
        self.reward_seconds = 0.0
        self.last_rewards_per_func: torch.Tensor | None = None
        self._batch_prompt_ids: list[list[int]] | None = None
        self._batch_tool_mask: list[list[int]] | None = None
        self._given_prompt_ids: tuple[list[Any], list[list[int]]] | None = None  # (the rows' messages, their IDs)
        self._batch_images: ImageInputs | None = None
        self._batch_source_images: list[list[Any]] | None = None  # the PIL images of ids-form image rows
        self._window = (0, 0, 0, 0.0)  # step, encoded, decoded, reward seconds at the last train log
        # What a checkpoint must have been trained from to be resumed here (the warm start shows in the starting
        # policy; TRL loaded the KL reference, when there is one, from model.config._name_or_path).
        self.run_identity = {"starting_policy": policy_fingerprint(self.model),
                             "reference": policy_fingerprint(self.ref_model)}
        self.resumed_from: Path | None = None
        self.add_callback(ResumeGrpolabState(self))
        self.preemption = PreemptionSignals()
        self.add_callback(self.preemption)

    # 1 ------------------------------------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.dynamic_sampling is not None and self.model.training:
            return self.dynamic_sampling.sample(self, inputs)
        return self.score_round(inputs)

    def score_round(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """One generation round, scored: TRL's step, with the cached images of ids-form image rows supplied and the
        prepared IDs of ids-mode rows that keep their chat messages (step 3)."""
        if inputs and PROMPT_IDS in inputs[0] and not is_token_ids(inputs[0].get("prompt")):
            self._given_prompt_ids = ([row["prompt"] for row in inputs], [list(row[PROMPT_IDS]) for row in inputs])
        with_images = bool(inputs) and IMAGE_GRID in inputs[0]
        if with_images:
            self._batch_images = self.prompt_encoder.encode(inputs).images.to(self.accelerator.device)
            self._batch_source_images = [row_images(row) for row in inputs] if self.tools else None
        try:
            output = super()._generate_and_score_completions(inputs)
            # TRL built the image fields itself when a tool returned images (4b); otherwise they are the cached ones.
            if with_images and "pixel_values" not in output:
                input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
                output.update(self._image_fields(input_ids, output["completion_ids"].size(1)))
            return output
        finally:
            self._batch_images = None
            self._batch_source_images = None
            self._given_prompt_ids = None

    # 2 ------------------------------------------------------------------------------------------------------------

    def _generate(self, prompts: list):
        if prompts and all(is_token_ids(prompt) for prompt in prompts):
            prompts = [SharedTokenIds(prompt) for prompt in prompts]  # TRL deep-copies them; IDs need no copy
        with lazy_batch_decode(self.processing_class) if self.ids_mode else nullcontext():
            result = super()._generate(prompts)
        self._batch_prompt_ids = [ids.tolist() if isinstance(ids, np.ndarray) else list(ids) for ids in result[0]]
        self._batch_tool_mask = result[2]
        tool_images = result[7]
        if self._batch_source_images is not None and any(tool_images):
            # TRL merged the tools' images into the prompt images it had (none: ids-form rows): the forward passes
            # read every image of a sequence, the row's first.
            images = [[*own, *tool] for own, tool in zip(self._batch_source_images, tool_images, strict=True)]
            result = (*result[:6], images, tool_images)
        return result

    # 3 ------------------------------------------------------------------------------------------------------------

    def _tokenize_prompts(self, prompts: list):
        if prompts and all(is_token_ids(prompt) for prompt in prompts):
            if self.prompt_ids_as_arrays:
                return [np.asarray(prompt, dtype=np.int64) for prompt in prompts], None, {}
            return [list(prompt) for prompt in prompts], None, {}
        if self._given_prompt_ids is not None:
            messages, prompt_ids = self._given_prompt_ids
            if len(prompts) != len(messages) or any(a != b for a, b in zip(prompts, messages, strict=False)):
                # TRL appended an environment's reset() observation: new text the prepared IDs do not hold.
                raise ValueError("tokenizer_mode=ids: the environment's reset() changed the prompts, so their prepared "
                                 "prompt_ids no longer match; use tokenizer_mode=text with this environment")
            return [list(ids) for ids in prompt_ids], None, {}
        return super()._tokenize_prompts(prompts)

    @property
    def prompt_ids_as_arrays(self) -> bool:
        """Whether ID prompts go to TRL as int64 arrays rather than lists: on its ``model.generate`` path.

        That path turns every prompt into a tensor twice a step; from an array that is one memory copy, from a list an
        element-by-element conversion (about 4 ms of host time a step for 128 prompts of 120 IDs). vLLM serialises
        the prompts, continuous batching takes lists and the tool loop concatenates them with ``+``: lists there.
        """
        return not (self.use_vllm or self.use_transformers_continuous_batching or self.tools)

    # 4 ------------------------------------------------------------------------------------------------------------

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        if self._batch_images is not None and not multimodal_fields:
            multimodal_fields = self._cached_image_fields(prompt_ids)
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs)

    def _cached_image_fields(self, prompt_ids: list[Any]) -> dict[str, Any]:
        """What TRL's processor call returns for the batch's ids-form image rows, from their cached images."""
        image_token_id = self.model.config.image_token_id
        return {
            "pixel_values": self._batch_images.pixel_values,
            "image_grid_thw": self._batch_images.image_grid_thw,
            # A per-token field: TRL left-pads it like the prompt IDs, from lists. Compared as arrays: the
            # prompts are int64 arrays here (prompt_ids_as_arrays), which a Python loop reads 3x slower than lists.
            "mm_token_type_ids": [(np.asarray(ids) == image_token_id).astype(np.int64).tolist() for ids in prompt_ids],
        }

    # 4b -----------------------------------------------------------------------------------------------------------

    def _tool_call_loop(self, prompts, prompt_ids, completion_ids, completions, logprobs, images, multimodal_fields):
        if self._batch_source_images is not None and images is None:
            # TRL selects the tool-calling rows' images and fields to generate again: `images` when a tool returned
            # images (processed again with them), the per-row split of `multimodal_fields` (by num_images) otherwise.
            images = self._batch_source_images
            multimodal_fields = {**self._cached_image_fields(prompt_ids), "num_images": self._batch_images.num_images}
        return super()._tool_call_loop(prompts, prompt_ids, completion_ids, completions, logprobs, images,
                                       multimodal_fields)

    # 5 ------------------------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        inputs = self._reward_rows(inputs)
        if self.ids_mode and prompts and is_token_ids(prompts[0]):
            # Text rewards reading `prompts` get text, as in text mode; token rewards read `prompt_ids` instead.
            prompts = LazyDecodedTexts(self.processing_class.decode, prompts, {"skip_special_tokens": True})
        started = time.perf_counter()
        try:
            self.last_rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        finally:
            self.reward_seconds += time.perf_counter() - started
        return self.last_rewards_per_func

    def _reward_rows(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Dataset columns as rewards receive them: ``prompt_ids`` and (with tools) ``tool_mask`` added; ids-form
        images back under TRL's names."""
        ids = self._batch_prompt_ids if self._batch_prompt_ids and len(self._batch_prompt_ids) == len(inputs) else None
        masks = self._batch_tool_mask if self._batch_tool_mask and len(self._batch_tool_mask) == len(inputs) else None
        rows = []
        for index, row in enumerate(inputs):
            if IMAGE_GRID in row:
                row = {key.removeprefix(SOURCE_PREFIX): value for key, value in row.items() if key != PIXEL_VALUES}
            if ids is not None:
                row = {**row, PROMPT_IDS: ids[index]}
            rows.append(row if masks is None else {**row, "tool_mask": masks[index]})
        return rows

    # 6 ------------------------------------------------------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._batch_images is not None and kwargs.get("pixel_values") is None:
            kwargs.update(self._image_fields(input_ids, logits_to_keep))
        return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args,
                                                          **kwargs)

    def _image_fields(self, input_ids: torch.Tensor, completion_length: int) -> dict[str, Any]:
        """What TRL's processor call adds for a forward pass over ``input_ids`` (the prompt, then the completion)."""
        images = self._batch_images
        fields = images.model_inputs(input_ids, self.model.config.image_token_id, images.pixel_values.dtype,
                                     completion_length)
        return {**fields, "num_images": images.num_images}

    # 7 ------------------------------------------------------------------------------------------------------------

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        return EpochRepeatSampler.like(sampler) if type(sampler) is RepeatSampler else sampler

    # 8 ------------------------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        started = time.perf_counter()
        checkpoint = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            unmark(checkpoint)  # a step saved again (after a resume) is incomplete until marked again
        save_grpolab_state(self, checkpoint)
        with rotation_deferred(self.args) as save_total_limit:
            super()._save_checkpoint(model, trial)
        finish_checkpoint(self, checkpoint, save_total_limit, started)

    # 9 ------------------------------------------------------------------------------------------------------------

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        plain = model is None and not (self.is_deepspeed_enabled or self.is_fsdp_enabled
                                       or getattr(self.model, "peft_config", None) is not None)
        if not (plain and load_checkpoint_weights(self.model, Path(resume_from_checkpoint))):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    # public ------------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        if resume_from_checkpoint is True:  # the Trainer's own lookup ignores whether a checkpoint is complete
            resume_from_checkpoint = newest_complete_checkpoint(Path(self.args.output_dir))
        self.resumed_from = Path(resume_from_checkpoint) if resume_from_checkpoint else None
        with self.preemption, self.tokenizer_calls.installed():
            output = super().train(resume_from_checkpoint=str(self.resumed_from) if self.resumed_from else None,
                                   **kwargs)
        self.preemption.stop_if_requested(self)  # RunPreempted once a signal made it save a checkpoint and stop
        return output

    def pending_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """What this trainer holds between optimizer steps and a resume needs (``grpolab.trainer.resume_state``):
        ``(shared, local)``, the same on every process (JSON) and this process's own (tensors)."""
        step, encoded, decoded, reward_s = self._window
        counter = self.tokenizer_calls
        shared = {
            "last_logged_step": self._globalstep_last_logged,
            "pending_metrics": {key: list(values) for key, values in self._metrics["train"].items()},
            "cost_window": {"step": step, "encoded": counter.encoded - encoded, "decoded": counter.decoded - decoded,
                            "reward_s": self.reward_seconds - reward_s},
            "refill_position": self.dynamic_sampling.refill_position if self.dynamic_sampling is not None else 0,
        }
        mid_rollout = self._step % (self.args.steps_per_generation * self.num_iterations) != 0
        local = {"trl_step": self._step, "pending_loss": self._tr_loss.detach().clone(),
                 "rollout": self._buffered_inputs if mid_rollout else None}
        return shared, local

    def restore_pending_state(self, shared: dict[str, Any], local: dict[str, Any]) -> None:
        """Undo ``pending_state`` in a trainer about to resume (the Trainer has just reset its log window)."""
        self._globalstep_last_logged = shared["last_logged_step"]
        self._metrics["train"] = defaultdict(list, {key: list(values)
                                                    for key, values in shared["pending_metrics"].items()})
        window, counter = shared["cost_window"], self.tokenizer_calls
        self._window = (window["step"], counter.encoded - window["encoded"], counter.decoded - window["decoded"],
                        self.reward_seconds - window["reward_s"])
        if self.dynamic_sampling is not None:
            self.dynamic_sampling.resume_refill(self, shared["refill_position"])
        self._step = local["trl_step"]
        self._buffered_inputs = local["rollout"]
        self._tr_loss.copy_(local["pending_loss"])

    def log_held_out(self, metrics: dict[str, float]) -> None:
        """Log a held-out evaluation made during training (``eval_<metric>`` keys, as the Trainer's own evaluation
        logs them) to every ``on_log`` consumer: ``metrics.jsonl`` gets a ``split: eval`` row, the logger its
        ``eval/...`` values. ``Trainer.log`` directly: TRL's ``log`` would fold the pending train metrics into it."""
        should_log = self.control.should_log  # on_log clears it; the step's own train log is still due
        Trainer.log(self, {f"eval_{key}": value for key, value in metrics.items()
                           if isinstance(value, (int, float)) and math.isfinite(value)})
        self.control.should_log = should_log

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            logs.update(self._cost_metrics())
            if self.ids_mode and self.log_completions:
                self._decode_logged_prompts()
            if self.log_completions:
                from grpolab.trainer.multiturn import uniform_contents  # multiturn imports this module

                uniform_contents(self._logs["completion"])
        super().log(logs, start_time)

    def _cost_metrics(self) -> dict[str, float]:
        """Tokenizer calls and reward seconds per optimizer step since the previous train log."""
        step, encoded, decoded, reward_s = self._window
        steps = self.state.global_step - step
        if steps <= 0:
            return {}
        counter = self.tokenizer_calls
        self._window = (self.state.global_step, counter.encoded, counter.decoded, self.reward_seconds)
        return {
            "tokenizer/encode_calls": (counter.encoded - encoded) / steps,
            "tokenizer/decode_calls": (counter.decoded - decoded) / steps,
            "tokenizer/calls": (counter.total - encoded - decoded) / steps,
            "timing/rewards_s": (self.reward_seconds - reward_s) / steps,
        }

    def _decode_logged_prompts(self) -> None:
        """Prompts kept as IDs become the exact text the model saw (special tokens included), for the log only."""
        kept = self._logs["prompt"]
        if not any(is_token_ids(prompt) for prompt in kept):
            return
        decoded = [self.processing_class.decode(p) if is_token_ids(p) else p for p in kept]
        kept.clear()
        kept.extend(decoded)


def trainer_dataset(dataset: Any) -> Any:
    """TRL reads prompts from the ``prompt`` column; in ids mode that column carries the ``prompt_ids``, unless the
    rows keep their chat messages too (a run with tools: TRL's tool loop appends messages to them), in which case
    ``_tokenize_prompts`` hands TRL the ``prompt_ids`` in their place."""
    if "prompt_ids" in dataset.column_names and "prompt" not in dataset.column_names:
        return dataset.rename_column("prompt_ids", "prompt")
    return dataset


def tool_suffix_ids(processing_class: Any, tool_messages: list[dict[str, Any]],
                    chat_template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """The token IDs TRL appends after a completion that called tools, before generating again: the tool messages
    and the next generation prompt, by ``GRPOTrainer._get_tool_suffix_ids`` itself, so the warm start's traces and the
    held-out evaluation build multi-turn sequences exactly as training does. (The chat template is the processing
    class's own: ``grpolab.models.tokenizer.prepare_for_tool_calls`` installed a prefix-preserving one, so TRL's
    ``chat_template`` attribute is None.)"""
    from transformers import ProcessorMixin

    context = SimpleNamespace(processing_class=processing_class, _tokenizer=text_tokenizer(processing_class),
                              _is_vlm=isinstance(processing_class, ProcessorMixin), chat_template=None,
                              chat_template_kwargs=chat_template_kwargs or {})
    return list(GRPOTrainer._get_tool_suffix_ids(context, tool_messages))
