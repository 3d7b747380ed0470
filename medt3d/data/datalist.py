"""Datalists: find image/label pairs in the layouts people use, and report every problem at once.

Layouts understood by :func:`build_datalist` (``Datalist.layout`` names the one found):

- ``split``: ``DATA/train/images`` + ``DATA/train/masks`` (or ``labels``), and the same under
  ``DATA/val`` (or ``validation``) and ``DATA/test`` (the test split; its masks are optional); pairs
  are matched by case name.
- ``folders``: ``DATA/images`` + ``DATA/masks`` (or ``labels``) without a split.
- ``msd``: a Medical Segmentation Decathlon ``dataset.json`` (``training``, optional ``validation``,
  ``labels``, ``modality``), given as the file or as the folder holding it.
- ``flat``: one folder where each label sits beside its image with a ``_label``, ``_seg`` or
  ``_mask`` suffix, e.g. ``spleen_2_ct.nii.gz`` + ``spleen_2_label.nii.gz`` (case ``spleen_2``); or
  case folders, each a DICOM series holding its RTSTRUCT, or holding one series subfolder and the
  RTSTRUCT beside it (:func:`~medt3d.data.folder_layouts.rtstruct_beside`).
- ``json``: an explicit JSON list ``[{"image": ..., "label": ...}, ...]`` or
  ``{"train": [...], "val": [...], "test": [...], "labels": [...], "modality": "CT"}`` (what
  :meth:`Datalist.save` writes); any of the three splits may be missing (a test set alone is fine).

- ``nnunet``: an nnU-Net v2 raw dataset (``DatasetXXX_Name/``): ``dataset.json`` with
  ``channel_names``, ``labels`` (name -> value), ``file_ending``; ``imagesTr/<case>_0000<ending>``
  (one file per channel), ``labelsTr/<case><ending>``, optional ``imagesTs/``. Classes are ordered
  by value and must be 0..N-1, as nnU-Net requires; region-based labels are refused.
- ``scan``: one scan (a NIfTI or NRRD file, or a DICOM series folder), without a label; only where
  labels are not required (``medt3d inspect``).

An MSD ``dataset.json``'s ``test`` list (images, usually without labels) becomes the test split.

A case's name is its file name without the extension and without one image suffix (``_0000``,
``_ct``, ``_img``, ``_image``, ...; see ``IMAGE_SUFFIXES``) or label suffix (``LABEL_SUFFIXES``).
Any image or label may be a NIfTI file, an NRRD file or a DICOM series folder. A DICOM folder that
holds several series needs ``"series_uid"`` in its case (``"label_series_uid"`` for a label), which
only the ``json`` layout can carry.

The readers live beside this module: :mod:`medt3d.data.folder_layouts` (``split``, ``folders``,
``flat``), :mod:`medt3d.data.dataset_json` (``json``, ``msd``), :mod:`medt3d.data.nnunet`
(``nnunet``), the names in :mod:`medt3d.data.case_names`, the record in
:mod:`medt3d.data.datalist_types` and the seeded splits in :mod:`medt3d.data.splits`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medt3d.data.case_names import IMAGE_DIRS, MSD_JSON, TEST_DIRS, TRAIN_DIRS, VAL_DIRS, case_name, is_volume
from medt3d.data.datalist_types import Datalist, DatasetError
from medt3d.data.dataset_json import from_json
from medt3d.data.folder_layouts import flat_cases, image_label_dirs
from medt3d.data.readers import (
    GEOMETRY_ATOL_MM,
    VolumeInfo,
    check_dicom_series,
    detect_kind,
    image_files,
    read_header,
    require_3d,
)
from medt3d.data.readers.channels import case_grid_problems
from medt3d.data.splits import fold_cases, split_cases
from medt3d.errors import InputError

__all__ = [
    "Datalist",
    "DatasetError",
    "build_datalist",
    "case_name",
    "check_pairs",
    "fold_cases",
    "pair_problems",
    "split_cases",
]


# ---------------------------------------------------------------------------------------------- checks


def _check_case_files(cases: list[dict[str, Any]], problems: list[str]) -> None:
    """Every path exists and is a supported kind; DICOM folders hold one valid series (or the chosen one)."""
    for case in cases:
        for key in ("image", "label"):
            if key not in case:
                continue
            uid = case.get(f"{key}_series_uid", case.get("series_uid") if key == "image" else None)
            for path in image_files(case[key]):
                try:
                    if detect_kind(path) == "dicom":
                        check_dicom_series(path, uid)
                except FileNotFoundError:
                    problems.append(f"{key} of case {case['name']!r} not found: {path}")
                except InputError as err:
                    problems.append(f"{key} of case {case['name']!r}: {err}")


def _check_names(datalist: Datalist, problems: list[str]) -> None:
    for split_name, cases in (("train", datalist.train), ("val", datalist.val), ("test", datalist.test)):
        seen: dict[str, str] = {}
        for case in cases:
            if case["name"] in seen:
                problems.append(
                    f"duplicate case name {case['name']!r} in {split_name}: {seen[case['name']]} and {case['image']}"
                )
            seen[case["name"]] = case["image"]
    splits = {"train": datalist.train, "val": datalist.val, "test": datalist.test}
    names = {split: {c["name"] for c in cases} for split, cases in splits.items()}
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        for name in sorted(names[first] & names[second]):
            problems.append(f"case {name!r} is in both {first} and {second}")


def build_datalist(source: str | Path, require_labels: bool = True, series_uid: str | None = None) -> Datalist:
    """Find the cases of a dataset folder (any layout in this module's docstring) or JSON file.

    Args:
        source: the data folder, an MSD ``dataset.json`` or an explicit JSON list.
        require_labels: every image needs a label (training, evaluation); when False, images
            without labels are kept without a ``"label"`` key.
        series_uid: the series of every DICOM image folder that names none itself (``--series-uid``).

    Returns:
        The cases, sorted by name within each split.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        DatasetError: every problem found (missing or unmatched files, empty folders, duplicate
            names, unsupported entries, bad DICOM series), each naming its path.
    """
    if not Path(source).exists():
        raise FileNotFoundError(f"data source not found: {source}; check the path")
    source = Path(os.path.abspath(source))  # absolute case paths: a saved datalist reads back anywhere
    problems: list[str] = []
    if is_volume(source):  # one scan: a NIfTI/NRRD file or a DICOM series folder
        if require_labels:
            raise InputError(f"data source {source} is a single scan without a label; give the data folder (or a "
                             "datalist) that pairs images with labels")
        datalist = Datalist([{"name": case_name(source), "image": str(source)}], [], "scan", None, None,
                            source.parent)
    elif source.is_file():
        if source.suffix.lower() != ".json":
            raise InputError(f"data source {source} is not a NIfTI, NRRD or .json file, nor a folder; give the data "
                             "folder")
        datalist = from_json(source, problems, require_labels)
    elif (source / MSD_JSON).is_file():
        datalist = from_json(source / MSD_JSON, problems, require_labels)
    elif any((source / d).is_dir() for d in TRAIN_DIRS):
        train_dir = next(source / d for d in TRAIN_DIRS if (source / d).is_dir())
        train = image_label_dirs(train_dir, problems, require_labels)
        val_dir = next((source / d for d in VAL_DIRS if (source / d).is_dir()), None)
        val = image_label_dirs(val_dir, problems, require_labels) if val_dir else []
        test_dir = next((source / d for d in TEST_DIRS if (source / d).is_dir()), None)
        test = image_label_dirs(test_dir, problems, False) if test_dir else []
        datalist = Datalist(train, val, "split", None, None, source, test)
    elif any((source / d).is_dir() for d in IMAGE_DIRS):
        datalist = Datalist(image_label_dirs(source, problems, require_labels), [], "folders", None, None, source)
    else:
        datalist = Datalist(flat_cases(source, problems, require_labels), [], "flat", None, None, source)
    if not datalist.cases and not problems:
        problems.append(f"no cases in {source}")
    for case in datalist.cases if series_uid else ():
        case.setdefault("series_uid", series_uid)
    _check_names(datalist, problems)
    _check_case_files(datalist.cases, problems)
    if problems:
        raise DatasetError(problems, source)
    for cases in (datalist.train, datalist.val, datalist.test):
        cases.sort(key=lambda c: c["name"])
    return datalist


def check_pairs(cases: Sequence[dict[str, Any]], atol: float = GEOMETRY_ATOL_MM) -> None:
    """Open headers only and check that every image is 3-D and shares its label's grid.

    A label stored in another axis order or direction over the same voxels as its image agrees
    (see :func:`medt3d.data.readers.same_grid`).

    Raises:
        DatasetError: every unreadable header, non-3-D image and image/label shape or geometry
            mismatch, each naming the case and its files.
    """
    problems = [problem for _, problem in pair_problems(cases, atol)]
    if problems:
        raise DatasetError(problems)


def pair_problems(cases: Sequence[dict[str, Any]], atol: float = GEOMETRY_ATOL_MM,
                  channels: int = 1, reference_channel: int = 0) -> list[tuple[int, str]]:
    """The header problems of :func:`check_pairs`, each with the index of its case.

    An image of several channel files needs each one 3-D, all in the frame of reference of channel
    ``reference_channel`` and the label on one of their grids (:mod:`medt3d.data.readers.channels`); a
    single image file may hold ``channels`` volumes (4-D).
    """
    problems: list[tuple[int, str]] = []
    for index, case in enumerate(cases):
        name = case.get("name", str(case.get("image")))
        infos: dict[str, list[VolumeInfo]] = {}
        for key in ("image", "label"):
            if key not in case:
                continue
            uid = case.get(f"{key}_series_uid", case.get("series_uid") if key == "image" else None)
            files = image_files(case[key])
            per_file = channels if key == "image" and len(files) == 1 else 1
            try:
                infos[key] = [read_header(f, uid) for f in files]
                for info in infos[key]:
                    require_3d(info, per_file)
            except (FileNotFoundError, InputError) as err:  # another exception is a bug: it is not the case's
                problems.append((index, f"case {name!r}: {err}"))
                infos.pop(key, None)
        if "image" in infos:
            problems += [(index, f"case {name!r}: {problem}") for problem in
                         case_grid_problems(infos["image"], infos.get("label", []), reference_channel, atol)]
    return problems
