"""Write small synthetic DICOM series with pydicom, for tests.

The writer works from first principles (DICOM attributes computed from spacing, direction and
origin), independent of ITK/SimpleITK, so that reader tests cannot pass through a shared
convention error. World coordinates here are DICOM's patient frame (LPS), as in ITK:
``direction`` columns are the world directions of the array axes x, y, z.

Example:
    >>> files = write_dicom_series(tmp_path / "s", vol, (0.7, 0.8, 2.5), rotation(20, 10, 5), (1, 2, 3))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

__all__ = ["lps_affine", "ras_affine", "rotation", "set_slice_size", "write_dicom_series"]


def rotation(ax_deg: float, ay_deg: float, az_deg: float) -> np.ndarray:
    """A proper 3x3 rotation (det +1) from angles about x, y and z, in degrees."""
    a, b, c = np.deg2rad([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def lps_affine(spacing: Sequence[float], direction: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    """4x4 voxel-to-LPS matrix of a grid."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=float) @ np.diag(np.asarray(spacing, dtype=float))
    affine[:3, 3] = origin
    return affine


def ras_affine(spacing: Sequence[float], direction: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    """4x4 voxel-to-RAS matrix of a grid (MONAI's and NIfTI's convention)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine(spacing, direction, origin)


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _slice_dataset(pixels: np.ndarray, position: np.ndarray, direction: np.ndarray, spacing: Sequence[float],
                   modality: str, sop_class: str, uids: tuple[str, str, str], instance: int,
                   rescale: tuple[float, float] | None) -> Dataset:
    """One slice's dataset; ``uids``: study, series and frame of reference; ``position``: LPS (homogeneous)."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.Modality = modality
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "synthetic"
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"synthetic {modality}"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [_ds(v) for v in position[:3]]
    ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # (between rows, between columns)
    ds.SliceThickness = _ds(spacing[2])
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if rescale is not None:
        ds.RescaleSlope = _ds(rescale[0])
        ds.RescaleIntercept = _ds(rescale[1])
    ds.PixelData = pixels.tobytes()
    return ds


def write_dicom_series(
    folder: str | Path,
    volume: np.ndarray,
    spacing: Sequence[float],
    direction: np.ndarray,
    origin: Sequence[float],
    shuffle: bool = False,
    series_uid: str | None = None,
    modality: str = "MR",
    skip_slices: Iterable[int] = (),
    seed: int = 0,
    prefix: str = "",
    rescale: tuple[float, float] | None = None,
) -> list[Path]:
    """Write ``volume`` (x, y, z integer array) as one single-frame DICOM file per z slice.

    Args:
        folder: where the files go (created; may already hold other series).
        volume: int16-range values, array axes x (columns), y (rows), z (slices).
        spacing: voxel size (x, y, z) in mm.
        direction: 3x3 matrix whose columns are the LPS directions of x, y and z.
        origin: LPS position of voxel (0, 0, 0) in mm.
        shuffle: random file names and InstanceNumbers, so neither gives the slice order.
        series_uid: SeriesInstanceUID (a fresh one when None).
        modality: ``MR`` or ``CT`` (sets the SOP class).
        skip_slices: z indices not written (to make a gap).
        seed: seed of the shuffle.
        prefix: file name prefix (to keep two series in one folder apart).
        rescale: (slope, intercept) written as RescaleSlope/RescaleIntercept (stored = (value - b) / m).

    Returns:
        The written files in z order (skipped slices left out).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (x, y, z), got shape {volume.shape}")
    spacing = [float(s) for s in spacing]
    direction = np.asarray(direction, dtype=float)
    affine = lps_affine(spacing, direction, origin)
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    nz = volume.shape[2]
    order = rng.permutation(nz) if shuffle else np.arange(nz)
    skip = set(int(k) for k in skip_slices)
    files: list[Path] = []
    for k in range(nz):
        if k in skip:
            continue
        stored = volume[:, :, k].astype(np.float64)
        if rescale is not None:
            stored = (stored - rescale[1]) / rescale[0]
        pixels = np.ascontiguousarray(np.rint(stored).astype(np.int16).T)  # rows = y, columns = x
        ds = _slice_dataset(pixels, affine @ [0, 0, k, 1], direction, spacing, modality, sop_class,
                            (study_uid, series_uid, frame_uid), int(order[k]) + 1, rescale)
        name = f"{prefix}{rng.integers(10**8):08d}.dcm" if shuffle else f"{prefix}slice_{k:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def set_slice_size(path: str | Path, rows: int, columns: int) -> None:
    """Rewrite one DICOM file with a different in-plane size (zeros), to make a mixed series."""
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = np.zeros((rows, columns), dtype=np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
