"""Deterministic batches that a resumed or distributed run can reproduce exactly.

Micro-batch k of a run is fixed by (seed, k): epoch e = k // batches_per_epoch draws the
permutation seeded by (seed, e), and the global batch is its k-th slice. Each rank takes
a contiguous part of the global batch, so N ranks together see exactly the batch one
process would. Resuming at micro-batch k replays nothing and skips nothing.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler):
    """Yields this rank's index lists, from micro-batch ``start`` on, for ever."""

    def __init__(self, dataset_size: int, global_batch: int, seed: int, rank: int = 0,
                 world_size: int = 1, start: int = 0):
        if global_batch % world_size:
            raise ValueError(f"trainer.batch_size ({global_batch}) must be a multiple of the "
                             f"number of processes ({world_size})")
        if dataset_size < global_batch:
            raise ValueError(f"the training set has {dataset_size} items, fewer than one "
                             f"global batch of {global_batch}")
        self.size, self.global_batch, self.seed = dataset_size, global_batch, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.per_epoch = dataset_size // global_batch

    def global_batch_indices(self, k: int) -> list[int]:
        epoch, position = divmod(k, self.per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        return order[position * self.global_batch:(position + 1) * self.global_batch].tolist()

    def __iter__(self):
        local = self.global_batch // self.world_size
        k = self.start
        while True:
            indices = self.global_batch_indices(k)
            yield indices[self.rank * local:(self.rank + 1) * local]
            k += 1

    def __len__(self):  # an endless sampler; DataLoader only needs this for len(loader)
        return 2**62
