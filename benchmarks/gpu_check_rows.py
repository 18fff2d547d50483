"""The rows of ``benchmarks/gpu_check.py``: what each one runs (grpolab overrides) at CUDA sizes and at the tiny CPU
sizes of ``--device cpu``. The CPU form runs the very same rows and presets, the shapes shrunk by overrides."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO / "tests" / "fixtures" / "gsm8k" / "test.jsonl"

#: --device cpu: the real-size presets shrunk to a few thousand parameters (the embedding sized by a 2,048-token BPE).
TINY_TEXT = (
    "model.network.hidden_size=32", "model.network.intermediate_size=64", "model.network.num_hidden_layers=1",
    "model.network.num_attention_heads=2", "model.network.num_key_value_heads=1", "model.network.vocab_size=null",
    "model.network.max_position_embeddings=1024", "model.tokenizer.vocab_size=2048", "model.tokenizer.min_frequency=2",
)
TINY_VLM = (
    "model.network.hidden_size=32", "model.network.num_layers=1", "model.network.num_heads=2",
    "model.network.num_kv_heads=1", "model.network.intermediate_size=64", "model.network.vision_embed_dim=32",
    "model.network.vision_depth=1", "model.network.vision_heads=2", "model.network.vision_mlp_ratio=2",
    "model.network.vocab_size=null", "model.network.mrope_section=null", "model.network.max_position_embeddings=2048",
    "model.tokenizer.min_pixels=3136", "model.tokenizer.max_pixels=3136", "data.image_size=56",
)
SHAPE = "qwen2_5_0_5b_shape"
CHECKPOINTING = "trainer.activation_checkpointing=true"
#: cuBLAS's deterministic workspace, set before CUDA starts, for the rows that compare two runs bit for bit.
DETERMINISTIC_CUBLAS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
#: A one-process "launch" for the engines that initialise a process group even on one GPU (DeepSpeed, vLLM colocate).
ONE_PROCESS_GROUP = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": "29517"}


@dataclass(frozen=True)
class Sizes:
    """How big the check's runs are on one device."""

    device: str
    perf_steps: int           # GRPO steps of the performance rows (the 20 on CUDA)
    min_perf_steps: int       # the fewest the budget may cut a performance row to
    completion: int           # completion tokens of the performance rows
    prompts: int              # prompts per step
    generations: int          # completions per prompt
    check_steps: int          # steps of the text-vs-ids and kill+resume runs
    check_save_steps: int     # their checkpoint interval (the kill lands after the first checkpoint)
    check_completion: int
    warmstart_steps: int
    vision_steps: int
    vision_completion: int
    threads: int
    budget_s: float | None
    text_shrink: tuple[str, ...] = ()
    vlm_shrink: tuple[str, ...] = ()

    @classmethod
    def for_device(cls, device: str, budget_s: float | None = None) -> Sizes:
        if device == "cuda":
            return cls("cuda", perf_steps=20, min_perf_steps=4, completion=512, prompts=2, generations=8,
                       check_steps=6, check_save_steps=3, check_completion=64, warmstart_steps=10, vision_steps=3,
                       vision_completion=32, threads=min(8, os.cpu_count() or 1),
                       budget_s=480.0 if budget_s is None else budget_s)
        return cls("cpu", perf_steps=2, min_perf_steps=2, completion=8, prompts=2, generations=4, check_steps=3,
                   check_save_steps=1, check_completion=8, warmstart_steps=2, vision_steps=2, vision_completion=8,
                   threads=1, budget_s=budget_s, text_shrink=TINY_TEXT, vlm_shrink=TINY_VLM)

    def describe(self) -> str:
        return (f"GSM8K prompts (the vendored test split), {self.prompts} prompts x {self.generations} generations per "
                f"step, completions of {self.completion} tokens and {self.perf_steps} steps in the performance rows "
                f"(fewer where the budget cut them: the steps column), bf16 autocast over float32 master weights; "
                f"s/step = median wall seconds per step without the first, generated tok/s = completion tokens / "
                f"step seconds over the same steps")


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class Row:
    """One line of the table and the grpolab overrides that make it (``kind="trl"``: the TRL script).

    ``plan`` says how a row meets ``--budget-s``: None rows run their steps (they run first); ``fixed`` rows run
    their few steps if the budget still holds them (the rows before them leave them their estimated time);
    ``share`` rows split the rest equally and are asked to stop (SIGTERM: grpolab finishes the step, checkpoints and
    stops) when their share is up; the ``leftover`` row gets what remains after all of them. ``cost_factor`` scales
    the measured step and start-up time of the 0.5B full fine-tuning row to this row's, for the estimate.
    """

    key: str
    check: str
    model: str
    setting: str
    overrides: Callable[[Sizes], list[str]] = lambda sizes: []
    kind: str = "grpolab"
    plan: str | None = None
    cost_factor: float = 1.0
    fixed_steps: Callable[[Sizes], int] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    deterministic: bool = False
    skip_reason: str | None = None

    def steps(self, sizes: Sizes) -> int:
        return self.fixed_steps(sizes) if self.fixed_steps is not None else sizes.perf_steps

    def argv(self, sizes: Sizes, extra: tuple[str, ...] = ()) -> list[str]:
        return [*self.overrides(sizes), f"trainer.max_steps={self.steps(sizes)}", *extra]

    def env(self, sizes: Sizes) -> dict[str, str]:
        return {**self.extra_env, **(DETERMINISTIC_CUBLAS if self.deterministic and sizes.device == "cuda" else {})}


