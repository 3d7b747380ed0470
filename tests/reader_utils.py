"""Small volumes and files for the reader tests (test_io.py, test_loading.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from dicom_utils import ras_affine, rotation

SHAPE = (12, 10, 7)
SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-30.0, 12.5, 40.0)


def volume(shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, size=shape).astype(np.int16)


def oblique_ras() -> np.ndarray:
    return ras_affine(SPACING, rotation(20, -10, 35), ORIGIN)


def write_nifti_file(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    img = nib.Nifti1Image(data, oblique_ras() if affine is None else affine)
    nib.save(img, str(path))
    return path


def write_nrrd_file(path: Path, data_xyz: np.ndarray, direction: np.ndarray) -> Path:
    img = sitk.GetImageFromArray(np.transpose(data_xyz, (2, 1, 0)))
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(img, str(path))
    return path
