"""DAPO dynamic sampling on a real (tiny) GrpolabTrainer: refill, round cap, metrics, alignment, TRL hook pins."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

from grpolab.trainer.dynamic_sampling import DynamicSampler, DynamicSamplingSettings

GROUP = 2
PROMPTS_PER_ROUND = 4


def split_reward(completions: list[Any], kind: list[str], **_: Any) -> list[float]:
    """Constant prompts: every completion scores 0.5 (an uninformative group). Varied prompts: the two completions
    of a group (consecutive samples) score 0 and 1, so the group is always informative."""
    return [0.5 if k == "constant" else float(i % 2) for i, k in enumerate(kind)]


def make_dataset(num_constant: int, num_varied: int):
    from datasets import Dataset

    # Prompt lengths differ a lot, so rounds are padded to different widths and re-padding is exercised.
    rows = [{"prompt": f"c{i}=", "kind": "constant"} for i in range(num_constant)]
    rows += [{"prompt": f"v{i}" + "#" * (3 * i) + "=", "kind": "varied"} for i in range(num_varied)]
    return Dataset.from_list(rows)


def make_trainer(tmp_path: Path, dataset, rounds: int | None, dynamic_sampling_override: Any = None, **config: Any):
    from trl import GRPOConfig

    from grpolab.models.tiny import build_tiny_qwen2
    from grpolab.trainer.grpo import GrpolabTrainer
    from grpolab.models.tokenizer import build_char_tokenizer

    from transformers import AutoModelForCausalLM

    tokenizer = build_char_tokenizer()
    # Saved and reloaded: with beta > 0, TRL 1.16 loads the reference model from config._name_or_path.
    build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 128, True, seed=0).save_pretrained(tmp_path / "policy")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    settings = dict(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, seed=0, disable_tqdm=True, save_strategy="no",
        per_device_train_batch_size=PROMPTS_PER_ROUND, steps_per_generation=GROUP, gradient_accumulation_steps=1,
        num_generations=GROUP, max_completion_length=6, max_steps=2, logging_steps=1, beta=0.04,
    )
    settings.update(config)
    dynamic = None if rounds is None else {"enabled": True, "max_generation_rounds": rounds}
    dynamic = dynamic_sampling_override or dynamic
    return GrpolabTrainer(
        model=model, reward_funcs=[split_reward], args=GRPOConfig(**settings), train_dataset=dataset,
        processing_class=tokenizer, dynamic_sampling=DynamicSampler.from_config(dynamic),
    )


def repeated(dataset, indices: list[int]) -> list[dict[str, Any]]:
    return [dataset[i] for i in indices for _ in range(GROUP)]


def prompt_texts(trainer, batch: dict[str, Any]) -> list[str]:
    return [trainer.processing_class.decode(ids[mask.bool()].tolist())
            for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]


def group_spreads(advantages: torch.Tensor) -> torch.Tensor:
    grouped = advantages.view(-1, GROUP)
    return grouped.amax(dim=1) - grouped.amin(dim=1)


def last_metric(trainer, name: str) -> float:
    return trainer._metrics["train"][f"dynamic_sampling/{name}"][-1]


def recomputed_logps(trainer, model, batch: dict[str, Any]) -> torch.Tensor:
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, batch["completion_ids"].size(1))
    return logps


def assert_padding_layout(batch: dict[str, Any]) -> None:
    """Prompts are left-padded (mask 0...01...1) and completions right-padded (mask 1...10...0), row by row."""
    for row in batch["prompt_mask"]:
        assert torch.equal(row, row.sort().values), row
    for row in batch["completion_mask"]:
        assert torch.equal(row, row.sort(descending=True).values), row


def test_refill_keeps_only_informative_groups_and_fills_the_batch(tmp_path: Path) -> None:
    dataset = make_dataset(num_constant=4, num_varied=4)
    trainer = make_trainer(tmp_path, dataset, rounds=3)
    trainer.model.train()

    batch = trainer._generate_and_score_completions(repeated(dataset, [0, 1, 2, 3]))  # a round of constant prompts

    assert batch["prompt_ids"].size(0) == PROMPTS_PER_ROUND * GROUP
    assert all(text.startswith("v") for text in prompt_texts(trainer, batch))
    assert (group_spreads(batch["advantages"]) > 0).all()
    assert batch["num_items_in_batch"].item() == batch["completion_mask"].sum().item()
    rounds = last_metric(trainer, "generation_rounds")
    # Round 1 is all constant; refills walk one shuffled epoch (4 constant + 4 varied prompts) in two rounds, so
    # the batch is full after round 2 or 3, and every group generated but not used was uninformative.
    assert rounds in (2.0, 3.0)
    assert last_metric(trainer, "groups_dropped") == PROMPTS_PER_ROUND * rounds - PROMPTS_PER_ROUND
    assert last_metric(trainer, "groups_filled") == 0.0
    # Every round's tensors were re-padded to one width without shifting a single token: the stored old and
    # reference log-probs equal a fresh computation on the concatenated batch.
    assert_padding_layout(batch)
    mask = batch["completion_mask"].bool()
    fresh = recomputed_logps(trainer, trainer.model, batch)
    torch.testing.assert_close(batch["old_per_token_logps"][mask], fresh[mask], atol=1e-5, rtol=1e-5)
    fresh_ref = recomputed_logps(trainer, trainer.ref_model, batch)
    torch.testing.assert_close(batch["ref_per_token_logps"][mask], fresh_ref[mask], atol=1e-5, rtol=1e-5)


def test_round_cap_is_honoured_and_the_batch_topped_up_with_dropped_groups(tmp_path: Path) -> None:
    dataset = make_dataset(num_constant=6, num_varied=0)
    trainer = make_trainer(tmp_path, dataset, rounds=2)
    trainer.model.train()

    batch = trainer._generate_and_score_completions(repeated(dataset, [0, 1, 2, 3]))

    assert last_metric(trainer, "generation_rounds") == 2.0
    assert last_metric(trainer, "groups_dropped") == 2 * PROMPTS_PER_ROUND
    assert last_metric(trainer, "groups_filled") == PROMPTS_PER_ROUND
    assert batch["prompt_ids"].size(0) == PROMPTS_PER_ROUND * GROUP
    assert torch.count_nonzero(batch["advantages"]) == 0


def test_informative_first_round_needs_no_refill(tmp_path: Path) -> None:
    dataset = make_dataset(num_constant=2, num_varied=4)
    trainer = make_trainer(tmp_path, dataset, rounds=5)
    trainer.model.train()

    batch = trainer._generate_and_score_completions(repeated(dataset, [2, 3, 4, 5]))

    assert last_metric(trainer, "generation_rounds") == 1.0
    assert last_metric(trainer, "groups_dropped") == 0.0
    assert sorted(prompt_texts(trainer, batch)) == sorted(text for i in range(2, 6) for text in
                                                          [dataset[i]["prompt"]] * GROUP)


def test_disabled_or_eval_mode_is_trl_unchanged(tmp_path: Path) -> None:
    dataset = make_dataset(num_constant=4, num_varied=0)
    trainer = make_trainer(tmp_path, dataset, rounds=None)
    trainer.model.train()
    batch = trainer._generate_and_score_completions(repeated(dataset, [0, 1, 2, 3]))
    assert batch["prompt_ids"].size(0) == 8 and "dynamic_sampling/generation_rounds" not in trainer._metrics["train"]

    enabled = make_trainer(tmp_path, dataset, rounds=3)
    enabled.model.eval()
    enabled._generate_and_score_completions(repeated(dataset, [0, 1, 2, 3]))
    assert "dynamic_sampling/generation_rounds" not in enabled._metrics["train"]


def test_normalize_then_sum_judges_each_reward_function(tmp_path: Path) -> None:
    dataset = make_dataset(num_constant=2, num_varied=0)
    summed = make_trainer(tmp_path, dataset, rounds=2)
    separate = make_trainer(tmp_path, dataset, rounds=2, multi_objective_aggregation="normalize_then_sum")
    # Two reward functions that trade off exactly: equal weighted sums, unequal individual rewards.
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    for trainer in (summed, separate):
        trainer.reward_weights = torch.ones(2)
        trainer.last_rewards_per_func = rewards
    assert summed.dynamic_sampling._informative_groups(summed, 4).tolist() == [False, False]
    assert separate.dynamic_sampling._informative_groups(separate, 4).tolist() == [True, False]


def test_filter_reward_judges_groups_by_one_reward_function(tmp_path: Path) -> None:
    dataset = make_dataset(num_constant=2, num_varied=0)
    trainer = make_trainer(tmp_path, dataset, rounds=2)
    trainer.reward_func_names = ["accuracy", "soft_overlong"]
    trainer.reward_weights = torch.ones(2)
    # Group 0: all wrong, overlong penalties differ (DAPO drops it); group 1: one right, one wrong.
    trainer.last_rewards_per_func = torch.tensor([[0.0, -0.5], [0.0, -0.1], [1.0, 0.0], [0.0, 0.0]])
    assert trainer.dynamic_sampling._informative_groups(trainer, 4).tolist() == [True, True]
    trainer.dynamic_sampling = DynamicSampler(DynamicSamplingSettings(2, filter_reward="accuracy"))
    assert trainer.dynamic_sampling._informative_groups(trainer, 4).tolist() == [False, True]
    with pytest.raises(ValueError, match="filter_reward='acc' is not one of the run's rewards"):
        make_trainer(tmp_path, dataset, rounds=None, dynamic_sampling_override={
            "enabled": True, "max_generation_rounds": 2, "filter_reward": "acc"})


@pytest.mark.slow
def test_short_training_run_logs_dynamic_sampling_metrics(tmp_path: Path) -> None:
    from grpolab.tracking.metrics_file import MetricsFileCallback
    from grpolab.tracking.rundir import read_metrics

    dataset = make_dataset(num_constant=4, num_varied=4)
    trainer = make_trainer(tmp_path, dataset, rounds=4, max_steps=4)
    trainer.add_callback(MetricsFileCallback(tmp_path))
    trainer.train()

    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert all(isinstance(row["loss"], float) for row in rows)
    # A rollout feeds steps_per_generation=2 optimizer steps; the steps that generated log TRL's reward and ours.
    generating = [row for row in rows if row.get("reward") is not None]
    assert [row["step"] for row in generating] == [1, 3]
    for row in generating:
        assert 1 <= row["dynamic_sampling/generation_rounds"] <= 4
        assert row["dynamic_sampling/groups_filled"] <= row["dynamic_sampling/groups_dropped"]
    # Half the prompts are constant: some groups are always dropped.
    assert sum(row["dynamic_sampling/groups_dropped"] for row in generating) > 0


def test_settings_from_the_config_node() -> None:
    from omegaconf import OmegaConf

    from grpolab.config.schema import DynamicSamplingConfig

    assert DynamicSamplingSettings.from_config({"enabled": False, "max_generation_rounds": 4}) is None
    node = OmegaConf.structured(DynamicSamplingConfig(enabled=True, max_generation_rounds=7))
    assert DynamicSamplingSettings.from_config(node) == DynamicSamplingSettings(7, filter_reward=None)
    with pytest.raises(ValueError, match="max_generation_rounds"):  # the node's own check (validate runs it)
        DynamicSamplingConfig(enabled=True, max_generation_rounds=0)


# --- pins on the TRL internals the sampler relies on ----------------------------------------------------------


def parameter_names(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_hooked_trl_methods_keep_their_signatures() -> None:
    from trl import GRPOTrainer

    from grpolab.trainer.grpo import GrpolabTrainer

    # The sampler is called with each generation batch and scores rounds through the trainer's one-round path.
    assert parameter_names(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]
    assert parameter_names(GrpolabTrainer.score_round) == ["self", "inputs"]
    assert parameter_names(DynamicSampler.sample) == ["self", "trainer", "inputs"]
    assert "self.dynamic_sampling.sample(self, inputs)" in inspect.getsource(GrpolabTrainer._generate_and_score_completions)


def test_trl_still_scores_once_per_generation_and_splits_per_sample() -> None:
    from trl import GRPOTrainer

    prepare = inspect.getsource(GRPOTrainer._prepare_inputs)
    assert "self._generate_and_score_completions(generation_batch)" in prepare
    assert "split_pixel_values_by_grid(generation_batch)" in prepare
    score = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    # Rewards come back gathered over processes; the sampler slices this process's samples the same way TRL does.
    assert "rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in score
    assert "self.accelerator.process_index * len(prompts)" in score
    assert "num_items_in_batch = self.accelerator.gather(loss_mask.sum()).sum()" in score
