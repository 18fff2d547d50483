"""benchmarks/gpu_check.py: the check itself on a CUDA machine (``gpu``), its CPU-reduced form end to end (the same
rows at tiny sizes, so the script cannot rot where no GPU is), and its pieces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import gpu_check_rows  # noqa: E402
import gpu_check_runs  # noqa: E402, F401  (the scripts the check starts import on their own)
import gpu_check_trl  # noqa: E402, F401

NO_CUDA = "no CUDA device: the GPU check (python benchmarks/gpu_check.py) needs one"


def table_rows(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The columns and the rows (by their ``check`` cell) of the one markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    columns = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "")) == {"-"}
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        rows[cells["check"]] = cells
    return columns, rows


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_the_gpu_check_passes_on_this_cuda_device(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    _, rows = table_rows(result.stdout)
    assert rows["text vs ids mode"]["result"].startswith("identical")
    assert rows["kill + resume=true"]["result"].startswith("identical")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check runs instead")
def test_without_cuda_the_check_says_so_in_one_line_and_exits_0() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("gpu_check: no CUDA device")


@pytest.mark.slow
def test_the_cpu_reduced_check_runs_every_row_and_both_comparisons_are_identical(tmp_path: Path) -> None:
    doc = tmp_path / "gpu_check.md"
    doc.write_text("# GPU check\n\n<!-- gpu-check: start -->\nold\n<!-- gpu-check: end -->\n\nafter\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path / "runs"), "--write", str(doc)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    written = doc.read_text()
    assert written.startswith("# GPU check\n\n<!-- gpu-check: start -->\n") and written.endswith("-->\n\nafter\n")
    assert "CPU-reduced form" in written and "old" not in written

    columns, rows = table_rows(written)
    assert tuple(columns) == gpu_check.COLUMNS
    performance = ["GRPO, full fine-tuning", "GRPO, LoRA", "GRPO, full + activation checkpointing",
                   "GRPO, LoRA + activation checkpointing", "GRPO at 1.5B, full fine-tuning (if time allows)",
                   "tiny VLM", "Qwen2-VL-2B shape"]
    engines = ["flash-attn 2", "vLLM generation (colocate)", "DeepSpeed ZeRO-2"]
    assert list(rows) == [*performance[:1], "plain TRL GRPOTrainer, full fine-tuning", *performance[1:5],
                          "text vs ids mode", "kill + resume=true", *performance[5:], *engines]
    for check in [*performance, "plain TRL GRPOTrainer, full fine-tuning"]:
        row = rows[check]
        assert row["steps"] == "2" and float(row["s/step"]) > 0 and float(row["generated tok/s"]) > 0, row
        assert re.fullmatch(r"\d+\.\d\d GiB", row["peak memory"]), row
    assert all(rows[check]["result"] == "ok" for check in performance)
    assert re.fullmatch(r"grpolab / TRL = \d+\.\d{3}x seconds per step", rows["plain TRL GRPOTrainer, full "
                                                                              "fine-tuning"]["result"])
    assert "trainable" in rows["GRPO, LoRA"]["setting"] and "trainable" not in rows["GRPO, full fine-tuning"]["setting"]
    for check in ("text vs ids mode", "kill + resume=true"):
        assert rows[check]["result"].startswith("identical: ") and "final weights equal bit for bit" in rows[check][
            "result"], rows[check]
        assert rows[check]["steps"] == "3"
    assert all(rows[check]["result"] == "skipped: needs CUDA" for check in engines)
    # The weights of finished rows are dropped (GBs per row at real size); their metrics stay.
    runs = tmp_path / "runs"
    assert not list(runs.glob("*/model")) and not list(runs.glob("*/checkpoint-*"))
    assert (runs / "full" / "metrics.jsonl").exists() and (runs / "trl" / "metrics.jsonl").exists()


def test_the_cpu_form_runs_the_cuda_rows_with_the_shapes_shrunk() -> None:
    cuda, cpu = (gpu_check_rows.Sizes.for_device(device) for device in ("cuda", "cpu"))
    assert [row.key for row in gpu_check_rows.rows_to_run(cpu)] == [
        row.key for row in gpu_check_rows.rows_to_run(cuda) if row.plan != "fixed"]  # engines: CUDA only
    for full_size, tiny in zip(gpu_check_rows.rows_to_run(cuda), gpu_check_rows.rows_to_run(cpu)):
        big, small = full_size.argv(cuda), tiny.argv(cpu)
        assert [a for a in big if a.startswith(("model=", "peft=", "tokenizer_mode=", "experiment=", "rewards="))] == [
            a for a in small if a.startswith(("model=", "peft=", "tokenizer_mode=", "experiment=", "rewards="))]
    assert cuda.perf_steps == 20 and cuda.completion == 512 and cuda.generations == 8 and cuda.budget_s == 480
