"""Where grpolab's own configs are, in an installed wheel and in a source checkout alike.

The repository keeps them at its top: ``conf/`` (``train.yaml``, one folder per config group) and ``experiments/``
(linked in as ``conf/experiment``). A wheel cannot hold files outside its packages, so ``pyproject.toml`` maps them
into ``grpolab/conf``; a source checkout has none and reads ``conf/`` in place, so an edit takes effect without
reinstalling. ``grpolab.train`` (``@hydra.main``) and ``grpolab.preflight`` both compose from ``CONF_DIR``. Users add
options from a folder of their own (``--config-dir <dir>`` or ``hydra.searchpath=[file://<dir>]``).

>>> Path(CONF_DIR, "train.yaml").is_file()
True
"""

from __future__ import annotations

from pathlib import Path

PRIMARY_CONFIG = "train.yaml"
#: ``src/grpolab`` in a checkout, ``site-packages/grpolab`` in an installed wheel.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Where a wheel carries the configs (see ``[tool.setuptools]`` in pyproject.toml).
PACKAGED_CONF_DIR = PACKAGE_DIR / "conf"
#: ``conf/`` at the top of the repository, two levels above ``src/grpolab``.
CHECKOUT_CONF_DIR = PACKAGE_DIR.parents[1] / "conf"


def find_conf_dir() -> Path:
    """The packaged configs when grpolab is installed from a wheel, else the checkout's ``conf/``."""
    for candidate in (PACKAGED_CONF_DIR, CHECKOUT_CONF_DIR):
        if (candidate / PRIMARY_CONFIG).is_file():
            return candidate
    raise FileNotFoundError(
        f"grpolab's configs are missing: no {PRIMARY_CONFIG} in {PACKAGED_CONF_DIR} (an installed wheel) or "
        f"{CHECKOUT_CONF_DIR} (a source checkout); reinstall grpolab (pip install grpolab-*.whl, or pip install -e .)"
    )


#: An absolute directory: ``@hydra.main(config_path=CONF_DIR)`` and ``initialize_config_dir(CONF_DIR)`` take it as is.
CONF_DIR = str(find_conf_dir())
