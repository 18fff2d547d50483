"""grpolab's composition root: compose the config, check it, build everything in a fixed order, run GRPO.

    python -m grpolab.train                                   # the embedded offline default
    python -m grpolab.train model=qwen2_5_0_5b_instruct data=gsm8k rewards=[accuracy,format]
    python -m grpolab.train -m optimizer.lr=1e-4,3e-4 seed=0,1

``train`` is one job (skip it if completed with ``resume=true``, validate, record it in the run directory);
``build_and_train`` the fixed build order: seed -> tokenizer -> environment (tools) -> data -> rewards -> prompts ->
GRPOConfig -> model -> warm start -> held-out eval -> trainer -> train (from the newest checkpoint with
``resume=true``) -> final model -> held-out eval. Every mismatch of data, environment, rewards and GRPOConfig fails
before a model is loaded; torch, transformers and TRL are imported inside the functions, so ``--cfg job`` and config
errors stay instant.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from grpolab.config.paths import CONF_DIR
from grpolab.config.schema import register_schemas
from grpolab.config.validate import config_errors, validate
from grpolab.preflight import run_preflight
from grpolab.sweeps import completed_before, job_ending, reported_sweep, with_resumed_sweep_dir
from grpolab.tracking.checkpoints import prepare_resume, resume_requested
from grpolab.tracking.console import fields, quiet_libraries
from grpolab.tracking.processes import join_before_hydra, launched_processes
from grpolab.tracking.rundir import FINAL_MODEL_DIR, failures_recorded, lookup_metric
from grpolab.tracking.session import TrackedRun, tracked_run

log = logging.getLogger("grpolab.train")
register_schemas()


def train(cfg: DictConfig) -> float | None:
    """Run one job; returns ``cfg.optimized_metric`` from the run's summary (what Optuna maximises)."""
    processes = launched_processes()  # one, or several started by a launcher (torchrun): one data-parallel run
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resuming = resume_requested(cfg.resume, run_dir)
    if resuming and (done := completed_before(run_dir)) is not None:
        return lookup_metric(done, cfg.optimized_metric)
    with failures_recorded(run_dir):  # a config error, too, leaves summary.json with status: failed
        batch_fields = validate(cfg, processes.world_size)
    # The newest complete checkpoint, the run directory cut back to it (by the main process, for all of them).
    resume = processes.on_main(prepare_resume, run_dir) if resuming else None
    quiet_libraries()  # library warnings and logs to train.log, not the console
    config = OmegaConf.to_container(cfg, resolve=True)
    with tracked_run(run_dir, config=config, seed=cfg.seed, logger=instantiate(cfg.logger),
                     resumed=resume is not None) as run:
        build_and_train(cfg, config, run, batch_fields, resume)
    return lookup_metric(run.summary, cfg.optimized_metric)


