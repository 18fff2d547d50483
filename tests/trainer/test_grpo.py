"""``GrpolabTrainer``, grpolab's one point of contact with TRL's private methods.

The canaries fail when TRL renames or reshapes a method the trainer overrides, or stops doing what an override relies
on; the real tiny runs show what the overrides deliver: ID prompts, lazy decoding, ``prompt_ids`` for rewards,
readable completion logs in ids mode, per-step cost metrics, and ids-form image rows taking the text mode's steps.
"""

from __future__ import annotations

import inspect
import json
import re

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from grpolab.data.prepare import TextPrompts, TokenIdPrompts
from grpolab.data.prompts import HostRows, PromptEncoder, SharedTokenIds, is_token_ids
from grpolab.models.tiny import build_tiny_qwen2, build_tiny_vlm
from grpolab.models.tokenizer import build_char_tokenizer
from grpolab.models.vision import build_vlm_processor
from grpolab.rewards import Accuracy, GuardedReward
from grpolab.trainer.grpo import GrpolabTrainer, trainer_dataset
from grpolab.trainer.tokenizer_calls import LazyDecodedTexts

QUESTIONS, ANSWERS = ["12+7=", "3+4=", "9+9=", "5+6="], ["19", "7", "18", "11"]
PROMPTS_PER_STEP, GENERATIONS = 2, 4
OVERRIDDEN = ("_generate_and_score_completions", "_generate", "_tokenize_prompts", "_generate_single_turn",
              "_tool_call_loop", "_calculate_rewards", "_get_per_token_logps_and_entropies", "_get_train_sampler",
              "_save_checkpoint", "_load_from_checkpoint")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# -- canaries: what the overrides rely on in TRL 1.16 ---------------------------------------------------------------


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def source(name: str) -> str:
    return inspect.getsource(getattr(GRPOTrainer, name))


