"""The training order: shuffled per epoch from a seed, split over DDP ranks, resumable in the middle of an epoch.

A run killed at step 2,300 of a 5,000-step epoch and resumed from a checkpoint taken at step 2,000 must see
exactly the images it would have seen without the kill, in the same order and with the same augmentation. So:

- The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone (like ``DistributedSampler``), padded
  to a multiple of the world size and split over the ranks by striding.
- Every sample comes with its own random generator, seeded from ``(seed, e, index)``: crops and flips do not
  depend on which worker process loads the image, on the number of workers, or on what was loaded before.
  Datasets that declare ``takes_sample_keys = True`` (attnzoo's own) receive a :class:`Sample` instead of an int
  and draw from ``sample.rng``; any other dataset receives plain indices.
- :meth:`ResumableSampler.state` / :meth:`ResumableSampler.resume` carry the position (how many samples of the
  epoch's order were consumed over all ranks) through the checkpoint; the data module saves them
  (:meth:`attnzoo.data.ClassificationDataModule.state_dict`).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import DistributedSampler

_EPOCH_MIX = 1_000_003
_INDEX_MIX = 2_147_483_659


class Sample(NamedTuple):
    """What a resumable sampler hands to a dataset: the index and the seed of this sample's augmentation."""

    index: int
    seed: int

    @property
    def rng(self) -> random.Random:
        return random.Random(self.seed)


def unpack(key) -> tuple[int, random.Random | None]:
    """``(index, rng)`` from a :class:`Sample`, or ``(index, None)`` from a plain index (use the global RNG)."""
    if isinstance(key, Sample):
        return key.index, key.rng
    return int(key), None


def default_seed() -> int:
    """The run's seed (``seed_everything``), the same on every rank; 0 when the run is not seeded."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ResumableSampler(DistributedSampler):
    """Shuffled, rank-split, resumable sampling of ``dataset`` (see the module docstring).

    A ``DistributedSampler``, so Lightning leaves it in place under DDP instead of wrapping it. Lightning calls
    :meth:`set_epoch` at every epoch start.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=default_seed() if seed is None else seed, drop_last=False)
        self.sample_keys = bool(getattr(dataset, "takes_sample_keys", False))
        self._resume_epoch: int | None = None
        self._resume_position = 0

    def order(self, epoch: int) -> list[int]:
        """The epoch's permutation of all indices, padded to a multiple of the world size."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        padding = self.total_size - len(indices)
        if padding > 0:
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return indices

    def __iter__(self) -> Iterator[Sample | int]:
        epoch = self.epoch
        start = self._resume_position if self._resume_epoch == epoch else 0
        self._resume_epoch, self._resume_position = None, 0  # the next pass over this epoch starts from its beginning
        order = self.order(epoch)
        base = (self.seed * _EPOCH_MIX + epoch) * _INDEX_MIX
        # Positions start..end of the global order, of which this rank takes every num_replicas-th.
        for position in range(start + self.rank, self.total_size, self.num_replicas):
            index = order[position]
            yield Sample(index, base + index) if self.sample_keys else index

    def state(self, batches_done: int, batch_size: int, epoch_complete: bool) -> dict:
        """The position after ``batches_done`` batches of ``batch_size`` on each rank."""
        if epoch_complete:
            return {"seed": self.seed, "epoch": self.epoch + 1, "position": 0}
        return {"seed": self.seed, "epoch": self.epoch, "position": batches_done * batch_size * self.num_replicas}

    def resume(self, state: dict) -> None:
        """Continue at the position saved by :meth:`state` (the next :meth:`set_epoch` keeps it)."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._resume_epoch = self.epoch
        self._resume_position = min(int(state["position"]), self.total_size)
