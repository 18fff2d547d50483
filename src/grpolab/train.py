"""grpolab's composition root: compose the config, check it, build everything in a fixed order, run GRPO.

    python -m grpolab.train                                   # the embedded offline default
    python -m grpolab.train model=qwen2_5_0_5b_instruct data=gsm8k rewards=[accuracy,format]
    python -m grpolab.train -m optimizer.lr=1e-4,3e-4 seed=0,1

Build order: validate -> seed -> tokenizer -> data -> rewards -> prompts (per tokenizer mode) -> model -> warm start
-> held-out eval -> GRPOConfig -> trainer -> train -> held-out eval. Data and rewards come before the model so that
every data/reward mismatch fails before a model is loaded. Heavy imports live inside ``train`` so that
``--cfg job`` and config errors stay instant.
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
from grpolab.config.validate import ConfigError, config_errors, validate

log = logging.getLogger("grpolab.train")
register_schemas()


def train(cfg: DictConfig) -> float | None:
    """Run one job; returns ``cfg.optimized_metric`` from the run's summary (what Optuna maximises)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.resume:
        from grpolab.sweeps import previous_completion
        from grpolab.tracking.rundir import lookup_metric as recorded_metric

        if (done := previous_completion(run_dir, HydraConfig.get().overrides.task)) is not None:
            log.info("resume: %s already completed; skipping it", run_dir)
            return recorded_metric(done, cfg.optimized_metric)
    try:
        batch_fields = validate(cfg)
        trainer_node = OmegaConf.to_container(cfg.trainer, resolve=True)
        from grpolab.trainer.args import check_trainer_keys  # imports trl: after the torch-free checks

        check_trainer_keys(trainer_node)
    except ConfigError as error:
        from grpolab.tracking.rundir import RunDirectory

        RunDirectory(run_dir).mark_failed(error)
        raise

    import torch
    from transformers import set_seed

    from grpolab.rewards import GuardedReward, build_rewards, check_columns
    from grpolab.models.vlm import text_tokenizer
    from grpolab.tracking.rundir import lookup_metric
    from grpolab.tracking.session import tracked_run
    from grpolab.trainer.args import build_grpo_config
    from grpolab.models.reference import pin_reference_policy
    from grpolab.trainer.callbacks import ParameterChangeCallback
    from grpolab.trainer.evaluation import evaluate_greedy, reward_scorer
    from grpolab.trainer.grpo import GrpolabTrainer, trainer_dataset

    config = OmegaConf.to_container(cfg, resolve=True)
    with tracked_run(run_dir, config=config, seed=cfg.seed, logger=instantiate(cfg.logger)) as run:
        log.info("run directory: %s", run_dir)
        set_seed(cfg.seed)
        torch.set_num_threads(cfg.threads)
        log.info("seed %d, %d torch threads", cfg.seed, torch.get_num_threads())

        with config_errors("model.tokenizer"):
            processing_class = instantiate(cfg.model.tokenizer)  # a tokenizer, or a VLM's processor
        tokenizer = text_tokenizer(processing_class)
        log.info("tokenizer: %s, %d tokens", type(processing_class).__name__, len(tokenizer))

        with config_errors("data"):
            splits = instantiate(cfg.data).load()
        log.info("data: %s, %d train / %d held-out rows", cfg.data._target_, len(splits.train), len(splits.eval))

        with config_errors("rewards"):
            rewards = build_rewards(
                cfg.rewards, cfg.reward_level,
                encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
                special_ids=tokenizer.all_special_ids,
            )
        log.info("rewards (%s level): %s", rewards.level.value,
                 ", ".join(f"{n} x{w:g}" for n, w in zip(rewards.names, rewards.weights)))

        with config_errors("tokenizer_mode"):
            prompts = instantiate(cfg.tokenizer_mode.prompts)
            data_key = OmegaConf.to_container(cfg.data, resolve=True)
            train_set = prompts.prepare(splits.train, processing_class, rewards.all_required_columns, data_key, "train")
            eval_set = prompts.prepare(splits.eval, processing_class, (), data_key, "eval")  # ids mode: cached
        with config_errors("rewards"):
            check_columns(rewards, train_set.column_names)
        log.info("prompts: tokenizer_mode=%s, train columns %s", prompts.mode.value, train_set.column_names)

        model = instantiate(cfg.model.network, tokenizer=processing_class)
        log.info("model: %s, %.2fM parameters", type(model).__name__, model.num_parameters() / 1e6)

        held_out, evaluate = _held_out_evaluator(cfg, processing_class, eval_set, evaluate_greedy, reward_scorer)
        if cfg.warmstart:
            warm = _warm_start(cfg, model, tokenizer, train_set)
            run.run_dir.write_summary(warmstart=warm)
        run.run_dir.write_summary(eval_before=evaluate(model))
        log.info("held-out before GRPO (%d problems): %s", len(held_out), run.run_dir.read_summary()["eval_before"])

        optimizer = instantiate(cfg.optimizer)(params=model.parameters())
        args = build_grpo_config(
            {**trainer_node, **batch_fields},
            learning_rate=cfg.optimizer.lr,
            reward_weights=rewards.weights,
            report_to=run.report_to,
            output_dir=str(run_dir),
            seed=cfg.seed,
        )
        if args.beta != 0:
            pin_reference_policy(model, run_dir / "reference_policy",
                                 loadable_as_is=cfg.model.name_or_path is not None and not cfg.warmstart)
        log.info("GRPOConfig: %d steps, %d prompts x %d completions per generation batch, loss_type=%s, beta=%g",
                 args.max_steps, args.generation_batch_size // args.num_generations, args.num_generations,
                 args.loss_type, args.beta)

        trainer = GrpolabTrainer(
            model=model,
            reward_funcs=[GuardedReward(f) for f in rewards.funcs],
            args=args,
            train_dataset=trainer_dataset(train_set),
            processing_class=processing_class,
            callbacks=[*run.callbacks, ParameterChangeCallback(lambda fields: run.run_dir.write_summary(**fields))],
            optimizers=(optimizer, None),
            lazy_decoding=prompts.mode.value == "ids",
            dynamic_sampling=cfg.dynamic_sampling,
        )
        trainer.train()

        run.run_dir.write_summary(eval_after=evaluate(model))
        summary = run.run_dir.read_summary()
        log.info("held-out accuracy: %.3f before -> %.3f after GRPO",
                 summary["eval_before"]["accuracy"], summary["eval_after"]["accuracy"])
    return lookup_metric(run.summary, cfg.optimized_metric)


