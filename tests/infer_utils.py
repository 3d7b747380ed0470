"""Shared pieces of the ``medt3d infer`` tests (test_infer.py, test_infer_cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dicom_utils import rotation, write_dicom_series
from support import ThresholdNet, blob_volume, save, threshold_config

from medt3d.inference.batch import InferOptions, run_inference

QUIET = InferOptions(progress=False)


def run_threshold(inputs, out: Path, *overrides: str, options: InferOptions = QUIET, net=None) -> dict:
    return run_inference([str(i) for i in inputs], out, network=(net or ThresholdNet(), threshold_config(*overrides)),
                         options=options)



def write_scans(tmp_path: Path) -> dict[str, Path]:
    """A NIfTI (LPS), an NRRD and an oblique DICOM series, each holding a 1000 HU blob."""
    import SimpleITK as sitk

    data = tmp_path / "scans"
    data.mkdir()
    image, affine = blob_volume((20, 18, 10), (1.0, 1.2, 2.0), "LPS")
    nifti = save(data / "ct_a.nii.gz", image, affine)
    nrrd_img, _ = blob_volume((16, 20, 12), (0.9, 0.9, 1.5), "RAS")
    itk = sitk.GetImageFromArray(np.transpose(nrrd_img, (2, 1, 0)))
    itk.SetSpacing((0.9, 0.9, 1.5))
    nrrd = data / "ct_b.nrrd"
    sitk.WriteImage(itk, str(nrrd))
    dcm_img, _ = blob_volume((18, 16, 8), (1.1, 1.0, 2.5), rotation(10.0, 0.0, 20.0))
    dicom = data / "ct_c"
    write_dicom_series(dicom, dcm_img.astype(np.int16), (1.1, 1.0, 2.5), rotation(10.0, 0.0, 20.0), (0, 0, 0),
                       modality="CT")
    return {"nifti": nifti, "nrrd": nrrd, "dicom": dicom, "folder": data}
