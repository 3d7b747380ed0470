"""Datalists: find image/label pairs in the layouts people use, and report every problem at once.

Layouts understood by :func:`build_datalist` (``Datalist.layout`` names the one found):

- ``split``: ``DATA/train/images`` + ``DATA/train/masks`` (or ``labels``), and the same under
  ``DATA/val`` (or ``validation``) and ``DATA/test`` (the test split; its masks are optional); pairs
  are matched by case name.
- ``folders``: ``DATA/images`` + ``DATA/masks`` (or ``labels``) without a split.
- ``msd``: a Medical Segmentation Decathlon ``dataset.json`` (``training``, optional ``validation``,
  ``labels``, ``modality``), given as the file or as the folder holding it.
- ``flat``: one folder where each label sits beside its image with a ``_label``, ``_seg`` or
  ``_mask`` suffix, e.g. ``spleen_2_ct.nii.gz`` + ``spleen_2_label.nii.gz`` (case ``spleen_2``).
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
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medt3d.data.readers import (
    GEOMETRY_ATOL_MM,
    VolumeInfo,
    check_dicom_series,
    detect_kind,
    file_suffixes,
    image_files,
    is_dicom_file,
    read_header,
    require_3d,
    same_grid,
    strip_suffix,
)
from medt3d.io_utils import atomic_write_text

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIXES",
    "Datalist",
    "DatasetError",
    "build_datalist",
    "case_name",
    "channel_file",
    "check_pairs",
    "fold_cases",
    "is_label_path",
    "pair_problems",
    "split_cases",
]

logger = logging.getLogger("medt3d.data.datalist")

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


class DatasetError(ValueError):
    """Problems with a dataset; ``problems`` lists every one found, each naming its path."""

    def __init__(self, problems: Sequence[str], source: str | Path | None = None) -> None:
        self.problems = list(problems)
        where = f" in {source}" if source is not None else ""
        super().__init__(f"{len(self.problems)} problem(s){where}:\n  - " + "\n  - ".join(self.problems))


@dataclass
class Datalist:
    """Cases found in a dataset.

    Attributes:
        train: training cases, each ``{"name", "image", "label"}`` (+ ``"series_uid"`` when set).
        val: validation cases; empty when the data have no validation split.
        test: test cases (scored by ``medt3d evaluate --split test``, never trained on).
        layout: ``split``, ``folders``, ``msd``, ``nnunet``, ``flat``, ``json`` or ``scan``.
        labels: class names from the dataset's JSON (background first), when it has them.
        modality: modality from the dataset's JSON (several channels joined by ``", "``), when present.
        channels: channel names from an nnU-Net ``channel_names`` or MSD ``modality`` (in order).
        root: the data folder (the JSON file's folder for JSON sources).
    """

    train: list[dict[str, Any]]
    val: list[dict[str, Any]] = field(default_factory=list)
    layout: str = "json"
    labels: list[str] | None = None
    modality: str | None = None
    root: Path = Path(".")
    test: list[dict[str, Any]] = field(default_factory=list)
    channels: list[str] | None = None

    @property
    def cases(self) -> list[dict[str, Any]]:
        """Training, validation and test cases together."""
        return [*self.train, *self.val, *self.test]

    def to_dict(self) -> dict[str, Any]:
        """The explicit-JSON form, which :func:`build_datalist` reads back."""
        out: dict[str, Any] = {"train": self.train, "val": self.val}
        if self.test:
            out["test"] = self.test
        if self.labels is not None:
            out["labels"] = self.labels
        if self.modality is not None:
            out["modality"] = self.modality
        return out

    def save(self, path: str | Path) -> Path:
        """Write the datalist as explicit JSON (absolute paths), atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


# ---------------------------------------------------------------------------------------------- names


def _strip_one(stem: str, suffixes: Iterable[str]) -> tuple[str, bool]:
    lower = stem.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], True
    return stem, False


def _is_label_name(path: Path) -> bool:
    return _strip_one(strip_suffix(path), LABEL_SUFFIXES)[1]


