"""Which cases of a datalist ``medt3d evaluate`` scores (plain Python, read by the command line)."""

from __future__ import annotations

__all__ = ["SPLITS"]

#: ``val``: the validation cases (all cases when the data have no split); ``train``; ``all``.
SPLITS = ("val", "train", "all")
