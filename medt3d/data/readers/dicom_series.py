"""DICOM series: reading the headers of a folder, picking one series and checking that its slices stack.

Pixels are never read here: the checks run on the headers (rows, columns, orientation, pixel spacing,
position), so a problem shows before any work starts. Classic series (one file per slice) and the frames of
one enhanced object (:mod:`medt3d.data.readers.multiframe`) pass the same checks (:func:`stack_series`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.data.geometry import flip_lps_ras
from medt3d.data.readers.common import FileClaim, VolumeInfo, _fmt, _warn_once, check_claims
from medt3d.errors import InputError

__all__ = ["DICOM_SUFFIXES", "check_dicom_series", "correct_tilt", "dicom_files", "is_dicom_file", "scan_series"]

#: suffixes of files that are DICOM even without the 128-byte preamble + "DICM" marker
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
#: two DICOM slices closer than this along the normal share one position (mm).
SLICE_DUPLICATE_ATOL_MM = 1e-3
#: a step longer than this many median steps is a gap (missing slices).
SLICE_GAP_RATIO = 1.5
#: slices are evenly spaced when each lies within this fraction of a step of an even grid from first to
#: last (ITK reads the series onto that grid); tolerant of positions rounded to 0.1 mm in the headers.
SLICE_GRID_RTOL = 0.1
#: a DICOM series is sheared (gantry tilt) when consecutive positions leave the normal by more than this.
SHEAR_ATOL_MM = 1e-2
_SERIES_HOWTO = (
    "Pick one with --series-uid UID (medt3d infer, inspect), series_uid=... in Python, or \"series_uid\": "
    "\"<uid>\" in a case of a JSON datalist; or move each series into its own folder"
)
#: a slice whose plane is this far from the series' (or of another size) is a scout, left out
SCOUT_MIN_ANGLE_DEG = 10.0

# DICOM header tags read when checking a series (pixels are never read at that stage).
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
    "BitsAllocated",
    "SamplesPerPixel",
]
#: modalities whose stored values mean nothing without RescaleSlope and RescaleIntercept (type 1 there)
_RESCALED_MODALITIES = ("CT", "PT")
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image


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



def dicom_files(folder: Path) -> list[Path]:
    """DICOM files directly inside ``folder`` (not recursive), sorted by name."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise InputError(f"cannot list folder {folder}: {err.strerror or err}; check its permissions") from None
    return [p for p in entries if is_dicom_file(p)]


@dataclass
class _Slice:
    path: Path
    rows: int | None
    columns: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: np.ndarray | None
    frames: int
    claim: FileClaim | None = None


@dataclass
class _Series:
    uid: str
    files: list[Path]
    affine: np.ndarray  # RAS
    shape: tuple[int, int, int]
    multiframe: bool = False
    tilt_shifts: np.ndarray | None = None
    claims: list[FileClaim] = field(default_factory=list)


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
    for path in dicom_files(folder):
        try:
            # PixelData's value is deferred (not read): its position bounds what the file can hold
            ds = pydicom.dcmread(path, force=True, specific_tags=[*_DICOM_TAGS, "PixelData"], defer_size=1024)
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


