"""The DICOM series format: a folder holding one series (classic slices or one enhanced multi-frame file).

The headers are checked by :mod:`medt3d.data.readers.dicom_series`; the voxels of a classic series are
read by :class:`DicomSeriesReader` (ITK, given exactly the checked files in slice order), those of an
enhanced object by :func:`medt3d.data.readers.multiframe.read_multiframe`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import ITKReader, MetaTensor

from medt3d.data.readers.common import (
    VolumeInfo,
    _short,
    check_reader_affine,
    load_with_monai,
)
from medt3d.data.readers.dicom_series import check_dicom_series, correct_tilt, dicom_files, scan_series
from medt3d.errors import InputError

__all__ = ["DICOM", "DicomSeriesReader", "detect", "load", "read_header"]

DICOM = "dicom"


def detect(path: Path) -> bool:
    """True when ``path`` is a folder holding DICOM files (directly, not in subfolders)."""
    return path.is_dir() and bool(dicom_files(path))


def read_header(path: Path, series_uid: str | None = None) -> VolumeInfo:
    """The checked geometry of the series in the folder ``path`` (headers only).

    Raises:
        ValueError: the folder holds several series and ``series_uid`` names none, or the slices do not
            stack into one regular volume (see :func:`check_dicom_series`).
    """
    series = scan_series(path, series_uid)
    return VolumeInfo(path, DICOM, series.shape, series.affine, series.files, series.uid, series.multiframe,
                      series.tilt_shifts, claims=series.claims)


class DicomSeriesReader(ITKReader):
    """MONAI ``ITKReader`` for one validated DICOM series.

    MONAI's ``ITKReader`` given a folder silently reads the first of several series, groups files by
    more than the SeriesInstanceUID, and lets ITK interpolate over missing slices with only a warning.
    This reader first runs :func:`check_dicom_series` and hands ITK exactly that series' files,
    sorted along the slice normal (the order ITK's series reader assumes).

    Args:
        series_uid: the series to read when the folder holds several.
        kwargs: passed to ``ITKReader`` (e.g. ``affine_lps_to_ras``).
    """

    def __init__(self, series_uid: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Accept folders only."""
        return all(Path(f).is_dir() for f in ((filename,) if isinstance(filename, (str, os.PathLike)) else filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Read one series folder (validated first) as a 3-D ITK image."""
        import itk

        if not isinstance(data, (str, os.PathLike)):
            if len(data) != 1:
                raise InputError(f"DicomSeriesReader reads one series folder at a time, got {data!r}; pass one folder")
            data = data[0]
        files = [str(f) for f in check_dicom_series(data, self.series_uid)]
        kwargs_ = {**self.kwargs, **kwargs}
        return itk.imread(files if len(files) > 1 else files[0], **kwargs_)



def _raise_bad_dicom_pixels(folder: Path, files: list[Path], err: BaseException) -> None:
    """After ITK failed on a series, find the files whose pixel data pydicom cannot decode, and name them."""
    import pydicom

    bad = []
    for path in files:
        try:
            pydicom.dcmread(path).pixel_array  # noqa: B018 (decoding is the check)
        except Exception as file_err:  # any decoding failure marks the file as bad
            bad.append(f"{path.name} ({_short(file_err)})")
    if bad:
        raise InputError(
            f"cannot read the DICOM series in {folder}: {len(bad)} file(s) with corrupt or truncated pixel data: "
            + "; ".join(bad[:10]) + "; copy or export the series again"
        ) from None
    raise InputError(f"cannot read the DICOM series in {folder}: {_short(err)}; check that the folder holds one "
                     "whole series, or export it again") from None


def load(info: VolumeInfo, dtype: Any) -> MetaTensor:
    """The voxels of a checked series (:func:`read_header`) as a (1, X, Y, Z) ``MetaTensor`` in RAS.

    A gantry-tilted series is moved onto the regular grid its header describes.

    Raises:
        ValueError: unreadable or corrupt pixel data (naming the files), or a geometry that disagrees
            with the header's.
    """
    if info.multiframe:
        from medt3d.data.readers.multiframe import read_multiframe

        return read_multiframe(info, dtype)

    def name_bad_files(err: BaseException) -> None:
        _raise_bad_dicom_pixels(info.path, info.files, err)

    img = load_with_monai(info, DicomSeriesReader(series_uid=info.series_uid), dtype, on_failure=name_bad_files)
    if info.tilt_shifts is not None:  # ITK stacks the slices as given: move them onto the corrected grid
        array = correct_tilt(img[0].numpy(), info.tilt_shifts)
        img = MetaTensor(torch.from_numpy(array[None]), affine=torch.as_tensor(info.affine, dtype=torch.float64),
                         meta={**{k: v for k, v in img.meta.items() if k != "affine"},
                               "original_affine": torch.as_tensor(info.affine, dtype=torch.float64)})
    else:
        check_reader_affine(img, info)
    return img
