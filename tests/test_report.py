"""The ``grpolab-report`` CLI (``grpolab.report``): the table on stdout, one-line errors, no torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grpolab.report import main
from tests_support import COST_METRICS, write_study, write_sweep


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return write_sweep(tmp_path)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return write_study(tmp_path)


def test_cli_prints_the_table_without_importing_torch(sweep: Path) -> None:
    code = (
        "import sys; from grpolab.report import main; code = main([sys.argv[1], '--last-k', '2']); "
        "assert 'torch' not in sys.modules, 'report imported torch'; sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(sweep)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| 0.1 | 2 | 0 | 0.5750 ± 0.1061 |" in result.stdout
    assert "report.csv" in result.stdout


def test_cli_group_by_and_metrics_without_importing_torch(study: Path) -> None:
    code = (
        "import sys; from grpolab.report import main; code = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'report imported torch'; sys.exit(code)"
    )
    arguments = [str(study), "--group-by", "tokenizer_mode,reward_level", "--metrics", ",".join(COST_METRICS)]
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| ids | token | 2 | **1** | 0.3500 ± 0.0707 |" in result.stdout
    assert "reward_curve_ids_token.png" in result.stdout
    result = subprocess.run([sys.executable, "-m", "grpolab.report", str(study), "--metrics", "nope"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("grpolab-report: metric 'nope' is in no run's")


def test_cli_module_entry_point_fails_cleanly_without_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "grpolab.report", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "no run directories" in result.stderr
    assert main([str(tmp_path), "--last-k", "0"]) == 1
