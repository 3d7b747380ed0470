"""Reading volumes with the right geometry: input kinds, DICOM series checks, loading.

Every volume is read through MONAI's ``LoadImage`` with the reader picked by input kind:

- NIfTI (``.nii``, ``.nii.gz``): ``NibabelReader``;
- NRRD (``.nrrd``, ``.nhdr``): ``ITKReader``;
- DICOM series (a folder of DICOM files): :class:`DicomSeriesReader`, an ``ITKReader`` that reads
  exactly the files :func:`check_dicom_series` validated, in order along the slice normal.

The result is what ``LoadImage(image_only=True, ensure_channel_first=True)`` gives: a channel-first
``MetaTensor`` (C, X, Y, Z) whose affine maps voxels to RAS world millimetres, so later MONAI
transforms (``Orientationd``, ``Spacingd``, ``Invertd``, ...) work unchanged.

Choosing one series from a DICOM folder that holds several: pass ``series_uid=`` to
:func:`load_volume` / :func:`check_dicom_series`, or put ``"series_uid": "<uid>"`` in a datalist case
(it selects the image's series; ``"<key>_series_uid"`` selects the series of any other key).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import ITKReader, MetaTensor, NibabelReader
from monai.transforms import LoadImage, MapTransform

from medt3d.data.geometry import orientation_transform, reorient_array, voxel_spacing

__all__ = [
    "DICOM",
    "GEOMETRY_ATOL_MM",
    "KINDS",
    "NIFTI",
    "NRRD",
    "DicomSeriesReader",
    "LoadVolumed",
    "VolumeInfo",
    "check_dicom_series",
    "correct_tilt",
    "detect_kind",
    "find_inputs",
    "image_files",
    "is_dicom_file",
    "load_image",
    "load_volume",
    "read_header",
    "require_3d",
    "same_grid",
    "align_to",
    "as_loaded",
    "strip_suffix",
]

NIFTI = "nifti"
NRRD = "nrrd"
DICOM = "dicom"
KINDS = (NIFTI, NRRD, DICOM)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
#: suffixes of files that are DICOM even without the 128-byte preamble + "DICM" marker
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")

#: image and label grids agree when every affine entry differs by at most this (mm).
GEOMETRY_ATOL_MM = 1e-3
#: two DICOM slices closer than this along the normal share one position (mm).
SLICE_DUPLICATE_ATOL_MM = 1e-3
#: a step longer than this many median steps is a gap (missing slices).
SLICE_GAP_RATIO = 1.5
#: slices are evenly spaced when each lies within this fraction of a step of an even grid from first to
#: last (ITK reads the series onto that grid); tolerant of positions rounded to 0.1 mm in the headers.
SLICE_GRID_RTOL = 0.1
#: a DICOM series is sheared (gantry tilt) when consecutive positions leave the normal by more than this.
SHEAR_ATOL_MM = 1e-2

_SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or a folder holding one DICOM series"
_SERIES_HOWTO = (
    'Pick one with series_uid=... (a case of a JSON datalist takes "series_uid": "<uid>"), '
    "or move each series into its own folder"
)
# DICOM header tags read when checking a series (pixels are never read at that stage).
logger = logging.getLogger("medt3d.data.io")
#: a slice whose plane is this far from the series' (or of another size) is a scout, left out
SCOUT_MIN_ANGLE_DEG = 10.0
#: warnings already given (:func:`_warn_once`)
_WARNED: set[str] = set()

_DICOM_TAGS = [
    "SOPClassUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "RescaleSlope",
    "RescaleIntercept",
]
#: modalities whose stored values mean nothing without RescaleSlope and RescaleIntercept (type 1 there)
_RESCALED_MODALITIES = ("CT", "PT")
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image


# ----------------------------------------------------------------------------------------------
# input kinds


def strip_suffix(path: str | Path) -> str:
    """File name without its image suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``); folder names unchanged."""
    name = Path(path).name
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES + NRRD_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` is a file with the DICOM marker, or a DICOM-named file (``.dcm``, ``.ima``)."""
    path = Path(path)
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _dicom_files(folder: Path) -> list[Path]:
    """DICOM files directly inside ``folder`` (not recursive), sorted by name."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise ValueError(f"cannot list folder {folder}: {err.strerror or err}") from None
    return [p for p in entries if is_dicom_file(p)]


def detect_kind(path: str | Path) -> str:
    """Say what ``path`` holds: ``"nifti"``, ``"nrrd"`` or ``"dicom"`` (a folder of DICOM files).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is none of the supported kinds (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_dir():
        if _dicom_files(path):
            return DICOM
        raise ValueError(f"{path} is a folder without DICOM files; expected {_SUPPORTED}")
    lower = path.name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return NIFTI
    if lower.endswith(NRRD_SUFFIXES):
        return NRRD
    if is_dicom_file(path):
        raise ValueError(
            f"{path} is a single DICOM file; give the folder that holds its whole series ({path.parent})"
        )
    raise ValueError(f"unsupported input {path}: expected {_SUPPORTED}")


# ----------------------------------------------------------------------------------------------
# DICOM series


@dataclass
class _Slice:
    path: Path
    rows: int | None
    columns: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: np.ndarray | None
    frames: int


@dataclass
class _Series:
    uid: str
    files: list[Path]
    affine: np.ndarray  # RAS
    shape: tuple[int, int, int]
    multiframe: bool = False
    tilt_shifts: np.ndarray | None = None


def _floats(value: Any, count: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (count,) and np.all(np.isfinite(arr)) else None


def _read_dicom_headers(folder: Path) -> tuple[dict[str, list[tuple[Path, Any]]], list[str]]:
    """Read the headers of every DICOM image in ``folder``, grouped by SeriesInstanceUID."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    problems: list[str] = []
    for path in _dicom_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_DICOM_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as err:
            problems.append(f"{path}: unreadable DICOM header ({type(err).__name__}: {err})")
            continue
        if str(ds.get("SOPClassUID", "")) == _MEDIA_STORAGE_DIRECTORY or "Rows" not in ds:
            continue  # DICOMDIR, structured reports, ...: not image slices
        groups[str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>"))].append((path, ds))
    return groups, problems


def _describe_series(uid: str, members: list[tuple[Path, Any]]) -> str:
    ds = members[0][1]
    parts = [f"{len(members)} file(s)"]
    for tag in ("Modality", "SeriesNumber", "SeriesDescription"):
        value = ds.get(tag)
        if value not in (None, ""):
            parts.append(f"{tag} {value}")
    return f"{uid} ({', '.join(parts)})"


def _to_slice(path: Path, ds: Any) -> _Slice:
    frames = ds.get("NumberOfFrames")
    try:
        frames_n = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        frames_n = 1
    return _Slice(
        path=path,
        rows=int(ds.Rows) if ds.get("Rows") is not None else None,
        columns=int(ds.Columns) if ds.get("Columns") is not None else None,
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        frames=frames_n,
    )


def _group_report(values: dict[Any, list[Path]], what: str) -> str:
    parts = [f"{what} {key}: {len(paths)} file(s), e.g. {paths[0].name}" for key, paths in values.items()]
    return "; ".join(parts)


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning once per process (a series is scanned by several steps)."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def _normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / max(float(np.linalg.norm(normal)), 1e-12)


def _drop_scouts(slices: list[_Slice], where: str) -> list[_Slice]:
    """Leave out a minority of slices of another size or plane (scouts, localizers), with a warning.

    When more than half of the slices share one size and orientation, and every other slice has
    another size or a plane more than :data:`SCOUT_MIN_ANGLE_DEG` away, the others are dropped with
    a warning naming them. Otherwise (e.g. one slice tilted by a degree) the slices are returned
    unchanged, for the checks to report.
    """
    if any(s.orientation is None for s in slices):
        return slices
    groups: dict[tuple, list[_Slice]] = defaultdict(list)
    for s in slices:
        groups[(s.rows, s.columns, _fmt(np.round(s.orientation, 3)))].append(s)
    if len(groups) < 2:
        return slices
    (rows, columns, orientation), kept = max(groups.items(), key=lambda item: len(item[1]))
    if 2 * len(kept) <= len(slices):
        return slices
    kept_ids = {id(s) for s in kept}
    others = [s for s in slices if id(s) not in kept_ids]
    normal = _normal(kept[0].orientation)
    min_cos = np.cos(np.deg2rad(SCOUT_MIN_ANGLE_DEG))
    if any((s.rows, s.columns) == (rows, columns) and abs(float(_normal(s.orientation) @ normal)) > min_cos
           for s in others):
        return slices
    dropped = sorted(s.path.name for s in others)
    _warn_once(f"{where}: left out {len(dropped)} slice(s) whose size or plane differs from the other "
               f"{len(kept)} ({rows}x{columns}, orientation {orientation}), probably scouts/localizers: "
               f"{', '.join(dropped[:10])}{', ...' if len(dropped) > 10 else ''}")
    return kept


def as_loaded(array: np.ndarray | torch.Tensor, affine: Any, path: str | Path,
              header: dict[str, Any] | None = None) -> MetaTensor:
    """A (C, X, Y, Z) array and its voxel-to-RAS affine as the MetaTensor MONAI's ``LoadImage`` gives.

    The metadata the inference pipeline reads back are set: ``affine``, ``original_affine`` and
    ``spatial_shape`` (the scan's grid, for the inversion), ``space``, ``filename_or_obj``.
    """
    ras = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    meta = {**(header or {}), "filename_or_obj": str(path), "original_affine": ras.numpy().copy(), "space": "RAS",
            "spatial_shape": np.asarray(array.shape[1:]), "original_channel_dim": float("nan") if array.shape[0] == 1
            else -1}
    return MetaTensor(torch.as_tensor(array), affine=ras, meta=meta)


def _grid_problem(path_a: Any, a: MetaTensor, path_b: Any, b: MetaTensor) -> str | None:
    """:func:`same_grid` of two loaded volumes."""
    return same_grid(VolumeInfo(Path(str(path_a)), "", tuple(a.shape[1:]), np.asarray(a.affine)),
                     VolumeInfo(Path(str(path_b)), "", tuple(b.shape[1:]), np.asarray(b.affine)))


def _gantry_tilt(slices: list[_Slice], off_normal: np.ndarray, step: float, where: str) -> np.ndarray:
    """Per-slice in-plane shifts (x, y) in voxels that put a gantry-tilted series onto a regular grid.

    With a tilted gantry the slices step along the table, not along their normal: slice ``k`` is
    ``k`` times a constant in-plane offset away from the stack. Moving each slice back by its offset
    (as dcm2niix does) gives a regular grid along the true slice normal. An offset that does not
    grow evenly with the slice index is no tilt, and is refused.
    """
    n = len(slices)
    per_slice = off_normal[-1] / (n - 1)
    uneven = np.linalg.norm(off_normal - np.outer(np.arange(n), per_slice), axis=1)
    if uneven.max() > SHEAR_ATOL_MM:
        worst = int(np.argmax(uneven))
        raise ValueError(
            f"{where}: slice positions are not stacked along the slice normal, and not as a gantry tilt either "
            f"({slices[worst].path.name} is {uneven[worst]:.3f} mm off an even tilt); resample it first")
    row_cos, col_cos = slices[0].orientation[:3], slices[0].orientation[3:]
    spacing_rows, spacing_columns = slices[0].pixel_spacing
    shift = np.array([per_slice @ row_cos / spacing_columns, per_slice @ col_cos / spacing_rows])
    angle = float(np.degrees(np.arctan2(np.linalg.norm(per_slice), step)))
    _warn_once(f"{where}: gantry tilt of {angle:.2f} degrees: the slices are moved onto a regular grid along their "
               f"normal (as dcm2niix does; linear interpolation, up to {np.abs(shift).max() * (n - 1):.1f} voxels "
               "in-plane); labels are written on that corrected grid")
    return np.outer(np.arange(n), shift)


def correct_tilt(array: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Move each slice ``array[:, :, k]`` by ``shifts[k]`` voxels (x, y), linearly; edges take the lowest value."""
    from scipy.ndimage import shift as shift_image

    out = np.empty_like(array)
    fill = float(array.min())
    for k in range(array.shape[2]):
        out[:, :, k] = shift_image(array[:, :, k], shifts[k], order=1, mode="constant", cval=fill)
    return out


def _scan_series(folder: str | Path, series_uid: str | None = None) -> _Series:
    """Validate one DICOM series in ``folder`` and compute its geometry from the headers."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; a DICOM series is read from the folder holding its files")
    groups, problems = _read_dicom_headers(folder)
    if not groups:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise ValueError(f"{folder}: no DICOM image files found{detail}")
    if series_uid is not None:
        if series_uid not in groups:
            listing = "; ".join(_describe_series(uid, m) for uid, m in sorted(groups.items()))
            raise ValueError(f"{folder}: no series with SeriesInstanceUID {series_uid}; the folder holds: {listing}")
        uid = series_uid
    elif len(groups) > 1:
        listing = "; ".join(_describe_series(uid, m) for uid, m in sorted(groups.items()))
        raise ValueError(f"{folder} holds {len(groups)} DICOM series: {listing}. {_SERIES_HOWTO}")
    else:
        uid = next(iter(groups))
    slices = [_to_slice(path, ds) for path, ds in groups[uid]]
    where = f"{folder} (series {uid})"
    for tag in ("RescaleSlope", "RescaleIntercept"):
        single = [(p, ds) for p, ds in groups[uid] if int(ds.get("NumberOfFrames") or 1) == 1]
        present = [(p.name, ds.get(tag)) for p, ds in single if tag in ds]
        bad = [name for name, value in present if _floats([value], 1) is None]
        if bad:
            problems.append(f"{where}: {len(bad)} file(s) have an empty or invalid {tag}, e.g. {', '.join(bad[:5])}; "
                            "without it the stored values cannot be turned into HU or activity: restore it")
        elif single and len(present) < len(single) and str(single[0][1].get("Modality", "")) in _RESCALED_MODALITIES:
            _warn_once(f"{where}: {len(single) - len(present)} CT/PET file(s) have no {tag} (type 1 there); "
                       f"read as {1 if tag == 'RescaleSlope' else 0}: check that the values are HU or activity")
    slices = _drop_scouts(slices, where)

    # 1) one enhanced multi-frame file holds the whole volume; else every slice is a single frame
    multi = [s.path for s in slices if s.frames > 1]
    if multi:
        if len(slices) > 1:
            raise ValueError(f"{where}: {len(slices)} files of which {len(multi)} multi-frame "
                             f"({', '.join(p.name for p in multi[:5])}); an enhanced series is one multi-frame "
                             "file: put each in its own folder")
        from medt3d.data.multiframe import multiframe_series

        return multiframe_series(multi[0], uid, where)
    return _stack_series(slices, uid, where, problems)


def _stack_series(slices: list[_Slice], uid: str, where: str, problems: list[str] | None = None) -> _Series:
    """Check that ``slices`` (single-frame files, or the frames of one enhanced file) stack into one regular
    volume, and give its geometry; the checks are the same for both."""
    problems = list(problems or [])
    for attr, tag in (("position", "ImagePositionPatient"), ("orientation", "ImageOrientationPatient"),
                      ("pixel_spacing", "PixelSpacing")):
        missing = [s.path.name for s in slices if getattr(s, attr) is None]
        if missing:
            problems.append(f"{where}: {len(missing)} file(s) lack a valid {tag}, e.g. {', '.join(missing[:5])}")
    # 2) one in-plane grid
    sizes: dict[Any, list[Path]] = defaultdict(list)
    for s in slices:
        sizes[f"{s.rows}x{s.columns}"].append(s.path)
    if len(sizes) > 1:
        problems.append(f"{where}: slices differ in size (rows x columns): {_group_report(sizes, 'size')}")
    if problems:
        raise ValueError("; ".join(problems))
    orientations: dict[Any, list[Path]] = defaultdict(list)
    spacings: dict[Any, list[Path]] = defaultdict(list)
    for s in slices:
        orientations[_fmt(np.round(s.orientation, 4))].append(s.path)  # plain numbers in messages, not reprs
        spacings[_fmt(np.round(s.pixel_spacing, 4))].append(s.path)
    if len(orientations) > 1:
        problems.append(f"{where}: slices differ in ImageOrientationPatient: {_group_report(orientations, 'orientation')}")
    if len(spacings) > 1:
        problems.append(f"{where}: slices differ in PixelSpacing: {_group_report(spacings, 'spacing')}")
    if problems:
        raise ValueError("; ".join(problems))

    # 3) positions along the slice normal: distinct, evenly spaced; a shear is a gantry tilt, corrected
    tilt_shifts = None
    row_cos, col_cos = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row_cos, col_cos)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise ValueError(f"{where}: ImageOrientationPatient {slices[0].orientation.tolist()} is not two unit vectors")
    normal = normal / np.linalg.norm(normal)
    slices.sort(key=lambda s: float(s.position @ normal))
    along = np.array([float(s.position @ normal) for s in slices])
    if len(slices) > 1:
        steps = np.diff(along)
        duplicates = [
            f"{slices[i].path.name} and {slices[i + 1].path.name} at {along[i]:.3f} mm"
            for i in np.flatnonzero(steps <= SLICE_DUPLICATE_ATOL_MM)
        ]
        if duplicates:
            raise ValueError(
                f"{where}: several slices share one position along the slice normal ({'; '.join(duplicates[:5])}); "
                "the series may hold several echoes, phases or time points: put each in its own folder"
            )
        median = float(np.median(steps))
        gaps = [
            f"between slice {i} ({slices[i].path.name}, at {along[i]:.3f} mm) and slice {i + 1} "
            f"({slices[i + 1].path.name}, at {along[i + 1]:.3f} mm) the step is {steps[i]:.3f} mm, "
            f"expected {median:.3f} mm (about {max(1, round(steps[i] / median) - 1)} slice(s) missing)"
            for i in np.flatnonzero(steps > SLICE_GAP_RATIO * median)
        ]
        if gaps:
            raise ValueError(f"{where}: missing slice(s) along the slice normal: {'; '.join(gaps)}")
        # ITK's series reader puts the slices on an even grid from the first to the last one
        step = float(along[-1] - along[0]) / (len(along) - 1)
        off_grid = along - (along[0] + step * np.arange(len(along)))
        worst = int(np.argmax(np.abs(off_grid)))
        if abs(off_grid[worst]) > SLICE_GRID_RTOL * step:
            raise ValueError(
                f"{where}: uneven slice spacing along the slice normal (steps from {steps.min():.3f} to "
                f"{steps.max():.3f} mm): slice {worst} ({slices[worst].path.name}, at {along[worst]:.3f} mm) "
                f"is {off_grid[worst]:+.3f} mm off an even grid of {step:.3f} mm steps"
            )
        offsets = np.stack([s.position for s in slices]) - slices[0].position
        off_normal = offsets - np.outer(offsets @ normal, normal)
        worst = int(np.argmax(np.linalg.norm(off_normal, axis=1)))
        if np.linalg.norm(off_normal[worst]) > SHEAR_ATOL_MM:
            tilt_shifts = _gantry_tilt(slices, off_normal, step, where)
    else:
        step = 1.0  # a single slice: the thickness does not matter, the volume is rejected as 2-D
    if len(slices) == 2:
        _warn_once(f"{where}: the series has only 2 slices; a 3-D network sees almost no context along the "
                   "slice axis (is this a localizer or a partial series?)")

    # DICOM PixelSpacing is (between rows, between columns): x (columns) runs along the row cosine.
    lps = np.eye(4)
    lps[:3, 0] = row_cos * slices[0].pixel_spacing[1]
    lps[:3, 1] = col_cos * slices[0].pixel_spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = slices[0].position
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return _Series(uid=uid, files=[s.path for s in slices], affine=ras,
                   shape=(int(slices[0].columns), int(slices[0].rows), len(slices)), tilt_shifts=tilt_shifts)


def check_dicom_series(folder: str | Path, series_uid: str | None = None) -> list[Path]:
    """Validate the DICOM series in ``folder`` and return its files ordered along the slice normal.

    Checks: the folder holds one series (or ``series_uid`` names one of them); every slice has the
    same rows/columns, orientation and pixel spacing; slice positions are distinct, evenly spaced
    along the normal (a gap is reported with its positions and slice indices) and not sheared.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: any check fails; the message names the folder, the files and the problem. With
            several series it lists their SeriesInstanceUIDs and how to pick one.
    """
    return _scan_series(folder, series_uid).files


# ----------------------------------------------------------------------------------------------
# headers


@dataclass
class VolumeInfo:
    """What a volume's header says, read without loading its voxels.

    Attributes:
        path: the file or DICOM folder.
        kind: ``nifti``, ``nrrd`` or ``dicom``.
        shape: the full array shape (spatial first; a 4th entry for 4-D files).
        affine: 4x4 voxel-to-world matrix in RAS millimetres (MONAI's convention).
        files: for a DICOM series, its files in slice order.
        series_uid: for a DICOM series, its SeriesInstanceUID.
        multiframe: the series is one enhanced (multi-frame) DICOM file.
        tilt_shifts: for a gantry-tilted series, each slice's in-plane shift (x, y) in voxels onto
            the regular grid that ``affine`` describes (see :func:`correct_tilt`); None otherwise.
    """

    path: Path
    kind: str
    shape: tuple[int, ...]
    affine: np.ndarray
    files: list[Path] = field(default_factory=list)
    series_uid: str | None = None
    multiframe: bool = False
    tilt_shifts: np.ndarray | None = None

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial axis."""
        return tuple(voxel_spacing(self.affine))


def _lps_to_ras(affine: np.ndarray) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def read_header(path: str | Path, series_uid: str | None = None) -> VolumeInfo:
    """Read shape and geometry of a volume from its header only (cheap).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported kind, or an unreadable header (the message names the file).
    """
    path = Path(path)
    kind = detect_kind(path)
    if kind == DICOM:
        series = _scan_series(path, series_uid)
        return VolumeInfo(path, kind, series.shape, series.affine, series.files, series.uid, series.multiframe,
                          series.tilt_shifts)
    if kind == NIFTI:
        import nibabel as nib

        try:
            img = nib.load(str(path))
            shape, affine = tuple(int(v) for v in img.shape), np.asarray(img.affine, dtype=np.float64)
        except Exception as err:  # nibabel raises many kinds; all mean an unreadable header
            raise ValueError(f"cannot read NIfTI header of {path}: {type(err).__name__}: {err}") from None
        return VolumeInfo(path, kind, shape, affine)
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
    return VolumeInfo(path, kind, shape, _lps_to_ras(lps))


def require_3d(info: VolumeInfo, channels: int = 1) -> None:
    """Raise a ValueError naming the file unless ``info`` describes one 3-D volume.

    A 4-D image with one volume passes; so does one with ``channels`` volumes when ``channels`` > 1
    (the channels of a multi-channel case stored in one file).
    """
    shape = info.shape
    text = "x".join(str(v) for v in shape)
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise ValueError(
            f"{info.path} is a 2-D image (shape {text}); medt3d segments 3-D volumes with at least 2 voxels "
            "along each axis"
        )
    if len(shape) == 4 and channels > 1 and shape[3] == channels:
        return
    if len(shape) > 4 or (len(shape) == 4 and shape[3] != 1):
        expected = (f"one 3-D volume per file, or {channels} (data.in_channels) in a 4-D file" if channels > 1
                    else "one 3-D volume per file")
        raise ValueError(
            f"{info.path} is a {len(shape)}-D image (shape {text}); medt3d reads {expected}: split the extra "
            "dimension(s) into separate files (several channels: list one file per channel)"
        )


def same_grid(a: VolumeInfo, b: VolumeInfo, atol: float = GEOMETRY_ATOL_MM) -> str | None:
    """Describe how ``a`` and ``b`` differ in their voxel centres, or return None when they agree.

    Volumes stored in another axis order or direction over the same voxels in space (a DICOM series
    read as LPS and its label saved as LAS) agree: :func:`align_to` moves one onto the other.
    """
    if orientation_transform(b.affine, b.shape[:3], a.affine, a.shape[:3], atol) is not None:
        return None
    if tuple(a.shape[:3]) != tuple(b.shape[:3]):
        return (f"shape {'x'.join(map(str, a.shape[:3]))} of {a.path} differs from "
                f"{'x'.join(map(str, b.shape[:3]))} of {b.path}")
    diff = float(np.max(np.abs(np.asarray(a.affine) - np.asarray(b.affine))))
    return (f"affine of {a.path} differs from {b.path} by up to {diff:.4g} mm "
            f"(spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)}, origin {_fmt(np.asarray(a.affine)[:3, 3])} vs "
            f"{_fmt(np.asarray(b.affine)[:3, 3])})")


def align_to(volume: Any, affine: Any, shape: Sequence[int], what: str, atol: float = GEOMETRY_ATOL_MM) -> Any:
    """``volume`` (a channel-first MetaTensor) on the grid ``affine``/``shape``, transposed and flipped if need be.

    Raises:
        ValueError: the voxel centres differ (another shape, spacing, origin or rotation), naming ``what``.
    """
    transform = orientation_transform(volume.affine, volume.shape[1:], affine, shape, atol)
    if transform is None:
        src = np.asarray(volume.affine, dtype=np.float64)
        raise ValueError(f"{what} is not on the grid of its image: shape {'x'.join(map(str, volume.shape[1:]))} vs "
                         f"{'x'.join(map(str, shape[:3]))}, spacing {_fmt(voxel_spacing(src))} vs "
                         f"{_fmt(voxel_spacing(affine))} mm, origin {_fmt(src[:3, 3])} vs "
                         f"{_fmt(np.asarray(affine)[:3, 3])} mm")
    if (transform == [[0, 1], [1, 1], [2, 1]]).all():
        return volume
    moved = np.stack([reorient_array(np.asarray(c), transform) for c in np.asarray(volume)])
    return MetaTensor(torch.from_numpy(moved), affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)),
                      meta={"filename_or_obj": volume.meta.get("filename_or_obj", what)})


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


# ----------------------------------------------------------------------------------------------
# loading


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
                raise ValueError(f"DicomSeriesReader reads one series folder at a time, got {data!r}")
            data = data[0]
        files = [str(f) for f in check_dicom_series(data, self.series_uid)]
        kwargs_ = {**self.kwargs, **kwargs}
        return itk.imread(files if len(files) > 1 else files[0], **kwargs_)


@functools.cache
def _loader(dtype: Any) -> LoadImage:
    """One ``LoadImage`` per dtype; it is always called with an explicit reader."""
    with warnings.catch_warnings():
        # LoadImage registers all of MONAI's readers; the pydicom one warns on every construction
        # when its optional GPU decoder is absent. Those readers are never used here.
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        return LoadImage(image_only=True, ensure_channel_first=True, dtype=dtype)


def _reader_for(kind: str, series_uid: str | None) -> Any:
    if kind == NIFTI:
        return NibabelReader()
    if kind == NRRD:
        return ITKReader()
    return DicomSeriesReader(series_uid=series_uid)


def load_volume(path: str | Path, series_uid: str | None = None, dtype: Any = np.float32,
                channels: int | None = 1) -> Any:
    """Load a NIfTI file, NRRD file or DICOM series folder as a channel-first ``MetaTensor``.

    The result matches MONAI's ``LoadImage(image_only=True, ensure_channel_first=True)``: shape
    (1, X, Y, Z), affine in RAS millimetres, ``meta["filename_or_obj"]`` set to ``path``.

    Args:
        path: the file, or the folder of a DICOM series.
        series_uid: which series to read when a DICOM folder holds several.
        dtype: voxel type of the result (as ``LoadImage``; float32 by default there too).
        channels: a 4-D file with this many volumes is read as that many channels (C, X, Y, Z);
            ``None`` takes a 4-D file's volumes as channels, however many.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported, unreadable, corrupt or truncated input, a DICOM series with gaps or
            mixed slices, or an image that is not 3-D (a 4-D image with one volume is squeezed).
    """
    path = Path(path)
    info = read_header(path, series_uid)
    n_channels = info.shape[3] if len(info.shape) == 4 else 1
    require_3d(info, n_channels if channels is None else channels)
    if info.multiframe:
        from medt3d.data.multiframe import read_multiframe

        return read_multiframe(info, dtype)
    if info.kind == NIFTI:  # read without MONAI's reader: its copy to C order took half the time (see read_nifti)
        from medt3d.data.nifti import read_nifti

        array, affine, header = read_nifti(path, dtype)
        if tuple(array.shape[1:]) != tuple(info.shape[:3]) or not np.allclose(affine, info.affine, atol=1e-6):
            raise ValueError(f"{path}: the file's voxels or affine disagree with its header; refusing a wrong geometry")
        numeric = {k: np.asarray(v) for k, v in dict(header).items() if np.asarray(v).dtype.kind in "biuf"}
        return as_loaded(array, affine, path, numeric)  # text fields left out, as MONAI's reader does
    reader = _reader_for(info.kind, info.series_uid)
    try:
        # the reader is given at call time: LoadImage would otherwise fall back to its other readers
        # when ours fails and, e.g., silently read the first of several DICOM series
        img = _loader(dtype)(str(path), reader=reader)
    except (FileNotFoundError, ValueError) as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"cannot read {path}: {_short(err)}; the file may be corrupt or truncated") from None
    except Exception as err:  # readers raise many kinds on corrupt data; name the file, not the library
        if info.kind == DICOM:
            _raise_bad_dicom_pixels(path, info.files, err)
        raise ValueError(f"cannot read {path}: {_short(err)}; the file may be corrupt or truncated") from None
    expected = tuple(info.shape[:3])
    if img.ndim != 4 or img.shape[0] != n_channels or tuple(img.shape[1:]) != expected:
        raise ValueError(
            f"{path}: read an array of shape {tuple(img.shape)}, expected ({n_channels}, "
            f"{', '.join(map(str, expected))}) from its header"
        )
    if info.tilt_shifts is not None:  # ITK stacks the slices as given: move them onto the corrected grid
        array = correct_tilt(img[0].numpy(), info.tilt_shifts)
        img = MetaTensor(torch.from_numpy(array[None]), affine=torch.as_tensor(info.affine, dtype=torch.float64),
                         meta={**{k: v for k, v in img.meta.items() if k != "affine"},
                               "original_affine": torch.as_tensor(info.affine, dtype=torch.float64)})
    elif not np.allclose(np.asarray(img.affine), info.affine, atol=GEOMETRY_ATOL_MM):
        raise ValueError(f"{path}: the reader's affine disagrees with the header's; refusing a wrong geometry")
    img.meta["filename_or_obj"] = str(path)
    return img


def image_files(image: str | Path | Sequence[str | Path]) -> list[Path]:
    """The file(s) of a case's image: one path, or a list of one path per channel."""
    if isinstance(image, (str, os.PathLike)):
        return [Path(image)]
    return [Path(p) for p in image]


def load_image(image: str | Path | Sequence[str | Path], series_uid: str | None = None, dtype: Any = np.float32,
               channels: int | None = 1) -> Any:
    """Load a case's image as a (C, X, Y, Z) ``MetaTensor``: one file, a 4-D file of channels, or one file per channel.

    Channel files must lie on one grid (shape and affine); they are stacked in the order given.
    ``meta["filename_or_obj"]`` is the first file and ``meta["channel_files"]`` lists them all.

    Args:
        image: a path, or a list of paths (one per channel).
        series_uid: which series to read in DICOM folders that hold several.
        dtype: voxel type.
        channels: channels the case must have (``data.in_channels``); ``None``: whatever it holds.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: as :func:`load_volume`, channel files on different grids, or another number of channels.
    """
    files = image_files(image)
    parts = [load_volume(f, series_uid, dtype, channels=channels if len(files) == 1 else 1) for f in files]
    first = parts[0]
    for path, part in zip(files[1:], parts[1:]):
        problem = _grid_problem(files[0], first, path, part)
        if problem:
            raise ValueError(f"the channels of one case must share one grid: {problem}")
    img = first if len(parts) == 1 else MetaTensor(torch.cat([p.as_tensor() for p in parts]), meta=dict(first.meta))
    if channels is not None and img.shape[0] != channels:
        raise ValueError(f"{', '.join(map(str, files))}: image has {img.shape[0]} channel(s) but the model expects "
                         f"{channels} (data.in_channels)")
    img.meta["channel_files"] = [str(f) for f in files]
    return img


def _short(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return f"{type(err).__name__}: {text}".rstrip(": ")


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
        raise ValueError(
            f"cannot read the DICOM series in {folder}: {len(bad)} file(s) with corrupt or truncated pixel data: "
            + "; ".join(bad[:10])
        ) from None
    raise ValueError(f"cannot read the DICOM series in {folder}: {_short(err)}") from None


class LoadVolumed(MapTransform):
    """Dictionary version of :func:`load_volume`, a drop-in for ``LoadImaged(image_only=True, ensure_channel_first=True)``.

    The series of a DICOM folder is chosen by ``data["<key>_series_uid"]`` or, for the ``image``
    key, by ``data["series_uid"]``. With ``check_grid`` all loaded keys must share one grid
    (shape and affine), else a ValueError names both files.

    Args:
        keys: keys to load, e.g. ``("image", "label")``.
        allow_missing_keys: skip keys absent from the data instead of raising.
        dtype: voxel type, as ``LoadImaged``'s ``dtype``.
        check_grid: require every loaded key to share the first key's grid.
        channels: channels of the ``image`` key (one file, a 4-D file, or a list of one file per
            channel: see :func:`load_image`); other keys are single 3-D volumes.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        allow_missing_keys: bool = False,
        dtype: Any = np.float32,
        check_grid: bool = True,
        channels: int = 1,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype
        self.check_grid = check_grid
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key of ``data`` that names a volume."""
        d = dict(data)
        first: tuple[Hashable, Any] | None = None
        for key in self.key_iterator(d):
            uid = d.get(f"{key}_series_uid", d.get("series_uid") if key == "image" else None)
            if key == "image":
                img = load_image(d[key], series_uid=uid, dtype=self.dtype, channels=self.channels)
            else:
                img = load_volume(d[key], series_uid=uid, dtype=self.dtype)
            d[key] = img
            if not self.check_grid:
                continue
            if first is None:
                first = (key, img)
                continue
            problem = _grid_problem(first[1].meta["filename_or_obj"], first[1], img.meta["filename_or_obj"], img)
            if problem:
                raise ValueError(f"{first[0]!s} and {key!s} are not on one grid: {problem}")
        return d


# ----------------------------------------------------------------------------------------------
# user inputs


def find_inputs(paths: str | Path | Iterable[str | Path], series_uid: str | None = None,
                check: bool = True) -> list[Path]:
    """Expand user inputs into a sorted list of cases (NIfTI/NRRD files and DICOM series folders).

    Each input may be a file, a DICOM series folder, or a folder searched recursively for both
    (hidden files and folders are skipped).

    Args:
        paths: one or more inputs.
        series_uid: the series to pick in DICOM folders that hold several (used by ``check``).
        check: validate each DICOM folder (one series, no gaps) now, so that problems show before work starts.

    Raises:
        FileNotFoundError: a single input that does not exist.
        ValueError: every problem found (missing inputs, unsupported files, empty folders, bad DICOM
            series), one per line, each naming its path.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no inputs given")
    found: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if not path.exists():
            problems.append(f"input not found: {path}")
            continue
        if path.is_file():
            try:
                detect_kind(path)
                found.append(path)
            except ValueError as err:
                problems.append(str(err))
            continue
        if _dicom_files(path):
            found.append(path)
            continue
        before = len(found)
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            here = Path(root)
            names = sorted(f for f in files if not f.startswith("."))
            if any(is_dicom_file(here / f) for f in names):
                found.append(here)
            found.extend(here / f for f in names if f.lower().endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES))
        if len(found) == before:
            problems.append(f"no NIfTI, NRRD or DICOM series found in {path}")
    cases = sorted(set(found))
    if check:
        for case in cases:
            if case.is_dir():
                try:
                    check_dicom_series(case, series_uid)
                except ValueError as err:
                    problems.append(str(err))
    if problems:
        if len(paths) == 1 and len(problems) == 1 and problems[0].startswith("input not found"):
            raise FileNotFoundError(problems[0])
        raise ValueError(f"{len(problems)} problem(s) with the inputs:\n  - " + "\n  - ".join(problems))
    return cases
