"""Loading cases through the readers registry: one volume, a case's image (one or more channel files),
MONAI's dictionary transform, and the expansion of user inputs into cases.

The result is what ``LoadImage(image_only=True, ensure_channel_first=True)`` gives: a channel-first
``MetaTensor`` (C, X, Y, Z) whose affine maps voxels to RAS world millimetres, so later MONAI transforms
(``Orientationd``, ``Spacingd``, ``Invertd``, ...) work unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform

from medt3d.data.readers.channels import Grid, check_label_grid, grid_of, resample_onto, stack_channels
from medt3d.data.readers.common import _grid_problem, require_3d
from medt3d.data.readers.dicom_series import check_dicom_series, dicom_files, is_dicom_file
from medt3d.data.readers.registry import FORMATS, detect_kind, file_suffixes, read_header
from medt3d.data.readers.rtstruct import RTSTRUCT, RoiMap, with_rois
from medt3d.data.readers.rtstruct import detect as is_rtstruct
from medt3d.errors import InputError

__all__ = ["LoadVolumed", "find_inputs", "image_files", "load_image", "load_volume"]


def load_volume(path: str | Path, series_uid: str | None = None, dtype: Any = np.float32,
                channels: int | None = 1, max_voxels: int | None = None, rois: RoiMap | None = None) -> Any:
    """Load a NIfTI file, NRRD file or DICOM series folder as a channel-first ``MetaTensor``.

    The result matches MONAI's ``LoadImage(image_only=True, ensure_channel_first=True)``: shape
    (1, X, Y, Z), affine in RAS millimetres, ``meta["filename_or_obj"]`` set to ``path``.

    Args:
        path: the file, or the folder of a DICOM series.
        series_uid: which series to read when a DICOM folder holds several.
        dtype: voxel type of the result (as ``LoadImage``; float32 by default there too).
        channels: a 4-D file with this many volumes is read as that many channels (C, X, Y, Z);
            ``None`` takes a 4-D file's volumes as channels, however many.
        max_voxels: the most voxels the volume may hold (``infer.max_voxels``); None: the readers' default.
        rois: for an RTSTRUCT label, which class each ROI becomes (``RoiMap.from_config(cfg.data)``); None:
            ROIs named as the classes ``background`` and ``foreground``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported, unreadable, corrupt or truncated input, a header that claims more than
            its file holds or more than ``max_voxels``, a DICOM series with gaps or mixed slices, or an
            image that is not 3-D (a 4-D image with one volume is squeezed).
    """
    path = Path(path)
    info = read_header(path, series_uid, max_voxels)
    n_channels = info.shape[3] if len(info.shape) == 4 else 1
    require_3d(info, n_channels if channels is None else channels)
    img = FORMATS[info.kind].load(with_rois(info, rois), dtype)
    img.meta["filename_or_obj"] = str(path)
    return img


def image_files(image: str | Path | Sequence[str | Path]) -> list[Path]:
    """The file(s) of a case's image: one path, or a list of one path per channel."""
    if isinstance(image, (str, os.PathLike)):
        return [Path(image)]
    return [Path(p) for p in image]


def load_image(image: str | Path | Sequence[str | Path], series_uid: str | None = None, dtype: Any = np.float32,
               channels: int | None = 1, max_voxels: int | None = None, reference_channel: int = 0) -> Any:
    """Load a case's image as a (C, X, Y, Z) ``MetaTensor``: one file, a 4-D file of channels, or one file per channel.

    Channel files are stacked in the order given, on the grid of channel ``reference_channel``: channels
    on other grids of the same frame of reference are resampled onto it linearly
    (:mod:`medt3d.data.readers.channels`). ``meta["filename_or_obj"]`` is the reference channel's file
    and ``meta["channel_files"]`` lists them all.

    Args:
        image: a path, or a list of paths (one per channel).
        series_uid: which series to read in DICOM folders that hold several.
        dtype: voxel type.
        channels: channels the case must have (``data.in_channels``); ``None``: whatever it holds.
        max_voxels: the most voxels each file may hold; None: the readers' default.
        reference_channel: the channel file whose grid the image takes (``data.reference_channel``).

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: as :func:`load_volume`, channel files outside one frame of reference, or another
            number of channels.
    """
    return _load_image(image, series_uid, dtype, channels, max_voxels, reference_channel)[0]


def _load_image(image: str | Path | Sequence[str | Path], series_uid: str | None, dtype: Any, channels: int | None,
                max_voxels: int | None, reference_channel: int) -> tuple[Any, list[Grid]]:
    """:func:`load_image`, and the grid of each channel file as read."""
    files = image_files(image)
    parts = [load_volume(f, series_uid, dtype, channels=channels if len(files) == 1 else 1, max_voxels=max_voxels)
             for f in files]
    if len(parts) == 1:
        img, grids = parts[0], [grid_of(files[0], parts[0])]
    else:
        img, grids = stack_channels(files, parts, reference_channel)
        img.meta["filename_or_obj"] = str(files[reference_channel])
    if channels is not None and img.shape[0] != channels:
        raise InputError(f"{', '.join(map(str, files))}: image has {img.shape[0]} channel(s) but the model expects "
                         f"{channels} (data.in_channels); give one file per channel, in the "
                         "order of data.channels")
    img.meta["channel_files"] = [str(f) for f in files]
    return img, grids