def case_name(path: str | Path, role: str = "image") -> str:
    """Case name of an image (``role="image"``) or label (``role="label"``) path.

    Example:
        >>> case_name("spleen_2_ct.nii.gz"), case_name("spleen_2_label.nii.gz", "label")
        ('spleen_2', 'spleen_2')
    """
    stem = strip_suffix(path)
    return _strip_one(stem, LABEL_SUFFIXES if role == "label" else IMAGE_SUFFIXES)[0]


def _is_volume(path: Path) -> bool:
    """A NIfTI/NRRD file or a folder with DICOM files directly inside."""
    if path.is_dir():
        try:
            return any(is_dicom_file(p) for p in path.iterdir())
        except OSError:
            return False
    return path.name.lower().endswith(file_suffixes())


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------- pairing


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
        if name in by_label:
            case["label"] = str(by_label[name][0])
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


def _volumes_in(folder: Path, problems: list[str]) -> list[Path]:
    """Volumes in an images/ or masks/ folder; anything else there is a problem."""
    found = []
    entries = _entries(folder)
    if not entries:
        problems.append(f"empty folder: {folder}")
    for path in entries:
        if _is_volume(path):
            found.append(path)
        else:
            problems.append(f"not a NIfTI file, NRRD file or DICOM series folder: {path}")
    return found


def _image_label_dirs(folder: Path, problems: list[str], require_labels: bool) -> list[dict[str, Any]]:
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
        if require_labels:
            problems.append(f"no {' or '.join(d + '/' for d in LABEL_DIRS)} folder beside {images_dir}")
        return _pair(images, [], problems, False, "")
    labels = _volumes_in(label_dirs[0], problems)
    empty_labels = any(p == f"empty folder: {label_dirs[0]}" for p in problems[n_before:])
    return _pair(images, labels, problems, require_labels and not empty_labels, f"in {label_dirs[0]}")


def _flat(folder: Path, problems: list[str], require_labels: bool) -> list[dict[str, Any]]:
    entries = _entries(folder)
    if not entries:
        problems.append(f"empty folder: {folder}")
        return []
    volumes = [p for p in entries if _is_volume(p)]
    if not volumes:
        listing = ", ".join(p.name for p in entries[:8]) + (", ..." if len(entries) > 8 else "")
        problems.append(
            f"no NIfTI file, NRRD file or DICOM series folder in {folder} (it holds: {listing}); expected "
            f"train/ and val/ with images/ + masks/, images/ + masks/, a {MSD_JSON}, or images with labels "
            f"beside them named <case>{LABEL_SUFFIXES[0]}"
        )
        return []
    labels = [p for p in volumes if _is_label_name(p)]
    images = [p for p in volumes if not _is_label_name(p)]
    where = f"beside it in {folder} (suffixes {', '.join(LABEL_SUFFIXES)})"
    return _pair(images, labels, problems, require_labels, where)


# ---------------------------------------------------------------------------------------------- JSON


def _resolve(base: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return os.path.normpath(path if path.is_absolute() else base / path)


def _json_cases(
    entries: Any, base: Path, what: str, problems: list[str], require_labels: bool
) -> list[dict[str, Any]]:
    """Validate and resolve a JSON list of cases (MONAI's own loader stops at the first bad entry)."""
    if not isinstance(entries, list):
        problems.append(f"{what} must be a list of cases, got {type(entries).__name__}")
        return []
    cases = []
    for i, entry in enumerate(entries):
        where = f"{what}[{i}]"
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict):
            problems.append(f"{where} must be an object with \"image\" and \"label\", got {entry!r}")
            continue
        image = entry.get("image")
        several = isinstance(image, list) and image and all(isinstance(p, str) for p in image)
        if not isinstance(image, str) and not several:
            problems.append(f"{where} has no \"image\" path (a path, or a list of one path per channel): {entry!r}")
            continue
        case = dict(entry)
        case["image"] = [_resolve(base, p) for p in image] if several else _resolve(base, image)
        if several and len(image) == 1:
            case["image"] = case["image"][0]
        if isinstance(entry.get("label"), str):
            case["label"] = _resolve(base, entry["label"])
        elif "label" in entry:
            problems.append(f"{where} has a \"label\" that is not a path: {entry['label']!r}")
            case.pop("label")
        elif require_labels:
            problems.append(f"{where}: image without a label: {case['image']}")
        case["name"] = str(entry.get("name") or case_name(image_files(case["image"])[0], "image"))
        cases.append(case)
    return cases


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def _msd_meta(data: dict[str, Any], path: Path, problems: list[str]) -> tuple[list[str] | None, str | None]:
    labels = modality = None
    raw_labels = data.get("labels")
    if isinstance(raw_labels, dict):
        try:
            keyed = {int(k): str(v) for k, v in raw_labels.items()}
        except ValueError:
            problems.append(f"{path}: \"labels\" keys must be class indices 0..n-1, got {sorted(raw_labels)}")
        else:
            if sorted(keyed) != list(range(len(keyed))):
                problems.append(f"{path}: \"labels\" keys must be 0..{len(keyed) - 1}, got {sorted(keyed)}")
            else:
                labels = [keyed[i] for i in range(len(keyed))]
    elif isinstance(raw_labels, list):
        labels = [str(v) for v in raw_labels]
    elif raw_labels is not None:
        problems.append(f"{path}: \"labels\" must be an object or a list, got {raw_labels!r}")
    raw_mod = data.get("modality")
    if isinstance(raw_mod, dict):
        modality = ", ".join(str(v) for _, v in sorted(raw_mod.items(), key=lambda kv: str(kv[0]).zfill(6)))
    elif isinstance(raw_mod, str):
        modality = raw_mod
    return labels, modality


