"""Enhanced (multi-frame) DICOM objects: one file that holds a whole volume as frames.

The geometry comes from the frames' functional groups (per frame, else shared): PlanePositionSequence
(ImagePositionPatient), PlaneOrientationSequence (ImageOrientationPatient) and PixelMeasuresSequence
(PixelSpacing). The frames must pass the same checks as the slices of a classic series (one in-plane
grid, one orientation, distinct and evenly spaced positions along the normal), so a refusal gives the
true reason. highdicom's volume geometry, where it gives one, must agree.

Anonymised real files often lack a FrameOfReferenceUID (and a DimensionIndexSequence); highdicom then
gives no volume geometry, but the plane positions still define one: it is read, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.data.geometry import flip_lps_ras
from medt3d.data.readers.common import GEOMETRY_ATOL_MM, VolumeInfo, _short, _warn_once, as_loaded
from medt3d.data.readers.dicom_series import _floats, _Series, _Slice, correct_tilt, stack_series
from medt3d.errors import InputError

__all__ = ["MultiframeGeometry", "frame_geometry", "multiframe_series", "open_multiframe", "read_multiframe"]

#: (functional group, attribute, values, name in messages) that place each frame
_PLANE_ATTRIBUTES = (
    ("PlanePositionSequence", "ImagePositionPatient", 3, "position"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", 6, "orientation"),
    ("PixelMeasuresSequence", "PixelSpacing", 2, "pixel_spacing"),
)


@dataclass
class MultiframeGeometry:
    """Where the frames of one enhanced object lie.

    Attributes:
        affine: 4x4 voxel-to-RAS matrix; x = columns, y = rows, z = slices ascending along the normal.
        shape: (x, y, z).
        frame_order: for each slice z, the index (0-based) of its frame in the file.
        tilt_shifts: per-slice in-plane shifts of a gantry-tilted stack (see
            :func:`medt3d.data.readers.correct_tilt`), else None.
        frame_of_reference: whether the file has a FrameOfReferenceUID.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    frame_order: list[int]
    tilt_shifts: np.ndarray | None = None
    frame_of_reference: bool = True


def _group_value(frame: Any, shared: Any, group: str, keyword: str) -> Any:
    """``keyword`` of functional group ``group`` for one frame: its own item first, else the shared one."""
    for item in (frame, shared):
        if item is None or not item.get(group):
            continue
        value = item.get(group)[0].get(keyword)
        if value not in (None, ""):
            return value
    return None


def frame_geometry(dataset: Any, path: Path, where: str) -> MultiframeGeometry:
    """Geometry of the frames of the enhanced object ``dataset`` (read from ``path``), checked as a classic series.

    Raises:
        ValueError: a frame lacks its position, orientation or pixel spacing (named with its
            functional group), or the frames do not form one regular volume (the reason says why).
    """
    n_frames = int(dataset.get("NumberOfFrames") or 1)
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence") or [])
    shared_seq = dataset.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if per_frame and len(per_frame) != n_frames:
        raise InputError(f"{where}: {path.name} has NumberOfFrames {n_frames} but {len(per_frame)} items in its "
                         "PerFrameFunctionalGroupsSequence; the file is inconsistent: export it again")
    slices, missing = [], {}
    for i in range(n_frames):
        frame = per_frame[i] if per_frame else None
        values = {}
        for group, keyword, count, attr in _PLANE_ATTRIBUTES:
            values[attr] = _floats(_group_value(frame, shared, group, keyword) or (), count)
            if values[attr] is None:
                missing.setdefault(f"{group} > {keyword}", []).append(i + 1)
        slices.append(_Slice(path=Path(f"{path.name} frame {i + 1}"), rows=int(dataset.Rows),
                             columns=int(dataset.Columns), frames=1, **values))
    if missing:
        parts = [f"{len(frames)} frame(s) lack a valid {name} (per frame or shared), e.g. frame(s) "
                 f"{', '.join(map(str, frames[:5]))}" for name, frames in missing.items()]
        raise InputError(f"{where}: {path.name}: {'; '.join(parts)}; the frames cannot be placed in space: export "
                         "the file again")
    index = {s.path: i for i, s in enumerate(slices)}  # before the checks sort the list
    try:
        stack = stack_series(slices, "", where)
    except ValueError as err:
        raise InputError(f"{where}: the frames of {path.name} do not form one regular 3-D volume: "
                         f"{str(err).removeprefix(f'{where}: ')}") from None  # that error ends with its hint
    return MultiframeGeometry(affine=stack.affine, shape=stack.shape, frame_order=[index[p] for p in stack.files],
                              tilt_shifts=stack.tilt_shifts, frame_of_reference=bool(dataset.get("FrameOfReferenceUID")))


