"""From the config and the built parts to a ready ``GrpolabTrainer``: its ``GRPOConfig``, optimizer, KL reference
and hooks. Called by the composition root once the model, data and rewards exist."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from trl import GRPOConfig

from grpolab.config.enums import TokenizerMode
from grpolab.config.validate import config_errors
from grpolab.models.reference import pin_reference_policy
from grpolab.tracking.processes import launched_processes
from grpolab.tracking.progress import show_progress
from grpolab.tracking.session import TrackedRun
from grpolab.trainer.args import build_grpo_config, grpo_kwargs
from grpolab.trainer.dynamic_sampling import DynamicSampler
from grpolab.trainer.engines import adapter_errors, engine_fields, optimizer_class_and_arguments
from grpolab.trainer.evaluation import HeldOutEvaluator, PeriodicEvaluation
from grpolab.trainer.grpo import GrpolabTrainer, trainer_dataset
from grpolab.trainer.parameter_change import ParameterChangeCallback

log = logging.getLogger(__name__)


def grpo_arguments(cfg: DictConfig, batch_fields: Mapping[str, Any], reward_weights: Sequence[float],
                   report_to: list[str], run_dir: Path) -> GRPOConfig:
    """``GRPOConfig`` from the ``trainer`` node, the derived batch fields, the engine (``distributed`` and
    ``generation`` nodes) and the keys grpolab owns elsewhere (``max_tool_calling_iterations``: the ``environment``).
    Reading ``args.device`` (here, for the log line) sets up accelerate's state: under a launcher, the process group
    forms now."""
    args = build_grpo_config(
        {**OmegaConf.to_container(cfg.trainer, resolve=True), **batch_fields},
        **grpo_kwargs(engine_fields(cfg, launched_processes().world_size)),
        learning_rate=cfg.optimizer.lr,
        weight_decay=optimizer_class_and_arguments(cfg.optimizer)[1].get("weight_decay", 0.0),
        lr_scheduler_type=cfg.scheduler.name,
        warmup_steps=cfg.scheduler.warmup_steps,
        reward_weights=list(reward_weights),
        report_to=report_to,
        output_dir=str(run_dir),
        seed=cfg.seed,
        max_tool_calling_iterations=cfg.environment.max_tool_calling_iterations if cfg.environment else None,
    )
    log.info("GRPOConfig: %d steps, %d prompts x %d completions per generation batch on %d process(es) (%s), "
             "loss_type=%s, beta=%g", args.max_steps, args.generation_batch_size // args.num_generations,
             args.num_generations, args.world_size, args.device, args.loss_type, args.beta)
    return args


@adapter_errors()
def build_trainer(cfg: DictConfig, args: GRPOConfig, model: Any, train_set: Any, rewards: Any, encoder: Any,
                  preparation: Any, run: TrackedRun, evaluate: HeldOutEvaluator | None = None,
                  environment: Any = None) -> GrpolabTrainer:
    """The trainer, with the optimizer group's optimizer (built by the Trainer once the engine has wrapped the
    model), the adapters of the ``peft`` group, the KL reference pinned to the starting policy (beta > 0; with
    adapters TRL uses the base model with the adapters disabled instead), the dynamic sampler when
    ``dynamic_sampling.enabled``, the held-out ``evaluate`` every ``eval.every_steps``, the ``run``'s callbacks
    (metrics file, logger), the check that training changed the parameters, and grpolab's progress lines in place of
    the Trainer's console output; the ``environment``'s tools and environment factory (a
    ``grpolab.environments.tools.ToolEnvironment``, or None) go to TRL as they are."""
    run_dir = run.run_dir.path
    with config_errors("peft"):
        adapters = instantiate(cfg.peft, _convert_="all") if cfg.peft else None
    if args.beta != 0 and adapters is None:  # the main process saves the starting policy, every process loads it
        model.config._name_or_path = launched_processes().on_main(
            _pinned_reference, model, run_dir, cfg.model.name_or_path is not None and not cfg.warmstart)
    trainer = GrpolabTrainer(
        model=model,
        reward_funcs=rewards.trainer_reward_funcs,
        reward_processing_classes=rewards.reward_processing_classes,
        args=args,
        train_dataset=trainer_dataset(train_set),
        processing_class=encoder.processing_class,
        callbacks=[*run.callbacks, ParameterChangeCallback(run.record)],
        optimizer_cls_and_kwargs=optimizer_class_and_arguments(cfg.optimizer),
        peft_config=adapters,
        prompt_encoder=encoder,
        ids_mode=preparation.mode is TokenizerMode.ids,
        dynamic_sampling=DynamicSampler.from_config(cfg.dynamic_sampling),
        **(environment.trainer_kwargs() if environment is not None else {}),
    )
    if evaluate is not None and cfg.eval.every_steps is not None:
        trainer.add_callback(PeriodicEvaluation(evaluate, cfg.eval.every_steps, trainer.log_held_out))
    show_progress(trainer)
    return trainer


def _pinned_reference(model: Any, run_dir: Path, loadable_as_is: bool) -> str:
    pin_reference_policy(model, run_dir / "reference_policy", loadable_as_is=loadable_as_is)
    return model.config._name_or_path
