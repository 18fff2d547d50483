"""RewardModel: a sequence-classification checkpoint built from conf/rewards/reward_model.yaml, handed to TRL as a
model with its tokenizer, named after the yaml key, and guarded so a failure names the reward and the sequence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import PreTrainedModel, Qwen2Config, Qwen2ForSequenceClassification

from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.rewards import GuardedReward, RewardError, RewardLevelError, RewardModel, build_rewards, check_columns

CONF = Path(__file__).resolve().parents[2] / "conf" / "rewards"


def save_reward_model(directory: Path, num_labels: int = 1, vocab_size: int | None = None, nan: bool = False) -> str:
    """A tiny Qwen2 reward model saved as a checkpoint directory, with the char tokenizer next to it and, as
    ``tokenizer_dir(directory)``, in a directory of its own (see ``RewardModel``: next to a Qwen2 config, transformers
    5 loads it as a byte-level Qwen2Tokenizer)."""
    tokenizer = build_char_tokenizer()
    config = Qwen2Config(vocab_size=vocab_size or len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, num_labels=num_labels,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config)
    if nan:  # a diverged checkpoint: every score is NaN
        with torch.no_grad():
            model.score.weight.fill_(float("nan"))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    tokenizer.save_pretrained(tokenizer_dir(directory))
    return str(directory)


def tokenizer_dir(checkpoint) -> str:
    return f"{checkpoint}-tokenizer"


def compose(name_or_path, level="text", **overrides):
    """conf/rewards/reward_model.yaml with name_or_path set, and the char tokenizer's own directory as tokenizer."""
    cfg = OmegaConf.create({"reward_level": level})
    cfg.rewards = OmegaConf.load(CONF / "reward_model.yaml")
    cfg.rewards.reward_model.name_or_path = name_or_path
    cfg.rewards.reward_model.tokenizer = tokenizer_dir(name_or_path)
    for key, value in overrides.items():
        cfg.rewards.reward_model[key] = value
    return cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_reward_model(tmp_path_factory.mktemp("reward_model"))


@pytest.fixture(scope="module")
def built(checkpoint):
    cfg = compose(checkpoint)
    return build_rewards(cfg.rewards, cfg.reward_level, tokenizer=build_char_tokenizer())


def test_the_yaml_option_builds_a_model_and_its_tokenizer_for_trl(built, checkpoint):
    from trl.trainer.utils import get_config_model_id

    (reward,) = built.funcs
    assert isinstance(reward, RewardModel) and reward.name_or_path == checkpoint
    (model,) = built.trainer_reward_funcs
    (processing_class,) = built.reward_processing_classes
    assert isinstance(model, PreTrainedModel) and model is reward.model
    assert processing_class is reward.processing_class and len(processing_class) == model.config.vocab_size
    assert processing_class.encode("12 + 7\n") == build_char_tokenizer().encode("12 + 7\n")
    # How TRL names an nn.Module reward (GRPOTrainer.__init__): the yaml key, like every other reward.
    assert get_config_model_id(model.config).split("/")[-1] == "reward_model" == reward.__name__
    assert built.names == ["reward_model"] and built.weights == [1.0]
    assert built.required_columns == {"reward_model": set()}
    assert model.config.pad_token_id == processing_class.pad_token_id
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    check_columns(built, ["prompt"])


def test_the_model_scores_as_trl_calls_it_and_the_guard_keeps_the_values(built, checkpoint):
    model, tokenizer = built.trainer_reward_funcs[0], built.reward_processing_classes[0]
    inputs = tokenizer(text=["3+4=7", "3+4=8", "12+7=19"], return_tensors="pt", padding=True, padding_side="right",
                       add_special_tokens=False)
    with torch.inference_mode():
        guarded = model(**inputs).logits[:, 0]
        plain = Qwen2ForSequenceClassification.from_pretrained(checkpoint)(**inputs).logits[:, 0]
    assert torch.equal(guarded, plain) and guarded.shape == (3,)


