"""The KL reference model must be the policy GRPO starts from, not whatever ``name_or_path`` would load.

TRL 1.16 builds the reference model (when ``beta != 0``) by loading ``model.config._name_or_path``. That is right for
an unmodified hub checkpoint, but wrong for a model built from config (there is nothing to load) and for a warm-started
policy (the hub weights are not the starting policy). Saving the starting policy and pointing the config at it makes
TRL's own loading path produce the right reference, with no change to the trainer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def pin_reference_policy(model: PreTrainedModel, directory: Path, loadable_as_is: bool) -> None:
    """Make ``model.config._name_or_path`` load the current weights; a no-op when the checkpoint already does."""
    if loadable_as_is:
        return
    model.save_pretrained(directory)
    model.config._name_or_path = str(directory)
    log.info("KL reference: the starting policy, saved to %s", directory)