def test_every_private_override_lives_in_grpolab_trainer_and_matches_trls_signature():
    private = {name for name in vars(GrpolabTrainer) if name.startswith("_") and not name.startswith("__")
               and callable(getattr(GRPOTrainer, name, None))}
    assert private == set(OVERRIDDEN)  # a new override must be listed (and pinned) here
    assert parameters(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]
    assert parameters(GRPOTrainer._generate) == ["self", "prompts"]
    assert parameters(GRPOTrainer._tokenize_prompts) == ["self", "prompts"]
    assert parameters(GRPOTrainer._generate_single_turn) == ["self", "prompt_ids", "images", "multimodal_fields",
                                                            "num_generations", "has_tool_images"]
    assert parameters(GRPOTrainer._tool_call_loop) == ["self", "prompts", "prompt_ids", "completion_ids", "completions",
                                                       "logprobs", "images", "multimodal_fields"]
    assert parameters(GRPOTrainer._calculate_rewards) == ["self", "inputs", "prompts", "completions",
                                                          "completion_ids_list"]
    logps = parameters(GRPOTrainer._get_per_token_logps_and_entropies)
    assert logps[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"]
    assert {"pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids"} <= set(logps)
    assert parameters(GRPOTrainer.log) == ["self", "logs", "start_time"]
    assert parameters(GRPOTrainer._get_train_sampler) == ["self", "dataset"]
    assert parameters(GRPOTrainer._save_checkpoint) == ["self", "model", "trial"]
    assert parameters(GRPOTrainer._load_from_checkpoint) == ["self", "resume_from_checkpoint", "model"]
    assert parameters(GRPOTrainer.train)[:2] == ["self", "resume_from_checkpoint"]


def test_trainer_checkpoints_and_resumes_the_way_grpolabs_checkpoint_state_expects():
    """What ``GrpolabTrainer._save_checkpoint`` / ``pending_state`` rely on in transformers 5.24 and TRL 1.16."""
    from transformers import Trainer

    save = inspect.getsource(Trainer._save_checkpoint)
    # grpolab lifts save_total_limit for the call, marks the checkpoint complete, then rotates itself.
    assert "save_total_limit=self.args.save_total_limit" in save and save.rstrip().endswith(")")
    assert save.index("self.state.save_to_json") < save.index("rotate_checkpoints(")
    loop = inspect.getsource(Trainer._inner_training_loop)
    # The log window is reset before on_train_begin, where grpolab restores it.
    assert loop.index("self._globalstep_last_logged = self.state.global_step") < loop.index("on_train_begin")
    assert loop.index("self._tr_loss = torch.tensor(0.0") < loop.index("on_train_begin")
    epoch = inspect.getsource(Trainer._run_epoch)
    assert "train_dataloader.set_epoch(epoch)" in epoch  # reaches EpochRepeatSampler.set_epoch
    prepare = source("_prepare_inputs")
    assert "self._step % generate_every == 0 or self._buffered_inputs is None" in prepare
    assert "self._buffered_inputs[self._step % self.args.steps_per_generation]" in prepare
    assert 'self._metrics[mode].clear()' in source("log")
    assert "RepeatSampler(" in source("_get_train_sampler")
    # Resuming loads the weights with the saved keys as they are (the reason for grpolab's _load_from_checkpoint).
    assert "load_result = model.load_state_dict(state_dict, False)" in inspect.getsource(Trainer._load_from_checkpoint)
    assert "self._load_from_checkpoint(resume_from_checkpoint)" in inspect.getsource(Trainer.train)


def test_trl_generates_decodes_and_scores_the_way_the_overrides_expect():
    generate = source("_generate")
    assert "prompt_ids, images, multimodal_fields = self._tokenize_prompts(prompts)" in generate
    # The ids-mode prompts reach it as SharedTokenIds, which deepcopy shares (an ID list copy costs ~7 ms a step).
    assert "prompts = copy.deepcopy(prompts)" in generate
    assert "self._generate_single_turn(\n                prompt_ids, images, multimodal_fields, num_generations" in generate
    # Lazy decoding replaces processing_class.batch_decode while _generate runs.
    assert generate.count("self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)") == 2
    assert generate.rstrip().endswith(
        "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images")
    score = source("_generate_and_score_completions")
    assert "= self._generate(prompts)" in score
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in score
    assert 'self._logs["completion"].extend(gather_object(completions))' in score
    assert 'self._logs["prompt"].extend(gather_object(prompts))' in score
    # ids-form image rows carry no `image(s)` column, so TRL takes its text-only path and the trainer supplies pixels.
    assert 'if "images" in inputs[0]:' in score and 'elif "image" in inputs[0]:' in score
    single_turn = source("_generate_single_turn")
    assert "multimodal_fields" in single_turn
    # mm_token_type_ids goes in as a list of lists, the form TRL left-pads as a per-token field.
    assert "elif isinstance(v, list) and v and isinstance(v[0], list):" in single_turn
    # prompt_ids_as_arrays: TRL builds tensors from the prompt IDs on the generate path and after it; lists stay
    # where the IDs are serialised (vLLM), taken as lists (continuous batching) or concatenated (the tool loop).
    assert "prompt_tensors = [torch.tensor(ids) for ids in prompt_ids]" in single_turn
    assert single_turn.index("if self.use_vllm:") < single_turn.index(
        "elif self.use_transformers_continuous_batching:") < single_turn.index("prompt_tensors = ")
    assert "prompt_ids = [torch.tensor(ids) for ids in prompt_ids_list]" in score
    assert "prompt_ids[idx_with_tool] + completion_ids[idx_with_tool]" in source("_tool_call_loop")
    assert "if self.tools:" in generate
    log = source("log")
    assert 'self._logs["prompt"]' in log and "if self.accelerator.is_main_process and self.log_completions" in log


def test_trl_runs_tools_the_way_grpolabs_multi_turn_pieces_repeat_it():
    """``tool_suffix_ids`` calls ``_get_tool_suffix_ids`` on a stand-in holding the attributes it reads;
    ``grpolab.trainer.multiturn`` repeats the tool loop's execution, layout and budget rules for the warm start and the
    held-out evaluation; ``GrpolabTrainer`` reads the tool mask from ``_generate``'s result."""
    assert parameters(GRPOTrainer._get_tool_suffix_ids) == ["self", "tool_messages"]
    suffix = source("_get_tool_suffix_ids")
    read = set(re.findall(r"self\.(\w+)", suffix))
    assert read == {"processing_class", "chat_template", "chat_template_kwargs", "_is_vlm", "_tokenizer"}
    loop = source("_tool_call_loop")
    assert "result = {\"error\": str(e)}" in loop and 'raise ValueError(f"Tool {name} not found.")' in loop
    assert '{"error": f"Unsupported tool call type: {tool_call[\'type\']}"}' in loop
    assert 'content = result if isinstance(result, list) else str(result)' in loop
    assert "suffix_ids = self._get_tool_suffix_ids(tool_messages)" in loop
    assert "len(pct) - len(prompt_ids[i]) > self.max_completion_length or len(pct) >= max_model_len" in loop
    assert "tool_mask[idx_with_tool] += [0] * tool_length + [1] * post_tool_length" in loop
    assert "while idxs_with_tool and iteration_num < self.max_tool_calling_iterations:" in loop
    assert "tool_call_count += 1" in loop.split("for tool_call in tool_call_list:")[1][:60]
    generate = source("_generate")
    assert "parse_response(self._tokenizer, ids, prefix=prompt_ids[i], tools=per_prompt_tools[i])" in generate
    assert "completion_lengths = torch.tensor([sum(mask) for mask in tool_mask], device=device)" in generate
    # ids mode with tools: the rows' chat messages are what TRL reads as prompts, and what reaches _tokenize_prompts.
    assert 'prompts = [x["prompt"] for x in inputs]' in source("_generate_and_score_completions")


def test_trl_feeds_tool_images_to_the_model_the_way_the_ids_form_overrides_expect():
    """ids-form image rows carry no `image` column, so TRL has no prompt images: ``_tool_call_loop`` hands its loop the
    rows' images and cached fields, ``_generate`` puts the rows' images before the tools' in its result, and
    ``score_round`` leaves TRL's image fields alone when TRL built them (a tool returned images)."""
    loop = source("_tool_call_loop")
    assert "tool_images[idx_with_tool].append(part[\"image\"])" in loop
    assert "merged_images = images" in loop and "(existing or []) + new" in loop
    assert 'self.processing_class.image_processor(images=flat_loop_images, return_tensors="pt")' in loop
    assert 'if "num_images" not in multimodal_fields and images is not None:' in loop
    assert "split_fields = split_pixel_values_by_grid(multimodal_fields)" in loop
    generate = source("_generate")
    assert "images = [imgs if imgs else None for imgs in tool_images]" in generate
    score = source("_generate_and_score_completions")
    assert "if self.tools and any(imgs for imgs in tool_images) and self._is_vlm:" in score
    assert "flat_images = [img for img_list in images if img_list for img in img_list]" in score
    assert 'output["pixel_values"] = forward_kwargs["pixel_values"]' in score


# -- small pieces ---------------------------------------------------------------------------------------------------


def test_is_token_ids():
    assert is_token_ids([5, 6]) and not is_token_ids([]) and not is_token_ids("56")
    assert not is_token_ids([{"role": "user", "content": "hi"}])


# -- real tiny training runs ----------------------------------------------------------------------------------------


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
    tokenizer = build_char_tokenizer()
    dataset = Dataset.from_dict({"prompt": QUESTIONS, "answer": ANSWERS})
    if ids_mode:
        dataset = TokenIdPrompts(PromptEncoder(tokenizer), cache_dir=None).prepare(dataset, "train", set(), {})
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS,
        num_generations=GENERATIONS, max_completion_length=8, logging_steps=1, use_cpu=True, bf16=False,
        save_strategy="no", seed=0, disable_tqdm=True, **{"report_to": [], **config},
    )
    model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
    return GrpolabTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=trainer_dataset(dataset),
                          processing_class=tokenizer, ids_mode=ids_mode)


