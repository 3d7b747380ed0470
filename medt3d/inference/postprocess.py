"""Per-class postprocessing chosen by a cross-validation, stored with the model and applied by ``infer``.

A plan maps each foreground class value to one operation:

- ``none``: leave the class as predicted;
- ``keep_largest``: keep only its largest connected component (MONAI's ``KeepLargestConnectedComponent``);
- ``remove_small``: remove its components under ``min_size_mm3`` (MONAI's ``RemoveSmallObjects``,
  measured in mm^3 so that the plan carries over to scans of another spacing).

Voxels a step removes become background. ``medt3d train --folds`` chooses the plan from the
out-of-fold predictions (:mod:`medt3d.crossval.postprocessing`) and writes it as ``postprocessing.json``
in the cross-validation folder; :class:`~medt3d.inference.predictor.Predictor` applies it to the label
on the scan's own grid.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import KeepLargestConnectedComponent, RemoveSmallObjects

from medt3d.data.geometry import voxel_spacing
from medt3d.errors import InputError
from medt3d.io_utils import atomic_write_text

__all__ = ["OPERATIONS", "ClassStep", "PostprocessingPlan", "apply_step"]

#: what a class's step may be
OPERATIONS = ("none", "keep_largest", "remove_small")


@dataclass
class ClassStep:
    """One class's operation and, for ``remove_small``, the smallest component kept (mm^3)."""

    operation: str = "none"
    min_size_mm3: float | None = None


@dataclass
class PostprocessingPlan:
    """Per-class postprocessing (class value -> :class:`ClassStep`) and the evidence for it.

    Attributes:
        steps: the step of each foreground class value.
        evidence: how it was chosen (the out-of-fold Dice of each candidate), kept for the record.
    """

    steps: dict[int, ClassStep] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)

    def active(self) -> bool:
        """Whether any class has a step other than ``none``."""
        return any(s.operation != "none" for s in self.steps.values())

    def apply(self, label: torch.Tensor) -> torch.Tensor:
        """The label (1, X, Y, Z) after every class's step (a MetaTensor keeps its affine)."""
        for value, step in sorted(self.steps.items()):
            label = apply_step(label, value, step)
        return label

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"classes": {"1": {"operation": ..., "min_size_mm3": ...}}, "evidence": ...}``."""
        return {"classes": {str(v): {"operation": s.operation, "min_size_mm3": s.min_size_mm3}
                            for v, s in sorted(self.steps.items())}, "evidence": self.evidence}

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON, atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PostprocessingPlan:
        """Read a plan written by :meth:`save`.

        Raises:
            InputError: not such a plan (the message names the file).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            steps = {int(v): ClassStep(str(s["operation"]), s.get("min_size_mm3"))
                     for v, s in data["classes"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{path}: not a postprocessing plan ({type(err).__name__}: {err}); rerun "
                             "medt3d train --folds to write it again") from None
        bad = sorted(s.operation for s in steps.values() if s.operation not in OPERATIONS)
        if bad:
            raise InputError(f"{path}: unknown operation(s) {bad}; use one of {list(OPERATIONS)}")
        return cls(steps, data.get("evidence", {}))


def apply_step(label: torch.Tensor, value: int, step: ClassStep) -> torch.Tensor:
    """``label`` (1, X, Y, Z) with one class's step applied; removed voxels become background."""
    if step.operation == "none":
        return label
    mask = label == value
    if not bool(mask.any()):
        return label
    if step.operation == "keep_largest":
        kept = KeepLargestConnectedComponent(applied_labels=[1], independent=True)(mask.to(torch.uint8))
    else:  # components measured in mm^3 (the label's voxel size; 1 mm without an affine)
        pixdim = voxel_spacing(label.affine) if isinstance(label, MetaTensor) else [1.0, 1.0, 1.0]
        with warnings.catch_warnings():  # MONAI 1.6 still passes scikit-image's deprecated min_size
            warnings.filterwarnings("ignore", message=".*min_size.*deprecated")
            kept = RemoveSmallObjects(min_size=float(step.min_size_mm3 or 0.0), by_measure=True, pixdim=pixdim)(
                torch.as_tensor(mask).to(torch.uint8))
    removed = mask & (torch.as_tensor(kept) == 0)
    out = label.clone()
    out[removed] = 0
    return out