#: nnU-Net's channel file names: ``<case>_0000``, ``<case>_0001``, ... (without the file ending)
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def channel_file(stem: str) -> tuple[str, int] | None:
    """(case, channel) of an nnU-Net channel file name without its ending (``la_003_0001`` -> ``("la_003", 1)``), or None."""
    match = _CHANNEL_FILE.match(stem)
    return None if match is None else (match["case"], int(match["channel"]))


def _nnunet_labels(raw: Any, path: Path, problems: list[str]) -> list[str] | None:
    """Class names ordered by value, from nnU-Net v2's ``labels`` (name -> value)."""
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{path}: \"labels\" must map class names to values, e.g. {{\"background\": 0, \"spleen\": 1}}")
        return None
    regions = sorted(name for name, value in raw.items() if isinstance(value, (list, tuple)))
    if regions:
        problems.append(f"{path}: region-based labels ({', '.join(regions)} list several values) are not supported; "
                        "give each class one value")
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        problems.append(f"{path}: \"labels\" values must be integers, got {raw}")
        return None
    by_value = sorted(raw.items(), key=lambda item: item[1])
    values = [v for _, v in by_value]
    if values != list(range(len(values))):
        problems.append(f"{path}: \"labels\" values must be 0..{len(values) - 1} (nnU-Net's rule: background 0, "
                        f"then consecutive integers), got {values}")
        return None
    return [name for name, _ in by_value]


