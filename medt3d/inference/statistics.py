"""Per-structure intensity statistics of a segmented scan (HU for CT), and the volume table of a batch."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.data.geometry import bounding_box

__all__ = ["VOLUMES_NAME", "structure_statistics", "volume_table"]

#: The batch's table of volumes (and mean intensities), one row per case, in the output folder.
VOLUMES_NAME = "volumes.csv"


def structure_statistics(image: Any, label: Any, table: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Voxel count and intensity statistics of the scan inside each structure (not background).

    Args:
        image: the scan as loaded, (X, Y, Z) or (1, X, Y, Z), in its own units (HU for CT).
        label: the label volume on the same grid.
        table: the label table (``value``, ``name``).

    Returns:
        ``{name: {"voxels", "mean", "std", "min", "p5", "median", "p95", "max", "bbox"}}``; ``bbox``
        is the structure's bounding box in voxel indices of the scan, ``[[x0, x1], [y0, y1], [z0, z1]]``
        (inclusive); the intensity entries and ``bbox`` are ``None`` for a structure with no voxel.
    """
    grid = np.asarray(label).squeeze()
    values = np.asarray(image, dtype=np.float32).reshape(-1)
    if values.size != grid.size:
        raise ValueError(f"image of {values.size} voxels and label of {grid.size} voxels are not on one grid")
    out: dict[str, dict[str, float]] = {}
    for entry in table:
        if int(entry["value"]) == 0:
            continue
        mask = grid == int(entry["value"])
        inside = values[mask.reshape(-1)]
        if inside.size == 0:
            out[entry["name"]] = {"voxels": 0, **dict.fromkeys(("mean", "std", "min", "p5", "median", "p95", "max",
                                                                 "bbox"))}
            continue
        bbox = bounding_box(mask)
        p5, median, p95 = np.percentile(inside, [5, 50, 95])
        out[entry["name"]] = {"voxels": int(inside.size), "mean": round(float(inside.mean()), 3),
                              "std": round(float(inside.std()), 3), "min": round(float(inside.min()), 3),
                              "p5": round(float(p5), 3), "median": round(float(median), 3),
                              "p95": round(float(p95), 3), "max": round(float(inside.max()), 3), "bbox": bbox}
    return out


def volume_table(sidecars: Sequence[Path]) -> str:
    """CSV with one row per case: the volume of each structure in mL, and its mean intensity when known."""
    rows: list[dict[str, Any]] = []
    columns: list[str] = ["case"]
    for path in sidecars:
        sidecar = json.loads(Path(path).read_text())
        row: dict[str, Any] = {"case": sidecar["case"]}
        for name, ml in sidecar.get("volumes_ml", {}).items():
            row[f"{name}_ml"] = ml
        for name, stats in (sidecar.get("statistics") or {}).items():
            row[f"{name}_mean"] = stats.get("mean")
        columns += [k for k in row if k not in columns]
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