def _int(ds: Any, tag: str, default: int) -> int:
    try:
        value = ds.get(tag)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _pixel_claim(path: Path, ds: Any, frames: int) -> FileClaim | None:
    """The bytes an uncompressed file's header claims: where its PixelData begins plus Rows x Columns x frames
    x samples x bits; None for compressed pixel data, whose decoded size only the voxel cap bounds."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return None
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    bits, samples = _int(ds, "BitsAllocated", 16), _int(ds, "SamplesPerPixel", 1)
    nbytes = rows * columns * max(frames, 1) * max(samples, 1) * max(bits, 1) // 8
    element = ds.get_item("PixelData") if "PixelData" in ds else None
    start = int(getattr(element, "value_tell", None) or 0) if element is not None else path.stat().st_size
    what = (f"Rows {rows} x Columns {columns} x {frames} frame(s) x {samples} sample(s) of {bits} bits of pixel "
            f"data from byte {start}")
    return FileClaim(path, start + nbytes, what)


def _to_slice(path: Path, ds: Any) -> _Slice:
    frames_n = _int(ds, "NumberOfFrames", 1)
    return _Slice(
        path=path,
        rows=int(ds.Rows) if ds.get("Rows") is not None else None,
        columns=int(ds.Columns) if ds.get("Columns") is not None else None,
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        frames=frames_n,
        claim=_pixel_claim(path, ds, frames_n),
    )


def _group_report(values: dict[Any, list[Path]], what: str) -> str:
    parts = [f"{what} {key}: {len(paths)} file(s), e.g. {paths[0].name}" for key, paths in values.items()]
    return "; ".join(parts)


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
        raise InputError(
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


def scan_series(folder: str | Path, series_uid: str | None = None) -> _Series:
    """Validate one DICOM series in ``folder`` and compute its geometry from the headers."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"DICOM folder not found: {folder}; check the path")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the folder that holds the series' files")
    groups, problems = _read_dicom_headers(folder)
    if not groups:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise InputError(f"{folder}: no DICOM image files found{detail}; pass the folder that holds the series' "
                         ".dcm files (a DICOMDIR alone is not read)")
    if series_uid is not None:
        if series_uid not in groups:
            listing = "; ".join(_describe_series(uid, m) for uid, m in sorted(groups.items()))
            raise InputError(f"{folder}: no series with SeriesInstanceUID {series_uid}; the folder holds: {listing}; "
                             "pass one of these UIDs")
        uid = series_uid
    elif len(groups) > 1:
        listing = "; ".join(_describe_series(uid, m) for uid, m in sorted(groups.items()))
        raise InputError(f"{folder} holds {len(groups)} DICOM series: {listing}. {_SERIES_HOWTO}")
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
            raise InputError(f"{where}: {len(slices)} files of which {len(multi)} multi-frame "
                             f"({', '.join(p.name for p in multi[:5])}); an enhanced series is one multi-frame "
                             "file: put each in its own folder")
        from medt3d.data.readers.multiframe import multiframe_series

        one = slices[0]  # its frames are listed one by one next: check what the file can hold first
        check_claims(VolumeInfo(folder, "dicom", (one.columns or 1, one.rows or 1, one.frames), np.eye(4),
                                claims=[one.claim] if one.claim else []))
        series = multiframe_series(multi[0], uid, where)
    else:
        series = stack_series(slices, uid, where, problems)
    series.claims = [s.claim for s in slices if s.claim is not None]
    return series


def stack_series(slices: list[_Slice], uid: str, where: str, problems: list[str] | None = None) -> _Series:
    """Check that ``slices`` (single-frame files, or the frames of one enhanced file) stack into one regular
    volume, and give its geometry; the checks are the same for both."""
    _check_plane(slices, where, list(problems or []))

    # 3) positions along the slice normal: distinct, evenly spaced; a shear is a gantry tilt, corrected
    row_cos, col_cos = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row_cos, col_cos)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(f"{where}: ImageOrientationPatient {slices[0].orientation.tolist()} is not two unit vectors; "
                             "fix ImageOrientationPatient in the headers or export the series again")
    normal = normal / np.linalg.norm(normal)
    slices.sort(key=lambda s: float(s.position @ normal))
    along = np.array([float(s.position @ normal) for s in slices])
    if len(slices) > 1:
        step, tilt_shifts = _slice_step(slices, along, normal, where)
    else:
        step, tilt_shifts = 1.0, None  # a single slice: the thickness does not matter, the volume is rejected as 2-D
    if len(slices) == 2:
        _warn_once(f"{where}: the series has only 2 slices; a 3-D network sees almost no context along the "
                   "slice axis (is this a localizer or a partial series?)")

    # DICOM PixelSpacing is (between rows, between columns): x (columns) runs along the row cosine.
    lps = np.eye(4)
    lps[:3, 0] = row_cos * slices[0].pixel_spacing[1]
    lps[:3, 1] = col_cos * slices[0].pixel_spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = slices[0].position
    ras = flip_lps_ras(lps)
    return _Series(uid=uid, files=[s.path for s in slices], affine=ras,
                   shape=(int(slices[0].columns), int(slices[0].rows), len(slices)), tilt_shifts=tilt_shifts)


