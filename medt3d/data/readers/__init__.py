"""Reading volumes with the right geometry: one module per input format behind one registry.

- :mod:`~medt3d.data.readers.nifti`: NIfTI (``.nii``, ``.nii.gz``);
- :mod:`~medt3d.data.readers.nrrd`: NRRD (``.nrrd``, ``.nhdr``), through MONAI's ``ITKReader``;
- :mod:`~medt3d.data.readers.dicom`: a folder holding one DICOM series; its headers are checked by
  :mod:`~medt3d.data.readers.dicom_series` (one series, no gaps, evenly spaced, gantry tilt corrected) and
  an enhanced multi-frame object is read by :mod:`~medt3d.data.readers.multiframe`;
- :mod:`~medt3d.data.readers.common`: what every reader shares (:class:`VolumeInfo`, :func:`check_claims`
  that every header passes, grid checks);
- :mod:`~medt3d.data.readers.registry`: the entries (:data:`FORMATS`), :func:`detect_kind`, :func:`read_header`;
- :mod:`~medt3d.data.readers.loading`: :func:`load_volume`, :func:`load_image`, :class:`LoadVolumed`,
  :func:`find_inputs`.

Every volume comes out as MONAI's ``LoadImage(image_only=True, ensure_channel_first=True)`` gives it: a
channel-first ``MetaTensor`` (C, X, Y, Z) whose affine maps voxels to RAS world millimetres.

Choosing one series from a DICOM folder that holds several: pass ``series_uid=`` to :func:`load_volume` /
:func:`check_dicom_series`, or put ``"series_uid": "<uid>"`` in a datalist case (it selects the image's
series; ``"<key>_series_uid"`` selects the series of any other key).
"""

from medt3d.data.readers.common import (
    GEOMETRY_ATOL_MM,
    VolumeInfo,
    align_to,
    as_loaded,
    check_claims,
    require_3d,
    same_grid,
)
from medt3d.data.readers.dicom import DICOM, DicomSeriesReader
from medt3d.data.readers.dicom_series import check_dicom_series, correct_tilt, is_dicom_file
from medt3d.data.readers.loading import LoadVolumed, find_inputs, image_files, load_image, load_volume
from medt3d.data.readers.nifti import NIFTI
from medt3d.data.readers.nrrd import NRRD
from medt3d.data.readers.registry import (
    FORMATS,
    KINDS,
    ReaderFormat,
    detect_kind,
    file_suffixes,
    read_header,
    strip_suffix,
)

__all__ = [
    "DICOM",
    "FORMATS",
    "GEOMETRY_ATOL_MM",
    "KINDS",
    "NIFTI",
    "NRRD",
    "DicomSeriesReader",
    "LoadVolumed",
    "ReaderFormat",
    "VolumeInfo",
    "align_to",
    "as_loaded",
    "check_claims",
    "check_dicom_series",
    "correct_tilt",
    "detect_kind",
    "file_suffixes",
    "find_inputs",
    "image_files",
    "is_dicom_file",
    "load_image",
    "load_volume",
    "read_header",
    "require_3d",
    "same_grid",
    "strip_suffix",
]
