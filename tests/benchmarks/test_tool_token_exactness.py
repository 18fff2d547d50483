"""benchmarks/tool_token_exactness.py: the tokens trained on are the tokens generated plus TRL's tool suffixes, in
both tokenizer modes with a byte-level BPE, and the two modes take identical steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import tool_token_exactness as exactness  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def test_a_turn_is_what_generate_produced_up_to_its_eos_or_a_cut_prefix():
    produced = [5, 6, 1, 0, 0]  # EOS 1, then padding
    assert exactness._continues([5, 6, 1], produced, eos=1, cut=False)
    assert not exactness._continues([5, 6], produced, eos=1, cut=False)  # stopped early without a budget cut
    assert exactness._continues([5, 6], produced, eos=1, cut=True)
    assert not exactness._continues([5, 7, 1], produced, eos=1, cut=False)


def test_tool_messages_are_grouped_by_round():
    messages = [{"role": "assistant"}, {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"},
                {"role": "assistant"}, {"role": "tool", "content": "3"}, {"role": "assistant"}]
    assert [[m["content"] for m in group] for group in exactness._tool_rounds(messages)] == [["1", "2"], ["3"]]


@pytest.mark.slow
def test_every_trajectory_of_a_bpe_tool_run_is_exact_in_both_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(tmp_path / "cache"))
    # A third of the benchmark's warm-start compute (200 batches of 16, not 300 of 32): 14 of the 32 trajectories
    # still hold tool output (120 batches of 32: one).
    warm_start = ("warmstart.steps=200", "warmstart.batch_size=16")
    results = exactness.measure(steps=2, scratch=tmp_path, warm_start=warm_start)
    assert results["identical"]  # same seed, canonical prompt IDs: the same metrics and trajectories
    for mode in ("text", "ids"):
        counts = results[mode]
        assert counts.trajectories == 32 and counts.mismatched == 0, counts.examples
        assert counts.with_tool_output > 0 and counts.tool_rounds >= counts.with_tool_output
    table = exactness.table(results, steps=2)
    assert "| text | 32 |" in table and "identical metrics and trajectories" in table
