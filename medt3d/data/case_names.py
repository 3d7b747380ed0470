"""Case names and the folder and suffix names of the datalist layouts (see :mod:`medt3d.data.datalist`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medt3d.data.readers import file_suffixes, is_dicom_file, strip_suffix

#: suffixes that mark a label in a flat folder (also stripped from names in masks/ folders).
LABEL_SUFFIXES = ("_label", "_seg", "_mask")
#: suffixes stripped from image names so that an image and its label share one case name.
IMAGE_SUFFIXES = ("_0000", "_ct", "_mr", "_mri", "_img", "_image", "_scan", "_vol", "_volume")
IMAGE_DIRS = ("images",)
LABEL_DIRS = ("masks", "labels")
TRAIN_DIRS = ("train",)
VAL_DIRS = ("val", "validation")
TEST_DIRS = ("test",)
MSD_JSON = "dataset.json"
#: folders of labels in nnU-Net's layout, besides ``LABEL_DIRS``
NNUNET_LABEL_DIRS = ("labelsTr", "labelsTs")


def is_label_path(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, found by searching ``root``, is a label by this module's layouts.

    It is when a folder between ``root`` and it is a label folder (``masks``, ``labels``,
    ``labelsTr``...) or its name ends in a label suffix (``_label``, ``_seg``, ``_mask``).
    """
    path, root = Path(path), Path(root)
    try:
        folders = path.relative_to(root).parts[:-1]
    except ValueError:
        folders = ()
    label_dirs = {d.lower() for d in (*LABEL_DIRS, *NNUNET_LABEL_DIRS)}
    if any(part.lower() in label_dirs for part in folders):
        return True
    return strip_suffix(path).lower().endswith(LABEL_SUFFIXES)


def _strip_one(stem: str, suffixes: Iterable[str]) -> tuple[str, bool]:
    lower = stem.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], True
    return stem, False


def is_label_name(path: Path) -> bool:
    return _strip_one(strip_suffix(path), LABEL_SUFFIXES)[1]


def case_name(path: str | Path, role: str = "image") -> str:
    """Case name of an image (``role="image"``) or label (``role="label"``) path.

    Example:
        >>> case_name("spleen_2_ct.nii.gz"), case_name("spleen_2_label.nii.gz", "label")
        ('spleen_2', 'spleen_2')
    """
    stem = strip_suffix(path)
    return _strip_one(stem, LABEL_SUFFIXES if role == "label" else IMAGE_SUFFIXES)[0]


def is_volume(path: Path) -> bool:
    """A NIfTI/NRRD file or a folder with DICOM files directly inside."""
    if path.is_dir():
        try:
            return any(is_dicom_file(p) for p in path.iterdir())
        except OSError:
            return False
    return path.name.lower().endswith(file_suffixes())


def folder_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
