"""The NIfTI format (``.nii``, ``.nii.gz``): header by nibabel, voxels by :func:`medt3d.data.nifti.read_nifti`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from monai.data import MetaTensor

from medt3d.data.readers.common import VolumeInfo, as_loaded

__all__ = ["NIFTI", "NIFTI_SUFFIXES", "detect", "load", "read_header"]

NIFTI = "nifti"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def detect(path: Path) -> bool:
    """True for a file named ``*.nii`` or ``*.nii.gz`` (any case)."""
    return not path.is_dir() and path.name.lower().endswith(NIFTI_SUFFIXES)


def read_header(path: Path, series_uid: str | None = None) -> VolumeInfo:
    """Shape and voxel-to-RAS affine from the NIfTI header (``series_uid`` is ignored).

    Raises:
        ValueError: an unreadable header, naming the file.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape, affine = tuple(int(v) for v in img.shape), np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # nibabel raises many kinds; all mean an unreadable header
        raise ValueError(f"cannot read NIfTI header of {path}: {type(err).__name__}: {err}") from None
    return VolumeInfo(path, NIFTI, shape, affine)


def load(info: VolumeInfo, dtype: Any) -> MetaTensor:
    """The voxels as a (C, X, Y, Z) ``MetaTensor``, read without MONAI's reader (its copy to C order took
    half the time, see :func:`medt3d.data.nifti.read_nifti`); text header fields are left out, as MONAI's
    reader does.

    Raises:
        ValueError: the voxels or affine disagree with the header, or the file is unreadable.
    """
    from medt3d.data.nifti import read_nifti

    path = info.path
    array, affine, header = read_nifti(path, dtype)
    if tuple(array.shape[1:]) != tuple(info.shape[:3]) or not np.allclose(affine, info.affine, atol=1e-6):
        raise ValueError(f"{path}: the file's voxels or affine disagree with its header; refusing a wrong geometry")
    numeric = {k: np.asarray(v) for k, v in dict(header).items() if np.asarray(v).dtype.kind in "biuf"}
    return as_loaded(array, affine, path, numeric)
