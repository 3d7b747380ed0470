"""Per-epoch reseeding: everything random in an epoch follows (seed, epoch, rank), so a resumed run repeats it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.utils import set_determinism

from medt3d.config import Config


def _seed_for(cfg: Config, epoch: int, rank: int) -> int:
    return (cfg.train.seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**31 - 1)


class EpochSampler(torch.utils.data.Sampler):
    """``num_samples`` case indices in an order fixed by a seed set before each epoch (whole permutations, repeated).

    Our own because torch's ``RandomSampler`` draws its order from a generator that the DataLoader
    also draws from when it creates an iterator, and ignite creates that iterator before the first
    ``EPOCH_STARTED`` of a resumed run but after it in an uninterrupted one: the orders differed.

    Args:
        size: number of cases.
        num_samples: indices per epoch.
    """

    def __init__(self, size: int, num_samples: int) -> None:
        self.size, self.num_samples, self.seed = size, num_samples, 0

    def set_seed(self, seed: int) -> None:
        """Fix the order of the next iteration."""
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        rounds = -(-self.num_samples // self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])
        return iter(order[: self.num_samples].tolist())


@dataclass
class EpochSeeding:
    """Everything random in an epoch, reseeded from (seed, epoch, rank) so that a resumed run repeats it."""

    cfg: Config
    rank: int
    train_ds: Any
    sampler: EpochSampler
    loader_generator: torch.Generator

    def __call__(self, epoch: int) -> None:
        seed = _seed_for(self.cfg, epoch, self.rank)
        set_determinism(seed)
        self.sampler.set_seed(seed)
        self.loader_generator.manual_seed(seed)  # the DataLoader's worker seeds
        transform = getattr(self.train_ds, "transform", None)
        if transform is not None and hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)
