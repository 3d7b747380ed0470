"""The readers registry: one entry per input format, and the functions that pick a format by its entry.

Each entry (:class:`ReaderFormat`) says how a format is named, described and detected, how its header is
read (:class:`~medt3d.data.readers.common.VolumeInfo`, without the voxels) and how its voxels are loaded
(a channel-first ``MetaTensor`` in RAS). :func:`detect_kind`, :func:`read_header`, :func:`strip_suffix` and
:func:`medt3d.data.readers.load_volume` read only the registry, so a new format is one module and one entry
(docs/design.md shows one). An enhanced multi-frame DICOM object is a DICOM series of one file: the DICOM
entry reads it (:mod:`medt3d.data.readers.multiframe`), and its kind stays ``dicom``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.data import MetaTensor

from medt3d.data.readers import dicom, nifti, nrrd, rtstruct
from medt3d.data.readers.common import VolumeInfo, check_claims
from medt3d.data.readers.dicom import DICOM
from medt3d.data.readers.dicom_series import is_dicom_file
from medt3d.data.readers.nifti import NIFTI
from medt3d.data.readers.nrrd import NRRD
from medt3d.errors import InputError

__all__ = ["FORMATS", "KINDS", "ReaderFormat", "detect_kind", "file_suffixes", "read_header", "strip_suffix",
           "supported"]


@dataclass(frozen=True)
class ReaderFormat:
    """One input format.

    Attributes:
        name: the kind, as :func:`detect_kind` returns it and sidecars record it (``input_kind``).
        description: how messages name it, e.g. ``"NIfTI (.nii, .nii.gz)"``.
        suffixes: file name endings of its files, longest first (stripped from case names); empty for a
            format read from a folder.
        detect: whether an existing path holds this format (cheap: the name, or a folder listing).
        read_header: ``(path, series_uid) -> VolumeInfo`` from the header only.
        load: ``(info, dtype) -> MetaTensor`` (C, X, Y, Z) in RAS, checked against ``info``.
    """

    name: str
    description: str
    suffixes: tuple[str, ...]
    detect: Callable[[Path], bool]
    read_header: Callable[[Path, str | None], VolumeInfo]
    load: Callable[[VolumeInfo, Any], MetaTensor]


#: every input format, in the order :func:`detect_kind` tries them
FORMATS: dict[str, ReaderFormat] = {f.name: f for f in (
    ReaderFormat(NIFTI, "NIfTI (.nii, .nii.gz)", nifti.NIFTI_SUFFIXES, nifti.detect, nifti.read_header, nifti.load),
    ReaderFormat(NRRD, "NRRD (.nrrd, .nhdr)", nrrd.NRRD_SUFFIXES, nrrd.detect, nrrd.read_header, nrrd.load),
    ReaderFormat(DICOM, "a folder holding one DICOM series", (), dicom.detect, dicom.read_header, dicom.load),
    ReaderFormat(rtstruct.RTSTRUCT, "a DICOM RTSTRUCT file (labels only) beside or inside its series folder", (),
                 rtstruct.detect, rtstruct.read_header, rtstruct.load),
)}
KINDS = tuple(FORMATS)


def supported() -> str:
    """The formats as messages list them: ``"NIfTI (...), NRRD (...) or a folder holding one DICOM series"``."""
    names = [f.description for f in FORMATS.values()]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def file_suffixes() -> tuple[str, ...]:
    """Every file suffix of every format (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``), each format's longest first."""
    return tuple(s for f in FORMATS.values() for s in f.suffixes)


def strip_suffix(path: str | Path) -> str:
    """File name without its image suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``); folder names unchanged."""
    name = Path(path).name
    lower = name.lower()
    for suffix in file_suffixes():
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_kind(path: str | Path) -> str:
    """Say what ``path`` holds: the name of its format (``"nifti"``, ``"nrrd"`` or ``"dicom"``, a folder of DICOM files).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is none of the supported kinds (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}; check the path")
    for fmt in FORMATS.values():
        if fmt.detect(path):
            return fmt.name
    if path.is_dir():
        raise InputError(f"{path} is a folder without DICOM files; pass a file or DICOM series folder: "
                         f"{supported()}")
    if is_dicom_file(path):
        raise InputError(
            f"{path} is a single DICOM file; give the folder that holds its whole series ({path.parent})"
        )
    raise InputError(f"unsupported input {path}; convert it to one of {supported()}")


def read_header(path: str | Path, series_uid: str | None = None, max_voxels: int | None = None) -> VolumeInfo:
    """Read shape and geometry of a volume from its header only (cheap), through its format's entry.

    Every header passes :func:`~medt3d.data.readers.common.check_claims` (with ``max_voxels``, the cap on
    one volume's voxels; None: the default) before any voxel is read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported kind, an unreadable header, or a header that claims more than its file or
            the cap holds (the message names the file).
    """
    path = Path(path)
    info = FORMATS[detect_kind(path)].read_header(path, series_uid)
    check_claims(info, max_voxels)
    return info
