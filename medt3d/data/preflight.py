"""Checks that run before training or evaluation, so bad data fail fast with every problem listed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from medt3d.data.datalist import DatasetError
from medt3d.data.io import load_volume

__all__ = ["check_labels"]


def check_labels(cases: Sequence[dict], num_classes: int) -> None:
    """Read every label volume and check its values lie in ``0..num_classes-1``.

    Raises:
        DatasetError: every case whose label has other values (or cannot be read), each with its file.
    """
    problems: list[str] = []
    for case in tqdm(cases, desc="checking labels", unit="case", leave=False, disable=len(cases) < 4):
        label = case.get("label")
        if not label:
            continue
        try:
            values = np.unique(np.asarray(load_volume(label)))
        except (ValueError, FileNotFoundError) as err:
            problems.append(str(err))
            continue
        bad = [v for v in values.tolist() if v < 0 or v >= num_classes or float(v) != int(v)]
        if bad:
            problems.append(f"{label}: label values {bad} are outside 0..{num_classes - 1} "
                            f"(data.labels has {num_classes} classes)")
    if problems:
        raise DatasetError(problems)
