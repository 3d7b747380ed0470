"""Voxel geometry from affines: the one place that computes a spacing (plain NumPy and nibabel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["bounding_box", "flip_lps_ras", "orientation_transform", "reorient_array", "to_ras", "voxel_spacing"]

#: negates the first two world axes: LPS (DICOM, ITK, NRRD) <-> RAS (NIfTI, MONAI, medt3d)
_LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def flip_lps_ras(affine: Any) -> np.ndarray:
    """A 4x4 voxel-to-world affine moved between the LPS (DICOM, ITK, NRRD) and RAS (NIfTI, MONAI) frames.

    The flip negates the first two world axes; it is its own inverse, so this one function goes both ways.
    It is the only place that writes the flip.
    """
    return _LPS_RAS_FLIP @ np.asarray(affine, dtype=np.float64)


def voxel_spacing(affine: Any) -> list[float]:
    """Voxel size in mm along each array axis of a 4x4 voxel-to-world affine."""
    from nibabel.affines import voxel_sizes  # here, so that importing this module stays cheap

    return [float(v) for v in voxel_sizes(np.asarray(affine, dtype=np.float64))]


def orientation_transform(from_affine: Any, from_shape: Sequence[int], to_affine: Any, to_shape: Sequence[int],
                          atol: float) -> np.ndarray | None:
    """The axis permutation and flips that put a grid onto another grid with the same voxel centres.

    Two volumes stored in different axis orders or directions (a DICOM series read as LPS and its
    label saved as LAS) can describe the very same voxels in space; their affines then differ, but
    one array is a transposed and flipped copy of the other.

    Args:
        from_affine: 4x4 voxel-to-world affine of the volume to move.
        from_shape: its spatial shape.
        to_affine: the affine of the target grid.
        to_shape: the target's spatial shape.
        atol: tolerance in mm on the affines.

    Returns:
        A nibabel orientation transform for :func:`reorient_array` (identity rows when the grids are
        already equal), or ``None`` when the voxel centres differ.
    """
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    src, dst = np.asarray(from_affine, dtype=np.float64), np.asarray(to_affine, dtype=np.float64)
    transform = ornt_transform(io_orientation(src), io_orientation(dst))
    shape = tuple(int(n) for n in from_shape[:3])
    moved_shape = tuple(shape[int(axis)] for axis in np.argsort(transform[:, 0]))
    if moved_shape != tuple(int(n) for n in to_shape[:3]):
        return None
    moved_affine = src @ inv_ornt_aff(transform, shape)
    return transform if np.allclose(moved_affine, dst, atol=atol) else None


def reorient_array(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply an :func:`orientation_transform` to the three leading (spatial) axes of ``array``."""
    from nibabel.orientations import apply_orientation

    return np.ascontiguousarray(apply_orientation(array, transform))


def to_ras(array: np.ndarray, affine: Any) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (X, Y, Z) reordered and flipped into RAS axis order, and its spacing in that order (mm)."""
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    ras = reorient_array(array, ornt)
    spacing = voxel_spacing(affine)
    ras_spacing = np.empty(3)
    for axis, (target, _) in enumerate(ornt):
        ras_spacing[int(target)] = spacing[axis]
    return ras, ras_spacing


def bounding_box(mask: np.ndarray) -> list[list[int]] | None:
    """Inclusive voxel bounding box ``[[x0, x1], [y0, y1], [z0, z1]]`` of a 3-D mask; None when it is empty.

    Read from the mask's projections on each axis (no list of every voxel's coordinates).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append([int(hit[0]), int(hit[-1])])
    return box
