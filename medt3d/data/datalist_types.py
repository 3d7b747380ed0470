"""The :class:`Datalist` record that every layout reader fills, and :class:`DatasetError`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medt3d.errors import InputError
from medt3d.io_utils import atomic_write_text


class DatasetError(InputError):
    """Problems with a dataset; ``problems`` lists every one found, each naming its path (one per line, after
    a first line that says what to do)."""

    def __init__(self, problems: Sequence[str], source: str | Path | None = None) -> None:
        self.problems = list(problems)
        where = f" in {source}" if source is not None else ""
        super().__init__(f"{len(self.problems)} problem(s){where}; fix each one below:\n  - " + "\n  - ".join(self.problems))


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
        folds: the folds that ``data.fold`` took the validation cases from (set by training), else None.
    """

    train: list[dict[str, Any]]
    val: list[dict[str, Any]] = field(default_factory=list)
    layout: str = "json"
    labels: list[str] | None = None
    modality: str | None = None
    root: Path = Path(".")
    test: list[dict[str, Any]] = field(default_factory=list)
    channels: list[str] | None = None
    folds: list[dict[str, list[str]]] | None = None

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
