"""The supervised warm start: one loop for text and image rows, in text and ids form alike, cached by config."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from grpolab.data.arithmetic import ArithmeticTask
from grpolab.data.image_tasks import ShapesTask
from grpolab.data.prepare import TokenIdPrompts
from grpolab.data.prompts import PromptEncoder
from grpolab.models.tiny import build_tiny_qwen2, build_tiny_vlm
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.models.vision import build_vlm_processor
from grpolab.trainer.warmstart import SupervisedWarmStart


@pytest.fixture(scope="module")
def vision():
    torch.set_num_threads(1)
    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56)
    return PromptEncoder(processor), ShapesTask(train_size=64, eval_size=24).load()


def _vlm(encoder):
    return build_tiny_vlm(encoder.processing_class, 64, 2, 4, 2, 128, 64, 2, 4, seed=0)


def _warm(**fields) -> SupervisedWarmStart:
    return SupervisedWarmStart(**{"steps": 3, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0,
                                  "cache": False, **fields})


def test_warm_start_trains_the_vision_tower_and_is_cached(vision, tmp_path):
    encoder, splits = vision
    model = _vlm(encoder)
    before = model.get_parameter("model.visual.patch_embed.proj.weight").detach().clone()
    warm = _warm(steps=12, batch_size=16, lr=3e-3, warmup_steps=2, cache=True, log_every=4)
    result = warm.run(model, splits.train, encoder, tmp_path, {"model": "tiny"}, seed=0)
    assert result["steps"] == 12 and not result["cached"] and result["final_loss"] < 4.0
    assert result["final_window"] == 4 and 0.0 <= result["final_exact_match"] <= 1.0
    assert not torch.equal(before, model.get_parameter("model.visual.patch_embed.proj.weight"))
    again = _vlm(encoder)
    cached = warm.run(again, None, encoder, tmp_path, {"model": "tiny"}, 0)
    assert cached["cached"] and cached["cache_key"] == result["cache_key"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("task", ["text", "vision"])
def test_warm_start_reads_ids_form_rows_identically(vision, task):
    if task == "vision":
        encoder, splits = vision
        rows, build = splits.train, lambda: _vlm(encoder)
    else:
        encoder = PromptEncoder(build_char_tokenizer())
        rows = ArithmeticTask(train_size=64, eval_size=8, max_operand=20, operations=["+"], seed=0).load().train
        build = lambda: build_tiny_qwen2(encoder.processing_class, 32, 64, 1, 2, 1, 64, True, seed=0)  # noqa: E731
    ids_rows = TokenIdPrompts(encoder, cache_dir=None).prepare(rows, "train", set(), {})
    weights = []
    for form in (rows, ids_rows):
        model = build()
        _warm().run(model, form, encoder, None, {}, seed=0)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_chat_prompts_render_with_the_trainers_chat_template_arguments():
    # The warm start trains on the prompt exactly as GRPO renders it: the same template arguments change the IDs.
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = "{% if shout %}!{% endif %}" + tokenizer.chat_template
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1="}], "answer": "2",
                               "solution": "<answer>2</answer>"}] * 4)
    losses = []
    for kwargs in ({}, {"shout": True}):
        model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
        encoder = PromptEncoder(tokenizer, kwargs)
        assert encoder.encode([rows[0]]).prompt_ids[0][0] == (tokenizer.convert_tokens_to_ids("!") if kwargs
                                                              else tokenizer.convert_tokens_to_ids("<|im_start|>"))
        losses.append(_warm(steps=1, batch_size=4).run(model, rows, encoder, None, {}, seed=0)["final_loss"])
    assert losses[0] != losses[1]


def test_a_missing_solution_column_is_named_before_training():
    rows = Dataset.from_list([{"prompt": "1+1=", "answer": "2"}])
    with pytest.raises(ValueError, match="warmstart: the warm start trains on a 'solution' column.*warmstart=none"):
        _warm().checked(rows.column_names)
    assert _warm(steps=0).checked(rows.column_names).steps == 0  # a zero-step warm start reads nothing


def test_two_jobs_side_by_side_that_share_a_warm_start_train_it_once(tmp_path):
    """Two jobs of a sweep start together with the same warm start: one trains it, the other waits on the cache's
    lock and loads the weights (threads here: the lock is a file lock, held per open file, as between processes)."""
    import threading

    encoder = PromptEncoder(build_char_tokenizer())
    rows = ArithmeticTask(train_size=64, eval_size=8, max_operand=20, operations=["+"], seed=0).load().train
    warm = _warm(steps=30, cache=True)
    models = [build_tiny_qwen2(encoder.processing_class, 32, 64, 1, 2, 1, 64, True, seed=0) for _ in range(2)]
    results: list[dict] = [{}, {}]

    def job(index: int) -> None:
        results[index] = warm.run(models[index], rows, encoder, tmp_path, {"model": "tiny"}, seed=0)

    threads = [threading.Thread(target=job, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result["cached"] for result in results) == [False, True]
    assert all(torch.equal(a, b) for a, b in zip(*(model.state_dict().values() for model in models)))
