"""The TRL baseline of ``benchmarks/gpu_check.py``: the GRPO steps of a grpolab run, written by hand against plain
``trl.GRPOTrainer`` and ``trl.GRPOConfig``, so that grpolab's overhead per step is a ratio of two measured runs.

    python benchmarks/gpu_check_trl.py <grpolab run dir> <output dir>

It reads the grpolab run's resolved config (``manifest.json``) and builds the same parts the way a TRL user would:
the tokenizer and the randomly initialised model with the same builders and numbers, the GSM8K rows from the same
JSONL file (shuffled with the same seed, the same rows held out, the same chat prompt), the same reward callables
and weights, and a ``GRPOConfig`` of the same fields: the run's ``trainer`` node, the batch that grpolab derives
from ``batch`` (``prompts_per_step x generations_per_prompt`` completions in one micro batch, as
``per_device_train_batch_size``), and the optimizer, schedule and seed grpolab owns elsewhere. None of grpolab's
trainer, callbacks, warm start, held-out evaluation or run directory takes part.

Written to the output dir: ``metrics.jsonl``, one row per logged step with ``step_time_s`` (wall seconds since the
previous log, as grpolab's ``metrics.jsonl`` measures it) and TRL's own metrics. ``gpu_check.py`` records the
process's peak memory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

#: TRL fields grpolab derives from ``batch`` (null in the trainer node) or keeps elsewhere; set below from their source.
DERIVED_OR_OWNED = frozenset({
    "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "generation_batch_size",
    "num_generations", "num_iterations",
})


def grpo_fields(config: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments equal to the ones the grpolab run trained with.

    >>> config = {"trainer": {"bf16": True, "per_device_train_batch_size": None, "max_steps": 20, "beta": 0.0},
    ...           "batch": {"prompts_per_step": 2, "generations_per_prompt": 8, "updates_per_rollout": 1,
    ...                     "num_iterations": 1, "micro_batch_size": None},
    ...           "optimizer": {"_target_": "torch.optim.AdamW", "lr": 3e-5, "betas": [0.9, 0.999], "eps": 1e-8,
    ...                         "weight_decay": 0.0},
    ...           "scheduler": {"name": "constant_with_warmup", "warmup_steps": 0}, "seed": 0,
    ...           "rewards": {"accuracy": {"weight": 1.0}, "format": {"weight": 0.2}}}
    >>> fields = grpo_fields(config, Path("out"))
    >>> fields["per_device_train_batch_size"], fields["num_generations"], fields["reward_weights"], fields["bf16"]
    (16, 8, [1.0, 0.2], True)
    """
    batch, optimizer = config["batch"], config["optimizer"]
    if optimizer["_target_"] != "torch.optim.AdamW":
        raise ValueError("the TRL baseline mirrors optimizer=adamw")
    if batch["updates_per_rollout"] != 1 or batch["num_iterations"] != 1 or batch["micro_batch_size"] is not None:
        raise ValueError("the TRL baseline mirrors one update per rollout in one micro batch (batch.updates_per_rollout"
                         "=1, batch.num_iterations=1, batch.micro_batch_size=null)")
    completions = batch["prompts_per_step"] * batch["generations_per_prompt"]
    trainer = {key: value for key, value in config["trainer"].items() if key not in DERIVED_OR_OWNED}
    return {
        **trainer,
        "per_device_train_batch_size": completions,
        "gradient_accumulation_steps": 1,
        "num_generations": batch["generations_per_prompt"],
        "learning_rate": optimizer["lr"],
        "weight_decay": optimizer["weight_decay"],
        "optim": "adamw_torch",  # torch.optim.AdamW, grpolab's optimizer=adamw
        "adam_beta1": optimizer["betas"][0],
        "adam_beta2": optimizer["betas"][1],
        "adam_epsilon": optimizer["eps"],
        "lr_scheduler_type": config["scheduler"]["name"],
        "warmup_steps": config["scheduler"]["warmup_steps"],
        "reward_weights": [float(spec["weight"]) for spec in config["rewards"].values()],
        "seed": config["seed"],
        "output_dir": str(output_dir),
        "report_to": [],
        "save_strategy": "no",
    }


def gsm8k_rows(data: dict[str, Any]):
    """The training rows of grpolab's ``data=gsm8k`` on a local file, built by hand: shuffle with the data seed, hold
    out the first ``eval_size`` rows, chat prompt of system prompt + question, gold number after ``####``."""
    from datasets import load_dataset

    rows = load_dataset("json", data_files=data["path"], split="train").shuffle(seed=data["seed"])
    rows = rows.select(range(data["eval_size"], len(rows)))
    if data["train_size"] is not None:
        rows = rows.select(range(min(data["train_size"], len(rows))))

    def chat(row: dict[str, str]) -> dict[str, Any]:
        return {"prompt": [{"role": "system", "content": data["system_prompt"]},
                           {"role": "user", "content": row["question"]}],
                "answer": row["answer"].rpartition("####")[2].strip().replace(",", "")}

    return rows.map(chat, remove_columns=rows.column_names)


def main(run_dir: Path, output_dir: Path) -> None:
    import torch
    from hydra.utils import instantiate
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    config = json.loads((run_dir / "manifest.json").read_text())["config"]
    if config["data"]["_target_"] != "grpolab.data.gsm8k.GSM8K" or config["data"]["path"] is None:
        raise ValueError("the TRL baseline reads GSM8K from a local file (data=gsm8k data.path=...)")
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config["threads"])
    model_cfg = config["model"]
    tokenizer = instantiate(model_cfg["tokenizer"])
    model = instantiate(model_cfg["network"], tokenizer=tokenizer)
    # The reward callables follow TRL's contract; `name` is what TRL logs them as (rewards/<name>/mean).
    rewards = [instantiate({key: value for key, value in spec.items() if key != "weight"}, name=name)
               for name, spec in config["rewards"].items()]
    metrics_file = (output_dir / "metrics.jsonl").open("w")

    class StepLog(TrainerCallback):
        """Wall seconds between two logs per step, as grpolab's metrics.jsonl has them, with TRL's metrics."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_time, self.last_step = time.perf_counter(), state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "train_runtime" in logs:
                return
            now = time.perf_counter()
            row = {"split": "train", "step": state.global_step,
                   "step_time_s": (now - self.last_time) / max(1, state.global_step - self.last_step), **logs}
            self.last_time, self.last_step = now, state.global_step
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=GRPOConfig(**grpo_fields(config, output_dir)),
        train_dataset=gsm8k_rows(config["data"]),
        processing_class=tokenizer,
        callbacks=[StepLog()],
    )
    trainer.train()
    metrics_file.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
