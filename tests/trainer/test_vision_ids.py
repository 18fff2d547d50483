"""Vision in ids mode: the same seed gives the same first steps as text mode (completions, losses, weights), while
the processor never sees prompt text; rewards receive the images in both modes."""

from __future__ import annotations

import pytest
import torch
from trl import GRPOConfig

from grpolab.data.image_tasks import ShapesTask
from grpolab.data.prepare_vision import VisionTextPrompts, vision_prompts
from grpolab.models.vision import build_vlm_processor
from grpolab.models.vlm import tiny_vlm_network
from grpolab.rewards import Accuracy, GuardedReward
from grpolab.trainer.grpo import GrpolabTrainer, trainer_dataset
from grpolab.trainer.vision_ids import VisionIdsMixin

# Once grpo.py lists the mixin in GrpolabTrainer's bases this is GrpolabTrainer itself.
TRAINER = GrpolabTrainer if issubclass(GrpolabTrainer, VisionIdsMixin) else type(
    "VisionIdsTrainer", (VisionIdsMixin, GrpolabTrainer), {})


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _run(mode: str, tmp_path, cache_pixels: bool = True) -> dict:
    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56)
    train = ShapesTask(train_size=16, eval_size=2).load().train
    if mode == "text":
        dataset = VisionTextPrompts().prepare(train, processor, {"answer"}, {"data": 1}, "train")
    else:
        preparer = vision_prompts("ids", cache_dir=str(tmp_path / "prompts"), cache_pixels=cache_pixels)
        dataset = trainer_dataset(preparer.prepare(train, processor, {"answer"}, {"data": 1}, "train"))
    seen: dict[str, list] = {"completion_ids": [], "image_sizes": []}

    def distinct_tokens(prompts, completions, completion_ids, image, **_):
        # Varies inside every group, so each step has a gradient; records what the rewards were handed.
        seen["completion_ids"].append([list(ids) for ids in completion_ids])
        seen["image_sizes"].append([picture.size for picture in image])
        return [float(len(set(ids))) for ids in completion_ids]

    model = tiny_vlm_network(processor, 64, 2, 4, 2, 128, 64, 2, 4, seed=0)
    initial = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    args = GRPOConfig(
        output_dir=str(tmp_path / mode), per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
        max_steps=3, learning_rate=1e-3, beta=0.0, activation_checkpointing=False, use_cpu=True, report_to=[],
        save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        # Two updates per rollout: TRL computes old log-probs inside the step, a forward pass the images must reach.
        num_iterations=2,
    )
    trainer = TRAINER(model=model, reward_funcs=[GuardedReward(Accuracy(level="text")), distinct_tokens], args=args,
                      train_dataset=dataset, processing_class=processor, lazy_decoding=mode == "ids")
    trainer.train()
    return {
        "seen": seen,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "initial": initial,
        "final": {name: parameter.detach().clone() for name, parameter in model.named_parameters()},
        "prompt_encodes": trainer.tokenizer_calls.encoded,
    }


@pytest.mark.slow
@pytest.mark.parametrize("cache_pixels", [True, False])
def test_ids_mode_repeats_the_text_mode_steps_exactly(tmp_path, one_thread, cache_pixels):
    text, ids = _run("text", tmp_path), _run("ids", tmp_path, cache_pixels)
    assert len(text["seen"]["completion_ids"]) == 2  # 3 steps, one rollout per 2 updates
    assert ids["seen"]["completion_ids"] == text["seen"]["completion_ids"]
    assert ids["losses"] == text["losses"]
    changed = [name for name in text["final"] if not torch.equal(text["final"][name], text["initial"][name])]
    assert any(name.startswith("model.visual.") for name in changed)  # pixels reached the loss
    assert all(torch.equal(ids["final"][name], text["final"][name]) for name in text["final"])
    assert ids["seen"]["image_sizes"] == text["seen"]["image_sizes"] == [[(56, 56)] * 8] * 2
    assert text["prompt_encodes"] > 0 and ids["prompt_encodes"] == 0
