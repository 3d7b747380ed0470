"""The folder layouts of a datalist: ``split``, ``folders`` and ``flat`` (images matched to labels by case name)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from medt3d.data.case_names import (
    IMAGE_DIRS,
    IMAGE_SUFFIXES,
    LABEL_DIRS,
    LABEL_SUFFIXES,
    MSD_JSON,
    case_name,
    folder_entries,
    is_label_name,
    is_volume,
)


def _pair(
    images: list[Path],
    labels: list[Path],
    problems: list[str],
    require_labels: bool,
    label_where: str,
) -> list[dict[str, Any]]:
    """Match images to labels by case name; append every unmatched or duplicate entry to ``problems``."""
    by_image: dict[str, list[Path]] = defaultdict(list)
    by_label: dict[str, list[Path]] = defaultdict(list)
    for path in images:
        by_image[case_name(path, "image")].append(path)
    for path in labels:
        by_label[case_name(path, "label")].append(path)
    for kind, groups in (("images", by_image), ("labels", by_label)):
        for name, paths in sorted(groups.items()):
            if len(paths) > 1:
                problems.append(f"duplicate case name {name!r} among {kind}: " + ", ".join(str(p) for p in paths))
    cases = []
    for name, paths in sorted(by_image.items()):
        case: dict[str, Any] = {"name": name, "image": str(paths[0])}
        beside = rtstruct_beside(paths[0])
        if beside is not None:  # a case folder: the series in a subfolder, its RTSTRUCT beside it
            case["image"] = str(beside[0])
        if name in by_label:
            case["label"] = str(by_label[name][0])
        elif beside is not None:
            case["label"] = str(beside[1])
        elif (inside := rtstruct_inside(paths[0])) is not None:
            case["label"] = str(inside)
        elif require_labels:
            problems.append(f"image without a label: {paths[0]} (no label named {name!r} {label_where})")
        cases.append(case)
    for name, paths in sorted(by_label.items()):
        if name not in by_image:
            problems.append(
                f"label without an image: {paths[0]} (no image named {name!r}, with or without one of the "
                f"suffixes {', '.join(IMAGE_SUFFIXES)})"
            )
    return cases


def rtstruct_inside(image: Path) -> Path | None:
    """The one RTSTRUCT file inside a DICOM series folder, its label; None for anything else."""
    if not image.is_dir():
        return None
    from medt3d.data.readers.dicom_series import dicom_files
    from medt3d.data.readers.rtstruct import detect

    found = [p for p in dicom_files(image) if detect(p)]
    return found[0] if len(found) == 1 else None


def rtstruct_beside(folder: Path) -> tuple[Path, Path] | None:
    """``(series, rtstruct)`` of a case folder holding one RTSTRUCT file and one DICOM series subfolder beside it.

    That is how planning systems and TCIA exports often keep a contoured scan (``case01/rtstruct.dcm``
    and ``case01/series/``); anything else (a series folder, a file) gives None.
    """
    if not folder.is_dir():
        return None
    from medt3d.data.readers.dicom_series import dicom_files
    from medt3d.data.readers.rtstruct import detect

    subfolders = [p for p in folder_entries(folder) if p.is_dir()]  # checked first: a plain series has none
    if len(subfolders) != 1 or not is_volume(subfolders[0]):
        return None
    files = dicom_files(folder)
    return (subfolders[0], files[0]) if len(files) == 1 and detect(files[0]) else None


def _volumes_in(folder: Path, problems: list[str]) -> list[Path]:
    """Volumes in an images/ or masks/ folder; anything else there is a problem."""
    found = []
    entries = folder_entries(folder)
    if not entries:
        problems.append(f"empty folder: {folder}")
    for path in entries:
        if is_volume(path):
            found.append(path)
        else:
            problems.append(f"not a NIfTI file, NRRD file or DICOM series folder: {path}")
    return found


def image_label_dirs(folder: Path, problems: list[str], require_labels: bool) -> list[dict[str, Any]]:
    """Cases of ``folder/images`` + ``folder/masks`` (or ``labels``)."""
    images_dir = next((folder / d for d in IMAGE_DIRS if (folder / d).is_dir()), None)
    if images_dir is None:
        problems.append(f"no {'/'.join(IMAGE_DIRS)}/ folder in {folder}")
        return []
    label_dirs = [folder / d for d in LABEL_DIRS if (folder / d).is_dir()]
    if len(label_dirs) > 1:
        problems.append(f"both {' and '.join(str(d) for d in label_dirs)} exist: keep one")
    n_before = len(problems)
    images = _volumes_in(images_dir, problems)
    if not label_dirs:
        cases = _pair(images, [], problems, False, "")
        if require_labels and not all("label" in c for c in cases):  # RTSTRUCTs inside the series need none
            problems.append(f"no {' or '.join(d + '/' for d in LABEL_DIRS)} folder beside {images_dir}")
        return cases
    labels = _volumes_in(label_dirs[0], problems)
    empty_labels = any(p == f"empty folder: {label_dirs[0]}" for p in problems[n_before:])
    return _pair(images, labels, problems, require_labels and not empty_labels, f"in {label_dirs[0]}")


def flat_cases(folder: Path, problems: list[str], require_labels: bool) -> list[dict[str, Any]]:
    entries = folder_entries(folder)
    if not entries:
        problems.append(f"empty folder: {folder}")
        return []
    volumes = [p for p in entries if is_volume(p)]
    if not volumes:
        listing = ", ".join(p.name for p in entries[:8]) + (", ..." if len(entries) > 8 else "")
        problems.append(
            f"no NIfTI file, NRRD file or DICOM series folder in {folder} (it holds: {listing}); expected "
            f"train/ and val/ with images/ + masks/, images/ + masks/, a {MSD_JSON}, or images with labels "
            f"beside them named <case>{LABEL_SUFFIXES[0]}"
        )
        return []
    labels = [p for p in volumes if is_label_name(p)]
    images = [p for p in volumes if not is_label_name(p)]
    where = f"beside it in {folder} (suffixes {', '.join(LABEL_SUFFIXES)})"
    return _pair(images, labels, problems, require_labels, where)
