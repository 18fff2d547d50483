"""Checkpoints and resume. End to end: a training process (the real CLI) killed with SIGKILL mid-training and resumed
with ``resume=true`` ends with the ``metrics.jsonl`` (every step once, the same values), the ``eval_after`` and the
final model of an uninterrupted run of the same command, in both tokenizer modes and for the tiny VLM (the
uninterrupted run and the resume are jobs in this process). Then the pieces: the epoch-aware sampler, the weights'
key layout, grpolab's state file."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from cli_runs import (
    RESUMABLE_RUN,
    TAGGED,
    TIME_KEYS,
    all_rows,
    cli,
    logged_steps,
    max_differences,
    run,
    start_and_signal,
)
from safetensors import safe_open
from trl.trainer.utils import RepeatSampler

from grpolab.tracking.checkpoints import COMPLETE_MARKER, is_complete, read_grpolab_state
from grpolab.trainer.resume_state import EpochRepeatSampler, load_checkpoint_weights, policy_fingerprint

#: experiment=tools, in ids mode: the rollouts call the calculator (the demonstrations all do), so the resumed steps
#: hold tool calls, tool masks and the prepared prompt IDs of rows that keep their messages; the tool-use reward varies
#: (some calls do not parse) where accuracy, format and length are still all zero after this short warm start.
TOOLS = ["experiment=tools", "tokenizer_mode=ids", "data.tool_call_rate=1.0", "data.eval_size=8", "warmstart.steps=80",
         "rewards=[accuracy,format,length,tool_use]"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", [["tokenizer_mode=text", TAGGED], ["tokenizer_mode=ids", TAGGED],
                                     ["experiment=vision", "warmstart.steps=20"], TOOLS],
                         ids=["text", "ids", "vision", "tools"])
def test_a_run_killed_with_sigkill_and_resumed_matches_an_uninterrupted_run(variant: list[str], tmp_path: Path,
                                                                           shared_cache: Path) -> None:
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    assert run(cli(uninterrupted, *variant), shared_cache, tmp_path / "a.log") == 0

    def past_a_checkpoint(run_dir: Path) -> bool:  # a complete checkpoint, and rows logged after it
        return (run_dir / "checkpoint-4" / COMPLETE_MARKER).exists() and max(logged_steps(run_dir) or [0]) >= 6

    code = start_and_signal(cli(killed, *variant), shared_cache, tmp_path / "b.log", killed, past_a_checkpoint,
                            signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert json.loads((killed / "summary.json").read_text())["status"] == "running"  # no chance to clean up

    assert run(cli(killed, *variant, "resume=true"), shared_cache, tmp_path / "c.log") == 0
    resumed_log = (tmp_path / "c.log").read_text()
    assert "resume: continuing from" in resumed_log and "restored grpolab's state of step" in resumed_log

    expected, actual = all_rows(uninterrupted), all_rows(killed)
    assert [row["step"] for row in actual] == list(range(3, 13, 3))  # every step exactly once
    differences = max_differences(expected, actual)
    print(f"\n{' '.join(variant)}: {len(actual)} logged steps, max |difference| per metric: {differences}")
    assert max(differences.values()) == 0.0
    assert len({row["reward"] for row in expected}) > 1 and any(row["loss"] for row in expected)  # not all zeros
    summary, resumed = (json.loads((d / "summary.json").read_text()) for d in (uninterrupted, killed))
    assert resumed["status"] == "completed" and resumed["steps"] == 12
    assert {k: v for k, v in resumed["eval_after"].items() if k not in TIME_KEYS} == {
        k: v for k, v in summary["eval_after"].items() if k not in TIME_KEYS}
    if variant[0].startswith("tokenizer_mode"):  # the tiny VLM needs more; the tool run scores no format
        assert summary["eval_after"]["format"] > 0
    weights = [(d / "model" / "model.safetensors").read_bytes() for d in (uninterrupted, killed)]
    assert weights[0] == weights[1]


def test_epoch_repeat_sampler_gives_a_resumed_epoch_the_uninterrupted_runs_order() -> None:
    def sampler(kind: type) -> RepeatSampler:
        return kind(range(10), mini_repeat_count=2, batch_size=3, repeat_count=2, seed=7)

    uninterrupted = sampler(EpochRepeatSampler)
    epochs = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)  # what the Trainer does before every epoch
        epochs.append(list(uninterrupted))
    plain = sampler(RepeatSampler)
    assert [list(plain) for _ in range(3)] == epochs  # TRL's order, unchanged
    resumed = sampler(EpochRepeatSampler)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2] != epochs[0]


@pytest.mark.parametrize("modality", ["text", "vision"])
def test_checkpoint_weights_load_back_into_the_model_whatever_layout_save_pretrained_wrote(tmp_path: Path,
                                                                                        modality: str) -> None:
    """A VLM is saved in its original layout (``model.layers`` for ``model.language_model.layers``, ...); the
    Trainer's own resume loaded none of it."""
    from grpolab.models.tiny import build_tiny_qwen2, build_tiny_vlm
    from grpolab.models.tokenizer import build_char_tokenizer
    from grpolab.models.vision import build_vlm_processor

    def build(seed: int) -> torch.nn.Module:
        if modality == "text":
            return build_tiny_qwen2(build_char_tokenizer(), 32, 64, 1, 2, 1, 64, True, seed=seed)
        return build_tiny_vlm(build_vlm_processor(), 32, 1, 2, 1, 64, 32, 1, 2, seed=seed)

    trained, fresh = build(0), build(1)
    trained.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        overlap = set(saved.keys()) & set(fresh.state_dict())
    assert not overlap if modality == "vision" else overlap  # the trap: a VLM's saved keys are none of the model's
    assert load_checkpoint_weights(fresh, tmp_path)
    assert all(torch.equal(tensor, trained.state_dict()[key]) for key, tensor in fresh.state_dict().items())
    assert not load_checkpoint_weights(fresh, tmp_path / "no-weights-here")


