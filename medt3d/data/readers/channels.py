"""Channels of one case on different grids: one frame of reference, resampled onto a reference channel.

PET/CT is the common two-modality case whose channels share a frame of reference (one scanner, one
patient position) but not a grid (CT 1 mm in plane, PET 4-5 mm). Such a case is read as one
multi-channel image on the grid of its reference channel (``data.reference_channel``, the first by
default): the other channels are resampled onto it linearly, a label by nearest neighbour. Resampling is
MONAI's ``SpatialResample`` (the same code as the preprocessing's ``Spacingd``).

**One frame of reference.** Resampling by world coordinates is right only when the channels' world
coordinates mean the same place in the patient:

- DICOM series carry a ``FrameOfReferenceUID``: two channels that both have one must have the same one;
- NIfTI and NRRD files have no such field (and anonymised DICOM may lack it). The channels are then
  taken to share a frame of reference when their extents in world coordinates overlap: the overlap must
  hold at least :data:`MIN_OVERLAP` of the smaller channel's extent. Two scans from different sessions
  or scanners almost never land on the same place in scanner coordinates, while the crops of one PET/CT
  overlap almost entirely. The rule cannot tell a scan registered to another from one that only happens
  to lie at the same place: convert registered scans to NIfTI only after registration, or keep DICOM.

Channels outside one frame of reference are refused; so is a label on none of the channels' grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medt3d.data.geometry import orientation_transform
from medt3d.data.readers.common import GEOMETRY_ATOL_MM
from medt3d.errors import InputError

__all__ = ["MIN_OVERLAP", "Grid", "case_grid_problems", "check_label_grid", "frame_of_reference", "frame_problem", "grid_of",
           "overlap_fraction", "resample_onto", "same_voxels", "stack_channels"]

#: the least share of the smaller channel's world extent that must lie inside the other's when no
#: FrameOfReferenceUID decides (NIfTI, NRRD, anonymised DICOM)
MIN_OVERLAP = 0.5

#: a grid: (file or folder, 4x4 RAS affine, spatial shape)
Grid = tuple[Path, np.ndarray, tuple[int, int, int]]


def grid_of(path: str | Path, volume: Any) -> Grid:
    """The grid of a loaded channel-first volume."""
    return Path(str(path)), np.asarray(volume.affine, dtype=np.float64), tuple(int(s) for s in volume.shape[1:4])


def frame_of_reference(path: str | Path) -> str | None:
    """The FrameOfReferenceUID of a DICOM series folder or file; ``None`` for other formats or when absent."""
    import pydicom

    from medt3d.data.readers.dicom_series import dicom_files, is_dicom_file

    path = Path(path)
    if path.is_dir():
        files = dicom_files(path)
        first = files[0] if files else None
    else:
        first = path if is_dicom_file(path) else None
    if first is None:
        return None
    dataset = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["FrameOfReferenceUID"])
    return str(dataset.get("FrameOfReferenceUID") or "") or None


def _world_box(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(2, 3): the lowest and highest world coordinates of the volume's voxel extents (half a voxel out)."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    return np.stack([world.min(axis=1), world.max(axis=1)])


def overlap_fraction(a: Grid, b: Grid) -> float:
    """The share of the smaller grid's world box that lies inside the other's (axis-aligned boxes)."""
    box_a, box_b = _world_box(a[1], a[2]), _world_box(b[1], b[2])
    inter = np.clip(np.minimum(box_a[1], box_b[1]) - np.maximum(box_a[0], box_b[0]), 0, None).prod()
    smaller = min(np.prod(box_a[1] - box_a[0]), np.prod(box_b[1] - box_b[0]))
    return float(inter / smaller) if smaller > 0 else 0.0


def frame_problem(reference: Grid, other: Grid) -> str | None:
    """Why ``other`` is not in ``reference``'s frame of reference (module docstring), or ``None``."""
    uid_ref, uid_other = frame_of_reference(reference[0]), frame_of_reference(other[0])
    if uid_ref and uid_other:
        if uid_ref == uid_other:
            return None
        return (f"{other[0]} has FrameOfReferenceUID {uid_other} and {reference[0]} has {uid_ref}: the channels are "
                "not in one frame of reference; register them onto one scan first, or train on one channel")
    share = overlap_fraction(reference, other)
    if share >= MIN_OVERLAP:
        return None
    return (f"{other[0]} and {reference[0]} overlap in {share:.0%} of the smaller one's extent in world coordinates "
            f"(one frame of reference needs {MIN_OVERLAP:.0%}; NIfTI has no FrameOfReferenceUID, so medt3d judges by "
            "the extents): they look like separate acquisitions; register them onto one scan first, or train on "
            "one channel")


def same_voxels(a: Grid, b: Grid) -> bool:
    """Whether two grids hold the same voxel centres (another axis order or direction allowed)."""
    return orientation_transform(b[1], b[2], a[1], a[2], GEOMETRY_ATOL_MM) is not None


