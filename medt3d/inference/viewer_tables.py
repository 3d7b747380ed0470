"""Label names and colours in the formats viewers read: ITK-SNAP label descriptions, 3D Slicer colour tables.

A NIfTI label holds numbers only; these two small text files, written once per batch beside the
labels, give them the model's names and colours (ITK-SNAP: Segmentation > Import Label
Descriptions; 3D Slicer: load the ``.ctbl`` and choose it as the label map's colour table).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ITKSNAP_NAME", "SLICER_NAME", "itksnap_labels", "slicer_color_table"]

ITKSNAP_NAME = "labels_itksnap.txt"
SLICER_NAME = "labels_slicer.ctbl"


def _quoted(name: str) -> str:
    return '"' + str(name).replace('"', "'") + '"'


def itksnap_labels(table: Sequence[dict[str, Any]]) -> str:
    """ITK-SNAP's label description file for a label table (``value``, ``name``, ``color`` RGB 0-255)."""
    lines = ["################################################", "# ITK-SnAP Label Description File",
             "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL", "################################################"]
    for entry in table:
        r, g, b = (int(c) for c in entry["color"])
        visible = 0 if int(entry["value"]) == 0 else 1
        lines.append(f"{int(entry['value']):5d} {r:5d} {g:4d} {b:4d} {visible:8d} {visible:2d} {visible:2d}    "
                     f"{_quoted('Clear Label' if visible == 0 else entry['name'])}")
    return "\n".join(lines) + "\n"


def slicer_color_table(table: Sequence[dict[str, Any]]) -> str:
    """A 3D Slicer colour table (``.ctbl``: value, name, R, G, B, A) for a label table."""
    lines = ["# Color table of a medt3d model: value name R G B A"]
    for entry in table:
        r, g, b = (int(c) for c in entry["color"])
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(entry["name"]))  # one token
        lines.append(f"{int(entry['value'])} {name} {r} {g} {b} {0 if int(entry['value']) == 0 else 255}")
    return "\n".join(lines) + "\n"
