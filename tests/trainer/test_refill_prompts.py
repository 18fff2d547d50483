"""The refill prompt stream of dynamic sampling: shuffled epochs, disjoint slices per process, resumable."""

from __future__ import annotations


from grpolab.trainer.refill_prompts import RefillPrompts


def test_refill_stream_gives_processes_disjoint_prompts() -> None:
    first, second = RefillPrompts(6, seed=3, num_processes=2, process_index=0), RefillPrompts(6, 3, 2, 1)
    drawn = first.take(3) + second.take(3)
    assert sorted(drawn) == list(range(6))