def test_a_failing_forward_names_the_reward_and_the_sequence(built):
    model, tokenizer = built.trainer_reward_funcs[0], built.reward_processing_classes[0]
    inputs = tokenizer(text=["3+4=7", "3+4=8", "2+2=4"], return_tensors="pt", padding=True, padding_side="right",
                       add_special_tokens=False)
    inputs["input_ids"][1, 2] = model.config.vocab_size + 5  # an ID the embedding table does not have
    with pytest.raises(RewardError) as excinfo, torch.inference_mode():
        model(**inputs)
    message = str(excinfo.value)
    assert message.startswith("rewards.reward_model (reward model) raised IndexError")
    assert "on sample 1 of 3: text='3+" in message and "(5 tokens)" in message
    assert isinstance(excinfo.value.__cause__, IndexError)


def test_a_non_finite_score_names_the_reward_and_the_sequence(tmp_path):
    cfg = compose(save_reward_model(tmp_path, nan=True))
    built = build_rewards(cfg.rewards, cfg.reward_level)
    model, tokenizer = built.trainer_reward_funcs[0], built.reward_processing_classes[0]
    inputs = tokenizer(text=["1+1=2", "2+2=4"], return_tensors="pt", padding=True, padding_side="right")
    with pytest.raises(RewardError, match=r"^rewards\.reward_model \(reward model\) returned nan, not a finite "
                                          r"reward, for sample 0 of 2: text='1\+1=2' \(5 tokens\)$"):
        model(**inputs)


def test_guarding_a_model_as_a_function_is_refused(built):
    with pytest.raises(TypeError, match=r"rewards\.reward_model is a model: TRL must receive it as a model"):
        GuardedReward(built.trainer_reward_funcs[0])


def test_without_a_tokenizer_key_the_checkpoints_own_tokenizer_is_loaded(checkpoint):
    cfg = compose(checkpoint, tokenizer=None)
    (reward,) = build_rewards(cfg.rewards, cfg.reward_level).funcs
    assert reward.processing_class.name_or_path == checkpoint
    assert reward.processing_class.get_vocab() == build_char_tokenizer().get_vocab()


def test_name_or_path_is_required():
    cfg = compose("???")
    # validate names the ??? first (grpolab.config.validate); building alone stops before loading anything
    with pytest.raises(ValueError, match=r"^rewards\.reward_model: Missing mandatory value: name_or_path$"):
        build_rewards(cfg.rewards, cfg.reward_level)


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [(lambda d: save_reward_model(d, num_labels=2), {},
      r"^rewards\.reward_model: the model has num_labels=2, but TRL reads logits\[:, 0\]"),
     (lambda d: save_reward_model(d, vocab_size=50), {},
      r"^rewards\.reward_model: the tokenizer has 109 tokens but the model only 50 embeddings; set "
      r"rewards\.reward_model\.tokenizer"),
     (lambda d: str(d), {"tokenizer": None}, r"^rewards\.reward_model\.tokenizer: cannot load '.*': "),
     (save_reward_model, {"dtype": "fp8"}, r"^rewards\.reward_model\.dtype must be one of float32, bfloat16, "
                                            r"float16, auto; got 'fp8'")],
    ids=["two labels", "tokenizer larger than the vocabulary", "not a checkpoint", "unknown dtype"],
)
def test_bad_checkpoints_fail_in_one_line_naming_the_key(tmp_path, make, overrides, message):
    cfg = compose(make(tmp_path), **overrides)
    with pytest.raises(ValueError, match=message) as excinfo:
        build_rewards(cfg.rewards, cfg.reward_level)
    assert "\n" not in str(excinfo.value)


def test_dtype_is_applied(tmp_path):
    cfg = compose(save_reward_model(tmp_path), dtype="bfloat16")
    model = build_rewards(cfg.rewards, cfg.reward_level).trainer_reward_funcs[0]
    assert model.dtype == torch.bfloat16


def test_a_reward_model_is_text_level_only(checkpoint):
    cfg = compose(checkpoint, level="token")
    with pytest.raises(RewardLevelError, match=r"^rewards\.reward_model has no token variant, so it cannot run with "
                                               r"reward_level=token; set rewards\.reward_model\.level=text"):
        build_rewards(cfg.rewards, cfg.reward_level, tokenizer=build_char_tokenizer())
    with pytest.raises(RewardLevelError, match=r"^rewards\.rm has no token variant, .* set rewards\.rm\.level=text"):
        RewardModel(checkpoint, level="token", name="rm")
