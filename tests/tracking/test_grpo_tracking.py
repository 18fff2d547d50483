"""End to end: tiny real GRPOTrainer jobs inside tracked_run with the offline wandb logger, two in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grpolab.tracking.loggers import JobInfo, WandbLogger
from grpolab.tracking.rundir import read_metrics
from grpolab.tracking.session import tracked_run

SWEEP_DIR = "outputs/multirun/2024-05-01/12-00-00"


def contains_one(completions: list[str], **kwargs: Any) -> list[float]:
    return [float("1" in completion) for completion in completions]


def brevity(completions: list[str], **kwargs: Any) -> list[float]:
    return [-len(completion) / 8 for completion in completions]


def train_tiny_grpo(run_dir: Path, job_num: int) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                    pad_token_id=0, eos_token_id=1, bos_token_id=None)
    )
    job = JobInfo(overrides=(f"seed={job_num}",), sweep_dir=SWEEP_DIR, job_num=job_num)
    with tracked_run(run_dir, config={"seed": job_num}, seed=job_num, logger=WandbLogger(), job_info=job) as run:
        args = GRPOConfig(
            output_dir=str(run.run_dir.path), report_to=run.report_to, per_device_train_batch_size=4,
            num_generations=4, max_completion_length=6, max_steps=2, logging_steps=1, save_strategy="no",
            use_cpu=True, seed=job_num, disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=[contains_one, brevity], args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_dict({"prompt": ["1+1=", "2+3=", "4+4=", "5+1="]}), callbacks=run.callbacks,
        )
        trainer.train()
        run.run_dir.write_summary(eval_after={"accuracy": 0.0})
    return run.summary


@pytest.mark.slow
def test_grpo_jobs_write_metrics_summary_curve_and_exactly_one_wandb_run_each(
    tmp_path: Path, clean_tracking_env: None, offline_wandb_run: Any
) -> None:
    import wandb

    run_ids = set()
    for job_num in range(2):
        run_dir = tmp_path / str(job_num)
        summary = train_tiny_grpo(run_dir, job_num)
        assert wandb.run is None

        rows = read_metrics(run_dir / "metrics.jsonl")
        assert [row["step"] for row in rows] == [1, 2]
        for row in rows:
            for key in ("loss", "reward", "rewards/contains_one/mean", "rewards/brevity/mean", "step_time_s"):
                assert isinstance(row[key], float), key
        assert summary["status"] == "completed" and summary["steps"] == 2
        assert summary["train_reward_final"] == pytest.approx(sum(row["reward"] for row in rows) / 2)
        assert summary["step_time_s"] > 0 and summary["train_runtime_s"] > 0
        assert (run_dir / "reward_curve.png").exists() and (run_dir / "manifest.json").exists()

        # transformers' WandbCallback and TRL logged into our run instead of opening a second one
        offline = offline_wandb_run(run_dir)
        assert offline.run.run_group == "2024-05-01_12-00-00"
        assert "train/rewards/contains_one/mean" in offline.history_keys
        assert offline.summary["eval_after/accuracy"] == 0.0 and offline.summary["status"] == "completed"
        run_ids.add(offline.run.run_id)
    assert len(run_ids) == 2