class LoadVolumed(MapTransform):
    """Dictionary version of :func:`load_volume`, a drop-in for ``LoadImaged(image_only=True, ensure_channel_first=True)``.

    The series of a DICOM folder is chosen by ``data["<key>_series_uid"]`` or, for the ``image``
    key, by ``data["series_uid"]``. With ``check_grid`` all loaded keys must share one grid
    (shape and affine), else a ValueError names both files.

    Args:
        keys: keys to load, e.g. ``("image", "label")``.
        allow_missing_keys: skip keys absent from the data instead of raising.
        dtype: voxel type, as ``LoadImaged``'s ``dtype``.
        check_grid: require every loaded key to share the first key's grid.
        channels: channels of the ``image`` key (one file, a 4-D file, or a list of one file per
            channel: see :func:`load_image`); other keys are single 3-D volumes.
        max_voxels: the most voxels each file may hold (``infer.max_voxels``); None: the readers' default.
        reference_channel: the channel file whose grid a multi-channel image takes (``data.reference_channel``);
            a label on another channel's grid is resampled onto it by nearest neighbour.
        rois: which class each ROI of an RTSTRUCT label becomes (:func:`load_volume`).
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        allow_missing_keys: bool = False,
        dtype: Any = np.float32,
        check_grid: bool = True,
        channels: int = 1,
        max_voxels: int | None = None,
        reference_channel: int = 0,
        rois: RoiMap | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype
        self.check_grid = check_grid
        self.channels = channels
        self.max_voxels = max_voxels
        self.reference_channel = reference_channel
        self.rois = rois

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key of ``data`` that names a volume."""
        d = dict(data)
        first: tuple[Hashable, Any] | None = None
        channel_grids: list[Grid] = []  # the channel files' own grids, when they differ from one another
        for key in self.key_iterator(d):
            uid = d.get(f"{key}_series_uid", d.get("series_uid") if key == "image" else None)
            if key == "image":
                img, grids = _load_image(d[key], uid, self.dtype, self.channels, self.max_voxels,
                                         self.reference_channel)
                channel_grids = grids if len(grids) > 1 else []
            else:
                img = load_volume(d[key], series_uid=uid, dtype=self.dtype, max_voxels=self.max_voxels,
                                  rois=self.rois)
            if (self.check_grid and channel_grids and first is not None and key != "image"
                    and _grid_problem(first[1].meta["filename_or_obj"], first[1], d[key], img)):
                check_label_grid(grid_of(d[key], img), channel_grids)  # on one channel's grid, or refused
                img = resample_onto(img, first[1], label=True)
            d[key] = img
            if not self.check_grid:
                continue
            if first is None:
                first = (key, img)
                continue
            problem = _grid_problem(first[1].meta["filename_or_obj"], first[1], img.meta["filename_or_obj"], img)
            if problem:
                raise InputError(f"{first[0]!s} and {key!s} are not on one grid: {problem}; resample "
                                 "the label onto its image's grid")
        return d


def find_inputs(paths: str | Path | Iterable[str | Path], series_uid: str | None = None,
                check: bool = True) -> list[Path]:
    """Expand user inputs into a sorted list of cases (NIfTI/NRRD files and DICOM series folders).

    Each input may be a file, a DICOM series folder, or a folder searched recursively for both
    (hidden files and folders are skipped).

    Args:
        paths: one or more inputs.
        series_uid: the series to pick in DICOM folders that hold several (used by ``check``).
        check: validate each DICOM folder (one series, no gaps) now, so that problems show before work starts.

    Raises:
        FileNotFoundError: a single input that does not exist.
        ValueError: every problem found (missing inputs, unsupported files, empty folders, bad DICOM
            series), one per line, each naming its path.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no inputs given; pass at least one scan file or DICOM folder")
    found: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if not path.exists():
            problems.append(f"input not found: {path}; check the path")
            continue
        if path.is_file():
            try:
                if detect_kind(path) == RTSTRUCT:
                    problems.append(f"{path} is an RTSTRUCT (contours, a label, not a scan); pass the folder of "
                                    "the series it was drawn on")
                else:
                    found.append(path)
            except InputError as err:
                problems.append(str(err))
            continue
        if any(not is_rtstruct(p) for p in dicom_files(path)):  # a folder of RTSTRUCTs alone holds no scan
            found.append(path)
            continue
        before = len(found)
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            here = Path(root)
            names = sorted(f for f in files if not f.startswith("."))
            if any(is_dicom_file(here / f) and not is_rtstruct(here / f) for f in names):
                found.append(here)
            found.extend(here / f for f in names if f.lower().endswith(file_suffixes()))
        if len(found) == before:
            problems.append(f"no NIfTI, NRRD or DICOM series found in {path}; pass a folder of scans or a "
                            "DICOM series folder")
    cases = sorted(set(found))
    if check:
        for case in cases:
            if case.is_dir():
                try:
                    check_dicom_series(case, series_uid)
                except InputError as err:
                    problems.append(str(err))
    if problems:
        if len(paths) == 1 and len(problems) == 1 and problems[0].startswith("input not found"):
            raise FileNotFoundError(problems[0])
        if len(problems) == 1:
            raise InputError(problems[0])
        raise InputError(f"{len(problems)} problem(s) with the inputs; fix each one below:\n  - "
                         + "\n  - ".join(problems))
    return cases
