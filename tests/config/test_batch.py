"""Paper batch terms -> TRL GRPOConfig fields: exact derivations, one-line errors, and TRL's own reading of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grpolab.config.batch import BatchSpec, derive_grpo_fields
from grpolab.config.errors import ConfigError

# The papers' rollout shapes (cited in experiments/<name>.yaml); micro batches are our choice.
PAPERS = {
    # DeepSeekMath Sec. 4.2: 64 outputs/question, training batch 1024 (read as samples), single update per rollout.
    "deepseekmath_grpo": BatchSpec(16, 64, updates_per_rollout=1, micro_batch_size=16),
    # DeepSeek-R1 (v2) Sec. 2.1: 8,192 outputs per rollout split into 16 mini-batches of 32 questions x 16.
    "deepseek_r1_zero": BatchSpec(512, 16, updates_per_rollout=16, micro_batch_size=8),
    # DAPO Sec. 4.1: 512 prompts x 16 responses, mini-batch 512 -> 16 gradient updates per rollout step.
    "dapo": BatchSpec(512, 16, updates_per_rollout=16, micro_batch_size=8),
    # Dr. GRPO code: rollout_batch_size 128 x num_samples 8, train_batch_size 128, train_batch_size_per_device 1.
    "dr_grpo": BatchSpec(128, 8, updates_per_rollout=8, micro_batch_size=1),
    # GSPO Sec. 5.1: four mini-batches per rollout (prompt count and group size unstated: grpolab defaults).
    "gspo": BatchSpec(32, 8, updates_per_rollout=4, micro_batch_size=4),
    # R1-V README: 1 prompt x 8 generations per device, 2 accumulation steps, 8 GPUs -> 16 prompts, one update.
    "r1_v": BatchSpec(16, 8, updates_per_rollout=1, micro_batch_size=8),
}

EXPECTED = {
    # name: {num_processes: (per_device_train_batch_size, gradient_accumulation_steps, steps_per_generation)}
    "deepseekmath_grpo": {1: (16, 64, 64), 8: (16, 8, 8)},
    "deepseek_r1_zero": {1: (8, 64, 1024), 8: (8, 8, 128)},
    "dapo": {1: (8, 64, 1024), 8: (8, 8, 128)},
    "dr_grpo": {1: (1, 128, 1024), 8: (1, 16, 128)},  # 16 = Oat's grad_acc_step on 8 GPUs
    "gspo": {1: (4, 16, 64), 8: (4, 2, 8)},
    "r1_v": {1: (8, 16, 16), 8: (8, 2, 2)},  # 2 = R1-V's gradient_accumulation_steps on 8 GPUs
}

DERIVED_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation")


@pytest.mark.parametrize("num_processes", [1, 8])
@pytest.mark.parametrize("name", sorted(PAPERS))
def test_derives_the_papers_batch_shapes(name: str, num_processes: int) -> None:
    spec = PAPERS[name]
    fields = derive_grpo_fields(spec, num_processes)
    assert tuple(fields[key] for key in DERIVED_KEYS) == EXPECTED[name][num_processes]
    assert fields["num_generations"] == spec.generations_per_prompt
    assert fields["num_iterations"] == spec.num_iterations


@pytest.mark.parametrize("num_processes", [1, 2, 8])
@pytest.mark.parametrize("name", sorted(PAPERS))
def test_derived_fields_reproduce_rollout_and_update_sizes(name: str, num_processes: int) -> None:
    spec = PAPERS[name]
    f = derive_grpo_fields(spec, num_processes)
    generation_batch = f["per_device_train_batch_size"] * num_processes * f["steps_per_generation"]
    samples_per_optimizer_step = f["per_device_train_batch_size"] * num_processes * f["gradient_accumulation_steps"]
    assert generation_batch == spec.prompts_per_step * spec.generations_per_prompt
    assert samples_per_optimizer_step == spec.samples_per_update
    assert f["steps_per_generation"] // f["gradient_accumulation_steps"] == spec.updates_per_rollout


def test_without_micro_batch_each_process_takes_its_whole_share_of_an_update() -> None:
    spec = BatchSpec(prompts_per_step=4, generations_per_prompt=4, updates_per_rollout=2)
    assert derive_grpo_fields(spec, 2) == {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "steps_per_generation": 2,
        "num_generations": 4,
        "num_iterations": 1,
    }


def test_num_iterations_passes_through_and_multiplies_optimizer_steps() -> None:
    spec = BatchSpec(8, 4, updates_per_rollout=2, num_iterations=3, micro_batch_size=2)
    assert derive_grpo_fields(spec, 1)["num_iterations"] == 3
    assert spec.optimizer_steps_per_rollout == 6


def test_dapo_warmup_of_20_rollout_steps_is_320_optimizer_steps() -> None:
    assert 20 * PAPERS["dapo"].optimizer_steps_per_rollout == 320  # experiments/dapo.yaml's warmup_steps


def _single_line(error: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_rollout_not_divisible_into_updates_names_keys_and_numbers() -> None:
    with pytest.raises(ConfigError) as error:
        BatchSpec(prompts_per_step=10, generations_per_prompt=10, updates_per_rollout=16)
    message = _single_line(error)
    assert message.startswith("batch.prompts_per_step * batch.generations_per_prompt = 100 samples")
    assert "batch.updates_per_rollout=16" in message
    assert "100 % 16 = 4" in message


def test_micro_batch_mismatch_lists_valid_micro_batch_sizes() -> None:
    spec = BatchSpec(prompts_per_step=96, generations_per_prompt=16, updates_per_rollout=16, micro_batch_size=5)
    with pytest.raises(ConfigError) as error:
        derive_grpo_fields(spec, 3)
    message = _single_line(error)
    assert "1536 samples cannot be split into batch.updates_per_rollout=16 updates" in message
    assert "batch.micro_batch_size=5 on 3 processes" in message
    assert "96 % 15 = 6" in message
    # 96 samples per update / 3 processes = 32 per process.
    assert message.endswith("valid batch.micro_batch_size values on 3 processes: 1, 2, 4, 8, 16, 32")
    for valid in (1, 2, 4, 8, 16, 32):
        derive_grpo_fields(BatchSpec(96, 16, 16, micro_batch_size=valid), 3)


def test_micro_batch_larger_than_the_process_share_is_rejected() -> None:
    with pytest.raises(ConfigError, match=re.escape("(16 % 32 = 16)")):
        derive_grpo_fields(BatchSpec(8, 2, updates_per_rollout=1, micro_batch_size=4), 8)


def test_update_not_divisible_over_processes_without_micro_batch() -> None:
    with pytest.raises(ConfigError) as error:
        derive_grpo_fields(BatchSpec(prompts_per_step=5, generations_per_prompt=4), 3)
    message = _single_line(error)
    assert "each update's 20 samples do not split evenly over 3 processes (20 % 3 = 2)" in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"prompts_per_step": 0, "generations_per_prompt": 4},
         "batch.prompts_per_step=0 must be an integer >= 1"),
        ({"prompts_per_step": 4, "generations_per_prompt": 4, "updates_per_rollout": True},
         "batch.updates_per_rollout=true must be an integer >= 1"),
        ({"prompts_per_step": 4, "generations_per_prompt": 4, "micro_batch_size": 2.0},
         "batch.micro_batch_size=2.0 must be an integer >= 1"),
        ({"prompts_per_step": 4, "generations_per_prompt": 4, "num_iterations": -1},
         "batch.num_iterations=-1 must be an integer >= 1"),
        ({"prompts_per_step": 4, "generations_per_prompt": 1}, "batch.generations_per_prompt=1 is too small"),
    ],
)
def test_invalid_values_fail_fast(kwargs: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        BatchSpec(**kwargs)


def test_num_processes_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="num_processes=0 must be an integer >= 1"):
        derive_grpo_fields(PAPERS["dapo"], 0)


def test_the_batch_node_is_typed_by_the_spec(compose_cfg) -> None:
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    cfg = compose_cfg(["batch.prompts_per_step=128", "batch.updates_per_rollout=8"])
    assert OmegaConf.to_object(cfg.batch) == BatchSpec(128, 8, updates_per_rollout=8)
    with pytest.raises(ConfigCompositionException):  # an unknown key (with +: refused by validate)
        compose_cfg(["batch.mini_batch_size=512"])
    with pytest.raises(ConfigError, match=r"^batch\.prompts_per_step \* batch\.generations_per_prompt = 128 samples "
                                          r"cannot be split into batch\.updates_per_rollout=3 equal mini-batches"):
        OmegaConf.to_object(compose_cfg(["batch.updates_per_rollout=3"]).batch)  # the spec's own check, as validate


def test_module_imports_no_heavy_libraries() -> None:
    import subprocess
    import sys

    probe = "import sys, grpolab.config.batch; print(sorted({'torch','transformers','trl'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- TRL's own reading of the derived fields -------------------------------------------------------------------


def _grpo_config(num_processes: int, output_dir: Path, **fields):
    from trl import GRPOConfig

    class GRPOConfigOnProcesses(GRPOConfig):
        # GRPOConfig.__post_init__ reads the process count from `world_size`; pinning it simulates a launch on
        # `num_processes` devices without starting one. Everything else is TRL's real validation and derivation.
        @property
        def world_size(self) -> int:
            return num_processes

    return GRPOConfigOnProcesses(output_dir=str(output_dir), use_cpu=True, bf16=False, report_to="none", **fields)


@pytest.mark.parametrize("num_processes", [1, 8])
@pytest.mark.parametrize("name", sorted(PAPERS))
def test_real_grpo_config_accepts_fields_and_generates_one_rollout(name: str, num_processes: int, tmp_path) -> None:
    spec = PAPERS[name]
    fields = derive_grpo_fields(spec, num_processes)
    config = _grpo_config(num_processes, tmp_path, **fields)
    assert config.world_size == num_processes
    assert config.generation_batch_size == spec.prompts_per_step * spec.generations_per_prompt
    assert config.steps_per_generation == fields["steps_per_generation"]
    assert config.num_generations == spec.generations_per_prompt
    # One generation feeds steps_per_generation * num_iterations micro steps = U * mu optimizer steps.
    micro_steps_per_rollout = config.steps_per_generation * config.num_iterations
    assert micro_steps_per_rollout // config.gradient_accumulation_steps == spec.optimizer_steps_per_rollout


def test_plain_grpo_config_on_this_machine_has_one_process(tmp_path) -> None:
    from trl import GRPOConfig

    fields = derive_grpo_fields(PAPERS["dr_grpo"], 1)
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **fields)
    assert config.world_size == 1
    assert config.generation_batch_size == 1024


def test_steps_per_generation_shorter_than_accumulation_would_split_a_rollout(tmp_path) -> None:
    # The mistake this module prevents (TRL's paper index for R1: steps_per_generation=16 with 128 accumulation
    # steps): TRL then generates 64 samples per call, eight times per optimizer step, instead of one 8,192 rollout.
    config = _grpo_config(1, tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=128,
                          steps_per_generation=16, num_generations=16)
    assert config.generation_batch_size == 64
    fields = derive_grpo_fields(BatchSpec(512, 16, updates_per_rollout=16, micro_batch_size=4), 1)
    assert fields["gradient_accumulation_steps"] == 128 and fields["steps_per_generation"] == 2048


@pytest.mark.slow
@pytest.mark.parametrize(("num_iterations", "expected_rollouts"), [(1, 2), (2, 1)])
def test_trl_trainer_generates_once_per_rollout_and_steps_u_times_mu(num_iterations, expected_rollouts, tmp_path):
    """Run GRPOTrainer on a tiny random model: 4 optimizer steps with U=2 mean 2 rollouts (mu=1) or 1 (mu=2)."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.models.tokenizer import build_char_tokenizer

    spec = BatchSpec(prompts_per_step=2, generations_per_prompt=2, updates_per_rollout=2,
                     num_iterations=num_iterations, micro_batch_size=1)
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                         bos_token_id=None))
    rollout_sizes: list[int] = []

    class CountingGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            rollout_sizes.append(len(inputs))
            return super()._generate_and_score_completions(inputs)

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_steps=4,
                      max_completion_length=4, logging_steps=1, save_strategy="no", gradient_checkpointing=False,
                      **derive_grpo_fields(spec, num_processes=1))
    trainer = CountingGRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=[lambda completions, **_: [float(len(c)) for c in completions]],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [f"{i}+1=" for i in range(8)]}),
    )
    trainer.train()
    assert trainer.state.global_step == 4
    assert rollout_sizes == [spec.samples_per_rollout] * expected_rollouts