def _highdicom_affine(image: Any) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """highdicom's volume geometry as a voxel-to-RAS affine in medt3d's axis order, or None when it gives none."""
    try:
        geometry = image.get_volume_geometry()
    except Exception:  # highdicom raises many kinds on odd objects; the frame checks give the reason
        return None
    if geometry is None:
        return None
    hd_affine = np.asarray(geometry.affine, dtype=np.float64)  # (slice, row, column) -> LPS
    n_slices, n_rows, n_columns = (int(v) for v in geometry.spatial_shape)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = hd_affine[:3, 2], hd_affine[:3, 1], hd_affine[:3, 0], hd_affine[:3, 3]
    if float(lps[:3, 2] @ np.cross(lps[:3, 0], lps[:3, 1])) < 0:  # medt3d's slices ascend along the normal
        lps[:3, 3] += lps[:3, 2] * (n_slices - 1)
        lps[:3, 2] = -lps[:3, 2]
    return flip_lps_ras(lps), (n_columns, n_rows, n_slices)


def open_multiframe(path: Path, where: str) -> tuple[Any, MultiframeGeometry]:
    """highdicom's image of an enhanced object and its checked geometry."""
    import highdicom as hd

    try:
        image = hd.imread(str(path), lazy_frame_retrieval=True)
    except Exception as err:  # highdicom raises many kinds on odd objects: name the file, not the library
        raise InputError(f"{where}: cannot read the enhanced multi-frame DICOM file {path.name}: {_short(err)}; "
                         "export it again") from None
    geometry = frame_geometry(image, path, where)
    reference = _highdicom_affine(image)
    if reference is None:
        if not geometry.frame_of_reference:
            _warn_once(f"{where}: {path.name} has no FrameOfReferenceUID (anonymised?); its geometry is taken from "
                       "the frames' plane positions, orientation and pixel spacing")
    elif reference[1] != geometry.shape or not np.allclose(reference[0], geometry.affine, atol=GEOMETRY_ATOL_MM):
        raise InputError(f"{where}: highdicom and the frames' plane positions disagree on the geometry of {path.name}; "
                         "the file is inconsistent: export it again")
    return image, geometry


def multiframe_series(path: Path, uid: str, where: str) -> _Series:
    """Geometry of an enhanced (multi-frame) CT/MR/PET object, as a series of one file."""
    _, geometry = open_multiframe(path, where)
    return _Series(uid=uid, files=[path], affine=geometry.affine, shape=geometry.shape, multiframe=True,
                   tilt_shifts=geometry.tilt_shifts)


def read_multiframe(info: VolumeInfo, dtype: Any) -> Any:
    """The voxels of an enhanced object (modality LUT applied: HU for CT) as a (1, X, Y, Z) MetaTensor."""
    image, geometry = open_multiframe(info.files[0], str(info.path))
    try:
        frames = [image.get_frame(i, as_index=True, dtype=np.float32) for i in geometry.frame_order]
    except Exception as err:
        raise InputError(f"cannot read the frames of {info.files[0]}: {_short(err)}; the file may be corrupt or "
                         "truncated: export it again") from None
    array = np.transpose(np.stack(frames), (2, 1, 0))  # (slice, row, column) -> (x, y, z)
    if geometry.tilt_shifts is not None:
        array = correct_tilt(array, geometry.tilt_shifts)
    return as_loaded(np.ascontiguousarray(array[None]).astype(dtype, copy=False), info.affine, info.path)