def _from_nnunet(path: Path, data: dict[str, Any], problems: list[str], require_labels: bool) -> Datalist:
    """An nnU-Net v2 raw dataset: images found by name, one ``_XXXX`` file per channel."""
    base = path.parent
    raw_channels = data.get("channel_names")
    if not isinstance(raw_channels, dict) or not raw_channels:
        problems.append(f"{path}: \"channel_names\" must map channel numbers to names, e.g. {{\"0\": \"CT\"}}")
        return Datalist([], [], "nnunet", None, None, base)
    try:
        channel_map = {int(k): str(v) for k, v in raw_channels.items()}
    except ValueError:
        problems.append(f"{path}: \"channel_names\" keys must be channel numbers, got {sorted(raw_channels)}")
        return Datalist([], [], "nnunet", None, None, base)
    if sorted(channel_map) != list(range(len(channel_map))):
        problems.append(f"{path}: \"channel_names\" keys must be 0..{len(channel_map) - 1}, got {sorted(channel_map)}")
        return Datalist([], [], "nnunet", None, None, base)
    channels = [channel_map[i] for i in range(len(channel_map))]
    labels = _nnunet_labels(data.get("labels"), path, problems)
    ending = data.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        problems.append(f"{path}: \"file_ending\" must be a file suffix like \".nii.gz\", got {ending!r}")
        ending = ".nii.gz"

    def cases_in(images_dir: Path, labels_dir: Path | None, split: str, need_labels: bool) -> list[dict[str, Any]]:
        if not images_dir.is_dir():
            return []
        files: dict[str, dict[int, Path]] = defaultdict(dict)
        for entry in _entries(images_dir):
            parts = channel_file(entry.name[: -len(ending)]) if entry.name.endswith(ending) else None
            if parts is None:
                problems.append(f"{entry}: not an nnU-Net image file <case>_XXXX{ending} (XXXX: the channel number)")
                continue
            files[parts[0]][parts[1]] = entry
        cases = []
        for case, by_channel in sorted(files.items()):
            if sorted(by_channel) != list(range(len(channels))):
                found = ", ".join(f"_{c:04d}" for c in sorted(by_channel))
                problems.append(f"{split} case {case!r} in {images_dir}: channel files {found}, but channel_names "
                                f"lists {len(channels)} channel(s) (_0000 to _{len(channels) - 1:04d})")
                continue
            image = [str(by_channel[c]) for c in range(len(channels))]
            entry: dict[str, Any] = {"name": case, "image": image if len(image) > 1 else image[0]}
            label = labels_dir / f"{case}{ending}" if labels_dir is not None else None
            if label is not None and label.is_file():
                entry["label"] = str(label)
            elif need_labels:
                problems.append(f"{split} case {case!r}: no label {label}")
            cases.append(entry)
        return cases

    train = cases_in(base / "imagesTr", base / "labelsTr", "training", require_labels)
    test = cases_in(base / "imagesTs", base / "labelsTs", "test", False)
    expected = data.get("numTraining")
    if isinstance(expected, int) and expected != len(train) and not problems:
        problems.append(f"{path}: numTraining is {expected} but {base / 'imagesTr'} holds {len(train)} case(s)")
    datalist = Datalist(train, [], "nnunet", labels, ", ".join(channels), base, test)
    datalist.channels = channels
    return datalist


def _from_json(path: Path, problems: list[str], require_labels: bool) -> Datalist:
    data = _read_json(path)
    base = path.parent
    if isinstance(data, dict) and "training" not in data and ("channel_names" in data or "file_ending" in data):
        return _from_nnunet(path, data, problems, require_labels)
    if isinstance(data, dict) and "training" in data:
        labels, modality = _msd_meta(data, path, problems)
        train = _json_cases(data["training"], base, f"{path} training", problems, require_labels)
        val = _json_cases(data.get("validation", []), base, f"{path} validation", problems, require_labels)
        # MSD test images come without labels (evaluate asks for labels itself), and users often leave
        # imagesTs/ out of their copy: a missing test image is left out with a warning, not a problem
        test = _json_cases(data.get("test", []), base, f"{path} test", problems, False)
        missing = [str(f) for c in test for f in image_files(c["image"]) if not f.exists()]
        if missing:
            logger.warning("%s: %d test image(s) listed but not found, left out: %s", path, len(missing),
                           ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))
            test = [c for c in test if all(f.exists() for f in image_files(c["image"]))]
        return Datalist(train, val, "msd", labels, modality, base, test)
    if isinstance(data, list):
        return Datalist(_json_cases(data, base, str(path), problems, require_labels), [], "json", None, None, base)
    split_keys = {"train": ("train", "training"), "val": ("val", "validation"), "test": ("test",)}
    if isinstance(data, dict) and any(k in data for keys in split_keys.values() for k in keys):
        labels, modality = _msd_meta(data, path, problems)
        splits: dict[str, list[dict[str, Any]]] = {}
        for split, keys in split_keys.items():
            key = next((k for k in keys if k in data), None)
            splits[split] = _json_cases(data[key], base, f"{path} {key}", problems, require_labels) if key else []
        return Datalist(splits["train"], splits["val"], "json", labels, modality, base, splits["test"])
    raise ValueError(
        f"{path}: expected a list of cases, an object with \"train\", \"val\" and/or \"test\" lists, or an MSD "
        "dataset.json with \"training\""
    )


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
                except ValueError as err:
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
        raise FileNotFoundError(f"data source not found: {source}")
    source = Path(os.path.abspath(source))  # absolute case paths: a saved datalist reads back anywhere
    problems: list[str] = []
    if _is_volume(source):  # one scan: a NIfTI/NRRD file or a DICOM series folder
        if require_labels:
            raise ValueError(f"data source {source} is a single scan without a label; give the data folder (or a "
                             "datalist) that pairs images with labels")
        datalist = Datalist([{"name": case_name(source), "image": str(source)}], [], "scan", None, None,
                            source.parent)
    elif source.is_file():
        if source.suffix.lower() != ".json":
            raise ValueError(f"data source {source} is not a NIfTI, NRRD or .json file, nor a folder; give the data "
                             "folder")
        datalist = _from_json(source, problems, require_labels)
    elif (source / MSD_JSON).is_file():
        datalist = _from_json(source / MSD_JSON, problems, require_labels)
    elif any((source / d).is_dir() for d in TRAIN_DIRS):
        train_dir = next(source / d for d in TRAIN_DIRS if (source / d).is_dir())
        train = _image_label_dirs(train_dir, problems, require_labels)
        val_dir = next((source / d for d in VAL_DIRS if (source / d).is_dir()), None)
        val = _image_label_dirs(val_dir, problems, require_labels) if val_dir else []
        test_dir = next((source / d for d in TEST_DIRS if (source / d).is_dir()), None)
        test = _image_label_dirs(test_dir, problems, False) if test_dir else []
        datalist = Datalist(train, val, "split", None, None, source, test)
    elif any((source / d).is_dir() for d in IMAGE_DIRS):
        datalist = Datalist(_image_label_dirs(source, problems, require_labels), [], "folders", None, None, source)
    else:
        datalist = Datalist(_flat(source, problems, require_labels), [], "flat", None, None, source)
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


