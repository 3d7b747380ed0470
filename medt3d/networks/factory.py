"""Build the configured network: MedT3D, or a MONAI baseline for comparisons."""

from __future__ import annotations

import math

from torch import nn

from medt3d.errors import InputError
from medt3d.networks.medt import MedT3D, input_multiple, preset_sizes
from medt3d.networks.registry import BASELINES

__all__ = ["bottleneck_cells", "build_network", "masks_padding", "window_multiple"]


def window_multiple(cfg) -> int | None:
    """The multiple every edge of an input of ``cfg.network`` is padded to, or None for a fixed input size.

    MedT3D pads its input to :func:`~medt3d.networks.medt.input_multiple` itself; the convolutional baselines
    need edges that are multiples of their downsampling; UNETR takes ``patch.roi_size`` alone.

    Args:
        cfg: a :class:`medt3d.config.Config`.
    """
    net = cfg.network
    if net.name == "medt3d":
        size = preset_sizes(net.preset, channels=net.channels, stem_stride=net.stem_stride)
        return input_multiple(int(size.stem_stride), len(size.channels))
    if net.name == "unetr":
        return None
    return int(BASELINES[net.name]["size_multiple"])

def bottleneck_cells(cfg) -> int:
    """Fewest voxels an input of ``cfg.network`` must have at its 1/multiple bottleneck (UNet's instance norm: 2)."""
    return int(BASELINES.get(cfg.network.name, {}).get("min_voxels_at_multiple", 1))


def masks_padding(cfg) -> bool:
    """True when ``cfg.network`` masks padded voxels itself (MedT3D), so its input needs no padding to a multiple."""
    return cfg.network.name == "medt3d"


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
            norm=net.norm,
        )
    if name not in BASELINES:
        raise InputError(f"network.name {name!r} is unknown; choose medt3d or one of {sorted(BASELINES)}")
    roi = tuple(int(r) for r in cfg.patch.roi_size)
    multiple, smallest = BASELINES[name]["size_multiple"], BASELINES[name]["min_size"]
    window = cfg.infer.roi_size
    if name == "unetr" and isinstance(window, str):
        raise InputError(f"UNETR is built for one input size, patch.roi_size {list(roi)}; infer.roi_size "
                         f"{window!r} needs a network of any input size; set infer.roi_size to null or the patch size")
    for key, size in (("patch.roi_size", roi), ("infer.roi_size", window)):
        if size is None or isinstance(size, str):
            continue
        if any(r % multiple or r < smallest for r in size):
            raise InputError(
                f"network {name} needs {key} edges that are multiples of {multiple} and >= {smallest}, "
                f"got {list(size)}; set {key} to such sizes"
            )
        if math.prod(r // multiple for r in size) < BASELINES[name].get("min_voxels_at_multiple", 1):
            raise InputError(
                f"network {name} needs a {key} with more than one voxel at its 1/{multiple} bottleneck "
                f"(e.g. one edge of {2 * multiple}), got {list(size)}; raise an edge of {key}"
            )
    if name == "unetr" and window is not None and tuple(window) != roi:
        raise InputError(f"UNETR is built for one input size, patch.roi_size {list(roi)}; infer.roi_size "
                         f"{list(window)} must be null or the same; set infer.roi_size to null")
    kwargs = dict(BASELINES[name]["kwargs"])
    from monai.networks import nets

    if name == "unet":
        return nets.UNet(spatial_dims=3, in_channels=data.in_channels, out_channels=data.num_classes, **kwargs)
    if name == "unetr":
        return nets.UNETR(in_channels=data.in_channels, out_channels=data.num_classes, img_size=roi, **kwargs)
    return nets.SwinUNETR(in_channels=data.in_channels, out_channels=data.num_classes, spatial_dims=3, **kwargs)
