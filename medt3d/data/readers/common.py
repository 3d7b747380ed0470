"""Shared by every reader: the header record, the claims check, grid checks and MONAI's loader.

Every format module (:mod:`~medt3d.data.readers.nifti`, :mod:`~medt3d.data.readers.nrrd`,
:mod:`~medt3d.data.readers.dicom`) returns a :class:`VolumeInfo` from its header reader and a
channel-first ``MetaTensor`` from its loader; :func:`check_claims` is the one place every header passes
before any voxel buffer is sized.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from medt3d.data.geometry import orientation_transform, reorient_array, voxel_spacing
from medt3d.errors import InputError

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "GEOMETRY_ATOL_MM",
    "FileClaim",
    "VolumeInfo",
    "align_to",
    "as_loaded",
    "check_claims",
    "check_reader_affine",
    "load_with_monai",
    "require_3d",
    "same_grid",
]

#: image and label grids agree when every affine entry differs by at most this (mm).
GEOMETRY_ATOL_MM = 1e-3
#: the most voxels (all channels) one volume may claim unless the caller sets another cap
#: (``infer.max_voxels``): 10^9 voxels are 4 GB as float32.
DEFAULT_MAX_VOXELS = 1_000_000_000
#: a compressed stream may inflate to this many bytes beyond what its header claims (padding) before it
#: is refused as a decompression bomb
GZIP_MARGIN_BYTES = 1 << 20
_CHUNK = 1 << 20

logger = logging.getLogger("medt3d.data.readers")
#: warnings already given (:func:`_warn_once`)
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning once per process (a series is scanned by several steps)."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _short(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return f"{type(err).__name__}: {text}".rstrip(": ")


@dataclass(frozen=True)
class FileClaim:
    """What a header says one file holds, checked by :func:`check_claims` before any buffer is sized.

    Attributes:
        path: the file.
        nbytes: the bytes the header claims: the whole file for a ``.nii`` (``vox_offset`` + voxels x
            bytes per voxel), the decompressed stream for a gzip one, the pixel data (a lower bound of
            the file size) for a DICOM file.
        what: how the claim is made, for messages (``"3x3x3 voxels of int16 from byte 352"``).
        gzip: the file (from ``start``) is a gzip stream that must inflate to ``nbytes``.
        start: where the gzip stream begins (after an attached NRRD header; 0 for ``.nii.gz``).
    """

    path: Path
    nbytes: int
    what: str
    gzip: bool = False
    start: int = 0


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
        claims: what the header says each file holds (:class:`FileClaim`), for :func:`check_claims`.
    """

    path: Path
    kind: str
    shape: tuple[int, ...]
    affine: np.ndarray
    files: list[Path] = field(default_factory=list)
    series_uid: str | None = None
    multiframe: bool = False
    tilt_shifts: np.ndarray | None = None
    claims: list[FileClaim] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial axis."""
        return tuple(voxel_spacing(self.affine))


def _inflated_size(claim: FileClaim) -> int:
    """Bytes the gzip stream of ``claim`` inflates to, counted in chunks and never past the claim plus a margin.

    Raises:
        ValueError: a damaged stream, naming the file.
    """
    limit = claim.nbytes + GZIP_MARGIN_BYTES
    total = 0
    pending = b""
    with open(claim.path, "rb") as handle:
        handle.seek(claim.start)
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        while total <= limit:
            data = inflater.unconsumed_tail or pending or handle.read(_CHUNK)
            pending = b""
            if not data:
                break
            try:
                total += len(inflater.decompress(data, _CHUNK))
            except zlib.error as err:
                raise InputError(f"cannot read {claim.path}: damaged compressed data ({err}) after {total:,} bytes; "
                                 "the file is corrupt or truncated: copy or export it again") from None
            if inflater.eof:  # another gzip member may follow; NUL padding may end the file
                pending = inflater.unused_data or handle.read(_CHUNK)
                if not pending.strip(b"\0"):
                    break
                inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
    return total


@functools.lru_cache(maxsize=256)
def _checked_gzip(claim: FileClaim, size: int, mtime_ns: int) -> int:
    del size, mtime_ns  # the cache key: a changed file is counted again
    return _inflated_size(claim)


def _claim_problem(claim: FileClaim) -> str | None:
    """What a file lacks against its claim (``"the header claims ..."``), or None when it holds it.

    Raises:
        ValueError: a gzip stream that inflates far past its claim (a decompression bomb) or is damaged.
    """
    stat = os.stat(claim.path)
    if not claim.gzip:
        if stat.st_size < claim.nbytes:
            return f"the header claims {claim.what}, {claim.nbytes:,} bytes, but the file holds {stat.st_size:,}"
        return None
    inflated = _checked_gzip(claim, stat.st_size, stat.st_mtime_ns)
    if inflated > claim.nbytes + GZIP_MARGIN_BYTES:
        raise InputError(f"{claim.path}: decompresses to more than {claim.nbytes + GZIP_MARGIN_BYTES:,} bytes, "
                         f"beyond the {claim.nbytes:,} its header claims ({claim.what}); refusing a possible "
                         "decompression bomb: check where the file comes from")
    if inflated < claim.nbytes:
        return (f"the header claims {claim.what}, {claim.nbytes:,} bytes, but the file decompresses to "
                f"{inflated:,}")
    return None


def _check_file_claims(info: VolumeInfo) -> None:
    """Refuse files that hold less than their headers claim: one file by its name, a series by its folder."""
    bad = [(claim.path, problem) for claim in info.claims if (problem := _claim_problem(claim))]
    if not bad:
        return
    if len(info.claims) == 1:
        raise InputError(f"cannot read {bad[0][0]}: {bad[0][1]}; the file is corrupt or truncated: copy or export "
                         "it again")
    raise InputError(f"cannot read {info.path}: {len(bad)} file(s) with corrupt or truncated pixel data: "
                     + "; ".join(f"{path.name} ({problem})" for path, problem in bad[:5])
                     + ("; ..." if len(bad) > 5 else "") + ": copy or export the series again")


def check_claims(info: VolumeInfo, max_voxels: int | None = None) -> None:
    """Check what a header claims against what its file can hold, before any buffer is sized.

    Every format's header reader passes through here (:func:`medt3d.data.readers.read_header`). The
    checks: a positive shape whose voxels (all channels) stay within ``max_voxels``; a finite affine
    with a positive voxel size along each axis; each file's claims (:attr:`VolumeInfo.claims`): an
    uncompressed file at least as large as the header says, a gzip stream that inflates to what the
    header says (counted in chunks and stopped a margin past it, so a decompression bomb is never
    inflated).

    Args:
        info: the header, as the format's header reader gave it.
        max_voxels: the most voxels the volume may hold (``infer.max_voxels``); None: :data:`DEFAULT_MAX_VOXELS`.

    Raises:
        ValueError: a header that claims more than its file holds, or more than one case may hold; the
            message names the file, the claim and what to do.
    """
    cap = DEFAULT_MAX_VOXELS if max_voxels is None else int(max_voxels)
    shape = tuple(int(v) for v in info.shape)
    text = "x".join(map(str, shape))
    if not shape or min(shape) < 1:
        raise InputError(f"{info.path}: the header claims a shape of {text or 'nothing'}; every axis needs at "
                         "least one voxel: the header is corrupt; export the scan again")
    voxels = math.prod(shape)
    if voxels > cap:
        raise InputError(f"{info.path}: the header claims {text} = {voxels:,} voxels, more than the {cap:,} one "
                         "case may hold (infer.max_voxels); if the scan is real, raise infer.max_voxels (it needs "
                         f"about {4 * voxels / 1e9:.1f} GB as float32), else the header is corrupt")
    affine = np.asarray(info.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"{info.path}: the header's voxel-to-world matrix is not finite; the geometry is corrupt: "
                         "fix the header (spacing, origin, direction) and save it again")
    spacing = voxel_spacing(affine)
    if min(spacing[:3]) <= 0:
        raise InputError(f"{info.path}: the header gives a voxel size of {_fmt(spacing)} mm; every axis needs a "
                         "positive size: set the true voxel size in the header and save it again")
    _check_file_claims(info)


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


def require_3d(info: VolumeInfo, channels: int = 1) -> None:
    """Raise a ValueError naming the file unless ``info`` describes one 3-D volume.

    A 4-D image with one volume passes; so does one with ``channels`` volumes when ``channels`` > 1
    (the channels of a multi-channel case stored in one file).
    """
    shape = info.shape
    text = "x".join(str(v) for v in shape)
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise InputError(
            f"{info.path} is a 2-D image (shape {text}); medt3d segments 3-D volumes with at least 2 voxels "
            "along each axis; give the whole 3-D scan (a DICOM series: its folder)"
        )
    if len(shape) == 4 and channels > 1 and shape[3] == channels:
        return
    if len(shape) > 4 or (len(shape) == 4 and shape[3] != 1):
        expected = (f"one 3-D volume per file, or {channels} (data.in_channels) in a 4-D file" if channels > 1
                    else "one 3-D volume per file")
        raise InputError(
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
        raise InputError(f"{what} is not on the grid of its image: shape {'x'.join(map(str, volume.shape[1:]))} vs "
                         f"{'x'.join(map(str, shape[:3]))}, spacing {_fmt(voxel_spacing(src))} vs "
                         f"{_fmt(voxel_spacing(affine))} mm, origin {_fmt(src[:3, 3])} vs "
                         f"{_fmt(np.asarray(affine)[:3, 3])} mm; resample it onto its image's grid (e.g. "
                         "with 3D Slicer or SimpleITK's Resample) and save it again")
    if (transform == [[0, 1], [1, 1], [2, 1]]).all():
        return volume
    moved = np.stack([reorient_array(np.asarray(c), transform) for c in np.asarray(volume)])
    return MetaTensor(torch.from_numpy(moved), affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)),
                      meta={"filename_or_obj": volume.meta.get("filename_or_obj", what)})


@functools.cache
def _loader(dtype: Any) -> LoadImage:
    """One ``LoadImage`` per dtype; it is always called with an explicit reader."""
    with warnings.catch_warnings():
        # LoadImage registers all of MONAI's readers; the pydicom one warns on every construction
        # when its optional GPU decoder is absent. Those readers are never used here.
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        return LoadImage(image_only=True, ensure_channel_first=True, dtype=dtype)


def load_with_monai(info: VolumeInfo, reader: Any, dtype: Any,
                    on_failure: Callable[[BaseException], None] | None = None) -> MetaTensor:
    """Read ``info.path`` with MONAI's ``LoadImage`` and exactly ``reader``, and check the shape against the header.

    Args:
        info: the header, as the format's header reader gave it.
        reader: the MONAI image reader to use (given at call time: ``LoadImage`` would otherwise fall
            back to its other readers when this one fails and, e.g., read the first of several DICOM series).
        dtype: voxel type.
        on_failure: called with an unexpected reader error before the generic one is raised (it may
            raise a more precise one, e.g. naming the corrupt DICOM files).

    Raises:
        ValueError: the reader failed, or gave another shape than the header's; the message names the file.
    """
    path = info.path
    n_channels = info.shape[3] if len(info.shape) == 4 else 1
    try:
        img = _loader(dtype)(str(path), reader=reader)
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, (FileNotFoundError, InputError)) and str(path) in str(err):
            raise
        raise InputError(f"cannot read {path}: {_short(err)}; the file may be corrupt or truncated: copy or "
                         "export it again") from None
    except Exception as err:  # readers raise many kinds on corrupt data; name the file, not the library
        if on_failure is not None:
            on_failure(err)
        raise InputError(f"cannot read {path}: {_short(err)}; the file may be corrupt or truncated: copy or "
                         "export it again") from None
    expected = tuple(info.shape[:3])
    if img.ndim != 4 or img.shape[0] != n_channels or tuple(img.shape[1:]) != expected:
        raise InputError(
            f"{path}: read an array of shape {tuple(img.shape)}, expected ({n_channels}, "
            f"{', '.join(map(str, expected))}) from its header; export the file again (header and data disagree)"
        )
    return img


def check_reader_affine(img: MetaTensor, info: VolumeInfo) -> None:
    """Refuse a loaded volume whose affine disagrees with its header's.

    Raises:
        ValueError: naming the file.
    """
    if not np.allclose(np.asarray(img.affine), info.affine, atol=GEOMETRY_ATOL_MM):
        raise InputError(f"{info.path}: the reader's affine disagrees with the header's; refusing a wrong "
                         "geometry: export the file again with a consistent header")