def _held_out_evaluator(cfg, processing_class, eval_rows, evaluate_greedy, reward_scorer):
    """Greedy evaluation on the first ``eval.num_problems`` held-out rows, scored by ``eval.metrics``."""
    from grpolab.data.prepare import encode_prompt
    from grpolab.data.prepare_vision import has_images
    from grpolab.models.vlm import text_tokenizer
    from grpolab.rewards import build_rewards

    tokenizer = text_tokenizer(processing_class)
    if cfg.eval.num_problems is not None:
        eval_rows = eval_rows.select(range(min(cfg.eval.num_problems, len(eval_rows))))
    if has_images(eval_rows):  # image prompts are generated with their pixels, through the processor
        from grpolab.trainer.vision_eval import image_greedy_evaluator

        metrics = build_rewards(cfg.eval.metrics, "text").funcs
        return eval_rows, image_greedy_evaluator(processing_class, eval_rows, metrics, reward_scorer,
                                                 cfg.eval.max_new_tokens, cfg.eval.batch_size)
    prompt_ids = eval_rows["prompt_ids"] if "prompt_ids" in eval_rows.column_names else [
        encode_prompt(tokenizer, prompt) for prompt in eval_rows["prompt"]
    ]
    metrics = build_rewards(cfg.eval.metrics, "text").funcs
    score = reward_scorer(metrics, tokenizer, eval_rows)

    def evaluate(model):
        return evaluate_greedy(model, prompt_ids, score, tokenizer.pad_token_id, cfg.eval.max_new_tokens,
                               cfg.eval.batch_size)

    return eval_rows, evaluate


def _warm_start(cfg, model, tokenizer, train_rows):
    from grpolab.data.prepare import encode_answer, encode_prompt

    warm = instantiate(cfg.warmstart)
    examples = train_rows.map(lambda row: {
        "prompt_ids": row["prompt_ids"] if "prompt_ids" in row else encode_prompt(tokenizer, row["prompt"]),
        "solution_ids": encode_answer(tokenizer, row["solution"]),
    })
    key = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in ("model", "data")}
    result = warm.run(model, examples, tokenizer.eos_token_id, tokenizer.pad_token_id,
                      Path(cfg.paths.cache_dir) / "warmstart", key, cfg.seed)
    log.info("warm start: %s", result)
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def hydra_entry(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except ConfigError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the job is recorded as failed; the sweep goes on
        print(f"grpolab: config error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console entry point (``grpolab-train`` and ``python -m grpolab.train``)."""
    from grpolab.config.preflight import run_preflight
    from grpolab.sweeps import reported_sweep

    # One line and exit 2 for a bad group option / key / search space, before any job (or sweep dir) exists;
    # with `-m ... resume=true` it also points Hydra at the earlier sweep of the same command.
    sys.argv = run_preflight(sys.argv, CONF_DIR)
    with reported_sweep():  # the sweep report also when a failed job stops Hydra's sweeper; exit 1 on failed jobs
        hydra_entry()


if __name__ == "__main__":
    main()
