"""benchmarks/text_vs_token_table.py on a real (scaled-down) ``experiment=text_vs_token`` sweep: the README table is
the sweep report's, and it replaces only what stands between the markers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "text_vs_token_table.py"
SMALL = ["warmstart.steps=5", "trainer.max_steps=2", "trainer.logging_steps=1", "data.train_size=32",
         "data.eval_size=8", "eval.num_problems=8", "batch.prompts_per_step=2", "batch.generations_per_prompt=2"]


@pytest.mark.slow
def test_the_study_runs_and_its_table_is_regenerated_into_the_readme(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("experiment=text_vs_token", *SMALL, f"hydra.sweep.dir={sweep}", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nbefore\n<!-- text_vs_token table: start -->\nold table\n"
                      "<!-- text_vs_token table: end -->\nafter\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(sweep), "--readme", str(readme)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n<!-- text_vs_token table: start -->\nMeasured ")
    assert text.endswith("<!-- text_vs_token table: end -->\nafter\n") and "old table" not in text
    assert "8 jobs, 8 completed" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| tokenizer_mode | reward_level | seeds | failed | final reward")
    assert rows[0].endswith("| timing/rewards_s / step | tokenizer/calls / step | tokenizer/encode_calls / step | "
                            "tokenizer/decode_calls / step |")
    assert [row.split(" | ")[:4] for row in rows[1:]] == [
        ["| text", "text", "2", "0"], ["| text", "token", "2", "0"], ["| ids", "text", "2", "0"],
        ["| ids", "token", "2", "0"]]
    calls = [cell.split(" ± ")[0] for cell in rows[-1].strip("| ").split(" | ")[-3:]]
    assert [float(cell) for cell in calls] == [0.0, 0.0, 0.0]  # ids/token: no tokenizer call at all
    text_calls = [cell.split(" ± ")[0] for cell in rows[1].strip("| ").split(" | ")[-3:]]
    assert float(text_calls[0]) > 0


def test_an_empty_sweep_dir_fails_in_one_line_and_the_file_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n", encoding="utf-8")
    (tmp_path / "sweep").mkdir()
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "sweep"), "--readme", str(readme)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.startswith("text_vs_token_table: no run directories")
    assert readme.read_text(encoding="utf-8") == "no markers\n"
