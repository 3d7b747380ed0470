"""The NIfTI format (``.nii``, ``.nii.gz``): header by nibabel, voxels by :func:`medt3d.data.nifti.read_nifti`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import MetaTensor

from medt3d.data.readers.common import FileClaim, VolumeInfo, as_loaded
from medt3d.errors import InputError

__all__ = ["NIFTI", "NIFTI_SUFFIXES", "detect", "load", "read_header"]

NIFTI = "nifti"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def detect(path: Path) -> bool:
    """True for a file named ``*.nii`` or ``*.nii.gz`` (any case)."""
    return not path.is_dir() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _raw_pixdim_problem(path: Path, header: Any) -> str | None:
    """Why the voxel sizes stored in the file (before nibabel sets a 0 to 1) cannot give the affine, or None.

    nibabel reads a ``pixdim`` of 0 as 1 mm; the qform and the fallback affine are built from ``pixdim``,
    so a 0 there would silently become a 1 mm voxel (an sform does not use it).
    """
    import nibabel as nib

    if int(header["sform_code"]) > 0:
        return None
    with nib.openers.ImageOpener(str(path)) as handle:
        raw = type(header).from_fileobj(handle, check=False)
    ndim = min(int(raw["dim"][0]), 3)
    pixdim = np.asarray(raw["pixdim"][1:ndim + 1], dtype=np.float64)
    bad = [f"pixdim[{i + 1}] = {v:g}" for i, v in enumerate(pixdim) if not np.isfinite(v) or v == 0]
    if not bad:
        return None
    return (f"{path}: {', '.join(bad)}: the voxel size is unknown (nibabel would read it as 1 mm) and the file has "
            "no sform to place the voxels otherwise; set the true voxel size in the header and save it again")


def read_header(path: Path, series_uid: str | None = None) -> VolumeInfo:
    """Shape, voxel-to-RAS affine and the bytes the header claims, from the NIfTI-1 or NIfTI-2 header
    (``series_uid`` is ignored).

    Raises:
        ValueError: an unreadable header, or a voxel size of 0 that nothing else places, naming the file.
    """
    import nibabel as nib

    quiet = logging.getLogger("nibabel.global")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its messages ("setting 0 dims to 1") become the one error below
    try:
        img = nib.load(str(path))
        header = img.header
        shape, affine = tuple(int(v) for v in img.shape), np.asarray(img.affine, dtype=np.float64)
        problem = _raw_pixdim_problem(path, header)
        dtype = np.dtype(header.get_data_dtype())
        offset = int(header.get_data_offset())
    except Exception as err:  # nibabel raises many kinds; all mean an unreadable header
        raise InputError(f"cannot read NIfTI header of {path}: {type(err).__name__}: {err}; the file is not "
                         "NIfTI or is damaged: check the file or export it again") from None
    finally:
        quiet.setLevel(level)
    if problem:
        raise InputError(problem)
    if dtype.kind == "c":
        raise InputError(f"{path}: the voxels are complex ({dtype.name}); medt3d reads real intensities: save the "
                         "magnitude (numpy.abs) as the image")
    voxels = int(np.prod(shape, dtype=object)) if shape else 0
    what = f"{'x'.join(map(str, shape))} voxels of {dtype.name} from byte {offset}"
    claim = FileClaim(path, offset + voxels * dtype.itemsize, what, gzip=path.name.lower().endswith(".gz"))
    return VolumeInfo(path, NIFTI, shape, affine, claims=[claim])


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
        raise InputError(f"{path}: the file's voxels or affine disagree with its header; refusing a wrong geometry: "
                         "export the file again")
    numeric = {k: np.asarray(v) for k, v in dict(header).items() if np.asarray(v).dtype.kind in "biuf"}
    return as_loaded(array, affine, path, numeric)
