"""Voxel geometry from affines: the one place that computes a spacing (plain NumPy and nibabel)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["voxel_spacing"]


def voxel_spacing(affine: Any) -> list[float]:
    """Voxel size in mm along each array axis of a 4x4 voxel-to-world affine."""
    from nibabel.affines import voxel_sizes  # here, so that importing this module stays cheap

    return [float(v) for v in voxel_sizes(np.asarray(affine, dtype=np.float64))]
