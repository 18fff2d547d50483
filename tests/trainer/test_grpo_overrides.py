"""``GrpolabTrainer``'s overrides: the TRL hooks they rely on still exist with the same shape (fails on a TRL change),
and in a real tiny training run they deliver ID prompts, lazy decoding, ``prompt_ids`` for rewards, readable
completion logs in ids mode, and the per-step cost metrics."""

from __future__ import annotations

import inspect
import json
import pickle

import pytest
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from grpolab.data.prepare import TokenIdPrompts
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.trainer.grpo import (
    GrpolabTrainer,
    LazyDecodedTexts,
    TokenizerCallCounter,
    _lazy_batch_decode,
    is_token_ids,
    trainer_dataset,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model runs fastest on one thread; more only contend on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


QUESTIONS, ANSWERS = ["12+7=", "3+4=", "9+9=", "5+6="], ["19", "7", "18", "11"]
PROMPTS_PER_STEP, GENERATIONS = 2, 4


# -- the TRL 1.16 hooks the overrides depend on ---------------------------------------------------------------------


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_overridden_trl_hooks_keep_their_signatures():
    assert parameters(GRPOTrainer._tokenize_prompts) == ["self", "prompts"]
    assert parameters(GRPOTrainer._generate) == ["self", "prompts"]
    assert parameters(GRPOTrainer._calculate_rewards) == ["self", "inputs", "prompts", "completions",
                                                          "completion_ids_list"]
    assert parameters(GRPOTrainer.log) == ["self", "logs", "start_time"]


def test_trl_still_decodes_through_processing_class_batch_decode_and_logs_through_deques():
    # The lazy decode replaces processing_class.batch_decode for the duration of _generate; the discarded log
    # replaces the completion deque. If TRL decodes or logs another way, these overrides silently stop working.
    generate = inspect.getsource(GRPOTrainer._generate)
    assert generate.count("self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)") == 2
    assert "prompt_ids, images, multimodal_fields = self._tokenize_prompts(prompts)" in generate
    assert generate.rstrip().endswith(
        "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images")
    score = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert 'self._logs["completion"].extend(gather_object(completions))' in score
    assert 'self._logs["prompt"].extend(gather_object(prompts))' in score
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in score
    log = inspect.getsource(GRPOTrainer.log)
    assert 'self._logs["prompt"]' in log and "if self.accelerator.is_main_process and self.log_completions" in log


# -- small pieces ---------------------------------------------------------------------------------------------------


def test_is_token_ids():
    assert is_token_ids([5, 6]) and not is_token_ids([]) and not is_token_ids("56")
    assert not is_token_ids([{"role": "user", "content": "hi"}])


def test_lazy_texts_decode_each_item_once_and_slice():
    tokenizer = build_char_tokenizer()
    calls = []

    def decode(ids, **kwargs):
        calls.append(ids)
        return tokenizer.decode(ids, **kwargs)

    texts = LazyDecodedTexts(decode, [tokenizer("ab")["input_ids"], tokenizer("cd")["input_ids"]], {})
    assert (len(texts), texts.decoded_count) == (2, 0)
    assert texts[1] == texts[-1] == "cd" and texts[0:1] == ["ab"]
    assert len(calls) == 2 and texts.decoded_count == 2
    assert pickle.loads(pickle.dumps(texts)) == ["ab", "cd"]  # text crosses process boundaries


def test_lazy_batch_decode_is_removed_even_after_an_error():
    tokenizer = build_char_tokenizer()
    with pytest.raises(RuntimeError), _lazy_batch_decode(tokenizer):
        assert isinstance(tokenizer.batch_decode([[10]]), LazyDecodedTexts)
        raise RuntimeError
    assert tokenizer.batch_decode([[10]]) == [tokenizer.decode([10])]


def test_call_counter_counts_sequences_and_restores_earlier_wrappers():
    tokenizer = build_char_tokenizer()
    outer_calls = []
    original = tokenizer._decode

    def outer(*args, **kwargs):
        outer_calls.append(1)
        return original(*args, **kwargs)

    tokenizer._decode = outer
    counter = TokenizerCallCounter(tokenizer)
    with counter.installed():
        tokenizer(["a", "b", "c"])
        tokenizer.encode("abc")
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True)
        tokenizer.batch_decode([[10], [11]])
    tokenizer.decode([10])
    assert (counter.encoded, counter.decoded) == (5, 2)
    assert tokenizer._decode is outer and len(outer_calls) == 3
    assert "_encode_plus" not in vars(tokenizer)


# -- a real tiny training run ---------------------------------------------------------------------------------------


class RecordingReward:
    """Records what TRL hands a reward; reads completions only when ``reads_text``."""

    def __init__(self, name: str, reads_text: bool):
        self.__name__ = name
        self.reads_text = reads_text
        self.calls: list[dict] = []

    def __call__(self, prompts, completions, completion_ids, prompt_ids, **kwargs):
        call = {"prompts": prompts, "completions": completions, "prompt_ids": prompt_ids,
                "completion_ids": completion_ids}
        if self.reads_text:
            call["texts"] = list(completions)
            call["prompt_texts"] = list(prompts)
        self.calls.append(call)
        return [float(len(ids)) for ids in completion_ids]


