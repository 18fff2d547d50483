"""The trained policy, saved at the end of a run where ``from_pretrained`` loads it (``<run_dir>/model``)."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_INFO_FILE = "grpolab_model.json"


def save_final_model(trainer: Any, directory: Path, modality: str) -> Path:
    """The trained policy as ``from_pretrained`` loads it: weights (or the LoRA adapter and how to merge it), the
    tokenizer or processor, the generation config, and ``grpolab_model.json`` (how to use it). Written next to
    ``directory`` and renamed into place, so a kill leaves the previous directory or the new one, never a mix.

    An adapter on a base model built from config (nothing names the base to load it by) is saved merged into it.
    """
    staging = directory.with_name(f".{directory.name}.partial")
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    adapters = getattr(model, "peft_config", None) or {}
    base = next((config.base_model_name_or_path for config in adapters.values()), None) or None
    if adapters and base is None:
        if trainer.args.should_save:
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(staging)
            trainer.processing_class.save_pretrained(staging)
    else:
        trainer.save_model(str(staging))  # every process: sharded weights are gathered for the save
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        # The saved processor keeps the run's image bounds; the vlm preset's own would override them.
        preset = ("model=vlm model.tokenizer.min_pixels=null model.tokenizer.max_pixels=null" if modality == "vision"
                  else "model=causal_lm")
        info = {
            "modality": modality,
            "steps": trainer.state.global_step,
            "lora_adapter": bool(adapters) and base is not None,
            "use_in_a_run": f"python -m grpolab.train {preset} model.name_or_path={directory}",
            "evaluate": f"python -m grpolab.evaluate {directory.parent}",
        }
        if adapters and base is not None:  # from_pretrained loads the base model the adapter names, then the adapter
            info["base_model"] = base
            info["merge"] = ("from peft import AutoPeftModelForCausalLM; AutoPeftModelForCausalLM.from_pretrained("
                             f"'{directory}').merge_and_unload().save_pretrained('<merged dir>')")
        (staging / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        previous = directory.with_name(f".{directory.name}.previous")
        if directory.exists():
            shutil.rmtree(previous, ignore_errors=True)
            directory.rename(previous)
        staging.rename(directory)
        shutil.rmtree(previous, ignore_errors=True)
        log.info("final model: %s", directory)
    trainer.accelerator.wait_for_everyone()
    return directory
