"""Paper presets (experiments/*.yaml): the resolved GRPOConfig against a table kept here, and debug=smoke end to end.

The table is the contract: changing a preset's number means changing it here too, on purpose. No model or dataset is
built by the table tests; the smoke runs use only the tiny offline models.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from grpolab.config.paths import CONF_DIR
from grpolab.config.validate import validate

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
# A paper preset names its source on its first header line (an arXiv id or a code repository); the other experiments
# are examples and studies (sweeps of the default run).
_SOURCE = re.compile(r"arXiv \d{4}\.\d{4,5}|github\.com/")


def _is_paper_preset(name: str) -> bool:
    lines = (Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text().splitlines()
    header = next(line for line in lines if line.startswith("#") and "@package" not in line)
    return bool(_SOURCE.search(header))


PAPER_PRESETS = [name for name in EXPERIMENTS if _is_paper_preset(name)]

#: Resolved GRPOConfig fields per preset, on one process (TRL's generation_batch_size = the paper's rollout). The
#: presets that train 7B-32B models select bf16 mixed precision (bf16=True, changed on purpose with the engine groups).
EXPECTED_GRPO_CONFIG: dict[str, dict[str, Any]] = {
    "deepseekmath_grpo": dict(
        loss_type="grpo", beta=0.04, use_bias_correction_kl=False, epsilon=0.2, epsilon_high=None,
        num_generations=64, per_device_train_batch_size=4, gradient_accumulation_steps=256, steps_per_generation=256,
        generation_batch_size=1024, num_iterations=1, learning_rate=1e-6, scale_rewards="group",
        importance_sampling_level="token", max_completion_length=1024, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=False, sync_ref_model=False, lr_scheduler_type="constant_with_warmup",
        warmup_steps=0, max_grad_norm=1.0, max_steps=200, bf16=True, reward_weights=[1.0],
    ),
    "deepseek_r1_zero": dict(
        loss_type="grpo", beta=0.001, use_bias_correction_kl=False, epsilon=0.2, epsilon_high=None,
        num_generations=16, per_device_train_batch_size=4, gradient_accumulation_steps=128, steps_per_generation=2048,
        generation_batch_size=8192, num_iterations=1, learning_rate=3e-6, scale_rewards="group",
        importance_sampling_level="token", max_completion_length=32768, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=False, sync_ref_model=True, ref_model_mixup_alpha=1.0, ref_model_sync_steps=400,
        lr_scheduler_type="constant_with_warmup", warmup_steps=0, max_grad_norm=1.0, max_steps=10400,
        bf16=True, reward_weights=[1.0, 1.0],
    ),
    "dapo": dict(
        loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28, num_generations=16,
        per_device_train_batch_size=4, gradient_accumulation_steps=128, steps_per_generation=2048,
        generation_batch_size=8192, num_iterations=1, learning_rate=1e-6, scale_rewards="group",
        importance_sampling_level="token", max_completion_length=20480, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=True, sync_ref_model=False, lr_scheduler_type="constant_with_warmup",
        warmup_steps=320, max_grad_norm=1.0, max_steps=200, bf16=True, reward_weights=[2.0, 1.0],
    ),
    "dr_grpo": dict(
        loss_type="dr_grpo", beta=0.0, epsilon=0.2, epsilon_high=None, num_generations=8,
        per_device_train_batch_size=1, gradient_accumulation_steps=128, steps_per_generation=1024,
        generation_batch_size=1024, num_iterations=1, learning_rate=1e-6, scale_rewards="none",
        importance_sampling_level="token", max_completion_length=3000, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=False, sync_ref_model=False, lr_scheduler_type="constant_with_warmup",
        warmup_steps=0, max_grad_norm=1.0, max_steps=200, bf16=True, reward_weights=[1.0],
    ),
    "gspo": dict(
        loss_type="grpo", beta=0.0, epsilon=3e-4, epsilon_high=4e-4, num_generations=8,
        per_device_train_batch_size=4, gradient_accumulation_steps=16, steps_per_generation=64,
        generation_batch_size=256, num_iterations=1, learning_rate=1e-6, scale_rewards="group",
        importance_sampling_level="sequence", max_completion_length=512, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=False, sync_ref_model=False, lr_scheduler_type="constant_with_warmup",
        warmup_steps=0, max_grad_norm=1.0, max_steps=200, bf16=True, reward_weights=[1.0],
    ),
    "r1_v": dict(
        loss_type="grpo", beta=0.04, use_bias_correction_kl=False, epsilon=0.2, epsilon_high=None,
        num_generations=8, per_device_train_batch_size=8, gradient_accumulation_steps=16, steps_per_generation=16,
        generation_batch_size=128, num_iterations=1, learning_rate=1e-6, scale_rewards="group",
        importance_sampling_level="token", max_completion_length=256, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=False, sync_ref_model=False, lr_scheduler_type="linear", warmup_steps=0,
        max_grad_norm=1.0, max_steps=100, reward_weights=[1.0, 1.0],
    ),
    "retool": dict(
        loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28, num_generations=16,
        per_device_train_batch_size=4, gradient_accumulation_steps=256, steps_per_generation=2048,
        generation_batch_size=8192, num_iterations=1, learning_rate=1e-6, scale_rewards="group",
        importance_sampling_level="token", max_completion_length=16384, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=False, sync_ref_model=False, lr_scheduler_type="constant_with_warmup",
        warmup_steps=0, max_grad_norm=1.0, max_steps=3200, bf16=True, reward_weights=[2.0],
        max_tool_calling_iterations=8,
    ),
    "torl": dict(
        loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=None, num_generations=8,
        per_device_train_batch_size=4, gradient_accumulation_steps=32, steps_per_generation=32,
        generation_batch_size=128, num_iterations=1, learning_rate=1e-6, scale_rewards="group",
        importance_sampling_level="token", max_completion_length=512, temperature=1.0, top_p=1.0, top_k=0,
        mask_truncated_completions=False, sync_ref_model=False, lr_scheduler_type="constant_with_warmup",
        warmup_steps=0, max_grad_norm=1.0, max_steps=200, bf16=True, reward_weights=[2.0],
        max_tool_calling_iterations=4,
    ),
}

#: What the presets set outside GRPOConfig: optimizer (it owns betas and weight decay), rewards, dynamic sampling,
#: and the model/data options. Dotted keys into the resolved config.
EXPECTED_OTHER: dict[str, dict[str, Any]] = {
    "deepseekmath_grpo": {
        "model.attn_implementation": "sdpa",
        "model.name_or_path": "deepseek-ai/deepseek-math-7b-instruct", "data._target_": "grpolab.data.gsm8k.GSM8K",
        "optimizer.betas": [0.9, 0.999], "optimizer.weight_decay": 0.0, "rewards": ["accuracy"],
        "dynamic_sampling.enabled": False, "warmstart": {},
    },
    "deepseek_r1_zero": {
        "model.attn_implementation": "sdpa",
        "model.name_or_path": "Qwen/Qwen2.5-7B", "data._target_": "grpolab.data.math_problems.MathProblems",
        "optimizer.betas": [0.9, 0.999], "optimizer.weight_decay": 0.0, "rewards": ["accuracy", "format"],
        "rewards.format.require_think": True, "dynamic_sampling.enabled": False, "warmstart": {},
    },
    "dapo": {
        "model.attn_implementation": "sdpa",
        "model.name_or_path": "Qwen/Qwen2.5-32B", "data._target_": "grpolab.data.math_problems.MathProblems",
        "optimizer.betas": [0.9, 0.999], "optimizer.weight_decay": 0.1, "rewards": ["accuracy", "overlong"],
        "rewards.overlong.level": "token", "rewards.overlong.max_length": 20480, "rewards.overlong.cache": 4096,
        "dynamic_sampling.enabled": True, "dynamic_sampling.max_generation_rounds": 10, "warmstart": {},
    },
    "dr_grpo": {
        "model.attn_implementation": "sdpa",
        "model.name_or_path": "Qwen/Qwen2.5-Math-7B", "data._target_": "grpolab.data.math_problems.MathProblems",
        "data.levels": ["Level 3", "Level 4", "Level 5"], "optimizer.betas": [0.9, 0.95],
        "optimizer.weight_decay": 0.0, "rewards": ["accuracy"], "dynamic_sampling.enabled": False, "warmstart": {},
    },
    "gspo": {
        "model.attn_implementation": "sdpa",
        "model.name_or_path": "Qwen/Qwen3-30B-A3B-Base", "data._target_": "grpolab.data.math_problems.MathProblems",
        "optimizer.betas": [0.9, 0.999], "optimizer.weight_decay": 0.0, "rewards": ["accuracy"],
        "dynamic_sampling.enabled": False, "warmstart": {},
    },
    "r1_v": {
        "model.name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "model.modality": "vision",
        "data.path": "leonardPKU/clevr_cogen_a_train", "optimizer.betas": [0.9, 0.999],
        "optimizer.weight_decay": 0.0, "rewards": ["accuracy", "format"], "rewards.format.require_think": True,
        "dynamic_sampling.enabled": False, "warmstart": {},
    },
    "retool": {
        "model.attn_implementation": "sdpa",
        "model.name_or_path": "Qwen/Qwen2.5-32B-Instruct", "data._target_": "grpolab.data.math_problems.MathProblems",
        "environment.tools.0._target_": "grpolab.environments.python.PythonInterpreter",
        "optimizer.betas": [0.9, 0.999], "optimizer.weight_decay": 0.01, "rewards": ["accuracy"],
        "rewards.accuracy.fallbacks": True, "dynamic_sampling.enabled": False, "warmstart": {},
    },
    "torl": {
        "model.attn_implementation": "sdpa",
        "model.name_or_path": "Qwen/Qwen2.5-Math-7B", "data._target_": "grpolab.data.math_problems.MathProblems",
        "data.system_prompt": "Please integrate natural language reasoning with programs to solve the problem above, "
                              "and put your final answer within \\boxed{}.",
        "environment.tools.0._target_": "grpolab.environments.python.PythonInterpreter",
        "optimizer.betas": [0.9, 0.999], "optimizer.weight_decay": 0.0, "rewards": ["accuracy"],
        "rewards.accuracy.fallbacks": True, "dynamic_sampling.enabled": False, "warmstart": {},
    },
}

#: Settings debug=smoke must leave exactly as the experiment sets them (dotted keys, compared unresolved).
ALGORITHMIC_KEYS = [
    *(f"trainer.{key}" for key in (
        "loss_type", "epsilon", "epsilon_high", "beta", "use_bias_correction_kl", "scale_rewards",
        "importance_sampling_level", "mask_truncated_completions", "temperature", "top_p", "top_k", "sync_ref_model",
        "ref_model_mixup_alpha", "ref_model_sync_steps", "max_grad_norm", "delta",
        "multi_objective_aggregation", "num_iterations",
    )),
    "batch.generations_per_prompt", "batch.updates_per_rollout", "batch.num_iterations", "dynamic_sampling",
    "rewards", "optimizer", "reward_level", "scheduler.name", "model.modality", "environment",
]


def resolved_grpo_config(cfg: DictConfig, output_dir: Path, num_processes: int = 1):
    from grpolab.trainer.build import grpo_arguments

    derived = validate(cfg, num_processes=num_processes)
    # The 7B-32B presets train in bf16 mixed precision, which GRPOConfig accepts on this CPU machine in CPU mode only.
    cfg = OmegaConf.merge(cfg, {"trainer": {"use_cpu": True}})
    return grpo_arguments(cfg, derived, [float(node.weight) for node in cfg.rewards.values()], [], output_dir)


def plain(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return getattr(value, "value", value)  # enums (model.modality) compare by their YAML spelling


def test_every_paper_preset_has_expected_values() -> None:
    assert PAPER_PRESETS == sorted(EXPECTED_GRPO_CONFIG) == sorted(EXPECTED_OTHER)


@pytest.mark.parametrize("name", sorted(EXPECTED_GRPO_CONFIG))
def test_preset_resolves_to_the_expected_grpo_config(compose_cfg, tmp_path: Path, name: str) -> None:
    cfg = compose_cfg([f"experiment={name}"])
    args = resolved_grpo_config(cfg, tmp_path)
    actual = {key: getattr(args, key) for key in EXPECTED_GRPO_CONFIG[name]}
    assert actual == EXPECTED_GRPO_CONFIG[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_OTHER))
def test_preset_sets_the_expected_optimizer_rewards_and_options(compose_cfg, name: str) -> None:
    cfg = compose_cfg([f"experiment={name}"])
    for key, expected in EXPECTED_OTHER[name].items():
        value = OmegaConf.select(cfg, key)
        actual = list(value) if key == "rewards" else plain(value)
        assert actual == expected, key


@pytest.mark.parametrize("name", sorted(EXPECTED_GRPO_CONFIG))
def test_preset_rollout_is_the_same_on_eight_processes(compose_cfg, tmp_path: Path, name: str) -> None:
    # The papers ran on many GPUs: the derived TRL fields must reproduce the same rollout and updates there.
    cfg = compose_cfg([f"experiment={name}"])
    args = resolved_grpo_config(cfg, tmp_path, num_processes=8)
    rollout = cfg.batch.prompts_per_step * cfg.batch.generations_per_prompt
    assert args.per_device_train_batch_size * 8 * args.steps_per_generation == rollout
    assert args.steps_per_generation // args.gradient_accumulation_steps == cfg.batch.updates_per_rollout


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_keeps_every_algorithmic_setting(compose_cfg, name: str) -> None:
    full = compose_cfg([f"experiment={name}"])
    smoke = compose_cfg([f"experiment={name}", "debug=smoke"])
    for key in ALGORITHMIC_KEYS:
        before, after = OmegaConf.select(full, key), OmegaConf.select(smoke, key)
        if isinstance(before, DictConfig):
            before, after = OmegaConf.to_container(before), OmegaConf.to_container(after)  # interpolations unresolved
        assert after == before, key
    assert smoke.model.name_or_path is None, "smoke runs the embedded tiny model, never a hub download"
    assert smoke.logger._target_.endswith("NoLogger")


def test_smoke_scales_the_run_down(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=dapo", "debug=smoke"])
    derived = validate(cfg)
    assert cfg.trainer.max_steps == 8 and cfg.trainer.max_completion_length == 8
    assert derived["per_device_train_batch_size"] * derived["steps_per_generation"] == 2 * 16  # 2 groups of G = 16
    assert cfg.rewards.overlong.max_length == 8  # L_max follows the generation limit
    assert cfg.rewards.overlong.cache == 1  # and L_cache keeps its share of it (4,096 / 20,480)
    assert cfg.data._target_.endswith("ArithmeticTask") and cfg.warmstart.steps == 80
    assert cfg.data.solution_prefix == "<think></think>"  # a think block that fits the 8-token budget


def test_one_smoke_option_serves_vision_presets_with_the_tiny_vlm(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=r1_v", "debug=smoke"])
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["network"]["_target_"] == "grpolab.models.tiny.build_tiny_vlm"
    assert resolved["data"]["_target_"] == "grpolab.data.image_tasks.ShapesTask" and resolved["data"]["train_size"] == 64


@pytest.mark.parametrize("name", ["retool", "torl"])
def test_smoke_gives_tool_presets_the_code_interpreter_stand_in(compose_cfg, name: str) -> None:
    # Their rollouts call python(code): the stand-in must be chat prompts whose demonstrations call that tool, and a
    # model whose template renders tool calls, or a smoke run could not carry a single call.
    full, smoke = compose_cfg([f"experiment={name}"]), compose_cfg([f"experiment={name}", "debug=smoke"])
    validate(smoke)
    resolved = OmegaConf.to_container(smoke, resolve=True)
    assert resolved["environment"] == OmegaConf.to_container(full.environment, resolve=True)
    assert resolved["environment"]["tools"][0]["_target_"] == "grpolab.environments.python.PythonInterpreter"
    assert resolved["data"]["_target_"] == "grpolab.data.tool_arithmetic.ToolArithmeticTask"
    assert resolved["data"]["code_tool"] == "python" and resolved["data"]["tool_call_rate"] == 1.0
    assert "<tool_call>" in resolved["model"]["tokenizer"]["tag_tokens"]
    assert resolved["trainer"]["max_completion_length"] >= 96  # a call, its result turn and the answer turn
    # The other presets keep the stand-in of their modality.
    assert compose_cfg(["experiment=dapo", "debug=smoke"]).data._target_.endswith("ArithmeticTask")


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_preset_runs_end_to_end_with_debug_smoke(compose_cfg, run_job, tmp_path: Path, name: str) -> None:
    cfg = compose_cfg([f"experiment={name}"])
    steps = compose_cfg([f"experiment={name}", "debug=smoke"]).trainer.max_steps
    # debug=smoke turns the warm-start cache off; here the presets that share a stand-in task share one warm start.
    result = run_job(f"experiment={name}", "debug=smoke", "warmstart.cache=true", cache="shared")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == steps
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    resolved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert resolved.trainer.loss_type == cfg.trainer.loss_type and resolved.trainer.beta == cfg.trainer.beta
    logged = any("dynamic_sampling/generation_rounds" in row for row in rows)
    assert logged == cfg.dynamic_sampling.enabled, "dynamic_sampling/* metrics are logged exactly when enabled"
    # The learning path ran: some group had unequal rewards (so non-zero advantages), the loss had a gradient, and
    # the optimizer moved the weights. A preset that stops learning (every group flat, a zero gradient) fails here.
    assert max(row.get("reward_std", 0.0) for row in rows) > 0, "no group with reward variance in any rollout"
    assert max(row.get("grad_norm", 0.0) for row in rows) > 0, "every optimizer step had a zero gradient"
    assert summary["parameters"]["tensors_changed"] > 0, summary["parameters"]
    if "format" in cfg.rewards:  # require_think included: a think block fits the smoke completion budget
        assert max(row.get("rewards/format/mean", 0.0) for row in rows) > 0, "the format reward was never earned"
    if cfg.environment:  # tool-integrated presets: the rollouts those gradient steps trained on called the tool
        tool_rows = [row for row in rows if "tools/call_frequency" in row]
        assert tool_rows and all(row["tools/call_frequency"] > 0 for row in tool_rows), tool_rows
        assert min(row["tools/failure_frequency"] for row in tool_rows) < 1, "no tool call ever ran without error"
