"""Choose the per-class postprocessing from out-of-fold predictions, as nnU-Net's ``determine_postprocessing``.

For each foreground class, two candidates are tried on every out-of-fold prediction: keeping only the
largest connected component, and removing components smaller than half the smallest component of that
class in the references (in mm^3). A candidate is adopted only where it raises the class's mean
out-of-fold Dice (the best one if both do); otherwise the class is left as predicted. Steps of different
classes do not interact (a step only turns that class's voxels into background), so each class is
decided on its own. The Dice of every candidate is kept in the plan's ``evidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice
from scipy import ndimage

from medt3d.data.geometry import voxel_spacing
from medt3d.data.readers import align_to, load_volume
from medt3d.inference.postprocess import ClassStep, PostprocessingPlan, apply_step

__all__ = ["choose_postprocessing"]

#: a candidate is adopted only when it raises the mean Dice by more than this (float noise)
MIN_GAIN = 1e-6


def _dice(pred: torch.Tensor, ref: torch.Tensor, value: int) -> float:
    """Dice of one class (1 when it is absent from both, as medt3d's metrics define it)."""
    p = (pred == value).to(torch.float32).reshape(1, 1, *pred.shape[-3:])
    r = (ref == value).to(torch.float32).reshape(1, 1, *ref.shape[-3:])
    return float(compute_dice(p, r, include_background=True, ignore_empty=False))


def _smallest_component_mm3(refs: Sequence[torch.Tensor], value: int) -> float | None:
    """Volume (mm^3) of the smallest connected component of class ``value`` in the references."""
    sizes = []
    for ref in refs:
        labelled, n = ndimage.label(np.asarray(ref.squeeze()) == value)
        if n:
            voxel_mm3 = float(np.prod(voxel_spacing(ref.affine)))
            sizes.append(float(np.bincount(labelled.ravel())[1:].min()) * voxel_mm3)
    return min(sizes) if sizes else None


def choose_postprocessing(pairs: Sequence[tuple[Path, Path]], class_names: Sequence[str]) -> PostprocessingPlan:
    """The per-class plan that raises the out-of-fold Dice, from ``(reference, prediction)`` file pairs."""
    refs, preds = [], []
    for ref_path, pred_path in pairs:
        ref = load_volume(ref_path)
        refs.append(ref)
        preds.append(align_to(load_volume(pred_path), ref.affine, ref.shape[-3:], what=f"prediction {pred_path}"))
    plan = PostprocessingPlan()
    for value in range(1, len(class_names)):
        candidates = {"none": ClassStep()}
        candidates["keep_largest"] = ClassStep("keep_largest")
        smallest = _smallest_component_mm3(refs, value)
        if smallest is not None:
            candidates["remove_small"] = ClassStep("remove_small", round(smallest / 2, 3))
        means = {name: float(np.mean([_dice(apply_step(p, value, step), r, value) for p, r in zip(preds, refs)]))
                 for name, step in candidates.items()}
        best = max(means, key=lambda name: means[name])
        chosen = best if means[best] > means["none"] + MIN_GAIN else "none"
        plan.steps[value] = candidates[chosen]
        plan.evidence[class_names[value]] = {"mean_dice": means, "chosen": chosen,
                                             **({"min_size_mm3": candidates["remove_small"].min_size_mm3}
                                                if "remove_small" in candidates else {})}
    return plan
