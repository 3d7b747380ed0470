"""The NRRD format (``.nrrd``, ``.nhdr``): header by SimpleITK, voxels by MONAI's ``ITKReader``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ITKReader, MetaTensor

from medt3d.data.geometry import flip_lps_ras
from medt3d.data.readers.common import VolumeInfo, check_reader_affine, load_with_monai

__all__ = ["NRRD", "NRRD_SUFFIXES", "detect", "load", "read_header"]

NRRD = "nrrd"
NRRD_SUFFIXES = (".nrrd", ".nhdr")


def detect(path: Path) -> bool:
    """True for a file named ``*.nrrd`` or ``*.nhdr`` (any case)."""
    return not path.is_dir() and path.name.lower().endswith(NRRD_SUFFIXES)


def read_header(path: Path, series_uid: str | None = None) -> VolumeInfo:
    """Shape and voxel-to-RAS affine from the NRRD header (``series_uid`` is ignored).

    A vector image's components are a 4th entry of the shape.

    Raises:
        ValueError: an unreadable header, naming the file.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise ValueError(f"cannot read NRRD header of {path}: {first}") from None
    dim = reader.GetDimension()
    shape = tuple(int(v) for v in reader.GetSize())
    if reader.GetNumberOfComponents() > 1:
        shape = (*shape, int(reader.GetNumberOfComponents()))
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)
    origin = np.asarray(reader.GetOrigin(), dtype=np.float64)
    sr = min(dim, 3)
    lps = np.eye(4)
    lps[:sr, :sr] = direction[:sr, :sr] @ np.diag(spacing[:sr])
    lps[:sr, 3] = origin[:sr]
    return VolumeInfo(path, NRRD, shape, flip_lps_ras(lps))


def load(info: VolumeInfo, dtype: Any) -> MetaTensor:
    """The voxels as a (C, X, Y, Z) ``MetaTensor`` in RAS.

    Raises:
        ValueError: the file is unreadable, or its shape or affine disagree with the header.
    """
    img = load_with_monai(info, ITKReader(), dtype)
    check_reader_affine(img, info)
    return img
