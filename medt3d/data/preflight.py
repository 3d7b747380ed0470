"""The input gate: checks that run before training, evaluation or inspection, so bad data fail fast.

Every problem is collected and reported together, each naming its file. Headers are checked first
(3-D, readable, label on its image's grid up to axis order and direction); then every image is read
in full, which finds truncated files and NaN or Inf voxels, and every label's values are checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from medt3d.data.datalist import DatasetError, pair_problems
from medt3d.data.readers import load_image, load_volume
from medt3d.data.readers.rtstruct import RoiMap
from medt3d.errors import InputError

__all__ = ["check_cases", "label_value_problem", "non_finite_problem"]


def label_value_problem(values: np.ndarray, num_classes: int, path: Any) -> str | None:
    """Describe the values of a label volume that are not classes ``0..num_classes-1``, or None."""
    values = np.unique(np.asarray(values))
    bad = [float(v) for v in values if not (np.isfinite(v) and v == round(v) and 0 <= v < num_classes)]
    if not bad:
        return None
    listed = ", ".join(f"{v:g}" for v in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    return (f"{path}: label values {listed} are outside 0..{num_classes - 1} (data.labels has {num_classes} classes); "
            "add the classes to data.labels or remap the label")


def non_finite_problem(image: Any, path: Any) -> str | None:
    """Describe the NaN or Inf voxels of ``image`` (an array or tensor), or return None when there are none."""
    array = np.asarray(image)
    finite = np.isfinite(array)
    if finite.all():
        return None
    n_nan = int(np.isnan(array).sum())
    n_inf = int(array.size - np.count_nonzero(finite)) - n_nan
    return (f"{path}: {n_nan} NaN and {n_inf} Inf voxel(s) of {array.size}; medt3d rejects such scans rather than "
            "guess values for them (a training on them turns every weight into NaN; windowing would turn Inf into "
            "a valid-looking value and NaN would spread through resampling): fix the scan or replace those voxels")


def check_cases(cases: Sequence[dict], num_classes: int | None, channels: int = 1, rois: RoiMap | None = None) -> None:
    """Check every case before any work: headers and grids, full image reads, label values.

    Args:
        cases: dicts with ``image`` and (optionally) ``label``.
        num_classes: the label values allowed are ``0..num_classes-1``; ``None`` skips the value check.
        channels: image channels each case must have (``data.in_channels``).
        rois: which class each ROI of an RTSTRUCT label becomes (``RoiMap.from_config(cfg.data)``).

    Raises:
        DatasetError: every problem found, each naming its file.
    """
    unique = {(str(c.get("image")), str(c.get("label"))): c for c in cases}  # validating on training cases
    cases = list(unique.values())
    header = pair_problems(cases, channels=channels)
    problems = [problem for _, problem in header]
    skip = {index for index, _ in header}
    todo = [case for index, case in enumerate(cases) if index not in skip]
    for case in tqdm(todo, desc="checking cases", unit="case", leave=False, disable=len(todo) < 4):
        uid = case.get("image_series_uid", case.get("series_uid"))
        try:
            problem = non_finite_problem(load_image(case["image"], uid, channels=channels), case["image"])
        except (InputError, FileNotFoundError) as err:  # another exception is a bug: it is not the case's
            problem = str(err)
        if problem:
            problems.append(problem)
        label = case.get("label")
        if label and num_classes is not None:
            try:
                problem = label_value_problem(load_volume(label, case.get("label_series_uid"), rois=rois), num_classes, label)
            except (InputError, FileNotFoundError) as err:
                problem = str(err)
            if problem:
                problems.append(problem)
    if problems:
        raise DatasetError(problems)