def common(sizes: Sizes) -> list[str]:
    device = ["trainer.use_cpu=true"] if sizes.device == "cpu" else []
    return ["logger=none", "trainer.logging_steps=1", "trainer.disable_tqdm=true", "trainer.bf16=true",
            f"threads={sizes.threads}", *device]


def gsm8k(sizes: Sizes, preset: str) -> list[str]:
    """A shape preset on GSM8K prompts (256 of them: a run reads no more than 40, and every row is checked against
    the context length at start-up). The length reward (characters, wide tolerance) differs between the completions
    of one prompt even when a random model never writes a tagged answer: advantages are non-zero."""
    return [f"model={preset}", f"model.tokenizer.path={GSM8K}", "data=gsm8k", f"data.path={GSM8K}",
            "data.train_size=256", "data.eval_size=8", "rewards=[accuracy,format,length]", "rewards.length.target=200",
            "rewards.length.tolerance=2000", "eval.num_problems=4", "eval.max_new_tokens=32",
            f"batch.prompts_per_step={sizes.prompts}", f"batch.generations_per_prompt={sizes.generations}",
            *common(sizes), *sizes.text_shrink]


def performance(preset: str = SHAPE, *extra: str) -> Callable[[Sizes], list[str]]:
    return lambda sizes: [*gsm8k(sizes, preset), "warmstart=none", f"trainer.max_completion_length={sizes.completion}",
                          "trainer.save_strategy=no", *extra]


def comparison(sizes: Sizes) -> list[str]:
    """The config the text-vs-ids and kill+resume rows run: a short warm start (cached, shared by the runs), a KL
    reference (beta > 0), checkpoints, and deterministic kernels (eager attention, torch's deterministic
    algorithms), so that two runs can be compared bit for bit."""
    return [*gsm8k(sizes, SHAPE), "warmstart=sft", f"warmstart.steps={sizes.warmstart_steps}",
            "warmstart.batch_size=8", "warmstart.lr=1e-4", "warmstart.warmup_steps=0",
            f"trainer.max_completion_length={sizes.check_completion}", f"trainer.save_steps={sizes.check_save_steps}",
            "trainer.beta=0.04", "trainer.full_determinism=true", "model.attn_implementation=eager"]


def vision(preset: str | None, *extra: str) -> Callable[[Sizes], list[str]]:
    def overrides(sizes: Sizes) -> list[str]:
        model = [f"model={preset}", *sizes.vlm_shrink, "warmstart=none",
                 f"trainer.max_completion_length={sizes.vision_completion}"] if preset else [
            f"warmstart.steps={sizes.warmstart_steps}", "warmstart.batch_size=8"]
        return ["experiment=vision", *common(sizes), "data.train_size=64", "data.eval_size=8", "eval.num_problems=8",
                f"batch.prompts_per_step={sizes.prompts}", f"batch.generations_per_prompt={sizes.generations}",
                *model, *extra]

    return overrides