def resample_onto(volume: Any, reference: Any, label: bool = False) -> MetaTensor:
    """``volume`` (channel-first) resampled onto ``reference``'s grid: linear for images, nearest for labels.

    Outside ``volume``'s extent an image repeats its border and a label is background. The result carries
    ``reference``'s affine and no transform history, as if it had been read on that grid.
    """
    from monai.transforms import SpatialResample

    resample = SpatialResample(mode="nearest" if label else "bilinear", padding_mode="zeros" if label else "border",
                               dtype=torch.float64)
    source = MetaTensor(torch.as_tensor(np.asarray(volume), dtype=torch.float32),
                        affine=torch.as_tensor(np.asarray(volume.affine, dtype=np.float64)))
    moved = resample(source, dst_affine=torch.as_tensor(np.asarray(reference.affine, dtype=np.float64)),
                     spatial_size=tuple(int(s) for s in reference.shape[1:4]))
    values = torch.as_tensor(np.asarray(moved)).to(volume.dtype if label else torch.float32)
    meta = {k: v for k, v in dict(reference.meta).items() if k not in ("filename_or_obj", "channel_files")}
    out = MetaTensor(values, meta=meta)
    out.affine = torch.as_tensor(np.asarray(reference.affine, dtype=np.float64))
    out.meta["filename_or_obj"] = volume.meta.get("filename_or_obj", "")
    return out


def check_label_grid(label_grid: Grid, channel_grids: Sequence[Grid]) -> int:
    """The index of the first channel whose grid holds the label's voxels.

    Raises:
        InputError: the label is on none of the channels' grids.
    """
    for index, grid in enumerate(channel_grids):
        if same_voxels(grid, label_grid):
            return index
    shapes = ", ".join(f"{g[0].name} {'x'.join(map(str, g[2]))}" for g in channel_grids)
    raise InputError(f"label {label_grid[0]} ({'x'.join(map(str, label_grid[2]))} voxels) is on none of the channels' "
                     f"grids ({shapes}); resample the label onto one of the channels' grids")


def stack_channels(files: Sequence[Path], parts: Sequence[Any], reference: int = 0) -> tuple[MetaTensor, list[Grid]]:
    """One (C, X, Y, Z) image from one volume per channel, on the grid of channel ``reference``.

    Channels already on that grid (in any axis order) are moved onto it voxel for voxel; the others must
    share its frame of reference (module docstring) and are resampled linearly.

    Returns:
        The image, with the reference channel's metadata, and each channel's own grid (for the label).

    Raises:
        InputError: ``reference`` names no channel, or a channel is outside the reference's frame of reference.
    """
    from medt3d.data.readers.common import align_to

    if not 0 <= reference < len(parts):
        raise InputError(f"data.reference_channel is {reference} but the case has {len(parts)} channel files "
                         f"({', '.join(map(str, files))}); set data.reference_channel to 0..{len(parts) - 1}")
    grids = [grid_of(f, p) for f, p in zip(files, parts)]
    ref = parts[reference]
    moved = []
    for grid, part in zip(grids, parts):
        if same_voxels(grids[reference], grid):
            moved.append(align_to(part, ref.affine, ref.shape[1:], what=str(grid[0])).as_tensor())
            continue
        problem = frame_problem(grids[reference], grid)
        if problem:
            raise InputError(f"the channels of one case must share one frame of reference: {problem}")
        moved.append(resample_onto(part, ref).as_tensor())
    image = MetaTensor(torch.cat([m.to(ref.dtype) for m in moved]), meta=dict(ref.meta))
    image.affine = torch.as_tensor(np.asarray(ref.affine, dtype=np.float64))
    return image, grids


def case_grid_problems(images: Sequence[Any], labels: Sequence[Any], reference: int = 0,
                       atol: float = GEOMETRY_ATOL_MM) -> list[str]:
    """The grid problems of one case from its headers (``VolumeInfo``), before any voxel is read.

    Channel files on the reference channel's grid pass; others must share its frame of reference. A label
    must lie on one of the channels' grids. Single-channel cases keep the one-grid rule of
    :func:`medt3d.data.readers.same_grid`.
    """
    from medt3d.data.readers.common import same_grid

    if not images:
        return []
    if len(images) == 1:
        return [f"image and label differ: {m}" for label in labels if (m := same_grid(images[0], label, atol))]
    grids: list[Grid] = [(Path(i.path), np.asarray(i.affine, dtype=np.float64), tuple(i.shape[:3])) for i in images]
    ref = grids[min(max(reference, 0), len(grids) - 1)]
    problems = [f"channel files: {p}" for g in grids if not same_voxels(ref, g) and (p := frame_problem(ref, g))]
    for label in labels:
        grid = (Path(label.path), np.asarray(label.affine, dtype=np.float64), tuple(label.shape[:3]))
        if not any(same_voxels(g, grid) for g in grids):
            problems.append(f"label {label.path} is on none of the channels' grids "
                            f"({', '.join('x'.join(map(str, g[2])) for g in grids)} voxels); resample the label onto "
                            "one of the channels' grids")
    return problems