def test_ids_mode_batches_reach_trl_as_rows_accelerate_leaves_alone(tmp_path):
    # Fails if TRL's training data loader stops taking the trainer's data_collator (GRPOTrainer sets its own
    # identity collator): the ID rows would again be walked element by element on every step.
    def first_batch(ids_mode: bool):
        trainer = tiny_trainer(tmp_path, ids_mode=ids_mode, rewards=[RecordingReward("length", reads_text=False)])
        return next(iter(trainer.get_train_dataloader()))

    batch = first_batch(ids_mode=True)
    assert type(batch) is HostRows and is_token_ids(batch[0]["prompt"])
    assert type(first_batch(ids_mode=False)) is list  # text mode: TRL's own collator


def test_id_prompts_reach_trls_generate_path_as_arrays_and_the_others_as_lists(tmp_path):
    trainer = tiny_trainer(tmp_path, ids_mode=True, rewards=[RecordingReward("length", reads_text=False)])
    prompts = [SharedTokenIds([5, 6, 7]), SharedTokenIds([8])]
    arrays, images, fields = trainer._tokenize_prompts(prompts)
    assert [a.dtype for a in arrays] == [np.int64] * 2 and [a.tolist() for a in arrays] == [[5, 6, 7], [8]]
    assert (images, fields) == (None, {})
    for backend, enabled in {"use_vllm": True, "use_transformers_continuous_batching": True, "tools": [len]}.items():
        disabled = getattr(trainer, backend)
        setattr(trainer, backend, enabled)
        assert trainer._tokenize_prompts(prompts)[0] == [[5, 6, 7], [8]]
        setattr(trainer, backend, disabled)


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


