"""Re-evaluate a run's saved model on its held-out split: the evaluation ``grpolab.train`` ran as ``eval_after``.

    python -m grpolab.evaluate outputs/2024-05-01/12-00-00                 # <run_dir>/model
    python -m grpolab.evaluate outputs/2024-05-01/12-00-00 --model outputs/2024-05-01/12-00-00/checkpoint-150

The run's own config (``<run_dir>/.hydra/config.yaml``) rebuilds the tokenizer, data, prompt preparation and
held-out evaluator with the calls ``grpolab.train`` makes; only the model preset is swapped for the one that loads a
directory (``model=causal_lm`` or ``model=vlm``, by ``model.modality``), pointed at the saved model. Prints the
metrics as one JSON line, then a comparison with ``summary.json``'s ``eval_after``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpolab.config.paths import CONF_DIR
from grpolab.config.schema import register_schemas
from grpolab.tracking.jsonfiles import read_json
from grpolab.tracking.rundir import FINAL_MODEL_DIR, SUMMARY_FILE

log = logging.getLogger("grpolab.evaluate")
#: The model presets that load a saved directory, by ``model.modality``.
LOADING_PRESETS = {"text": "causal_lm", "vision": "vlm"}


def saved_model_config(run_config: DictConfig, model_dir: Path) -> DictConfig:
    """The run's config with its model preset replaced by the one that loads ``model_dir`` (same dtype and
    attention; a saved processor keeps the run's image bounds)."""
    cfg = run_config.copy()
    preset = OmegaConf.load(Path(CONF_DIR) / "model" / f"{LOADING_PRESETS[str(cfg.model.modality)]}.yaml")
    preset.name_or_path = str(model_dir)
    preset.dtype = cfg.model.dtype
    preset.attn_implementation = cfg.model.attn_implementation
    if "min_pixels" in preset.tokenizer:
        preset.tokenizer.min_pixels = preset.tokenizer.max_pixels = None
    cfg.model = preset
    return cfg


def evaluate_saved_model(run_dir: Path, model_dir: Path | None = None) -> dict[str, Any]:
    """The held-out metrics of ``model_dir`` (default ``<run_dir>/model``) for the run in ``run_dir``."""
    import torch
    from hydra.utils import instantiate
    from transformers import set_seed

    from grpolab.data.prompts import PromptEncoder
    from grpolab.environments.tools import build_environment
    from grpolab.trainer.evaluation import HeldOutEvaluator

    register_schemas()  # resolvers the run's config may use
    cfg = saved_model_config(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), model_dir or run_dir / FINAL_MODEL_DIR)
    config = OmegaConf.to_container(cfg, resolve=True)
    set_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    processing_class = instantiate(cfg.model.tokenizer)
    # A run recorded before the environment group existed had none.
    environment = build_environment(OmegaConf.select(cfg, "environment"), processing_class)
    encoder = PromptEncoder(processing_class, config["trainer"]["chat_template_kwargs"],
                            tools=environment.prompt_tools() if environment else ())
    splits = instantiate(cfg.data).load()
    preparation = instantiate(cfg.tokenizer_mode, encoder=encoder)
    eval_set = preparation.prepare(splits.eval, "eval", (), config["data"])
    evaluate = HeldOutEvaluator.from_config(cfg.eval, eval_set, encoder, environment)
    device = "cuda" if torch.cuda.is_available() and not cfg.trainer.use_cpu else "cpu"
    model = instantiate(cfg.model.network, tokenizer=encoder.processing_class).to(device)
    return evaluate(model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m grpolab.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (it holds .hydra/config.yaml and model/)")
    parser.add_argument("--model", type=Path, default=None,
                        help="the saved policy to evaluate (default: <run_dir>/model; a checkpoint-<step> works too)")
    args = parser.parse_args(argv)
    model_dir = args.model or args.run_dir / FINAL_MODEL_DIR
    for needed in (args.run_dir / ".hydra" / "config.yaml", model_dir / "config.json"):
        if not needed.exists():
            sys.exit(f"grpolab.evaluate: {needed} does not exist; give a run directory of a finished run "
                     "(python -m grpolab.evaluate <run_dir>) or --model <saved model directory>")
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s", stream=sys.stderr)
    metrics = evaluate_saved_model(args.run_dir, model_dir)
    print(json.dumps(metrics))
    recorded = (read_json(args.run_dir / SUMMARY_FILE) or {}).get("eval_after") or {}
    if "accuracy" in recorded:
        same = "the same as" if metrics.get("accuracy") == recorded["accuracy"] else "DIFFERENT from"
        print(f"held-out accuracy {metrics.get('accuracy')}: {same} summary.json's eval_after {recorded['accuracy']}")


if __name__ == "__main__":
    main()
