"""The NRRD format (``.nrrd``, ``.nhdr``): header by SimpleITK, voxels by MONAI's ``ITKReader``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ITKReader, MetaTensor

from medt3d.data.geometry import flip_lps_ras
from medt3d.data.readers.common import FileClaim, VolumeInfo, check_reader_affine, load_with_monai
from medt3d.errors import InputError

__all__ = ["NRRD", "NRRD_SUFFIXES", "detect", "load", "read_header"]

NRRD = "nrrd"
NRRD_SUFFIXES = (".nrrd", ".nhdr")


def detect(path: Path) -> bool:
    """True for a file named ``*.nrrd`` or ``*.nhdr`` (any case)."""
    return not path.is_dir() and path.name.lower().endswith(NRRD_SUFFIXES)


#: bytes per value of NRRD's type names (their canonical words, as in the NRRD specification)
_TYPE_BYTES = (("longlong", 8), ("long long", 8), ("int64", 8), ("double", 8), ("short", 2), ("int16", 2),
               ("char", 1), ("int8", 1), ("int", 4), ("float", 4))
#: the most header bytes read when looking for the fields of the claim
_MAX_HEADER = 1 << 16


def _claim(path: Path) -> FileClaim | None:
    """The bytes a raw or gzip NRRD's header claims for its voxels (attached or in one detached data file).

    None when the header uses what this check does not follow (other encodings, skips, several data
    files): the voxel cap still applies.
    """
    with open(path, "rb") as handle:
        head = handle.read(_MAX_HEADER)
    end = head.find(b"\n\n")
    fields: dict[str, str] = {}
    for line in head[: end if end >= 0 else len(head)].decode("latin-1").splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[key.strip().lower().replace(" ", "")] = value.lstrip("=").strip()
    encoding = fields.get("encoding", "").lower()
    if encoding not in ("raw", "gzip", "gz") or fields.get("byteskip", "0") != "0" or fields.get("lineskip", "0") != "0":
        return None
    size = next((n for word, n in _TYPE_BYTES if word in fields.get("type", "").lower()), None)
    try:
        sizes = [int(v) for v in fields.get("sizes", "").split()]
    except ValueError:
        return None
    if size is None or not sizes:
        return None
    nbytes = int(np.prod(sizes, dtype=object)) * size
    datafile = fields.get("datafile")
    if datafile is None and end < 0:
        return None
    target, start = (path, end + 2) if datafile is None else (path.parent / datafile, 0)
    if datafile is not None and (" " in datafile or not target.is_file()):
        return None
    what = f"{'x'.join(map(str, sizes))} values of {fields['type']}"
    if encoding == "raw":
        return FileClaim(target, start + nbytes, what + f" from byte {start}")
    return FileClaim(target, nbytes, what, gzip=True, start=start)


def read_header(path: Path, series_uid: str | None = None) -> VolumeInfo:
    """Shape and voxel-to-RAS affine from the NRRD header (``series_uid`` is ignored).

    A vector image's components are a 4th entry of the shape.

    Raises:
        ValueError: an unreadable header, naming the file.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(f"cannot read NRRD header of {path}: {first}; check the file or export it again") from None
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
    claim = _claim(path)
    return VolumeInfo(path, NRRD, shape, flip_lps_ras(lps), claims=[claim] if claim else [])


def load(info: VolumeInfo, dtype: Any) -> MetaTensor:
    """The voxels as a (C, X, Y, Z) ``MetaTensor`` in RAS.

    Raises:
        ValueError: the file is unreadable, or its shape or affine disagree with the header.
    """
    img = load_with_monai(info, ITKReader(), dtype)
    check_reader_affine(img, info)
    return img