# -- image rows in ids form -----------------------------------------------------------------------------------------


def _vision_run(mode: str, tmp_path, cache_pixels: bool = True) -> dict:
    from grpolab.data.image_tasks import ShapesTask

    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56)
    encoder = PromptEncoder(processor)
    train = ShapesTask(train_size=16, eval_size=2).load().train
    if mode == "text":
        dataset = TextPrompts(encoder).prepare(train, "train", {"answer"}, {"data": 1})
    else:
        preparation = TokenIdPrompts(encoder, cache_dir=str(tmp_path / "prompts"), cache_pixels=cache_pixels)
        dataset = trainer_dataset(preparation.prepare(train, "train", {"answer"}, {"data": 1}))
    seen: dict[str, list] = {"completion_ids": [], "image_sizes": []}

    def distinct_tokens(prompts, completions, completion_ids, image, **_):
        # Varies inside every group, so each step has a gradient; records what the rewards were handed.
        seen["completion_ids"].append([list(ids) for ids in completion_ids])
        seen["image_sizes"].append([picture.size for picture in image])
        return [float(len(set(ids))) for ids in completion_ids]

    model = build_tiny_vlm(processor, 64, 2, 4, 2, 128, 64, 2, 4, seed=0)
    initial = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    args = GRPOConfig(
        output_dir=str(tmp_path / mode), per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
        max_steps=3, learning_rate=1e-3, beta=0.0, activation_checkpointing=False, use_cpu=True, report_to=[],
        save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        # Two updates per rollout: TRL computes old log-probs inside the step, a forward pass the images must reach.
        num_iterations=2,
    )
    trainer = GrpolabTrainer(model=model, reward_funcs=[GuardedReward(Accuracy(level="text")), distinct_tokens],
                             args=args, train_dataset=dataset, processing_class=processor,
                             prompt_encoder=encoder, ids_mode=mode == "ids")
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
def test_ids_form_image_rows_repeat_the_text_mode_steps_exactly(tmp_path, cache_pixels):
    text, ids = _vision_run("text", tmp_path), _vision_run("ids", tmp_path, cache_pixels)
    assert len(text["seen"]["completion_ids"]) == 2  # 3 steps, one rollout per 2 updates
    assert ids["seen"]["completion_ids"] == text["seen"]["completion_ids"]
    assert ids["losses"] == text["losses"]
    changed = [name for name in text["final"] if not torch.equal(text["final"][name], text["initial"][name])]
    assert any(name.startswith("model.visual.") for name in changed)  # pixels reached the loss
    assert all(torch.equal(ids["final"][name], text["final"][name]) for name in text["final"])
    assert ids["seen"]["image_sizes"] == text["seen"]["image_sizes"] == [[(56, 56)] * 8] * 2
    assert text["prompt_encodes"] > 0 and ids["prompt_encodes"] == 0