def test_policy_fingerprint_tells_weights_apart_and_ignores_nothing_it_samples() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    before = policy_fingerprint(model)
    assert policy_fingerprint(model) == before and policy_fingerprint(None) is None
    with torch.no_grad():
        model[1].bias += 1e-3
    assert policy_fingerprint(model) != before


@pytest.mark.slow
def test_checkpoints_hold_what_a_resume_needs_and_rotation_keeps_the_newest(tmp_path: Path,
                                                                                    run_job) -> None:
    result = run_job(*RESUMABLE_RUN[:1], "trainer.max_steps=10", "trainer.logging_steps=2", "trainer.save_steps=3",
                     "trainer.save_total_limit=2", "warmstart.steps=10", "data.train_size=16", "data.eval_size=8",
                     "batch.prompts_per_step=4", "batch.generations_per_prompt=4", "batch.updates_per_rollout=2",
                     "trainer.beta=0.04")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    # Every 3 steps and at the end; the newest 2 kept.
    assert sorted(path.name for path in run_dir.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-9"]
    checkpoint = run_dir / "checkpoint-9"
    assert is_complete(checkpoint)
    names = set(json.loads((checkpoint / COMPLETE_MARKER).read_text())["files"])
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
            "grpolab_state.json", "grpolab_process_0.pt"} <= names
    state = read_grpolab_state(checkpoint)
    assert state["step"] == 9 and state["last_logged_step"] == 8  # step 9 is an open log window
    assert len(state["pending_metrics"]["reward"]) == 1
    identity = state["identity"]
    assert identity["starting_policy"] and identity["reference"] == identity["starting_policy"]  # beta > 0
    metrics = run_dir / "metrics.jsonl"
    assert state["metrics_file_bytes"] == len(b"".join(
        line + b"\n" for line in metrics.read_bytes().splitlines() if json.loads(line)["step"] <= 9))
    local = torch.load(checkpoint / "grpolab_process_0.pt", weights_only=True)
    # Two updates per rollout: step 9 is the first update of a rollout, whose second half the checkpoint keeps.
    assert local["trl_step"] == 9 and local["rollout"] is not None and len(local["rollout"]) == 2
    assert local["pending_loss"].ndim == 0


@pytest.mark.slow  # trains
def test_a_lora_policy_is_kept_loadable_and_resumes_to_the_same_adapter(tmp_path: Path) -> None:
    """An adapter on a base built from config is saved merged (no name loads that base); a checkpoint holds the
    adapter, and resuming from it ends with the adapter an uninterrupted run ends with."""
    peft = pytest.importorskip("peft")
    from datasets import Dataset
    from trl import GRPOConfig

    from grpolab.models.load import load_model, load_tokenizer
    from grpolab.models.tiny import build_tiny_qwen2
    from grpolab.models.tokenizer import build_char_tokenizer
    from grpolab.trainer.final_model import save_final_model
    from grpolab.trainer.grpo import GrpolabTrainer

    tokenizer = build_char_tokenizer()

    def trainer(max_steps: int, output_dir: Path) -> GrpolabTrainer:
        torch.manual_seed(0)  # the adapter's initialisation
        base = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
        model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        args = GRPOConfig(output_dir=str(output_dir), per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=4, max_steps=max_steps, logging_steps=1, save_strategy="steps",
                          save_steps=2, report_to=[], use_cpu=True, bf16=False, seed=0, learning_rate=0.05)
        return GrpolabTrainer(model=model, reward_funcs=[lambda completions, **_: [float(len(c)) for c in completions]],
                              args=args, train_dataset=Dataset.from_dict({"prompt": ["1+2=", "3+4=", "5+6=", "7+8="]}),
                              processing_class=tokenizer)

    uninterrupted = trainer(3, tmp_path / "a")
    uninterrupted.train()
    checkpoint = tmp_path / "a" / "checkpoint-2"
    assert {"adapter_model.safetensors", "adapter_config.json", "grpolab_state.json"} <= {
        path.name for path in checkpoint.iterdir()} and is_complete(checkpoint)
    resumed = trainer(3, tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    adapters = [{k: v for k, v in t.model.state_dict().items() if "lora_" in k} for t in (uninterrupted, resumed)]
    assert adapters[0] and all(torch.equal(tensor, adapters[1][key]) for key, tensor in adapters[0].items())

    model_dir = save_final_model(uninterrupted, tmp_path / "a" / "model", "text")
    assert not json.loads((model_dir / "grpolab_model.json").read_text())["lora_adapter"]  # merged: no base to name
    loaded = load_model(str(model_dir), load_tokenizer(str(model_dir)), "text")
    ids = torch.tensor([tokenizer("1+2=")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(uninterrupted.model(ids).logits, loaded(ids).logits, atol=1e-5)
