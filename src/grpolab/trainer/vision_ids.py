"""``VisionIdsMixin``: the ids mode for image prompts, in TRL 1.16's ``GRPOTrainer``.

In ids mode an image row reaches the trainer in ids form (``grpolab.data.prepare_vision``): ``prompt`` holds the
prompt IDs with every image token already expanded, next to ``image_grid_thw``, the cached ``pixel_values`` (or
``source_image(s)`` to run the image processor on) and no ``image``/``images`` column, so TRL never renders or
tokenizes the prompt. TRL would then generate and score without pixels; this mixin supplies them at the four places
a text-mode step gets them from the processor, with the same values:

* ``_generate_and_score_completions``: collates the batch's cached image fields, runs TRL's step, and adds
  ``pixel_values``, ``image_grid_thw``, ``num_images`` and ``mm_token_type_ids`` (1 at the prompt's image tokens, 0
  elsewhere and on the completion, as TRL builds it) to the returned batch, which the loss forward reads.
* ``_generate_single_turn``: passes the same fields to ``generate``.
* ``_get_per_token_logps_and_entropies``: fills them in for the forward passes TRL makes inside the step (old
  log-probs when generation and optimisation steps are misaligned, reference log-probs when ``beta != 0``).
* ``_calculate_rewards``: hands rewards the images under TRL's names (``image``/``images``), as in text mode.

It must sit after any override that short-circuits ``_tokenize_prompts`` for ID prompts (``GrpolabTrainer`` does) and
before ``GRPOTrainer``: ``class GrpolabTrainer(VisionIdsMixin, GRPOTrainer)``. Rows without ``image_grid_thw`` pass
through untouched, so text runs (both modes) and vision text-mode runs are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grpolab.data.prepare_vision import IMAGE_GRID, PIXEL_VALUES, PROMPT_IDS, SOURCE_PREFIX, encode_vision_prompts


@dataclass
class _BatchImages:
    """One generation batch's image inputs, in row order (each row repeated per generation, as TRL's sampler does)."""

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    num_images: list[int]


class VisionIdsMixin:
    """Feed cached image inputs to generation and to every forward pass of an ids-mode step; see the module doc.

    >>> from trl import GRPOTrainer
    >>> class Trainer(VisionIdsMixin, GRPOTrainer): ...  # doctest: +SKIP
    """

    _batch_images: _BatchImages | None = None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not inputs or IMAGE_GRID not in inputs[0]:
            return super()._generate_and_score_completions(inputs)
        # The image processor runs only without cached pixels; the prompt text is never rendered or tokenized.
        encoded = encode_vision_prompts(self.processing_class, [{**row, PROMPT_IDS: row["prompt"]} for row in inputs])
        device = self.accelerator.device
        self._batch_images = _BatchImages(
            pixel_values=encoded.pixel_values.to(device),
            image_grid_thw=encoded.image_grid_thw.to(device),
            num_images=[len(row[IMAGE_GRID]) for row in inputs],
        )
        try:
            output = super()._generate_and_score_completions(inputs)
            prompt_ids, completion_ids = output["prompt_ids"], output["completion_ids"]
            output.update(self._forward_fields(torch.cat([prompt_ids, completion_ids], dim=1), completion_ids.size(1)))
            return output
        finally:
            self._batch_images = None

    def _forward_fields(self, input_ids: torch.Tensor, completion_length: int) -> dict[str, Any]:
        """What TRL's processor call adds for a forward pass over ``input_ids`` (the prompt, then the completion)."""
        images = self._batch_images
        assert images is not None
        token_types = (input_ids == self.model.config.image_token_id).long()
        token_types[:, input_ids.size(1) - completion_length :] = 0  # TRL: zeros over the completion
        return {
            "pixel_values": images.pixel_values,
            "image_grid_thw": images.image_grid_thw,
            "num_images": images.num_images,
            "mm_token_type_ids": token_types,
        }

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        if self._batch_images is not None and not multimodal_fields:
            multimodal_fields = {
                "pixel_values": self._batch_images.pixel_values,
                "image_grid_thw": self._batch_images.image_grid_thw,
                # A per-token field: TRL left-pads it like the prompt IDs.
                "mm_token_type_ids": [
                    [int(token == self.model.config.image_token_id) for token in ids] for ids in prompt_ids
                ],
            }
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._batch_images is not None and kwargs.get("pixel_values") is None:
            kwargs.update(self._forward_fields(input_ids, logits_to_keep))
        return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args,
                                                          **kwargs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if inputs and IMAGE_GRID in inputs[0]:
            inputs = [
                {(key[len(SOURCE_PREFIX):] if key.startswith(SOURCE_PREFIX) else key): value
                 for key, value in row.items() if key != PIXEL_VALUES}
                for row in inputs
            ]
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
