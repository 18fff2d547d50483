"""Where a checkpoint comes from, settled before anything loads: a local directory, or a hub id that is cached or
reachable now.

``from_pretrained`` on a path that is neither fails late and at length: a missing local directory is read as a hub
id, and a hub that cannot be reached is retried for a minute before the error (tens of lines, then Hydra's dump).
``check_checkpoint`` answers in one line naming the config key, where it looked and how to fetch the checkpoint for
offline use. Preflight calls it on the model's paths at every value of a sweep, ``grpolab.models.load`` before it
loads. Imports nothing heavy; huggingface_hub only when asked.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from grpolab.config.errors import ConfigError, first_line

#: How long the one request that asks the hub for the checkpoint may take (it is not retried).
PROBE_TIMEOUT_S = 10.0


@lru_cache(maxsize=64)
def check_checkpoint(name_or_path: str, key: str = "model.name_or_path", hub_id: str | None = None) -> None:
    """Pass a local directory, or a hub id that is in the Hugging Face cache or on a hub that answers; refuse anything
    else in one ``ConfigError`` line. ``hub_id`` names the model to fetch into a missing directory (the preset's).

    >>> check_checkpoint("/no/such/dir", hub_id="Qwen/Qwen2.5-0.5B-Instruct")
    Traceback (most recent call last):
    ...
    grpolab.config.errors.ConfigError: model.name_or_path=/no/such/dir: no such directory; fetch the model into it \
where the hub is reachable: hf download Qwen/Qwen2.5-0.5B-Instruct --local-dir /no/such/dir
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(name_or_path).expanduser().is_dir():
        return
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:  # a path, which from_pretrained would still send to the hub
        raise ConfigError(f"{key}={name_or_path}: no such directory; fetch the model into it where the hub is "
                          f"reachable: hf download {hub_id or '<hub id>'} --local-dir {name_or_path}") from None
    if isinstance(try_to_load_from_cache(name_or_path, "config.json", cache_dir=constants.HF_HUB_CACHE), str):
        return
    looked = f"{key}={name_or_path}: not a local directory, not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    fetch = (f"for offline use, fetch it where the hub is reachable: hf download {name_or_path} --local-dir <dir>, "
             f"then {key}=<dir>")
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"{looked}, and HF_HUB_OFFLINE=1 forbids the download; {fetch}")
    _probe(name_or_path, looked, fetch)


def _probe(repo_id: str, looked: str, fetch: str) -> None:
    """One request for the checkpoint's config.json, instead of the minute of retries ``from_pretrained`` would spend."""
    import httpx2  # huggingface_hub's HTTP client: its connection errors are what an unreachable hub raises
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    hub = f"the hub ({constants.ENDPOINT})"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=PROBE_TIMEOUT_S)
    except (httpx2.ConnectError, httpx2.TimeoutException) as error:
        raise ConfigError(f"{looked}, and {hub} cannot be reached ({first_line(error)}); {fetch}") from None
    except HfHubHTTPError as error:  # no such repository, a gated one without a token, ...
        raise ConfigError(f"{looked}, and {hub} refuses it: {first_line(error)}") from None
