"""The built rewards inside a real (tiny, one-step) TRL GRPOTrainer: TRL's calling contract and metric names."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grpolab.rewards import GuardedReward, RewardError, build_rewards, check_columns

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[2] / "conf" / "rewards"


def rewards_config(names, level):
    cfg = OmegaConf.create({"reward_level": level, "trainer": {"max_completion_length": 8}})
    cfg.rewards = OmegaConf.merge(*(OmegaConf.load(CONF / f"{name}.yaml") for name in names))
    required = {"length": ("target", 6), "soft_overlong": ("soft_punish_cache", 4), "cosine_length": ("max_length", 8)}
    for name in set(names) & required.keys():
        field, value = required[name]
        cfg.rewards[name][field] = value
    return cfg


def train_one_step(tmp_path, tokenizer, dataset, reward_funcs, weights):
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.models.causal_lm import build_tiny_qwen2

    model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
        reward_weights=weights, seed=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.train()
    return trainer.state.log_history


@pytest.mark.parametrize(
    ("level", "names", "conversational"),
    [("text", ["accuracy", "format", "think_format", "soft_overlong", "reasoning_steps", "cosine_length",
               "repetition"], True),
     ("token", ["accuracy", "format", "length", "soft_overlong", "cosine_length", "repetition"], False)],
)
def test_rewards_log_under_their_yaml_names(tmp_path, level, names, conversational):
    from datasets import Dataset

    from grpolab.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    questions, answers = ["12+7=", "3+4=", "9+9=", "5+6="], ["19", "7", "18", "11"]
    prompts = [[{"role": "user", "content": q}] for q in questions] if conversational else questions
    dataset = Dataset.from_dict({
        "prompt": prompts, "answer": answers,
        "answer_ids": [tokenizer.encode(a, add_special_tokens=False) for a in answers],
    })
    built = build_rewards(rewards_config(names, level).rewards, level, tokenizer=tokenizer)
    check_columns(built, dataset.column_names)
    history = train_one_step(tmp_path, tokenizer, dataset, [GuardedReward(f) for f in built.funcs], built.weights)
    logged = {key for entry in history for key in entry}
    assert {f"rewards/{name}/mean" for name in names} <= logged


def test_a_failing_reward_stops_training_naming_reward_and_sample(tmp_path):
    from datasets import Dataset

    from grpolab.models.tokenizer import build_char_tokenizer

    class AnswerAsNumber:
        __name__ = "answer_as_number"

        def __call__(self, completions, answer, **kwargs):
            return [float(a) for a in answer]

    tokenizer = build_char_tokenizer()
    # One step samples one prompt (4 generations of it), so every row carries the bad gold answer.
    dataset = Dataset.from_dict({"prompt": ["3+3="] * 4, "answer": ["six"] * 4})
    expected = r"rewards\.answer_as_number raised ValueError.* on sample 0 of 4: prompt='3\+3=', .*answer='six'"
    with pytest.raises(RewardError, match=expected):
        train_one_step(tmp_path, tokenizer, dataset, [GuardedReward(AnswerAsNumber())], [1.0])
