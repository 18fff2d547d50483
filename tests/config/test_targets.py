"""Every _target_ of the job config must come from grpolab, its dependencies or trusted_modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpolab.config.errors import ConfigError
from grpolab.config.targets import check_resolved_targets, check_trusted_targets, iter_targets
from grpolab.train import CONF_DIR

ALLOWED = "allowed: grpolab.*, trl.*, torch.optim.*, transformers.*, peft.*, datasets.*"
EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def refusal(compose_cfg, overrides: list[str], deep: bool = False) -> str:
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as caught:
        (check_resolved_targets if deep else check_trusted_targets)(cfg)
    return str(caught.value)


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_shipped_configs_name_only_trusted_targets(compose_cfg, experiment: str | None) -> None:
    cfg = compose_cfg([f"experiment={experiment}"] if experiment else [], return_hydra_config=True)
    targets = dict(iter_targets(cfg))
    assert targets and not any(key.startswith("hydra.") for key in targets)  # Hydra's own plugins are not job config
    check_resolved_targets(cfg)


def test_untrusted_target_is_refused_naming_key_and_target(compose_cfg) -> None:
    assert refusal(compose_cfg, ["+rewards.x._target_=os.system"]) == (
        f"rewards.x._target_=os.system is not trusted; {ALLOWED}; add the module to trusted_modules to allow it")
    # in a list, and through an interpolation
    assert refusal(compose_cfg, ["+logger.extra=[{_target_:builtins.eval}]"]).startswith(
        "logger.extra.0._target_=builtins.eval is not trusted; ")
    assert refusal(compose_cfg, ["+rewards.x={_target_:'${oc.env:NO_SUCH_VARIABLE,subprocess.run}'}"]).startswith(
        "rewards.x._target_=subprocess.run is not trusted; ")


def test_trusted_modules_extends_the_allowlist(compose_cfg) -> None:
    reward = "+rewards.broken={_target_:tests_support.FailingReward}"
    assert refusal(compose_cfg, [reward]).startswith("rewards.broken._target_=tests_support.FailingReward is not "
                                                     "trusted; ")
    check_trusted_targets(compose_cfg([reward, "trusted_modules=[tests_support]"]))
    assert refusal(compose_cfg, ["trusted_modules=[my rewards]"]) == (
        "trusted_modules.0='my rewards' must be a dotted module name, e.g. trusted_modules=[my_rewards]")


def test_paths_that_leave_the_trusted_modules_are_refused(compose_cfg) -> None:
    # Textually inside grpolab, but Hydra would follow them to subprocess.run / hydra.compose / a dunder.
    through_module = ["+rewards.x._target_=grpolab.tracking.provenance.subprocess.run"]
    check_trusted_targets(compose_cfg(through_module))
    assert refusal(compose_cfg, through_module, deep=True) == (
        "rewards.x._target_=grpolab.tracking.provenance.subprocess.run is not trusted: it leads through the module "
        f"subprocess; {ALLOWED}; add the module to trusted_modules to allow it")
    assert refusal(compose_cfg, ["+rewards.x._target_=grpolab.preflight.compose"], deep=True).startswith(
        "rewards.x._target_=grpolab.preflight.compose is not trusted: it is hydra.compose.compose, defined "
        "outside the trusted modules; ")
    assert refusal(compose_cfg, ["+rewards.x._target_=grpolab.__builtins__.eval"]).startswith(
        "rewards.x._target_=grpolab.__builtins__.eval is not trusted (a dunder attribute); ")
