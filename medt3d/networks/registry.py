"""The one table of networks: MedT3D's size presets and the MONAI baselines.

Plain Python (no torch), so that the config's validation, the command line and the benchmarks can
read it without loading the networks themselves; the factory and MedT3D read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BASELINES", "BENCH_NAMES", "MEDT3D_PRESETS", "NETWORKS", "NORMS", "PRESETS", "MedT3DPreset"]


@dataclass(frozen=True)
class MedT3DPreset:
    """Size of a MedT3D network.

    Attributes:
        channels: width of each attention stage (stage ``s`` runs at ``1/(stem_stride * 2**s)``).
        blocks: gated axial blocks per stage.
        heads: attention heads (every width must be a multiple of it).
        span: clip of relative distances in the attention.
        stem_stride: downsampling of the convolutional stem (a power of two).
        local_patch: edge of the local branch's sub-volumes, at stage-0 resolution.
        full_res_channels: width of an optional full-resolution path (a 3x3x3 conv of the input,
            merged with the upsampled decoder and refined before the logits) that sharpens
            boundaries; 0 leaves it out (no full-resolution feature maps).
        stem_channels: widths of the stem levels below the attention (strides 2, 4, ...
            ``stem_stride / 2``); empty derives them by halving ``channels[0]`` per level (at least 8).
    """

    channels: tuple[int, ...]
    blocks: tuple[int, ...]
    heads: int
    span: int
    stem_stride: int
    local_patch: int
    full_res_channels: int = 0
    stem_channels: tuple[int, ...] = ()


#: The one table of preset sizes. ``tiny`` is for tests and the phantom demo, ``small`` is the
#: default (benchmarked in docs/benchmarks.md), ``base`` is the bigger option.
MEDT3D_PRESETS: dict[str, MedT3DPreset] = {
    "tiny": MedT3DPreset(channels=(32,), blocks=(1,), heads=2, span=4, stem_stride=4, local_patch=4),
    "small": MedT3DPreset(channels=(48, 96), blocks=(2, 2), heads=4, span=8, stem_stride=8, local_patch=4),
    "base": MedT3DPreset(channels=(48, 96, 192), blocks=(2, 2, 2), heads=4, span=12, stem_stride=4, local_patch=8),
}


#: MONAI baselines and their fixed hyperparameters (the sizes benchmarked in docs/benchmarks.md).
#: Every ``patch.roi_size`` edge must be a multiple of ``size_multiple`` and at least ``min_size``.
#: Instance norm needs more than one voxel at a bottleneck while training: UNet's is at 1/16 (so an
#: ROI of 16^3 fails; ``min_voxels_at_multiple`` checks it), SwinUNETR's at 1/32 (``min_size`` 64).
BASELINES: dict[str, dict[str, Any]] = {
    "unet": {
        "kwargs": {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2},
        "size_multiple": 16,
        "min_size": 16,
        "min_voxels_at_multiple": 2,
    },
    "unetr": {"kwargs": {"feature_size": 16}, "size_multiple": 16, "min_size": 16},
    "swinunetr": {"kwargs": {"feature_size": 24}, "size_multiple": 32, "min_size": 64},
}


#: Every ``network.name``: MedT3D and the MONAI baselines.
NETWORKS: tuple[str, ...] = ("medt3d", *BASELINES)
#: ``network.norm`` of MedT3D's convolutions: ``instance`` (statistics over the window's scan voxels) or
#: ``batch`` (over the training batch's scan voxels; at inference the running statistics of training, so
#: that the norms do not depend on the window; the attention still does). A per-voxel layer norm was tried
#: and did not learn (docs/benchmarks.md, "Where the window acts").
NORMS: tuple[str, ...] = ("instance", "batch")
#: Every ``network.preset`` of MedT3D.
PRESETS: tuple[str, ...] = tuple(MEDT3D_PRESETS)
#: Names the network benchmark measures: each MedT3D preset and each baseline.
BENCH_NAMES: tuple[str, ...] = (*(f"medt3d-{p}" for p in MEDT3D_PRESETS), *BASELINES)
