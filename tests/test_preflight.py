"""Preflight: every command-line mistake it owns fails in one line before Hydra starts; valid commands pass untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from grpolab.config.paths import CONF_DIR
from grpolab.preflight import PreflightError, preflight, run_preflight

MODEL_OPTIONS = ", ".join(sorted(path.stem for path in (Path(CONF_DIR) / "model").glob("*.yaml")))


@pytest.fixture(autouse=True)
def clean_hydra() -> None:
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def error_of(*arguments: str, config_dir: str = CONF_DIR) -> str:
    with pytest.raises(PreflightError) as caught:
        preflight(["grpolab-train", *arguments], config_dir)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_group_option_lists_the_valid_choices() -> None:
    assert error_of("model=foo") == f"model=foo: no such option; valid choices: {MODEL_OPTIONS}"
    assert "tiny" in MODEL_OPTIONS and "qwen2_5_0_5b_instruct" in MODEL_OPTIONS
    # in a sweep, in a multi-select list, and in Hydra's own groups
    assert error_of("-m", "model=tiny,foo").startswith("model=foo: no such option; valid choices: ")
    assert error_of("-m", "rewards=[accuracy,formatt]") == (
        "rewards=formatt: no such option; valid choices: accuracy, cosine_length, format, iou, length, overlong, "
        "reasoning_steps, repetition, reward_model, think_format, tool_use")
    assert error_of("-m", "hydra/launcher=joblibb") == (
        "hydra/launcher=joblibb: no such option; valid choices: basic, joblib, submitit_local, submitit_slurm")


def test_unknown_key_names_the_closest_valid_keys() -> None:
    assert error_of("optimizer.lrr=1") == "optimizer.lrr=1: no such key optimizer.lrr; closest valid keys: optimizer.lr"
    assert error_of("-m", "trainer.bta=0,0.1") == (
        "trainer.bta=0,0.1: no such key trainer.bta; closest valid keys: trainer.beta")
    # a misspelt parent is named at the level where it goes wrong
    assert error_of("optimzer.lr=1") == (
        "optimzer.lr=1: no such key optimzer.lr; closest valid keys: optimizer, optimized_metric")
    # Hydra's keys too, once the launcher that owns them is selected
    assert error_of("-m", "hydra/launcher=joblib", "hydra.launcher.n_job=2") == (
        "hydra.launcher.n_job=2: no such key hydra.launcher.n_job; closest valid keys: hydra.launcher.n_jobs")
    assert error_of("-m", "+seed=1") == "+seed=1: seed already exists; drop the + to change it"


def test_keys_are_looked_up_in_every_swept_group_option() -> None:
    # momentum exists only in optimizer/sgd: valid when sgd is one of the swept options, not otherwise
    command = ["grpolab-train", "-m", "optimizer=adamw,sgd", "optimizer.momentum=0.5"]
    assert preflight(command, CONF_DIR) == command
    assert error_of("-m", "optimizer=adamw", "optimizer.momentum=0.5").startswith(
        "optimizer.momentum=0.5: no such key optimizer.momentum; valid keys under optimizer: optimizer._target_")


def test_options_from_the_users_config_folders_are_valid_choices(tmp_path) -> None:
    """``--config-dir`` and ``hydra.searchpath`` together: both folders' options exist, each key is checked."""
    for folder, group, option in (("one", "experiment", "study"), ("two's", "rewards", "short")):
        (tmp_path / folder / group).mkdir(parents=True)
        body = ("# @package _global_\nseed: 3\n" if group == "experiment" else
                "short: {_target_: grpolab.rewards.length.Length, target: 8, weight: 0.5}\n")
        (tmp_path / folder / group / f"{option}.yaml").write_text(body)
    command = ["grpolab-train", "--config-dir", str(tmp_path / "one"),
               f"hydra.searchpath=['file://{tmp_path}/two\\'s']",  # a quote in the path: quoted and escaped
               "experiment=study", "rewards=[accuracy,short]", "rewards.short.weight=1"]
    assert preflight(command, CONF_DIR) == command
    assert error_of(*command[1:], "rewards.short.wieght=1").startswith("rewards.short.wieght=1: no such key")
    assert error_of("experiment=study").startswith("experiment=study: no such option; valid choices: dapo,")


def test_numeric_range_over_a_non_numeric_key_is_refused() -> None:
    assert error_of("-m", "hparams_search=optuna", "optimizer._target_=interval(0,1)") == (
        "optimizer._target_=interval(0,1): a numeric range over a non-numeric key (optimizer._target_ is a string: "
        "'torch.optim.AdamW'); use choice(...) for categorical values")
    assert error_of("-m", "trainer.bf16=range(0,2)") == (
        "trainer.bf16=range(0,2): a numeric range over a non-numeric key (trainer.bf16 is a boolean: False); "
        "use choice(...) for categorical values")
    assert error_of("-m", "trainer.beta=interval(0,1)") == (
        "trainer.beta=interval(0,1): interval(...) needs a search sweeper, e.g. hparams_search=optuna; the grid "
        "sweeper takes lists (a,b) and range(start, stop)")
    assert error_of("-m", "model=range(0,2)").startswith("model=range(0,2): a numeric range over the config group")


