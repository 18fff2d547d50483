"""check_checkpoint: a path from_pretrained cannot load is one line naming model.name_or_path, where it looked and how
to fetch the model for offline use, at once (no minute of retries). huggingface_hub reads HF_HUB_OFFLINE, HF_HUB_CACHE
and HF_ENDPOINT once, when imported: the tests set its constants as those variables would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from grpolab.config.errors import ConfigError
from grpolab.models.hub import check_checkpoint

HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture(autouse=True)
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """huggingface_hub's settings for one test: an empty cache of its own, offline; answers are not kept across."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    check_checkpoint.cache_clear()
    yield constants
    check_checkpoint.cache_clear()


def refusal(*args: str, **kwargs: str) -> str:
    with pytest.raises(ConfigError) as caught:
        check_checkpoint(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_local_directory_passes(tmp_path: Path) -> None:
    check_checkpoint(str(tmp_path))


def test_a_missing_directory_is_named_with_how_to_fetch_the_model_into_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "qwen")
    assert refusal(missing, hub_id=HUB_ID) == (
        f"model.name_or_path={missing}: no such directory; fetch the model into it where the hub is reachable: "
        f"hf download {HUB_ID} --local-dir {missing}")
    assert refusal("./qwen", "model.tokenizer.name_or_path").endswith("hf download <hub id> --local-dir ./qwen")


def test_a_hub_id_in_the_cache_passes_offline(hub) -> None:
    repo = Path(hub.HF_HUB_CACHE) / "models--Qwen--Qwen2.5-0.5B-Instruct"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    check_checkpoint(HUB_ID)


def test_offline_a_hub_id_not_in_the_cache_names_the_cache_and_the_download(hub) -> None:
    assert refusal(HUB_ID) == (
        f"model.name_or_path={HUB_ID}: not a local directory, not in the Hugging Face cache ({hub.HF_HUB_CACHE}), and "
        f"HF_HUB_OFFLINE=1 forbids the download; for offline use, fetch it where the hub is reachable: hf download "
        f"{HUB_ID} --local-dir <dir>, then model.name_or_path=<dir>")


def test_a_hub_that_cannot_be_reached_is_asked_once(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.perf_counter()
    message = refusal(HUB_ID)
    assert time.perf_counter() - started < 5  # from_pretrained retries for a minute
    assert message.startswith(
        f"model.name_or_path={HUB_ID}: not a local directory, not in the Hugging Face cache ({hub.HF_HUB_CACHE}), and "
        "the hub (http://127.0.0.1:9) cannot be reached (")
    assert message.endswith(f"hf download {HUB_ID} --local-dir <dir>, then model.name_or_path=<dir>")
