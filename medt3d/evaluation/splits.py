"""Which cases of a datalist ``medt3d evaluate`` scores (plain Python, read by the command line)."""

from __future__ import annotations

__all__ = ["SPLITS"]

#: ``val``: the validation cases (when the data have none: the labelled test cases, or else the
#: training cases); ``test``; ``train``; ``all`` (every labelled case).
SPLITS = ("val", "test", "train", "all")
