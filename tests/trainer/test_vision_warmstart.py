"""The vision warm start and held-out evaluation: both read the pixels, in text and ids form alike."""

from __future__ import annotations

import pytest
import torch

from grpolab.data.image_tasks import ShapesTask
from grpolab.data.prepare import encode_answer
from grpolab.data.prepare_vision import vision_prompts
from grpolab.models.vision import build_vlm_processor
from grpolab.models.vlm import tiny_vlm_network
from grpolab.rewards import Accuracy
from grpolab.trainer.evaluation import reward_scorer
from grpolab.trainer.vision_eval import image_greedy_evaluator
from grpolab.trainer.vision_warmstart import VisionSupervisedWarmStart


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56)
    splits = ShapesTask(train_size=64, eval_size=24).load()
    return processor, splits


def _model(processor):
    return tiny_vlm_network(processor, 64, 2, 4, 2, 128, 64, 2, 4, seed=0)


def _examples(rows, tokenizer):
    return rows.map(lambda row: {"solution_ids": encode_answer(tokenizer, row["solution"])})


def test_warm_start_trains_the_vision_tower_and_is_cached(setup, tmp_path):
    processor, splits = setup
    model = _model(processor)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    warm = VisionSupervisedWarmStart(processor, steps=12, batch_size=16, lr=3e-3, weight_decay=0.0, warmup_steps=2,
                                     cache=True, log_every=4)
    tokenizer = processor.tokenizer
    result = warm.run(model, _examples(splits.train, tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id,
                      tmp_path, {"model": "tiny"}, seed=0)
    assert result["steps"] == 12 and not result["cached"] and result["final_loss"] < 4.0
    assert not torch.equal(before["model.visual.patch_embed.proj.weight"],
                           model.get_parameter("model.visual.patch_embed.proj.weight"))
    again = _model(processor)
    cached = warm.run(again, None, tokenizer.eos_token_id, tokenizer.pad_token_id, tmp_path, {"model": "tiny"}, 0)
    assert cached["cached"] and cached["cache_key"] == result["cache_key"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_warm_start_reads_ids_form_rows_identically(setup, tmp_path):
    processor, splits = setup
    tokenizer = processor.tokenizer
    ids_rows = vision_prompts("ids", cache_dir=None).prepare(splits.train, processor, set(), {}, "train")
    weights = []
    for rows in (splits.train, ids_rows):
        model = _model(processor)
        warm = VisionSupervisedWarmStart(processor, steps=3, batch_size=8, lr=1e-3, weight_decay=0.0,
                                         warmup_steps=0, cache=False)
        warm.run(model, _examples(rows, tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, None, {}, 0)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_held_out_evaluation_generates_from_the_pixels(setup):
    processor, splits = setup
    model = _model(processor)
    seen = {}

    def record(prompts, completions, completion_ids, image, **_):
        seen.setdefault("sizes", []).extend(picture.size for picture in image)
        return [1.0] * len(completions)

    record.__name__ = "seen"
    rows = splits.eval
    ids_rows = vision_prompts("ids", cache_dir=None).prepare(rows, processor, set(), {}, "eval")
    text_eval = image_greedy_evaluator(processor, rows, [Accuracy(level="text"), record], reward_scorer, 8, 10)
    ids_eval = image_greedy_evaluator(processor, ids_rows, [Accuracy(level="text"), record], reward_scorer, 8, 10)
    text_metrics, ids_metrics = text_eval(model), ids_eval(model)
    assert text_metrics["num_samples"] == ids_metrics["num_samples"] == 24 and text_metrics["seen"] == 1.0
    assert seen["sizes"] == [(56, 56)] * 48  # metrics got the images in both forms
    assert {k: v for k, v in text_metrics.items() if k != "wall_time_s"} == {
        k: v for k, v in ids_metrics.items() if k != "wall_time_s"}

    # Reference: the processor's own batch, generated greedily; the evaluator's answers must be these.
    answers = []

    def collect(prompts, completions, completion_ids, **_):
        answers.extend(completions)
        return [0.0] * len(completions)

    collect.__name__ = "collect"
    image_greedy_evaluator(processor, rows, [collect], reward_scorer, 8, 7)(model)
    texts = [processor.apply_chat_template(rows[i]["prompt"], add_generation_prompt=True, tokenize=False)
             for i in range(len(rows))]
    batch = processor(text=texts, images=[rows[i]["image"] for i in range(len(rows))], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=8, do_sample=False)
    reference = processor.batch_decode(output[:, batch["input_ids"].size(1):], skip_special_tokens=True)
    assert answers == reference
