"""How a batch reaches the network: plain tensors, and training patches whose padding is masked."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import default_prepare_batch

from medt3d.data.transforms import VALID
from medt3d.training.losses import PADDING_LABEL


def plain_batch(batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MONAI ``prepare_batch`` that hands the network plain tensors instead of MetaTensors.

    Every operation on a batched MetaTensor copies its metadata, in the forward and the backward
    pass; on the CPU that made a training step about five times slower. The network needs no
    metadata, so image and label are unwrapped here.
    """
    image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
    if isinstance(image, MetaTensor):
        image = image.as_tensor()
    if isinstance(label, MetaTensor):
        label = label.as_tensor()
    return image, label


def patch_batch(batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False,
                masked: bool = False, **kwargs: Any) -> tuple[Any, ...]:
    """:func:`plain_batch` for training patches, whose ``valid`` mask marks what is scan.

    Where a patch is not scan (the training pad, an augmentation's zero fill), the label becomes
    :data:`~medt3d.training.losses.PADDING_LABEL` (no gradient there) and, for a network that masks
    padding (``masked``), the mask goes to the network as ``valid=`` so its attention and norms ignore it.
    """
    image, label = plain_batch(batchdata, device, non_blocking, **kwargs)
    valid = batchdata.get(VALID)
    if valid is None or label is None:
        return image, label
    valid = valid.as_tensor() if isinstance(valid, MetaTensor) else valid
    padding = valid.to(device=image.device, non_blocking=non_blocking) == 0
    if not bool(padding.any()):
        return image, label
    label = label.masked_fill(padding, PADDING_LABEL)
    return (image, label, (), {"valid": (~padding).to(image.dtype)}) if masked else (image, label)
