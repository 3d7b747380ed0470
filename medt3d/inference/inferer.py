"""The sliding-window inferer that every route uses: validation, evaluation, inference and the bundle."""

from __future__ import annotations

import torch
from monai.inferers import SlidingWindowInferer

from medt3d.config import Config

__all__ = ["build_sliding_window_inferer"]


def build_sliding_window_inferer(cfg: Config, sw_device: torch.device | None = None,
                                 device: torch.device | None = None) -> SlidingWindowInferer:
    """The sliding-window inferer every route uses (validation, evaluation, inference, bundle)."""
    return SlidingWindowInferer(
        roi_size=cfg.patch.roi_size,
        sw_batch_size=cfg.infer.sw_batch_size,
        overlap=cfg.infer.overlap,
        mode=cfg.infer.mode,
        sw_device=sw_device,
        device=device,
    )
