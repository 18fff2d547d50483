"""The refill prompts of dynamic sampling (``grpolab.trainer.dynamic_sampling``): a stream of train dataset indices.

Refill rounds draw their prompts in shuffled epochs of their own, so the main dataloader is not advanced; every process
draws a disjoint slice of the same permutation, and a checkpoint keeps the stream's position (``consumed``).
"""

from __future__ import annotations

import torch


class RefillPrompts:
    """Dataset indices for refill rounds: shuffled epochs, the same permutation on every process, disjoint slices.

    >>> stream = RefillPrompts(dataset_size=4, seed=0)
    >>> sorted(stream.take(2) + stream.take(2))  # one epoch covers every index once
    [0, 1, 2, 3]
    """

    def __init__(self, dataset_size: int, seed: int, num_processes: int = 1, process_index: int = 0) -> None:
        if dataset_size < 1:
            raise ValueError("dynamic sampling needs a non-empty train dataset to draw refill prompts from")
        self.dataset_size = dataset_size
        self.num_processes = num_processes
        self.process_index = process_index
        self._generator = torch.Generator().manual_seed(seed)
        self._pending: list[int] = []
        #: Indices consumed so far on all processes together: the stream's position, kept in checkpoints.
        self.consumed = 0

    def take(self, count: int) -> list[int]:
        """The next ``count`` indices for this process (``count * num_processes`` are consumed in total)."""
        drawn = self._draw(count * self.num_processes)
        return drawn[self.process_index * count : (self.process_index + 1) * count]

    def fast_forward(self, consumed: int) -> None:
        """Continue where a stream that had consumed ``consumed`` indices stopped (a resumed run): the epochs are
        drawn lazily in both cases, so the generator ends in the same state.

        >>> a, b = RefillPrompts(dataset_size=5, seed=0), RefillPrompts(dataset_size=5, seed=0)
        >>> _ = a.take(3), a.take(4)
        >>> b.fast_forward(7)
        >>> a.take(6) == b.take(6)
        True
        """
        self._draw(consumed - self.consumed)

    def _draw(self, total: int) -> list[int]:
        while len(self._pending) < total:
            self._pending += torch.randperm(self.dataset_size, generator=self._generator).tolist()
        drawn, self._pending = self._pending[:total], self._pending[total:]
        self.consumed += total
        return drawn