def test_search_space_in_config_is_checked(tmp_path: Path) -> None:
    experiments = tmp_path / "experiment"
    experiments.mkdir()
    search = "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\nhydra:\n  sweeper:\n    params:\n"
    (experiments / "string_range.yaml").write_text(search + "      optimizer._target_: interval(0, 1)\n")
    (experiments / "typo.yaml").write_text(search + "      trainer.bta: interval(0, 0.1)\n")
    assert error_of("-m", "-cd", str(tmp_path), "experiment=string_range") == (
        "hydra.sweeper.params: optimizer._target_=interval(0, 1): a numeric range over a non-numeric key "
        "(optimizer._target_ is a string: 'torch.optim.AdamW'); use choice(...) for categorical values")
    assert error_of("-m", "-cd", str(tmp_path), "experiment=typo") == (
        "hydra.sweeper.params: trainer.bta=interval(0, 0.1): no such key trainer.bta; closest valid keys: "
        "trainer.beta")


@pytest.mark.parametrize("arguments", [
    ["-m", "optimizer.lr=1e-4,3e-4", "trainer.beta=0,0.04", "seed=0,1"],
    ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3"],
    ["-m", "experiment=example_sweep"],
    ["-m", "experiment=example_search"],
    ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
     "hydra.launcher.timeout_min=30", "hydra.launcher.nodes=2"],
    ["model=tiny", "rewards=[accuracy,format,length]", "rewards.length.target=8", "++trainer.top_k=5"],
    ["--help"],
    ["model=foo", "--cfg", "job", "--info"],  # --info: nothing runs, nothing to check
])
def test_valid_commands_pass_unchanged(arguments: list[str]) -> None:
    command = ["grpolab-train", *arguments]
    assert preflight(command, CONF_DIR) == command


def test_run_preflight_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_preflight(["grpolab-train", "-m", "trainer.bta=0,0.1"], CONF_DIR)
    assert exited.value.code == 2
    assert capsys.readouterr().err == "grpolab: trainer.bta=0,0.1: no such key trainer.bta; closest valid keys: trainer.beta\n"


def test_cli_fails_before_any_job_or_sweep_dir_and_without_torch(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "grpolab.train", "-m", "trainer.bta=0,0.1", "seed=0,1"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "grpolab: trainer.bta=0,0.1: no such key trainer.bta; closest valid keys: trainer.beta"]
    assert not (tmp_path / "outputs").exists()
    probe = ("import sys; from grpolab.preflight import preflight; "
             f"preflight(['x', '-m', 'hparams_search=optuna', 'model=tiny,tiny_vlm'], {CONF_DIR!r}); "
             "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"


def test_values_are_checked_at_every_value_of_a_sweep() -> None:
    assert error_of("trainer.beta=-1") == (
        "config error: trainer.beta=-1.0 must be >= 0 (the KL coefficient; 0 turns the KL term off)")
    assert error_of("-m", "trainer.beta=0,-1", "seed=0,1") == error_of("trainer.beta=-1")
    assert error_of("-m", "seed=0,zero") == "seed=zero must be an integer"
    assert error_of("-m", "trainer.top_p=range(0.5,2,0.5)") == "config error: trainer.top_p=1.5 must be in (0, 1]"


def test_keys_owned_elsewhere_point_home() -> None:
    assert error_of("trainer.learning_rate=1e-3") == (
        "trainer.learning_rate=1e-3: trainer.learning_rate is not set in the trainer node; set optimizer.lr instead")
    assert error_of("trainer.lerning_rate=1e-3") == (
        "trainer.lerning_rate=1e-3: trainer.lerning_rate is not a trl.GRPOConfig field; the closest, "
        "trainer.learning_rate, is not set in the trainer node: set optimizer.lr instead")
    assert error_of("+trainer.learning_rate=1e-3") == (
        "config error: trainer.learning_rate is not set in the trainer node; set optimizer.lr instead")


def test_values_in_config_files_and_search_spaces_are_checked(tmp_path: Path) -> None:
    experiments = tmp_path / "experiment"
    experiments.mkdir()
    (experiments / "bad_type.yaml").write_text("# @package _global_\ntrainer:\n  max_steps: lots\n")
    (experiments / "bad_key.yaml").write_text("# @package _global_\ntrainer:\n  learning_rate: 0.1\n")
    (experiments / "bad_grid.yaml").write_text("# @package _global_\nhydra:\n  sweeper:\n    params:\n"
                                               "      trainer.top_p: 0.5,1.5\n")
    assert error_of("-cd", str(tmp_path), "experiment=bad_type") == (
        "config error: trainer.max_steps: Value 'lots' of type 'str' could not be converted to Integer "
        "(set in experiment/bad_type)")
    assert error_of("-cd", str(tmp_path), "experiment=bad_key") == (
        "config error: trainer.learning_rate is not set in the trainer node; set optimizer.lr instead "
        "(set in experiment/bad_key)")
    assert error_of("-m", "-cd", str(tmp_path), "experiment=bad_grid") == (
        "config error: trainer.top_p=1.5 must be in (0, 1]")


def test_printing_the_config_skips_value_checks_but_not_types() -> None:
    command = ["grpolab-train", "trainer.beta=-1", "+rewards.x._target_=os.system", "--cfg", "job"]
    assert preflight(command, CONF_DIR) == command  # nothing runs: the config can be inspected
    assert error_of("seed=zero", "--cfg", "job") == "seed=zero must be an integer"


def test_every_value_of_a_long_sweep_is_checked_before_any_job() -> None:
    # the bad value is the 21st: each value is applied to one copy of the composed config, none is skipped
    assert error_of("-m", "seed=range(0,20)", "trainer.beta=0,0.1", "trainer.top_p=0.9,1,0.5,0.7,0.8,2") == (
        "config error: trainer.top_p=2.0 must be in (0, 1]")


def test_a_bug_in_preflight_is_not_taken_for_a_valid_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from grpolab.config import validate

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(validate, "validate", broken)
    with pytest.raises(KeyError, match="a bug"):
        run_preflight(["grpolab-train", "seed=1"], CONF_DIR)