def _check_plane(slices: list[_Slice], where: str, problems: list[str]) -> None:
    """Every slice has its position, orientation and a positive spacing, and all share one in-plane grid;
    what is wrong is raised in one message, after the ``problems`` found before."""
    for attr, tag in (("position", "ImagePositionPatient"), ("orientation", "ImageOrientationPatient"),
                      ("pixel_spacing", "PixelSpacing")):
        missing = [s.path.name for s in slices if getattr(s, attr) is None]
        if missing:
            problems.append(f"{where}: {len(missing)} file(s) lack a valid {tag}, e.g. {', '.join(missing[:5])}")
    negative = [s for s in slices if s.pixel_spacing is not None and (s.pixel_spacing <= 0).any()]
    if negative:
        problems.append(f"{where}: {len(negative)} file(s) have a PixelSpacing that is not positive, e.g. "
                        f"{negative[0].path.name} with {_fmt(negative[0].pixel_spacing)} mm; a pixel has a positive "
                        "size: correct PixelSpacing (row spacing, column spacing in mm) in the headers")
    # 2) one in-plane grid
    sizes: dict[Any, list[Path]] = defaultdict(list)
    for s in slices:
        sizes[f"{s.rows}x{s.columns}"].append(s.path)
    if len(sizes) > 1:
        problems.append(f"{where}: slices differ in size (rows x columns): {_group_report(sizes, 'size')}")
    if problems:
        raise InputError("; ".join(problems) + "; export the series again or move the odd files out")
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
        raise InputError("; ".join(problems) + "; move the slices of each orientation or spacing into their own "
                         "folder, or export the series again")


def _slice_step(slices: list[_Slice], along: np.ndarray, normal: np.ndarray,
                where: str) -> tuple[float, Any]:
    """The even step between the sorted ``slices`` (no duplicates, no gaps) and the gantry tilt's shifts, if any."""
    tilt_shifts = None
    steps = np.diff(along)
    duplicates = [
        f"{slices[i].path.name} and {slices[i + 1].path.name} at {along[i]:.3f} mm"
        for i in np.flatnonzero(steps <= SLICE_DUPLICATE_ATOL_MM)
    ]
    if duplicates:
        raise InputError(
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
        raise InputError(f"{where}: missing slice(s) along the slice normal: {'; '.join(gaps)}; "
                         "export the whole series again")
    # ITK's series reader puts the slices on an even grid from the first to the last one
    step = float(along[-1] - along[0]) / (len(along) - 1)
    off_grid = along - (along[0] + step * np.arange(len(along)))
    worst = int(np.argmax(np.abs(off_grid)))
    if abs(off_grid[worst]) > SLICE_GRID_RTOL * step:
        raise InputError(
            f"{where}: uneven slice spacing along the slice normal (steps from {steps.min():.3f} to "
            f"{steps.max():.3f} mm): slice {worst} ({slices[worst].path.name}, at {along[worst]:.3f} mm) "
            f"is {off_grid[worst]:+.3f} mm off an even grid of {step:.3f} mm steps; resample the series "
            "to an even spacing or export it again"
        )
    offsets = np.stack([s.position for s in slices]) - slices[0].position
    off_normal = offsets - np.outer(offsets @ normal, normal)
    worst = int(np.argmax(np.linalg.norm(off_normal, axis=1)))
    if np.linalg.norm(off_normal[worst]) > SHEAR_ATOL_MM:
        tilt_shifts = _gantry_tilt(slices, off_normal, step, where)
    return step, tilt_shifts


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
    return scan_series(folder, series_uid).files

