"""Loss functions chosen by ``train.loss``: MONAI's DiceCE, Dice, weighted Dice and focal losses."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss, FocalLoss

from medt3d.config import Config
from medt3d.errors import InputError

__all__ = ["PADDING_LABEL", "DeepSupervised", "IgnorePadding", "build_loss"]

#: Label value that :func:`medt3d.training.engine.patch_batch` gives the voxels of a training patch that are
#: not scan (the training pad, an augmentation's zero fill); :class:`IgnorePadding` keeps them out of the loss.
PADDING_LABEL = -1.0


class DeepSupervised(torch.nn.Module):
    """MONAI's ``DeepSupervisionLoss`` on logits that carry the auxiliary heads as extra channels.

    MedT3D with ``network.deep_supervision=k`` returns, while training, the main logits and ``k``
    auxiliary ones concatenated along the channels; they are split here into the list MONAI's loss
    takes, with weights 1, 1/2, 1/4, ... from the main head down, normalised to sum to 1 as in nnU-Net
    (so the loss keeps the scale of the main head's).
    """

    def __init__(self, loss: torch.nn.Module, num_classes: int, heads: int) -> None:
        super().__init__()
        weights = [0.5**i for i in range(heads)]
        self.loss = DeepSupervisionLoss(loss, weights=[w / sum(weights) for w in weights])
        self.num_classes = num_classes

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        heads = list(torch.split(pred, self.num_classes, dim=1))
        return self.loss(heads, label)


class IgnorePadding(torch.nn.Module):
    """A loss on logits and labels in which voxels labelled :data:`PADDING_LABEL` give no gradient.

    Those voxels take part as background with their prediction detached: cross-entropy and focal terms
    there have no gradient, and Dice sees them as constants, so padding is not learned as background.
    MONAI's DiceCELoss has no ignore index (its DiceLoss and FocalLoss do, but not the CE term), hence this.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        padding = label == PADDING_LABEL
        if not bool(padding.any()):
            return self.loss(pred, label)
        pred = torch.where(padding, pred.detach(), pred)
        return self.loss(pred, label.masked_fill(padding, 0))


def build_loss(cfg: Config) -> torch.nn.Module:
    """The configured loss, wrapped in :class:`DeepSupervised` when MedT3D has auxiliary heads."""
    loss = _base_loss(cfg)
    if cfg.network.name == "medt3d" and cfg.network.deep_supervision > 0:
        return DeepSupervised(loss, cfg.data.num_classes, heads=1 + cfg.network.deep_supervision)
    return loss


def _base_loss(cfg: Config) -> torch.nn.Module:
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
            raise InputError("train.loss = 'weighted_dice' needs train.class_weights (one weight per label); "
                             "set train.class_weights or choose another train.loss")
        return DiceLoss(**common, weight=weights)
    if t.loss == "focal":
        return FocalLoss(to_onehot_y=True, use_softmax=True, weight=weights, gamma=2.0)
    raise ValueError(f"unknown train.loss {t.loss!r}")
