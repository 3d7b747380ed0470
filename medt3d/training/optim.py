"""AdamW with a linear warm-up then cosine annealing, stepped per iteration, that ends inside a time budget.

The cosine follows whichever budget runs out first: the iterations (``train.max_epochs``) or the
seconds (``train.max_seconds``, on the clock ``train.clock`` names). With a time budget the learning rate therefore reaches
zero when the time is spent, however fast the machine is; no timing run has to guess the number of
epochs beforehand. PyTorch and MONAI schedules count steps only, hence this small one (a ``LambdaLR``).
"""

from __future__ import annotations

import math
import time

import torch
from torch.optim.lr_scheduler import LambdaLR

from medt3d.config import CLOCKS, Config

__all__ = ["TrainingClock", "build_optimizer", "build_scheduler", "lr_factor"]


class TrainingClock:
    """Seconds spent training (validation included), carried over a resume.

    Args:
        budget_s: the time budget (``train.max_seconds``), or None for none.
        spent_s: seconds already spent by earlier sessions of the same run.
        kind: ``wall`` counts elapsed time; ``cpu`` counts the process's CPU time (all its threads) divided
            by torch's thread count, so that other processes and a virtual machine's stolen time do not
            eat into the budget. On a shared machine two networks then get the same CPU time, which a
            wall-clock budget only gives them when the machine is equally busy during both runs.
    """

    def __init__(self, budget_s: float | None = None, spent_s: float = 0.0, kind: str = "wall") -> None:
        if kind not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {kind!r}")
        self.budget_s = budget_s
        self.spent_before = float(spent_s)
        self.kind = kind
        self._started: float | None = None

    def _now(self) -> float:
        if self.kind == "cpu":
            return time.process_time() / max(1, torch.get_num_threads())
        return time.monotonic()

    def start(self) -> None:
        """Start (or restart) counting this session's time."""
        self._started = self._now()

    def spent(self) -> float:
        """Seconds spent so far, earlier sessions included."""
        now = 0.0 if self._started is None else self._now() - self._started
        return self.spent_before + now

    def fraction(self) -> float:
        """Share of the budget spent (0 without a budget)."""
        return 0.0 if not self.budget_s else min(1.0, self.spent() / self.budget_s)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over every parameter (frozen gates still belong to it, so unfreezing needs no rebuild)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def lr_factor(step: int, warmup: int, total: int, time_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then cosine to 0.

    Args:
        step: iterations done.
        warmup: warm-up iterations.
        total: iterations of the whole run.
        time_fraction: share of the time budget spent; the cosine follows it when it is ahead of the steps.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = max((step - warmup) / max(1, total - warmup), time_fraction)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, iterations_per_epoch: int,
                    clock: TrainingClock | None = None) -> LambdaLR:
    """Per-iteration schedule: ``warmup_epochs`` linear warm-up, cosine decay to 0 at the end of the run.

    Args:
        cfg: the config (``train.max_epochs``, ``train.warmup_epochs``).
        optimizer: the optimiser whose learning rate is scheduled.
        iterations_per_epoch: batches per epoch.
        clock: the run's training clock; with a ``train.max_seconds`` budget the decay also follows the time.
    """
    total = max(1, cfg.train.max_epochs * iterations_per_epoch)
    warmup = min(cfg.train.warmup_epochs * iterations_per_epoch, total - 1)
    if clock is None:
        return LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total))
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total, clock.fraction()))