def tiny_trainer(tmp_path, ids_mode: bool, rewards, max_steps: int = 2, **config) -> GrpolabTrainer:
    from grpolab.models.causal_lm import build_tiny_qwen2

    tokenizer = build_char_tokenizer()
    dataset = Dataset.from_dict({"prompt": QUESTIONS, "answer": ANSWERS})
    if ids_mode:
        dataset = TokenIdPrompts(None).prepare(dataset, tokenizer, set(), {}, "train")
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS,
        num_generations=GENERATIONS, max_completion_length=8, logging_steps=1, use_cpu=True, bf16=False,
        save_strategy="no", seed=0, disable_tqdm=True, **{"report_to": [], **config},
    )
    model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
    return GrpolabTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=trainer_dataset(dataset),
                          processing_class=tokenizer, lazy_decoding=ids_mode)


@pytest.mark.slow
def test_ids_mode_with_token_rewards_never_decodes_and_passes_prompt_ids(tmp_path):
    reward = RecordingReward("length", reads_text=False)
    trainer = tiny_trainer(tmp_path, ids_mode=True, rewards=[reward])
    trainer.train()
    tokenizer = trainer.processing_class
    assert len(reward.calls) == 2
    for call in reward.calls:
        assert isinstance(call["completions"], LazyDecodedTexts) and call["completions"].decoded_count == 0
        assert isinstance(call["prompts"], LazyDecodedTexts) and call["prompts"].decoded_count == 0
        assert {tuple(ids) for ids in call["prompt_ids"]} <= {tuple(tokenizer(q)["input_ids"]) for q in QUESTIONS}
    costs = [row for row in trainer.state.log_history if "tokenizer/calls" in row]
    assert [row["tokenizer/calls"] for row in costs] == [0.0, 0.0]
    assert all(row["timing/rewards_s"] > 0 for row in costs)


@pytest.mark.slow
def test_ids_mode_text_reward_reads_decoded_prompts_and_completions(tmp_path):
    reward = RecordingReward("length", reads_text=True)
    trainer = tiny_trainer(tmp_path, ids_mode=True, rewards=[reward], max_steps=1)
    trainer.train()
    tokenizer, call = trainer.processing_class, reward.calls[0]
    assert call["texts"] == tokenizer.batch_decode(call["completion_ids"], skip_special_tokens=True)
    assert set(call["prompt_texts"]) <= set(QUESTIONS)
    assert [tokenizer(text)["input_ids"] for text in call["prompt_texts"]] == [list(i) for i in call["prompt_ids"]]
    batch = PROMPTS_PER_STEP * GENERATIONS
    assert trainer.state.log_history[0]["tokenizer/decode_calls"] == 2 * batch  # completions and prompts, once each
    assert trainer.state.log_history[0]["tokenizer/encode_calls"] == 0


@pytest.mark.slow
def test_text_mode_is_stock_trl_plus_prompt_ids(tmp_path):
    reward = RecordingReward("length", reads_text=True)
    trainer = tiny_trainer(tmp_path, ids_mode=False, rewards=[reward], max_steps=1)
    trainer.train()
    tokenizer, call = trainer.processing_class, reward.calls[0]
    assert isinstance(call["completions"], list) and set(call["prompts"]) <= set(QUESTIONS)
    assert [tokenizer(p)["input_ids"] for p in call["prompts"]] == call["prompt_ids"]
    batch = PROMPTS_PER_STEP * GENERATIONS
    costs = trainer.state.log_history[0]
    assert (costs["tokenizer/encode_calls"], costs["tokenizer/decode_calls"]) == (batch, batch)


@pytest.mark.slow
def test_ids_mode_completion_log_shows_text_in_console_parquet_and_wandb(tmp_path, capsys, monkeypatch):
    import pandas as pd
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="grpolab-tests", dir=str(tmp_path))
    try:
        trainer = tiny_trainer(tmp_path, ids_mode=True, rewards=[RecordingReward("length", reads_text=False)],
                               max_steps=1, log_completions=True, report_to=["wandb"])
        trainer.train()
    finally:
        run.finish()
    tokenizer = trainer.processing_class
    table = pd.read_parquet(tmp_path / "completions" / "completions_00001.parquet")
    assert set(table["prompt"]) <= set(QUESTIONS)  # the exact model input, decoded once at log time
    assert all(isinstance(text, str) for text in table["completion"])
    assert capsys.readouterr().out.count("Step 1") >= 1
    logged = list(tmp_path.glob("wandb/offline-run-*/files/media/table/completions_*.table.json"))
    assert logged  # TRL logs the table at every log, the end-of-training one included
    for path in logged:
        wandb_table = json.loads(path.read_text())
        prompt_column = wandb_table["columns"].index("prompt")
        assert {row[prompt_column] for row in wandb_table["data"]} <= set(QUESTIONS)
    assert tokenizer.batch_decode is not None and "batch_decode" not in vars(tokenizer)
