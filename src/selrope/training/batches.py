"""Which rows each optimizer step reads: a pure function of (seed, step).

Because the batch of step s depends on nothing else, the data position of a run is its step
count: a checkpoint needs no loader state for an exact resume.
"""

from __future__ import annotations

import numpy as np
import torch


class DeterministicBatches:
    """Batch row indices as a pure function of (seed, step index).

    Each epoch is a fresh permutation of the N rows drawn from a torch.Generator seeded with
    (seed, epoch); the epoch's last incomplete batch is dropped.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        if not 1 <= batch_size <= num_examples:
            raise ValueError(
                f"batch_size must be in [1, {num_examples}] (training set rows); got {batch_size}"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = num_examples // batch_size
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The row order of `epoch`: (N,) int64."""
        if epoch != self._epoch:
            epoch_seed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
            generator = torch.Generator().manual_seed(int(epoch_seed))
            self._permutation = torch.randperm(self.num_examples, generator=generator)
            self._epoch = epoch
        return self._permutation

    def indices(self, step_index: int) -> torch.Tensor:
        """Rows of the batch for the 0-based update `step_index`: (batch_size,) int64."""
        epoch, position = divmod(step_index, self.batches_per_epoch)
        start = position * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size]
