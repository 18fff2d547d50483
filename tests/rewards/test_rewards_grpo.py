"""The built rewards inside a real (tiny, one- or two-step) TRL GRPOTrainer: TRL's calling contract, metric names,
and the three kinds of reward TRL runs (functions, async functions, reward models), each guarded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grpolab.rewards import GuardedReward, RewardError, build_rewards, check_columns

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[2] / "conf" / "rewards"


def rewards_config(names, level):
    cfg = OmegaConf.create({"reward_level": level, "trainer": {"max_completion_length": 8}})
    cfg.rewards = OmegaConf.merge(*(OmegaConf.load(CONF / f"{name}.yaml") for name in names))
    required = {"length": {"target": 6}, "overlong": {"max_length": 8, "cache": 4}, "cosine_length": {"max_length": 8}}
    for name in set(names) & required.keys():
        cfg.rewards[name].update(required[name])
    return cfg


def train(tmp_path, tokenizer, dataset, reward_funcs, weights, steps=1, reward_processing_classes=None):
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.models.tiny import build_tiny_qwen2

    model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
        reward_weights=weights, seed=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, reward_processing_classes=reward_processing_classes)
    trainer.train()
    return trainer


def train_one_step(tmp_path, tokenizer, dataset, reward_funcs, weights):
    return train(tmp_path, tokenizer, dataset, reward_funcs, weights).state.log_history


def arithmetic(tokenizer, conversational):
    from datasets import Dataset

    questions, answers = ["12+7=", "3+4=", "9+9=", "5+6="], ["19", "7", "18", "11"]
    prompts = [[{"role": "user", "content": q}] for q in questions] if conversational else questions
    return Dataset.from_dict({
        "prompt": prompts, "answer": answers,
        "answer_ids": [tokenizer.encode(a, add_special_tokens=False) for a in answers],
    })


def logged_keys(trainer):
    return {key for entry in trainer.state.log_history for key in entry}


@pytest.mark.parametrize(
    ("level", "names", "conversational"),
    [("text", ["accuracy", "format", "think_format", "overlong", "reasoning_steps", "cosine_length",
               "repetition"], True),
     ("token", ["accuracy", "format", "length", "overlong", "cosine_length", "repetition"], False)],
)
def test_rewards_log_under_their_yaml_names(tmp_path, level, names, conversational):
    from grpolab.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    dataset = arithmetic(tokenizer, conversational)
    built = build_rewards(rewards_config(names, level).rewards, level, tokenizer=tokenizer)
    check_columns(built, dataset.column_names)
    trainer = train(tmp_path, tokenizer, dataset, built.trainer_reward_funcs, built.weights,
                    reward_processing_classes=built.reward_processing_classes)
    assert {f"rewards/{name}/mean" for name in names} <= logged_keys(trainer)


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


class AsyncDigitJudge:
    """An async reward (an LLM-judge stand-in): the share of digits in the completion, after an await."""

    async def __call__(self, completions, **kwargs):
        await asyncio.sleep(0)
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


class AsyncAnswerAsNumber:
    async def __call__(self, completions, answer, **kwargs):
        await asyncio.sleep(0)
        return [float(a) for a in answer]


def test_an_async_reward_is_awaited_by_trl_and_logged_under_its_key(tmp_path):
    from grpolab.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    dataset = arithmetic(tokenizer, conversational=False)
    spec = {"accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy", "fallbacks": False},
            "digits": {"_target_": f"{__name__}.AsyncDigitJudge", "weight": 0.5}}
    built = build_rewards(spec, "text", tokenizer=tokenizer)
    trainer = train(tmp_path, tokenizer, dataset, built.trainer_reward_funcs, built.weights, steps=2,
                    reward_processing_classes=built.reward_processing_classes)
    assert trainer._has_async_funcs  # TRL took the async path (asyncio.gather on its event loop)
    assert {"rewards/digits/mean", "rewards/accuracy/mean"} <= logged_keys(trainer)
    texts = list(trainer._logs["completion"])
    assert list(trainer._logs["rewards"]["digits"]) == pytest.approx(
        [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts])


def test_a_failing_async_reward_stops_training_naming_reward_and_sample(tmp_path):
    from datasets import Dataset

    from grpolab.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    dataset = Dataset.from_dict({"prompt": ["3+3="] * 4, "answer": ["six"] * 4})
    built = build_rewards({"as_number": {"_target_": f"{__name__}.AsyncAnswerAsNumber"}}, "text")
    expected = r"rewards\.as_number \(text\) raised ValueError.* on sample 0 of 4: prompt='3\+3=', .*answer='six'"
    with pytest.raises(RewardError, match=expected):
        train(tmp_path, tokenizer, dataset, built.trainer_reward_funcs, built.weights, steps=2)


def test_a_reward_model_runs_as_a_model_with_its_tokenizer_and_logs_under_its_key(tmp_path):
    import torch
    from transformers import Qwen2ForSequenceClassification

    from grpolab.models.tokenizer import build_char_tokenizer
    from test_rewards_model import save_reward_model, tokenizer_dir

    tokenizer = build_char_tokenizer()
    dataset = arithmetic(tokenizer, conversational=True)
    checkpoint = save_reward_model(tmp_path / "rm")
    cfg = rewards_config(["accuracy", "reward_model"], "text")
    cfg.rewards.reward_model.name_or_path = checkpoint
    cfg.rewards.reward_model.tokenizer = tokenizer_dir(checkpoint)
    built = build_rewards(cfg.rewards, "text", tokenizer=tokenizer)
    trainer = train(tmp_path / "run", tokenizer, dataset, built.trainer_reward_funcs, built.weights, steps=2,
                    reward_processing_classes=built.reward_processing_classes)
    assert trainer.reward_func_names == ["accuracy", "reward_model"]
    assert {"rewards/reward_model/mean", "rewards/reward_model/std", "rewards/accuracy/mean"} <= logged_keys(trainer)
    # The logged scores are the checkpoint's own scores of prompt + completion through the chat template.
    reference = Qwen2ForSequenceClassification.from_pretrained(checkpoint).eval()
    texts = [tokenizer.apply_chat_template(p + c, tokenize=False)
             for p, c in zip(trainer._logs["prompt"], trainer._logs["completion"], strict=True)]
    inputs = tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        expected = reference(**inputs).logits[:, 0].tolist()
    assert list(trainer._logs["rewards"]["reward_model"]) == pytest.approx(expected, abs=1e-5)
    assert len(set(expected)) > 1


def test_a_failing_reward_model_stops_training_naming_reward_and_sample(tmp_path):
    from grpolab.models.tokenizer import build_char_tokenizer
    from test_rewards_model import save_reward_model, tokenizer_dir

    tokenizer = build_char_tokenizer()
    cfg = rewards_config(["reward_model"], "text")
    cfg.rewards.reward_model.name_or_path = save_reward_model(tmp_path / "rm", nan=True)
    cfg.rewards.reward_model.tokenizer = tokenizer_dir(cfg.rewards.reward_model.name_or_path)
    built = build_rewards(cfg.rewards, "text", tokenizer=tokenizer)
    expected = (r"^rewards\.reward_model \(reward model\) returned nan, not a finite reward, for sample 0 of 4: "
                r"text='(12\+7|3\+4|9\+9|5\+6)=")
    with pytest.raises(RewardError, match=expected):
        train(tmp_path / "run", tokenizer, arithmetic(tokenizer, conversational=False), built.trainer_reward_funcs,
              built.weights, steps=2, reward_processing_classes=built.reward_processing_classes)
