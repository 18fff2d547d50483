"""environment=crop: the image tool itself, its place in the multi-turn path (demonstrations, the greedy held-out loop)
and, end to end, GRPO on the tiny VLM whose rollouts call it, in both tokenizer modes."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset
from PIL import Image, ImageDraw

from grpolab.data.prompts import ImageInputs, PromptEncoder
from grpolab.data.task import TaskSplits
from grpolab.environments.image_crop import ImageCrop
from grpolab.environments.tools import ToolEnvironment, build_environment, check_chat_prompts
from grpolab.models.tiny import build_tiny_vlm
from grpolab.models.tokenizer import DEFAULT_TAG_TOKENS, TOOL_TAG_TOKENS, build_char_tokenizer
from grpolab.models.vision import build_vlm_processor
from grpolab.tracking.rundir import read_metrics
from grpolab.trainer.multiturn import ToolRollout, row_tools, run_tool_calls, trajectory

PROMPT = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "How many?"}]}]
BOX = {"left": 28, "top": 0, "right": 56, "bottom": 28}
CALL = {"type": "function", "function": {"name": "crop", "arguments": BOX}}
# As data=shapes writes it: the tool's result left out (None), for the environment to compute.
TRACE = [{"role": "assistant", "content": "", "tool_calls": [CALL], "name": None},
         {"role": "tool", "content": None, "tool_calls": None, "name": "crop"},
         {"role": "assistant", "content": "<answer>1</answer>", "tool_calls": None, "name": None}]


def red_square_image() -> Image.Image:
    """56x56 grey with a red square in the top-right quadrant."""
    image = Image.new("RGB", (56, 56), (123, 117, 104))
    ImageDraw.Draw(image).rectangle((36, 8, 47, 19), fill=(220, 40, 40))
    return image


@pytest.fixture(scope="module")
def environment():
    return ToolEnvironment(environment_factory=functools.partial(ImageCrop, zoom_size=56),
                           max_tool_calling_iterations=1)


@pytest.fixture(scope="module")
def encoder(environment):
    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=56 * 56,
                                    tag_tokens=[*DEFAULT_TAG_TOKENS, *TOOL_TAG_TOKENS], eos_token="<|im_end|>")
    assert build_environment({"_target_": "grpolab.environments.tools.ToolEnvironment",
                              "environment_factory": {"_target_": "grpolab.environments.image_crop.ImageCrop",
                                                      "_partial_": True}}, processor).returns_images
    return PromptEncoder(processor, tools=environment.prompt_tools())


# -- the tool -------------------------------------------------------------------------------------------------------


def test_crop_returns_the_region_enlarged_as_an_image_block():
    tool = ImageCrop(zoom_size=56)
    tool.reset(image=red_square_image(), answer="1")
    [block] = tool.crop(**BOX)
    assert block["type"] == "image" and block["image"].size == (56, 56)  # a 28x28 quadrant, zoomed x2
    red = block["image"].getpixel((27, 27))  # the square's centre (41.5, 13.5) -> ((41.5 - 28) * 2, 13.5 * 2)
    assert red[0] > 180 and red[1] < 90
    assert block["image"].getpixel((4, 50)) == (123, 117, 104)  # the quadrant's grey corner
    tool = ImageCrop(zoom_size=None)
    tool.reset(images=[red_square_image(), Image.new("RGB", (8, 8))])  # several images: the first is cropped
    assert tool.crop(left=0, top=0, right=10, bottom=20)[0]["image"].size == (10, 20)


def test_crop_reads_the_image_of_an_ids_form_row():
    tool = ImageCrop()
    tool.reset(prompt_ids=[1, 2], source_image=red_square_image())
    assert tool.crop(left=0, top=0, right=56, bottom=56)[0]["image"].size == (56, 56)


@pytest.mark.parametrize(("box", "message"), [
    ({"left": 0, "top": 0, "right": 57, "bottom": 10}, "right=57 is outside the image (0..56)"),
    ({"left": -1, "top": 0, "right": 10, "bottom": 10}, "left=-1 is outside the image (0..56)"),
    ({"left": 0, "top": 0, "right": 10, "bottom": 60}, "bottom=60 is outside the image (0..56)"),
    ({"left": 20, "top": 0, "right": 10, "bottom": 10}, "the box is -10x10 pixels; it must be at least 4x4"),
    ({"left": 0, "top": 0, "right": 3, "bottom": 10}, "the box is 3x10 pixels"),
    ({"left": "0", "top": 0, "right": 10, "bottom": 10}, "left must be an integer number of pixels, got str '0'"),
    ({"left": 0.5, "top": 0, "right": 10, "bottom": 10}, "left must be an integer number of pixels, got float"),
    ({"left": 0, "top": True, "right": 10, "bottom": 10}, "top must be an integer number of pixels, got bool"),
])
def test_a_bad_box_is_an_error_naming_the_argument(box, message):
    tool = ImageCrop()
    tool.reset(image=red_square_image())
    with pytest.raises(ValueError, match="^" + message.replace("(", "\\(").replace(")", "\\)")):
        tool.crop(**box)


def test_a_row_without_an_image_cannot_be_cropped():
    tool = ImageCrop()
    tool.reset(prompt=PROMPT)
    with pytest.raises(ValueError, match="^this prompt has no image to crop$"):
        tool.crop(**BOX)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"zoom_size": 0}, "environment.environment_factory.zoom_size=0 must be a positive integer"),
    ({"min_size": 2.5}, "environment.environment_factory.min_size=2.5 must be a positive integer"),
])
def test_bad_settings_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match="^" + message):
        ImageCrop(**kwargs)


def test_bad_calls_are_tool_failures_the_model_reads_not_a_crash(environment):
    tools, observation = row_tools(environment, {"prompt": PROMPT, "image": red_square_image()})
    assert observation is None and list(tools) == ["crop"]
    wrong = {"type": "function", "function": {"name": "crop", "arguments": {**BOX, "right": 99}}}
    missing = {"type": "function", "function": {"name": "crop", "arguments": {"left": 0}}}
    messages, failures = run_tool_calls([CALL, wrong, missing], tools)
    assert failures == 2 and messages[0]["content"][0]["image"].size == (56, 56)
    assert messages[1]["content"] == "{'error': 'right=99 is outside the image (0..56)'}"
    assert "missing 3 required positional arguments" in messages[2]["content"]


def test_image_tools_need_a_vision_model_and_image_rows():
    node = {"_target_": "grpolab.environments.tools.ToolEnvironment",
            "environment_factory": {"_target_": "grpolab.environments.image_crop.ImageCrop", "_partial_": True}}
    text_only = build_char_tokenizer(tag_tokens=[*DEFAULT_TAG_TOKENS, *TOOL_TAG_TOKENS], eos_token="<|im_end|>")
    with pytest.raises(ValueError, match="^environment: its tools \\(crop\\) return images, which a text-only "
                                         "model cannot read; use a vision-language model"):
        build_environment(node, text_only)
    environment = ToolEnvironment(environment_factory=ImageCrop)
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "12*34"}], "answer": "408"}])
    with pytest.raises(ValueError, match="^environment: its tools \\(crop\\) work on the row's image, but the "
                                         "train split of data=x has no image column"):
        check_chat_prompts(TaskSplits(train=rows, eval=rows), "data=x", environment)


def test_the_crop_option_builds_from_its_yaml(compose_cfg, encoder):
    cfg = compose_cfg(["experiment=vision_tools"])
    environment = build_environment(cfg.environment, encoder.processing_class)
    assert environment.describe() == ("tools crop (environment ImageCrop, one instance per rollout); at most 1 "
                                      "tool-calling round per completion, 5 s per call, results cut at 200 characters")
    assert environment.factory().zoom_size == cfg.environment.environment_factory.zoom_size


# -- the multi-turn path --------------------------------------------------------------------------------------------


def test_a_demonstration_shows_the_image_the_environment_returns(encoder, environment):
    tools, _ = row_tools(environment, {"prompt": PROMPT, "image": red_square_image()})
    laid_out = trajectory(encoder, PROMPT, TRACE, tools)
    [image] = laid_out.images
    assert image.size == (56, 56)
    image_pad = encoder.processing_class.image_token_id
    tool_part = [token for token, trained in zip(laid_out.ids, laid_out.mask) if not trained]
    assert tool_part.count(image_pad) == 4 and image_pad not in [t for t, m in zip(laid_out.ids, laid_out.mask) if m]
    with pytest.raises(ValueError, match="^warmstart: a demonstration leaves a tool result out .* but the run has no "
                                         "environment"):
        trajectory(encoder, PROMPT, TRACE)


@pytest.mark.slow
def test_the_greedy_tool_loop_feeds_the_model_the_images_a_tool_returns(encoder, environment, one_torch_thread):
    # A tiny VLM that has memorised one demonstration, from the prompt's pixels and the crop's: the held-out loop must
    # parse its call, crop, append the image tokens and hand generate both images (Qwen2-VL refuses image tokens
    # without as many image features), reproducing the demonstration.
    model = build_tiny_vlm(encoder.processing_class, 32, 1, 2, 1, 64, 32, 1, 2, seed=0)
    row = {"prompt": PROMPT, "image": red_square_image()}
    prompts = encoder.encode([row])
    tools, _ = row_tools(environment, row)
    laid_out = trajectory(encoder, PROMPT, TRACE, tools)
    sequence = torch.tensor([prompts.prompt_ids[0] + laid_out.ids])
    labels = torch.tensor([[-100] * len(prompts.prompt_ids[0]) + [t if m else -100 for t, m in zip(laid_out.ids,
                                                                                                  laid_out.mask)]])
    images = ImageInputs.join([prompts.images, encoder.process_images(laid_out.images)], one_row=True)
    inputs = images.model_inputs(sequence, model.config.image_token_id, model.dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        model(input_ids=sequence, labels=labels, **inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    [rollout] = ToolRollout(encoder, environment, max_new_tokens=len(laid_out.ids))(
        model, prompts.prompt_ids, [row], prompts.images)
    assert (rollout.completion_ids, rollout.tool_mask) == (laid_out.ids, laid_out.mask)
    assert (rollout.tool_calls, rollout.tool_failures) == (1, 0)
    assert rollout.messages[1]["content"][0]["image"].size == (56, 56)


# -- end to end -----------------------------------------------------------------------------------------------------

#: experiment=vision_tools at test size: a warm start on demonstrations that all crop, two GRPO steps (their
#: completions logged: tool messages with images among them), an 8-problem held-out evaluation that runs the tool loop.
VISION_TOOL_RUN = [
    "experiment=vision_tools", "logger=none", "trainer.max_steps=2", "warmstart.steps=100", "warmstart.batch_size=16",
    "data.train_size=64", "data.eval_size=8", "data.crop_call_rate=1.0", "batch.prompts_per_step=4",
    "trainer.log_completions=true",
]
_RUNS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def vision_tool_run(tmp_path_factory, shared_cache):
    """``vision_tool_run(mode)``: the run directory of ``VISION_TOOL_RUN`` in that tokenizer mode, run once in this
    process (the two modes share the warm start through the shared cache)."""
    from tests_support import train_in_process

    def run(mode: str) -> Path:
        if mode not in _RUNS:
            root = tmp_path_factory.mktemp(f"vision_tools_{mode}")
            env = {"GRPOLAB_CACHE_DIR": str(shared_cache), "WANDB_MODE": "offline"}
            result = train_in_process([f"hydra.run.dir={root / 'run'}", *VISION_TOOL_RUN, f"tokenizer_mode={mode}"],
                                      root, env)
            assert result.returncode == 0, result.stderr[-3000:]
            _RUNS[mode] = root / "run"
        return _RUNS[mode]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["text", "ids"])
def test_grpo_rollouts_call_the_image_tool_in_both_tokenizer_modes(vision_tool_run, mode):
    run_dir = vision_tool_run(mode)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert len(rows) == 2
    for row in rows:
        # Calls were parsed and run, and most returned their image (a failed call returns an error text instead).
        assert row["tools/call_frequency"] > 0.5
        assert row["tools/failure_frequency"] < 0.5
    for held_out in (summary["eval_before"], summary["eval_after"]):
        assert held_out["tool_call_frequency"] > 0.5 and held_out["tool_failure_frequency"] < 0.5
    logged = pd.read_parquet(run_dir / "completions" / "completions_00002.parquet")["completion"]
    tool_messages = [message for completion in logged for message in completion if message["role"] == "tool"]
    assert any(block["type"] == "image" for message in tool_messages for block in message["content"])
    if mode == "ids":
        # Prompt IDs are canonical here, so ids mode takes text mode's steps exactly, tool images and all.
        text_rows = read_metrics(vision_tool_run("text") / "metrics.jsonl")
        keys = ("loss", "reward", "grad_norm", "tools/call_frequency", "tools/failure_frequency")
        assert [[row[key] for key in keys] for row in rows] == [[row[key] for key in keys] for row in text_rows]
