"""Lesion-wise detection metrics: connected components of the prediction and the reference, matched by overlap.

Dice over a whole structure hides what matters for lesions: a missed small lesion barely moves it, and
neither does a small false one far away. Here each structure is cut into lesions (3-D connected
components, 26-connectivity by default, by :func:`scipy.ndimage.label`), and the lesions of the
prediction and the reference are matched one to one by overlap:

* the pairs are chosen to maximise the total IoU (:func:`scipy.optimize.linear_sum_assignment`), among
  pairs whose IoU is above ``min_iou`` (default 0: any shared voxel);
* a matched reference lesion is a true positive (TP), an unmatched reference lesion a false negative
  (FN), an unmatched predicted lesion a false positive (FP);
* lesion-wise F1 = 2 TP / (2 TP + FP + FN), precision TP / (TP + FP), recall TP / (TP + FN).

One to one means a prediction that merges two reference lesions detects one of them (the other is a FN),
and two predicted pieces of one lesion count one TP and one FP: split and merged lesions are errors.

Per-lesion volume error (mL): predicted minus reference volume of each matched pair, minus the reference
volume of a missed lesion, plus the predicted volume of a false one. ``lesion_volume_error_ml`` is the
mean absolute error over all of them.

Empty cases get defined values, as :mod:`medt3d.evaluation.metrics` does for Dice: no lesion on either
side gives F1, precision and recall 1 and volume error 0; lesions on one side only give 0 for the three
ratios.

The component labelling and the assignment come from SciPy; only the bookkeeping around them is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = ["LESION_METRIC_NAMES", "Lesion", "LesionReport", "lesion_metrics", "match_lesions"]

#: The per-case columns this module adds beside Dice and HD95 (``metrics.csv``, summaries, bench).
LESION_METRIC_NAMES = ("lesions_ref", "lesions_pred", "lesion_tp", "lesion_fp", "lesion_fn", "lesion_precision",
                       "lesion_recall", "lesion_f1", "lesion_volume_error_ml")


@dataclass(frozen=True)
class Lesion:
    """One lesion's outcome: reference and predicted component ids (0 for none) and their volumes (mL).

    ``kind`` is ``"tp"`` (matched), ``"fn"`` (reference lesion missed) or ``"fp"`` (predicted lesion
    with no reference lesion); ``volume_error_ml`` is predicted minus reference volume.
    """

    kind: str
    ref_id: int
    pred_id: int
    volume_ref_ml: float
    volume_pred_ml: float
    iou: float

    @property
    def volume_error_ml(self) -> float:
        """Predicted minus reference volume (mL)."""
        return self.volume_pred_ml - self.volume_ref_ml


@dataclass
class LesionReport:
    """The lesions of one structure of one case, matched."""

    lesions: list[Lesion] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """How many lesions are of ``kind`` (``tp``, ``fp``, ``fn``)."""
        return sum(lesion.kind == kind for lesion in self.lesions)

    def metrics(self) -> dict[str, float]:
        """The :data:`LESION_METRIC_NAMES` values (counts as floats, so that summaries average them)."""
        tp, fp, fn = self.count("tp"), self.count("fp"), self.count("fn")
        if tp + fp + fn == 0:  # nothing on either side: as Dice, a perfect score
            precision = recall = f1 = 1.0
        else:
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * tp / (2 * tp + fp + fn)
        errors = [abs(lesion.volume_error_ml) for lesion in self.lesions]
        return {"lesions_ref": float(tp + fn), "lesions_pred": float(tp + fp), "lesion_tp": float(tp),
                "lesion_fp": float(fp), "lesion_fn": float(fn), "lesion_precision": precision,
                "lesion_recall": recall, "lesion_f1": f1,
                "lesion_volume_error_ml": float(np.mean(errors)) if errors else 0.0}


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    structure = ndimage.generate_binary_structure(3, connectivity)
    labelled, count = ndimage.label(mask, structure=structure)
    return labelled, int(count)


def match_lesions(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], connectivity: int = 3,
                  min_iou: float = 0.0) -> LesionReport:
    """Match the connected components of two binary masks one to one by overlap.

    Args:
        pred: predicted binary mask (X, Y, Z); any non-zero voxel is foreground.
        ref: reference binary mask on the same grid.
        spacing: voxel spacing in mm along X, Y, Z (for volumes).
        connectivity: 1 (faces, 6-connected), 2 (edges, 18) or 3 (corners, 26).
        min_iou: a pair is matched only when its IoU is above this (0: any shared voxel).

    Raises:
        ValueError: the masks differ in shape or are not 3-D, or ``connectivity`` is not 1, 2 or 3.
    """
    pred = np.asarray(pred).squeeze() != 0
    ref = np.asarray(ref).squeeze() != 0
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"lesion masks must be 3-D and of one shape, got {pred.shape} and {ref.shape}")
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}")
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    ref_cc, n_ref = _components(ref, connectivity)
    pred_cc, n_pred = _components(pred, connectivity)
    ref_vox = np.bincount(ref_cc.ravel(), minlength=n_ref + 1)
    pred_vox = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    # shared voxels of every (reference, predicted) pair in one pass over the overlap
    both = ref & pred
    shared = np.zeros((n_ref + 1, n_pred + 1), dtype=np.int64)
    np.add.at(shared, (ref_cc[both], pred_cc[both]), 1)
    shared = shared[1:, 1:]
    union = ref_vox[1:, None] + pred_vox[None, 1:] - shared
    iou = np.where(union > 0, shared / np.maximum(union, 1), 0.0)
    rows, cols = linear_sum_assignment(iou, maximize=True) if shared.size else (np.array([], int), np.array([], int))
    report = LesionReport()
    matched_ref, matched_pred = set(), set()
    for r, c in zip(rows, cols):
        if shared[r, c] > 0 and iou[r, c] > min_iou:
            matched_ref.add(r)
            matched_pred.add(c)
            report.lesions.append(Lesion("tp", r + 1, c + 1, ref_vox[r + 1] * voxel_ml, pred_vox[c + 1] * voxel_ml,
                                         float(iou[r, c])))
    report.lesions += [Lesion("fn", r + 1, 0, ref_vox[r + 1] * voxel_ml, 0.0, 0.0)
                       for r in range(n_ref) if r not in matched_ref]
    report.lesions += [Lesion("fp", 0, c + 1, 0.0, pred_vox[c + 1] * voxel_ml, 0.0)
                       for c in range(n_pred) if c not in matched_pred]
    return report


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], connectivity: int = 3,
                   min_iou: float = 0.0) -> dict[str, float]:
    """The :data:`LESION_METRIC_NAMES` of one structure of one case (see :func:`match_lesions`)."""
    return match_lesions(pred, ref, spacing, connectivity, min_iou).metrics()
