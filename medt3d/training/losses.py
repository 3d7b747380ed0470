"""Loss functions chosen by ``train.loss``: MONAI's DiceCE, Dice, weighted Dice and focal losses."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss, FocalLoss

from medt3d.config import Config

__all__ = ["build_loss"]


def build_loss(cfg: Config) -> torch.nn.Module:
    """Loss on logits (B, C, ...) against integer labels (B, 1, ...).

    ``weighted_dice`` weights each class's Dice term by ``train.class_weights`` (helps small
    structures); ``focal`` uses the weights as per-class alpha-like weights when given.
    """
    t = cfg.train
    weights = torch.tensor(t.class_weights, dtype=torch.float32) if t.class_weights is not None else None
    common = {"to_onehot_y": True, "softmax": True}
    if t.loss == "dice_ce":
        return DiceCELoss(**common, weight=weights)
    if t.loss == "dice":
        return DiceLoss(**common)
    if t.loss == "weighted_dice":
        if weights is None:
            raise ValueError("train.loss = 'weighted_dice' needs train.class_weights (one weight per label)")
        return DiceLoss(**common, weight=weights)
    if t.loss == "focal":
        return FocalLoss(to_onehot_y=True, use_softmax=True, weight=weights, gamma=2.0)
    raise ValueError(f"unknown train.loss {t.loss!r}")
