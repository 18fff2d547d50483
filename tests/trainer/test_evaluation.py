"""Held-out evaluation: greedy decoding through the run's prompt encoder, scored by reward definitions."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from grpolab.data.image_tasks import ShapesTask
from grpolab.data.prepare import TokenIdPrompts
from grpolab.data.prompts import PromptEncoder
from grpolab.models.tiny import build_tiny_qwen2, build_tiny_vlm
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.models.vision import build_vlm_processor
from grpolab.rewards import Accuracy
from grpolab.trainer.evaluation import HeldOutEvaluator, text_level


@pytest.fixture(scope="module")
def vision():
    torch.set_num_threads(1)
    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56)
    encoder = PromptEncoder(processor)
    model = build_tiny_vlm(processor, 64, 2, 4, 2, 128, 64, 2, 4, seed=0)
    return encoder, model, ShapesTask(train_size=8, eval_size=24).load().eval


def test_evaluation_generates_from_the_pixels_in_text_and_ids_form(vision):
    encoder, model, rows = vision
    seen = {}

    def record(prompts, completions, completion_ids, image, **_):
        seen.setdefault("sizes", []).extend(picture.size for picture in image)
        return [1.0] * len(completions)

    record.__name__ = "seen"
    ids_rows = TokenIdPrompts(encoder, cache_dir=None).prepare(rows, "eval", set(), {})
    metrics = [Accuracy(level="text"), record]
    text_metrics = HeldOutEvaluator(rows, encoder, metrics, 8, 10)(model)
    ids_metrics = HeldOutEvaluator(ids_rows, encoder, metrics, 8, 10)(model)
    assert text_metrics["num_samples"] == ids_metrics["num_samples"] == 24 and text_metrics["seen"] == 1.0
    assert seen["sizes"] == [(56, 56)] * 48  # metrics got the images in both forms
    assert {k: v for k, v in text_metrics.items() if k != "wall_time_s"} == {
        k: v for k, v in ids_metrics.items() if k != "wall_time_s"}


def test_evaluation_answers_are_what_the_processor_batch_generates(vision):
    encoder, model, rows = vision
    answers = []

    def collect(prompts, completions, completion_ids, **_):
        answers.extend(completions)
        return [0.0] * len(completions)

    collect.__name__ = "collect"
    HeldOutEvaluator(rows, encoder, [collect], 8, 7)(model)
    processor = encoder.processing_class
    texts = [processor.apply_chat_template(rows[i]["prompt"], add_generation_prompt=True, tokenize=False)
             for i in range(len(rows))]
    batch = processor(text=texts, images=[rows[i]["image"] for i in range(len(rows))], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert answers == processor.batch_decode(output[:, batch["input_ids"].size(1):], skip_special_tokens=True)


def test_evaluation_renders_chat_prompts_with_the_trainers_chat_template_arguments():
    # The bug the two evaluators hid: evaluation prompts ignored trainer.chat_template_kwargs.
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = "{% if shout %}!{% endif %}" + tokenizer.chat_template
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1="}], "answer": "2"}])
    model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
    generated_from = []
    generate = model.generate

    def recording_generate(input_ids, **kwargs):
        generated_from.append(input_ids[0].tolist())
        return generate(input_ids=input_ids, **kwargs)

    model.generate = recording_generate
    for kwargs in ({}, {"shout": True}):
        HeldOutEvaluator(rows, PromptEncoder(tokenizer, kwargs), [Accuracy(level="text")], 2, 1)(model)
    plain = tokenizer.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
    assert generated_from == [list(plain), [tokenizer.convert_tokens_to_ids("!"), *plain]]


def test_metrics_are_reward_definitions_pinned_to_text_level():
    specs = {"accuracy": {"_target_": "grpolab.rewards.accuracy.Accuracy", "level": "token", "weight": 1.0},
             "plain": {"_target_": "trl.rewards.think_format_reward", "_partial_": True}}
    assert text_level(specs) == {**specs, "accuracy": {**specs["accuracy"], "level": "text"}}
