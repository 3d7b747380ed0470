"""Writing volumes as NIfTI: the one writer of every NIfTI file medt3d makes (labels, probabilities, phantoms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medt3d.io_utils import atomic_path

__all__ = ["save_nifti", "write_nifti"]


def save_nifti(volume: Any, affine: Any, path: str | Path, dtype: Any = np.uint8) -> None:
    """Write a NIfTI file directly (no temporary file); see :func:`write_nifti`."""
    array = np.asarray(volume.detach().cpu() if hasattr(volume, "detach") else volume)  # a tensor, or an array
    if array.ndim == 4:  # channel first: one channel is dropped, several go last as NIfTI expects
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    elif array.ndim != 3:
        raise ValueError(f"{path}: expected a (X, Y, Z) or (C, X, Y, Z) volume, got shape {array.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(array if dtype is None else array.astype(dtype, copy=False), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def write_nifti(volume: Any, affine: Any, path: str | Path, dtype: Any = np.uint8) -> Path:
    """Write a (X, Y, Z), (1, X, Y, Z) or (C, X, Y, Z) volume as NIfTI with ``affine`` (RAS), atomically.

    Args:
        volume: a NumPy array or tensor (a MetaTensor's own affine is not used: pass it).
        affine: the 4x4 voxel-to-RAS matrix, written as both qform and sform.
        path: the file to write (``.nii`` or ``.nii.gz``); it appears whole or not at all.
        dtype: stored data type; ``None`` keeps the array's.
    """
    with atomic_path(path) as tmp:
        save_nifti(volume, affine, tmp, dtype)
    return Path(path)
