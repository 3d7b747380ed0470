"""AdamW with a linear warm-up then cosine annealing (MONAI's WarmupCosineSchedule), stepped per iteration."""

from __future__ import annotations

import torch
from monai.optimizers import WarmupCosineSchedule

from medt3d.config import Config

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over every parameter (frozen gates still belong to it, so unfreezing needs no rebuild)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, iterations_per_epoch: int) -> WarmupCosineSchedule:
    """Per-iteration schedule: ``warmup_epochs`` linear warm-up, cosine decay to 0 at ``max_epochs``."""
    total = max(1, cfg.train.max_epochs * iterations_per_epoch)
    warmup = min(cfg.train.warmup_epochs * iterations_per_epoch, total - 1)
    return WarmupCosineSchedule(optimizer, warmup_steps=warmup, t_total=total)
