"""Hub presets load by ``model.name_or_path``, which may be a local directory: the same code path as the hub."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate

from conftest import TINY_RUN
from grpolab.models.tiny import build_tiny_qwen2
from grpolab.models.tokenizer import build_char_tokenizer

HUB_PRESETS = ["qwen2_5_0_5b_instruct", "smollm2_135m_instruct", "qwen3_0_6b"]


@pytest.fixture
def saved_tiny(tmp_path):
    tokenizer = build_char_tokenizer()
    model = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=0)
    directory = tmp_path / "tiny-checkpoint"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer, directory


def test_the_character_tokenizer_saved_next_to_a_qwen2_checkpoint_reloads_with_identical_ids(saved_tiny):
    """transformers 5's AutoTokenizer picks Qwen2Tokenizer by model type, which drops spaces and newlines here."""
    from transformers import AutoTokenizer

    from grpolab.models.load import load_tokenizer

    _, tokenizer, directory = saved_tiny
    text = "12 + 7 =\n  <answer>19</answer>\tok<|im_end|>"
    assert AutoTokenizer.from_pretrained(directory)(text)["input_ids"] != tokenizer(text)["input_ids"]  # the trap
    reloaded = load_tokenizer(str(directory))
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"]) == text
    assert (reloaded.padding_side, reloaded.pad_token, reloaded.chat_template) == (
        "left", tokenizer.pad_token, tokenizer.chat_template)


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_preset_names_a_hub_id_by_default(compose_cfg, preset):
    cfg = compose_cfg([f"model={preset}"])
    assert "/" in cfg.model.name_or_path
    assert cfg.model.network.name_or_path == cfg.model.name_or_path


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_preset_loads_a_local_directory_through_the_hub_code_path(compose_cfg, saved_tiny, preset):
    model, tokenizer, directory = saved_tiny
    cfg = compose_cfg([f"model={preset}", f"model.name_or_path={directory}"])
    loaded_tokenizer = instantiate(cfg.model.tokenizer)
    loaded = instantiate(cfg.model.network, tokenizer=loaded_tokenizer)
    ids = tokenizer("12+7=")["input_ids"]
    assert loaded_tokenizer("12+7=")["input_ids"] == ids
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits
        actual = loaded(torch.tensor([ids])).logits
    torch.testing.assert_close(actual, expected)
    assert loaded.generation_config.eos_token_id == tokenizer.eos_token_id


def test_tiny_model_is_seeded_and_sized_by_config():
    tokenizer = build_char_tokenizer()
    a = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=3)
    b = build_tiny_qwen2(tokenizer, 32, 64, 1, 2, 1, 64, True, seed=3)
    assert a.config.vocab_size == len(tokenizer)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_loading_a_missing_directory_fails_in_one_line_before_transformers_reads_it(tmp_path):
    from grpolab.config.errors import ConfigError
    from grpolab.models.load import load_model, load_tokenizer

    for load in (load_tokenizer, lambda path: load_model(path, None, "text")):
        with pytest.raises(ConfigError, match=r"^model\.name_or_path=.*/missing: no such directory; fetch the model "):
            load(str(tmp_path / "missing"))


@pytest.mark.slow
def test_training_run_from_a_local_checkpoint(run_cli, saved_tiny, tmp_path):
    _, _, directory = saved_tiny
    result = run_cli(*TINY_RUN, "model=qwen2_5_0_5b_instruct", f"model.name_or_path={directory}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
