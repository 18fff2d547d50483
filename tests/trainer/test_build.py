"""``peft=lora`` through the real composition root (``grpolab.train.train``): TRL wraps the (warm-started) model with
LoRA adapters, only the adapters train, the trainable share is logged and recorded, and the KL reference is the base
model with the adapters disabled, i.e. the starting policy. Text and vision, text and ids mode."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from grpolab.trainer.grpo import GrpolabTrainer

pytestmark = pytest.mark.slow

# A length reward gives every group unequal rewards, so that every step has a gradient; beta > 0 puts the KL term on.
LORA_RUN = [
    "logger=none", "peft=lora", "peft.r=4", "trainer.beta=0.04", "trainer.max_steps=3", "trainer.logging_steps=1",
    "warmstart.steps=30", "warmstart.cache=false", "data.train_size=64", "data.eval_size=8",
    "batch.prompts_per_step=4", "batch.generations_per_prompt=4", "rewards=[accuracy,length]",
    "rewards.length.target=6", "optimizer.lr=1e-2",
]
VISION = ["model=tiny_vlm", "data=shapes"]


def run_pipeline(compose_cfg, run_dir: Path, *overrides: str) -> Path:
    from grpolab.train import train

    cfg = compose_cfg([*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)
    previous = HydraConfig.instance().cfg
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]
    try:
        train(cfg)
    finally:
        HydraConfig.instance().cfg = previous  # the tests after this one run outside a Hydra job again
    return run_dir


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The trainer, its weights before and after ``train()``, and a forward pass of the starting policy."""
    seen: dict = {}
    original = GrpolabTrainer.train

    def train(self, *args, **kwargs):
        model = self.model
        probe = {"input_ids": torch.tensor([[3, 4, 5, 6, 7]])}  # text only: enough for the VLM's language model
        seen["trainer"] = self
        seen["before"] = {name: param.detach().clone() for name, param in model.named_parameters()}
        with torch.no_grad():
            seen["start_logits"] = model(**probe).logits
        result = original(self, *args, **kwargs)
        seen["after"] = {name: param.detach().clone() for name, param in model.named_parameters()}
        with torch.no_grad():
            seen["trained_logits"] = model(**probe).logits
            with model.disable_adapter():
                seen["reference_logits"] = model(**probe).logits
        return result

    monkeypatch.setattr(GrpolabTrainer, "train", train)
    return seen


@pytest.mark.parametrize("overrides", [[], ["tokenizer_mode=ids"], VISION], ids=["text", "ids", "vision"])
def test_lora_trains_only_the_adapters_against_the_base_model(compose_cfg, tmp_path: Path, watched: dict,
                                                              caplog: pytest.LogCaptureFixture,
                                                              overrides: list[str]) -> None:
    from peft import PeftModel

    with caplog.at_level(logging.INFO, logger="grpolab"):
        run_dir = run_pipeline(compose_cfg, tmp_path / "run", *LORA_RUN, *overrides)
    trainer = watched["trainer"]
    assert isinstance(trainer.model, PeftModel)
    # The KL reference: no separate reference model and no "ref" adapter, so TRL computes the reference log
    # probabilities with the adapters disabled; nothing is saved as a reference policy.
    assert trainer.ref_model is None and "ref" not in trainer.model.peft_config
    assert not (run_dir / "reference_policy").exists()

    before, after = watched["before"], watched["after"]
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapters = {name for name in before if "lora_" in name}
    assert changed and changed <= adapters  # only adapter weights moved
    assert all(torch.equal(before[name], after[name]) for name in before if name not in adapters)
    # The adapters disabled give back the starting (warm-started) policy; enabled, the trained one.
    assert torch.equal(watched["reference_logits"], watched["start_logits"])
    assert not torch.allclose(watched["trained_logits"], watched["start_logits"])

    summary = json.loads((run_dir / "summary.json").read_text())
    parameters = summary["parameters"]
    trainable = sum(param.numel() for param in trainer.model.parameters() if param.requires_grad)
    total = sum(param.numel() for param in trainer.model.parameters())
    assert (parameters["trainable"], parameters["total"]) == (trainable, total) and trainable == sum(
        before[name].numel() for name in adapters)
    assert parameters["trainable_fraction"] == pytest.approx(trainable / total)
    assert parameters["trainable_fraction"] < 0.2
    assert any(record.getMessage().startswith(f"trainable parameters: {trainable} of {total}")
               for record in caplog.records)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kl"] > 0  # the KL term is on, measured against the adapter-free base
    assert summary["status"] == "completed" and summary["eval_after"]["num_samples"] == 8


def test_adapters_that_fit_no_module_are_named_in_one_line(compose_cfg, tmp_path: Path) -> None:
    from grpolab.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^peft: Target modules \{'qkv'\} not found in the base model"):
        run_pipeline(compose_cfg, tmp_path / "run", *LORA_RUN, "peft.target_modules=[qkv]")
