"""The seam of the one training engine: what a training step optimises.

:func:`medt3d.training.engine.build_training` assembles MONAI's ``SupervisedTrainer`` around a
:class:`TrainingObjective`, which supplies the two things that differ between ways of training:

- ``prepare_batch``: from a loader batch to the network's input, the loss's target and the network's
  extra arguments (MONAI's ``prepare_batch`` contract); it may compute extra inputs of the loss here,
  e.g. a teacher's logits on the same patch (:mod:`medt3d.training.distill`);
- ``loss_function``: ``(pred, target) -> loss``, on the student's logits.

and ``terms()``, the named parts of the last step's loss, which the engine averages per epoch into
``history.json`` (and the trainer's metrics, so tracking sees them). Everything else (resume,
validation, checkpoints, tracking, the run folder) is the engine's and is the same for every objective.
:class:`SupervisedObjective` is ``medt3d train``'s, the default.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from medt3d.config import Config
from medt3d.networks.factory import masks_padding
from medt3d.training.batches import patch_batch
from medt3d.training.losses import IgnorePadding, build_loss

__all__ = ["SupervisedObjective", "TrainingObjective"]


class TrainingObjective:
    """What a training step optimises: its batch preparation, its loss and the loss terms it logs.

    Subclasses set ``name`` and ``loss_function`` and may override :meth:`prepare_batch`,
    :meth:`to` (to move their own modules, e.g. a teacher) and :meth:`terms`.
    """

    name = "objective"
    loss_function: torch.nn.Module
    #: whether training cases may come without a label (the engine then keeps them, for training only)
    accepts_unlabelled = False

    def prepare_batch(self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False,
                      **kwargs: Any) -> tuple[Any, ...]:
        """MONAI ``prepare_batch``: ``(inputs, target)`` or ``(inputs, target, args, kwargs)``."""
        raise NotImplementedError

    def to(self, device: torch.device) -> TrainingObjective:
        """Move the loss (and anything else the objective runs) to ``device``."""
        self.loss_function = self.loss_function.to(device)
        return self

    def terms(self) -> dict[str, float]:
        """The named parts of the last step's loss (empty: only the loss itself is logged)."""
        return {}


class SupervisedObjective(TrainingObjective):
    """``medt3d train``: the configured ``train.loss`` against the labels, padding ignored."""

    name = "supervised"

    def __init__(self, cfg: Config) -> None:
        self.loss_function = IgnorePadding(build_loss(cfg))
        self._prepare = partial(patch_batch, masked=masks_padding(cfg))

    def prepare_batch(self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False,
                      **kwargs: Any) -> tuple[Any, ...]:
        """:func:`~medt3d.training.batches.patch_batch`, with the valid mask for a network that masks padding."""
        return self._prepare(batchdata, device, non_blocking, **kwargs)
