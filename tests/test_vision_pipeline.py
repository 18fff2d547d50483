"""experiment=vision through the real composition root: config selection, fail-fast messages, both tokenizer modes,
hub presets loading a saved tiny VLM through their own code path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from conftest import TINY_RUN
from grpolab.config.validate import validate
from grpolab.models.tiny import build_tiny_vlm
from grpolab.models.vision import build_vlm_processor

VLM_PRESETS = ("qwen2_5_vl_3b_instruct", "qwen2_vl_2b_instruct")


def saved_tiny_vlm(directory: Path, max_pixels: int):
    processor = build_vlm_processor(min_pixels=56 * 56, max_pixels=max_pixels)
    model = build_tiny_vlm(processor, 64, 2, 4, 2, 128, 64, 2, 4, seed=0)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "summary.json").read_text())  # run_job's run directory


def _config_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("grpolab: config error")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "model:" not in result.stderr  # the model step logs "model: ..." once it is built
    return lines[0]


# -- composition ----------------------------------------------------------------------------------------------------

def test_experiment_vision_selects_the_offline_vision_default(compose_cfg):
    cfg = compose_cfg(["experiment=vision"])
    validate(cfg)
    assert cfg.model.modality.value == "vision"
    assert cfg.model.name_or_path is None and cfg.model.network._target_ == "grpolab.models.tiny.build_tiny_vlm"
    assert cfg.data._target_.endswith("ShapesTask") and cfg.data.task == "count"
    # The one warm start, shorter; the one prompt preparation of the tokenizer mode.
    assert cfg.warmstart._target_ == "grpolab.trainer.warmstart.SupervisedWarmStart" and cfg.warmstart.steps == 300
    assert cfg.scheduler.name == "cosine" and cfg.tokenizer_mode._target_ == "grpolab.data.prepare.TextPrompts"
    assert cfg.eval.num_problems is None and cfg.data.eval_size >= 100


def test_command_line_choices_win_over_the_vision_experiment(compose_cfg):
    cfg = compose_cfg(["experiment=vision", "model=qwen2_5_vl_3b_instruct", "data=clevr", "warmstart=none",
                       "tokenizer_mode=ids", "optimizer.lr=1e-6", "scheduler=linear"])
    validate(cfg)
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert cfg.data.path == "leonardPKU/clevr_cogen_a_train"
    assert not cfg.warmstart and cfg.optimizer.lr == 1e-6 and cfg.scheduler.name == "linear"
    preparation = OmegaConf.to_container(cfg.tokenizer_mode, resolve=True)
    assert preparation["_target_"].endswith("TokenIdPrompts") and preparation["cache_dir"].endswith("prompts")


@pytest.mark.parametrize("preset", VLM_PRESETS)
def test_hub_presets_expose_pixel_bounds_as_config_keys(compose_cfg, preset):
    cfg = compose_cfg([f"model={preset}", "model.tokenizer.max_pixels=12544"])
    assert cfg.model.tokenizer.min_pixels == 3136 and cfg.model.tokenizer.max_pixels == 12544
    assert cfg.model.tokenizer.name_or_path == cfg.model.network.name_or_path == cfg.model.name_or_path
    assert cfg.model.modality.value == "vision"


# -- the hub code path, with a saved tiny VLM -------------------------------------------------------------------------

@pytest.mark.parametrize("preset", VLM_PRESETS)
def test_a_saved_tiny_vlm_loads_through_the_hub_preset(compose_cfg, tmp_path, preset):
    model, _ = saved_tiny_vlm(tmp_path, max_pixels=112 * 112)
    cfg = compose_cfg([f"model={preset}", f"model.name_or_path={tmp_path}",
                       "model.tokenizer.max_pixels=3136"])
    loaded_processor = instantiate(cfg.model.tokenizer)
    loaded = instantiate(cfg.model.network, tokenizer=loaded_processor)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = loaded_processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    batch = loaded_processor(text=[text], images=[Image.new("RGB", (112, 112), "red")], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]  # the configured max_pixels, not the saved 112 x 112
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits)
    assert loaded.generation_config.pad_token_id == loaded_processor.tokenizer.pad_token_id


@pytest.mark.slow
def test_a_saved_tiny_vlm_trains_through_the_hub_preset(run_job, tmp_path):
    saved_tiny_vlm(tmp_path / "tiny-vlm", max_pixels=56 * 56)
    result = run_job("experiment=vision", "model=qwen2_vl_2b_instruct", f"model.name_or_path={tmp_path / 'tiny-vlm'}",
                     "model.tokenizer.max_pixels=3136", "warmstart=none",
                     *[o for o in TINY_RUN if not o.startswith("warmstart.")], "trainer.max_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 1


# -- the default run, both tokenizer modes ----------------------------------------------------------------------------

@pytest.mark.slow
def test_vision_run_trains_with_images_and_ids_mode_repeats_text_mode(run_job, tmp_path):
    runs = {}
    for mode in ("text", "ids"):
        # The length reward varies inside every group, so the policy gets a gradient from the first step.
        result = run_job("experiment=vision", f"tokenizer_mode={mode}", *TINY_RUN, "warmstart.steps=20",
                         "rewards=[accuracy,format,length]", "rewards.length.target=5",
                         f"hydra.run.dir={tmp_path / mode}", cache="shared")
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((tmp_path / mode / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 3
        assert summary["parameters"]["tensors_changed"] > 0 and summary["warmstart"]["steps"] == 20
        for phase in ("eval_before", "eval_after"):
            assert summary[phase]["num_samples"] == 16 and 0.0 <= summary[phase]["accuracy"] <= 1.0
        rows = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        assert {"rewards/accuracy/mean", "rewards/format/mean"} <= rows[-1].keys()
        runs[mode] = (summary, rows)
    (text, text_rows), (ids, ids_rows) = runs["text"], runs["ids"]
    # Same seed, same steps: the ids mode (prepared prompts + cached pixels) trains exactly as the text mode does,
    # which it cannot without the pixels reaching generation and the loss.
    # (Completions, rewards and losses can coincide even without pixels; gradients and entropies cannot.)
    for key in ("loss", "reward", "grad_norm", "entropy"):
        assert [row[key] for row in ids_rows] == [row[key] for row in text_rows], key
    assert ids["eval_after"]["accuracy"] == text["eval_after"]["accuracy"]
    assert all(row["tokenizer/encode_calls"] == 0 for row in ids_rows)  # no prompt text reached the processor
    assert all(row["tokenizer/encode_calls"] > 0 for row in text_rows)


# -- fail fast --------------------------------------------------------------------------------------------------------

def _jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    Image.new("RGB", (16, 16), "red").save(tmp_path / "red.png")
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=vision", "model=tiny"], "the train split holds images ('image'), but the selected model is "
                                              "text-only; use a vision-language model (model.modality=vision)"),
        (["data=shapes"], "the train split holds images ('image'), but the selected model is text-only"),
    ],
)
def test_image_data_with_a_text_model_fails_in_one_line_before_any_model(run_job, overrides, message):
    assert message in _config_error_line(run_job("logger=none", *overrides))


@pytest.mark.slow
def test_a_missing_image_fails_in_one_line_naming_row_and_path(run_job, tmp_path):
    path = _jsonl(tmp_path, [{"image": "red.png", "question": "Q", "answer": "1"},
                             {"image": "imgs/gone.png", "question": "Q", "answer": "2"}])
    line = _config_error_line(run_job("logger=none", "experiment=vision", "data=image_jsonl", f"data.path={path}"))
    assert "row 1: image file not found" in line and str(tmp_path / "imgs" / "gone.png") in line


@pytest.mark.slow
def test_more_image_placeholders_than_images_fail_in_one_line(run_job, tmp_path):
    rows = [{"image": "red.png", "question": f"Q{i}", "answer": "1"} for i in range(3)]
    rows[2]["question"] = "Is <|vision_start|><|image_pad|><|vision_end|> the same picture?"
    path = _jsonl(tmp_path, rows)
    line = _config_error_line(run_job("logger=none", "experiment=vision", "data=image_jsonl", f"data.path={path}",
                                      "data.eval_size=1", "data.seed=0"))
    assert "row" in line and "has 2 image placeholder(s) but the row has 1 image(s)" in line
