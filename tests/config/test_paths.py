"""Where grpolab's configs are found, and a user's own config folder added on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpolab.config.paths import CHECKOUT_CONF_DIR, CONF_DIR, PACKAGED_CONF_DIR, find_conf_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /optimizer: sgd
optimizer:
  lr: 0.0123
seed: 7
"""
USER_REWARD = """\
short_answers:
  _target_: grpolab.rewards.length.Length
  weight: 0.25
  level: ${reward_level}
  target: 7
  tolerance: null
  penalize_shorter: false
"""


def test_a_source_checkout_reads_conf_at_the_top_of_the_repository():
    """This test runs from a checkout (editable install or PYTHONPATH=src), which has no packaged grpolab/conf."""
    assert not PACKAGED_CONF_DIR.exists()
    assert Path(CONF_DIR) == find_conf_dir() == CHECKOUT_CONF_DIR == REPO_ROOT / "conf"
    assert (Path(CONF_DIR) / "experiment" / "dapo.yaml").is_file()


@pytest.fixture
def user_conf(tmp_path) -> Path:
    """A user's folder with one experiment and one reward of their own, in grpolab's group layout."""
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "my_study.yaml").write_text(USER_EXPERIMENT)
    (tmp_path / "mine" / "rewards").mkdir()
    (tmp_path / "mine" / "rewards" / "short_answers.yaml").write_text(USER_REWARD)
    return tmp_path / "mine"


def print_job_config(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m grpolab.train <arguments> --cfg job`` from ``cwd`` (composes and checks; imports no torch)."""
    return subprocess.run([sys.executable, "-m", "grpolab.train", *arguments, "--cfg", "job"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_users_config_folder_adds_experiments_and_rewards(user_conf, tmp_path, how):
    where = ["--config-dir", str(user_conf)] if how == "--config-dir" else [f"hydra.searchpath=[file://{user_conf}]"]
    result = print_job_config(*where, "experiment=my_study", "rewards=[accuracy,short_answers]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["seed"] == 7 and job["optimizer"]["lr"] == 0.0123
    assert job["optimizer"]["_target_"] == "torch.optim.SGD"
    assert set(job["rewards"]) == {"accuracy", "short_answers"}
    assert job["rewards"]["short_answers"]["target"] == 7


def test_without_the_users_folder_their_option_is_named_as_missing(user_conf, tmp_path):
    result = print_job_config("experiment=my_study", cwd=tmp_path)
    assert result.returncode == 2
    assert "experiment=my_study: no such option; valid choices: dapo," in result.stderr
