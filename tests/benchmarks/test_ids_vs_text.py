"""benchmarks/ids_vs_text.py's table: medians over runs, and each round's ratio to text/text beside the median's."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import ids_vs_text  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def run(host_ms: float, tokenizer_ms: float = 0.0) -> dict[str, float]:
    model = {"generate": 0.03, "forward": 0.02, "backward": 0.03, "optimizer": 0.001}
    return {**model, "model": sum(model.values()), "wall": sum(model.values()) + host_ms / 1e3,
            "host": host_ms / 1e3, "host_share": 0.1, "tokenizer": tokenizer_ms / 1e3, "rewards": 0.001}


def test_the_table_gives_the_median_ratio_and_every_rounds_ratio():
    results = {"gsm8k_bpe": {"text/text": [run(50, 20), run(40, 20), run(60, 20)],
                             "ids/token": [run(20), run(24), run(21)]}}
    rows = ids_vs_text.report(results).splitlines()
    header, ids_row = rows[0].split(" | "), rows[3].split(" | ")
    assert len(header) == len(ids_row) and rows[1].count("|") == rows[0].count("|")
    assert ids_row[header.index("host ms/step")] == "21.0"
    assert ids_row[header.index("host vs text/text")] == "42%"  # 21 / 50: medians over runs
    assert ids_row[header.index("host vs text/text, run by run")] == "40%, 60%, 35%"  # round by round
    assert rows[2].split(" | ")[header.index("host vs text/text, run by run")] == "100%, 100%, 100%"
