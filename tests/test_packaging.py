"""The wheel carries every grpolab package and every config, and an installed wheel runs from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf", "experiments")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the checkout (setuptools' build/ would otherwise land in the repository)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("grpolab-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_files(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert len(names) == len(set(names)), "a file is in the wheel twice"
    return set(names)


def config_files() -> list[Path]:
    """Every YAML file under conf/, nested groups (hydra/help) and the conf/experiment link included."""
    return [Path(folder, name) for folder, _, names in os.walk(REPO_ROOT / "conf", followlinks=True)
            for name in names if name.endswith(".yaml")]


@pytest.mark.slow  # pip wheel builds the wheel in a subprocess
def test_the_wheel_holds_every_config_group_and_experiment(wheel_files):
    assert "grpolab/conf/train.yaml" in wheel_files
    expected = {f"grpolab/conf/{path.relative_to(REPO_ROOT / 'conf').as_posix()}" for path in config_files()}
    assert {f"grpolab/conf/experiment/{path.name}" for path in (REPO_ROOT / "experiments").glob("*.yaml")} <= expected
    assert "grpolab/conf/experiment/dapo.yaml" in expected and "grpolab/conf/model/tiny.yaml" in expected
    shipped = {name for name in wheel_files if name.startswith("grpolab/conf/")}
    assert shipped == expected


@pytest.mark.slow  # pip wheel builds the wheel in a subprocess
def test_the_wheel_holds_every_python_module(wheel_files):
    """pyproject.toml lists the packages by hand: a new one under src/grpolab must be added there."""
    source = REPO_ROOT / "src"
    expected = {path.relative_to(source).as_posix() for path in (source / "grpolab").rglob("*.py")}
    missing = expected - wheel_files
    assert not missing, f"not in the wheel (list their packages in pyproject.toml): {sorted(missing)}"


@pytest.mark.slow  # pip wheel builds the wheel in a subprocess
def test_an_installed_wheel_finds_its_configs_from_any_directory(wheel, tmp_path):
    """The wheel's files alone (no checkout on the path), run from an unrelated directory: the packaged configs."""
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)  # what pip does with a pure-Python wheel
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import grpolab.config.paths as p; print(p.CONF_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == installed / "grpolab" / "conf"
    job = subprocess.run([sys.executable, "-m", "grpolab.train", "experiment=dapo", "debug=smoke", "--cfg", "job",
                          "--resolve"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    config = yaml.safe_load(job.stdout)
    assert config["trainer"]["loss_type"] == "dapo" and config["model"]["network"]["hidden_size"] == 64


def readme_command(heading: str) -> str:
    """The one-line command in the first ```bash block after ``heading`` in README.md."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(heading):].split("```bash\n", 1)[1].split("```", 1)[0]
    (command,) = block.strip().splitlines()
    return command


def test_ci_runs_exactly_the_readme_test_command_and_both_install_with_the_lock():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marker = ci.index("# --- the README's test command (keep the two in step) ---")
    assert ci[marker + 1] == readme_command("**Run the tests**")
    for heading in ("**Run the default**", "**Run the tests**"):
        assert readme_command(heading).count("pip install -c constraints.txt ") == 2, heading


def test_the_lock_pins_every_requirement_of_grpolab_and_its_test_extra_exactly():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from grpolab.tracking.provenance import parse_pins

    pins = parse_pins((REPO_ROOT / "constraints.txt").read_text(encoding="utf-8"))
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt misses {name}: rerun python tools/write_constraints.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(requirement))
    # The README installs torch 2.13.0 first (on CPU machines a local CPU wheel): the lock must accept it.
    assert pins["torch"] == "2.13.0"
    assert all("+" not in version for version in pins.values())  # a local label would refuse other builds