def build_and_train(cfg: DictConfig, config: dict, run: TrackedRun, batch_fields: dict, resume: str | None) -> None:
    """The build order of the module docstring, each step logged; results go to ``run``'s summary."""
    import torch
    from transformers import set_seed

    from grpolab.data.context import check_prompts_fit
    from grpolab.data.prompts import PromptEncoder, text_tokenizer
    from grpolab.environments.tools import build_environment, check_chat_prompts
    from grpolab.rewards import build_rewards, check_columns
    from grpolab.trainer.build import build_trainer, grpo_arguments
    from grpolab.trainer.engines import training_precision
    from grpolab.trainer.evaluation import HeldOutEvaluator
    from grpolab.trainer.final_model import save_final_model

    set_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    log.info("run directory %s; seed %d, %d torch threads", run.run_dir.path, cfg.seed, torch.get_num_threads())
    with config_errors("model.tokenizer"):
        processing_class = instantiate(cfg.model.tokenizer)
    log.info("tokenizer: %s, %d tokens", type(processing_class).__name__, len(text_tokenizer(processing_class)))
    with config_errors("environment"):
        environment = build_environment(cfg.environment, processing_class)
    encoder = PromptEncoder(processing_class, config["trainer"]["chat_template_kwargs"],
                            tools=environment.prompt_tools() if environment else ())
    with config_errors("data"):
        splits = instantiate(cfg.data).load()
    if environment is not None:
        with config_errors("environment"):
            check_chat_prompts(splits, cfg.data._target_, environment)
    log.info("data: %s, %d train / %d held-out rows", cfg.data._target_, len(splits.train), len(splits.eval))
    with config_errors("rewards"):
        rewards = build_rewards(cfg.rewards, cfg.reward_level, encoder.tokenizer, cfg.trainer.max_completion_length)
    log.info("rewards (%s level): %s", rewards.level.value, rewards)
    with config_errors("tokenizer_mode"):
        preparation = instantiate(cfg.tokenizer_mode, encoder=encoder)
        train_set = preparation.prepare(splits.train, "train", rewards.all_required_columns, config["data"])
        eval_set = preparation.prepare(splits.eval, "eval", (), config["data"])
        check_columns(rewards, train_set.column_names, splits.source)
        warm_start = instantiate(cfg.warmstart).checked(train_set.column_names) if cfg.warmstart else None
    log.info("prompts: %s, train columns %s", type(preparation).__name__, train_set.column_names)
    check_prompts_fit(cfg, encoder, train_set, eval_set, splits.source)
    args = grpo_arguments(cfg, batch_fields, rewards.weights, run.report_to, run.run_dir.path)
    model = instantiate(cfg.model.network, tokenizer=encoder.processing_class).to(args.device)
    log.info("model: %s, %.2fM parameters on %s", type(model).__name__, model.num_parameters() / 1e6, args.device)
    evaluate = HeldOutEvaluator.from_config(cfg.eval, eval_set, encoder, environment)
    with training_precision(args):
        if warm_start is not None:  # computed by the main process, which sends the others its weights
            # The environment computes the tool results demonstrations leave to it (environment=crop); the warm
            # start decides whether its settings join the cache key.
            warm = launched_processes().main_computes(
                warm_start.run, model, train_set, encoder, Path(cfg.paths.cache_dir) / "warmstart",
                {"model": config["model"], "data": config["data"], "environment": config["environment"]}, cfg.seed,
                environment)
            log.info("warm start: %s", fields(run.record(warmstart=warm)["warmstart"]))
        before = run.record_once("eval_before", lambda: evaluate(model))  # a resumed run keeps its first attempt's
    log.info("held-out before GRPO (%d problems): %s", len(evaluate), fields(before))
    trainer = build_trainer(cfg, args, model, train_set, rewards, encoder, preparation, run, evaluate, environment)
    trainer.train(resume_from_checkpoint=resume)  # SIGTERM/SIGUSR1: a checkpoint, then status: preempted
    save_final_model(trainer, run.run_dir.path / FINAL_MODEL_DIR, cfg.model.modality)
    with training_precision(args):
        after = run.record(eval_after=evaluate(model))["eval_after"]
    log.info("held-out accuracy: %.3f before -> %.3f after GRPO", before["accuracy"], after["accuracy"])
    if "tool_call_frequency" in after:
        log.info("held-out tool calls per completion: %.3f before -> %.3f after GRPO (failed calls: %.3f -> %.3f)",
                 before["tool_call_frequency"], after["tool_call_frequency"], before["tool_failure_frequency"],
                 after["tool_failure_frequency"])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def hydra_entry(cfg: DictConfig) -> float | None:
    with job_ending(multirun=HydraConfig.get().mode == RunMode.MULTIRUN):
        return train(cfg)


def main() -> None:
    """Console entry point (``grpolab-train`` and ``python -m grpolab.train``)."""
    # One line and exit 2 for a bad group option / key / value / search space, before any job (or sweep dir) exists;
    # with `-m ... resume=true` the hook points Hydra at the earlier sweep of the same command.
    sys.argv = run_preflight(sys.argv, CONF_DIR, on_multirun=with_resumed_sweep_dir)
    join_before_hydra()  # under torchrun: every process takes rank 0's launch time, hence its run directory
    with reported_sweep():  # the sweep report also when a failed job stops Hydra's sweeper; exit 1 on failed jobs
        hydra_entry()


if __name__ == "__main__":
    main()
