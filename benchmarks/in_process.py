"""One job of the real pipeline, composed as ``python -m grpolab.train`` composes it, run inside this process.

Shared by the benchmarks that record what a job does from the inside (ids_vs_text.py, tool_token_exactness.py).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def job_config(overrides: list[str], run_dir: Path) -> Iterator[Any]:
    """The job's config, with Hydra's job config set for the job (its run directory, its overrides) while the block
    runs and put back afterwards, so the tests that follow run outside a Hydra job again; the Trainer's printed log
    dicts are swallowed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from grpolab.train import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)
    previous = HydraConfig.instance().cfg
    try:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
            HydraConfig.instance().set_config(cfg)
            del cfg["hydra"]
        with contextlib.redirect_stdout(io.StringIO()):
            yield cfg
    finally:
        HydraConfig.instance().cfg = previous
        GlobalHydra.instance().clear()