def rows_to_run(sizes: Sizes) -> list[Row]:
    """The rows in the order they run: the comparisons and the few-step rows first (their cost is fixed), then the
    performance rows sharing what is left of the budget, then the engines that are installed, then the 1.5B row."""
    bf16 = f"bf16, {sizes.prompts}x{sizes.generations} completions of {sizes.completion}"
    comparisons = [
        Row("text_vs_ids", "text vs ids mode", "Qwen2.5-0.5B shape",
            f"bf16, full fine-tuning, {sizes.prompts}x{sizes.generations} completions of {sizes.check_completion}, "
            f"warm start, beta 0.04, checkpoints, full_determinism",
            comparison, fixed_steps=lambda s: s.check_steps, deterministic=True),
        Row("kill_resume", "kill + resume=true", "Qwen2.5-0.5B shape",
            f"as above; SIGKILL after checkpoint-{sizes.check_save_steps}", comparison,
            fixed_steps=lambda s: s.check_steps, deterministic=True),
        Row("tiny_vlm", "tiny VLM", "tiny Qwen2-VL", "experiment=vision, bf16, warm start",
            vision(None), fixed_steps=lambda s: s.vision_steps),
        Row("qwen2_vl_2b", "Qwen2-VL-2B shape", "Qwen2-VL-2B shape",
            f"experiment=vision, bf16, full, {sizes.vision_completion}-token completions",
            vision("qwen2_vl_2b_shape"), fixed_steps=lambda s: s.vision_steps),
    ]
    performance_rows = [
        Row("full", "GRPO, full fine-tuning", "Qwen2.5-0.5B shape", bf16, performance(), plan="share"),
        Row("trl", "plain TRL GRPOTrainer, full fine-tuning", "Qwen2.5-0.5B shape",
            "the grpolab row's config (benchmarks/gpu_check_trl.py)", kind="trl", plan="share"),
        Row("lora", "GRPO, LoRA", "Qwen2.5-0.5B shape", f"{bf16}, peft=lora", performance(SHAPE, "peft=lora"),
            plan="share"),
        Row("full_ckpt", "GRPO, full + activation checkpointing", "Qwen2.5-0.5B shape", f"{bf16}, {CHECKPOINTING}",
            performance(SHAPE, CHECKPOINTING), plan="share", cost_factor=1.3),
        Row("lora_ckpt", "GRPO, LoRA + activation checkpointing", "Qwen2.5-0.5B shape",
            f"{bf16}, peft=lora, {CHECKPOINTING}",
            performance(SHAPE, "peft=lora", CHECKPOINTING), plan="share", cost_factor=1.3),
    ]
    engines = [row for row in engine_rows(sizes) if row.skip_reason is None]
    larger = Row("qwen2_5_1_5b", "GRPO at 1.5B, full fine-tuning (if time allows)", "Qwen2.5-1.5B shape", bf16,
                 performance("qwen2_5_1_5b_shape"), plan="leftover", cost_factor=2.5)
    return [*comparisons, *performance_rows, *engines, larger]


def engine_rows(sizes: Sizes) -> list[Row]:
    """flash-attn, vLLM and DeepSpeed: a few steps of the full fine-tuning row on each, where it is installed."""
    def few(sizes: Sizes) -> int:
        return sizes.min_perf_steps

    specs = [
        ("flash_attn", "flash_attn", "flash-attn 2", "model.attn_implementation=flash_attention_2", {}),
        ("vllm", "vllm", "vLLM generation (colocate)", "generation=vllm_colocate", ONE_PROCESS_GROUP),
        ("deepspeed", "deepspeed", "DeepSpeed ZeRO-2", "distributed=zero2", ONE_PROCESS_GROUP),
    ]
    rows = []
    for key, module, check, override, env in specs:
        reason = None
        if sizes.device != "cuda":
            reason = "skipped: needs CUDA"
        elif not is_installed(module):
            reason = f"skipped: {module} is not installed (pip install 'grpolab[gpu]')"
        vllm_context = ["generation.vllm_max_model_length=1024"] if key == "vllm" else []
        rows.append(Row(key, check, "Qwen2.5-0.5B shape", f"bf16, full fine-tuning, {override}",
                        performance(SHAPE, override, *vllm_context), plan="fixed", fixed_steps=few, extra_env=env,
                        skip_reason=reason))
    return rows


def skipped_engines(sizes: Sizes) -> list[Row]:
    return [row for row in engine_rows(sizes) if row.skip_reason is not None]


#: The table's order (the run order puts the fixed-cost rows first).
TABLE_ORDER = ("full", "trl", "lora", "full_ckpt", "lora_ckpt", "qwen2_5_1_5b", "text_vs_ids", "kill_resume",
               "tiny_vlm", "qwen2_vl_2b", "flash_attn", "vllm", "deepspeed")
