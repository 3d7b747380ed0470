"""Build the configured network: MedT3D, or a MONAI baseline for comparisons."""

from __future__ import annotations

import math

from torch import nn

from medt3d.networks.medt import MedT3D
from medt3d.networks.registry import BASELINES

__all__ = ["build_network"]

def build_network(cfg) -> nn.Module:
    """The network of ``cfg.network`` for ``cfg.data`` (in_channels -> num_classes logits).

    MedT3D takes its sizes from ``MEDT3D_PRESETS[cfg.network.preset]``, with every non-null
    override of ``cfg.network`` applied; it accepts any input size. UNETR is built for
    ``cfg.patch.roi_size`` (its ``img_size``); the baselines need ROI edges that fit their
    downsampling (see :data:`BASELINES`).

    Args:
        cfg: a :class:`medt3d.config.Config`.

    Raises:
        ValueError: unknown network name, impossible sizes, or an ROI the baseline cannot take.
    """
    net, data = cfg.network, cfg.data
    name = net.name
    if name == "medt3d":
        return MedT3D.from_preset(
            net.preset,
            in_channels=data.in_channels,
            out_channels=data.num_classes,
            channels=net.channels,
            blocks=net.blocks,
            heads=net.heads,
            span=net.span,
            stem_stride=net.stem_stride,
            local_patch=net.local_patch,
            full_res_channels=net.full_res_channels,
            stem_channels=net.stem_channels,
            logo=net.logo,
            dropout=net.dropout,
            input_head=net.input_head,
            deep_supervision=net.deep_supervision,
        )
    if name not in BASELINES:
        raise ValueError(f"network.name {name!r} is unknown; choose medt3d or one of {sorted(BASELINES)}")
    roi = tuple(int(r) for r in cfg.patch.roi_size)
    multiple, smallest = BASELINES[name]["size_multiple"], BASELINES[name]["min_size"]
    if any(r % multiple or r < smallest for r in roi):
        raise ValueError(
            f"network {name} needs patch.roi_size edges that are multiples of {multiple} and >= {smallest}, "
            f"got {list(roi)}"
        )
    bottleneck = math.prod(r // multiple for r in roi)
    if bottleneck < BASELINES[name].get("min_voxels_at_multiple", 1):
        raise ValueError(
            f"network {name} needs a patch.roi_size with more than one voxel at its 1/{multiple} bottleneck "
            f"(e.g. one edge of {2 * multiple}), got {list(roi)}"
        )
    kwargs = dict(BASELINES[name]["kwargs"])
    from monai.networks import nets

    if name == "unet":
        return nets.UNet(spatial_dims=3, in_channels=data.in_channels, out_channels=data.num_classes, **kwargs)
    if name == "unetr":
        return nets.UNETR(in_channels=data.in_channels, out_channels=data.num_classes, img_size=roi, **kwargs)
    return nets.SwinUNETR(in_channels=data.in_channels, out_channels=data.num_classes, spatial_dims=3, **kwargs)
