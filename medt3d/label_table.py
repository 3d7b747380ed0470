"""The label table: value, name, colour and coded meaning of every class, from the config.

One source for every output that names the classes: the case sidecar, the 3D Slicer segmentation,
the ITK-SNAP and Slicer colour tables, the DICOM SEG segment codes and the bundle's ``channel_def``.
Names come from ``data.labels``; colour and codes from ``data.label_table`` where it gives them,
otherwise the colour from matplotlib's ``tab10`` palette (in class order, background black) and the
codes from the structure's name in pydicom's SNOMED CT dictionary (``spleen``, ``kidney_right``),
or a generic Tissue.
"""

from __future__ import annotations

import re
from typing import Any

from medt3d.config import CodeConfig, Config

__all__ = ["default_color", "label_table", "snomed_codes"]

#: Words of a label name that say which side, not which structure ("right kidney" is coded as a kidney).
_SIDES = {"left", "right", "l", "r", "lt", "rt"}


def default_color(value: int) -> list[int]:
    """RGB 0-255 of class ``value`` when the config gives none: black background, then ``tab10``."""
    from matplotlib import colormaps

    if value == 0:
        return [0, 0, 0]
    palette = colormaps["tab10"].colors
    return [int(round(255 * c)) for c in palette[(value - 1) % len(palette)][:3]]


def _code(scheme: str, code: str, meaning: str) -> dict[str, str]:
    return {"scheme": scheme, "code": code, "meaning": meaning}


def snomed_codes(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """SNOMED CT (category, type) of a structure named ``name``, from pydicom's code dictionary.

    ``spleen``, ``Liver``, ``kidney_right`` or ``right kidney`` become an Anatomical Structure with
    the organ's code, as TotalSegmentator's DICOM SEG carries them; a name the dictionary does not
    know stays a generic Tissue. Each code is ``{"scheme", "code", "meaning"}``.
    """
    from pydicom.sr.codedict import codes

    words = [w for w in re.split(r"[^A-Za-z0-9]+", name.lower()) if w]
    candidates = ["".join(w.capitalize() for w in words), "".join(w.capitalize() for w in words if w not in _SIDES)]
    for candidate in candidates:
        if candidate and candidate != "Background":
            try:
                found = getattr(codes.SCT, candidate)
            except AttributeError:
                continue
            structure = codes.SCT.AnatomicalStructure
            return (_code("SCT", structure.value, structure.meaning), _code("SCT", found.value, found.meaning))
    tissue = codes.SCT.Tissue
    return _code("SCT", tissue.value, tissue.meaning), _code("SCT", tissue.value, tissue.meaning)


def _given(code: CodeConfig) -> dict[str, str]:
    return _code(code.scheme, code.code, code.meaning)


def label_table(cfg: Config) -> list[dict[str, Any]]:
    """Every class of ``cfg``: ``value``, ``name``, ``color`` (RGB 0-255), ``category`` and ``type`` codes.

    Background (value 0) carries no codes (``None``): it is not a segment.
    """
    table = []
    for value, name in enumerate(cfg.data.labels):
        style = cfg.data.label_table.get(name)
        color = list(style.color) if style is not None and style.color is not None else default_color(value)
        category = type_code = None
        if value > 0:
            if style is not None and style.type is not None and style.category is not None:
                category, type_code = _given(style.category), _given(style.type)
            else:
                category, type_code = snomed_codes(name)
        table.append({"value": value, "name": name, "color": color, "category": category, "type": type_code})
    return table