def split_cases(
    cases: Sequence[dict[str, Any]], val_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out a seeded share of ``cases`` for validation (for data without a validation split).

    The result depends only on the case names, ``val_fraction`` and ``seed``, not on input order.
    At least one case goes to each side when ``val_fraction > 0``.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1), or fewer than 2 cases to split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(cases, key=lambda c: c["name"])
    if val_fraction == 0.0:
        return ordered, []
    if len(ordered) < 2:
        raise ValueError(f"cannot hold out a validation case from {len(ordered)} case(s); need at least 2")
    n_val = min(max(1, round(len(ordered) * val_fraction)), len(ordered) - 1)
    picked = set(random.Random(seed).sample(range(len(ordered)), n_val))
    train = [c for i, c in enumerate(ordered) if i not in picked]
    val = [c for i, c in enumerate(ordered) if i in picked]
    return train, val


def fold_cases(cases: Sequence[dict[str, Any]], fold: int, seed: int,
               n_folds: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and validation cases of fold ``fold`` of a seeded ``n_folds``-fold split (as nnU-Net's).

    The cases are sorted by name, shuffled with ``seed`` and dealt into ``n_folds`` parts of nearly
    equal size; fold ``k`` validates on part ``k`` and trains on the rest. Depends only on the
    names, ``seed`` and ``n_folds``.

    Raises:
        ValueError: ``fold`` outside ``0..n_folds-1``, or fewer cases than folds.
    """
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be 0..{n_folds - 1}, got {fold}")
    ordered = sorted(cases, key=lambda c: c["name"])
    if len(ordered) < n_folds:
        raise ValueError(f"a {n_folds}-fold split needs at least {n_folds} cases, got {len(ordered)}")
    order = list(range(len(ordered)))
    random.Random(seed).shuffle(order)
    held = {order[i] for i in range(fold, len(order), n_folds)}
    return ([c for i, c in enumerate(ordered) if i not in held], [c for i, c in enumerate(ordered) if i in held])


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
                  channels: int = 1) -> list[tuple[int, str]]:
    """The header problems of :func:`check_pairs`, each with the index of its case.

    An image of several channel files needs each one 3-D and all on the label's grid; a single
    image file may hold ``channels`` volumes (4-D).
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
            except (FileNotFoundError, ValueError) as err:
                problems.append((index, f"case {name!r}: {err}"))
                infos.pop(key, None)
        if "image" in infos:
            first = infos["image"][0]
            pairs = [("channel files", other) for other in infos["image"][1:]]
            pairs += [("image and label", label) for label in infos.get("label", [])]
            for what, other in pairs:
                mismatch = same_grid(first, other, atol)
                if mismatch:
                    problems.append((index, f"case {name!r}: {what} differ: {mismatch}"))
    return problems
