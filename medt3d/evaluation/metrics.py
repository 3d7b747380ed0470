"""Per-case, per-class segmentation metrics in physical units, computed with MONAI's metrics.

Empty structures get defined values instead of NaN, so that summaries stay finite:

===========================  =====  =====  ====================  ====================
ground truth / prediction    Dice   IoU    HD95 (mm)             ASD (mm)
===========================  =====  =====  ====================  ====================
both empty                   1.0    1.0    0.0                   0.0
one of them empty            0.0    0.0    volume diagonal (mm)  volume diagonal (mm)
===========================  =====  =====  ====================  ====================

The volume diagonal is the largest distance possible inside the scan, the worst score.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
)
from monai.networks.utils import one_hot

from medt3d.evaluation.lesions import LESION_METRIC_NAMES, lesion_metrics

# MONAI 1.6's own surface-distance code passes get_mask_edges an argument it has deprecated, so every
# HD95/ASD call printed a deprecation notice meant for MONAI's developers; hide just that notice.
warnings.filterwarnings("ignore", message=r".*always_return_as_numpy.*")

__all__ = ["METRIC_NAMES", "case_metrics", "empty_rule"]

#: every per-case, per-class column: overlap, distances, volumes, then the lesion-wise detection figures
#: of :mod:`medt3d.evaluation.lesions` (its own empty rule: nothing on either side gives F1 1)
METRIC_NAMES = ("dice", "iou", "hd95_mm", "asd_mm", "volume_gt_ml", "volume_pred_ml", *LESION_METRIC_NAMES)


def empty_rule(gt_empty: bool, pred_empty: bool, diagonal_mm: float) -> dict[str, float] | None:
    """Defined metric values when a structure is empty on either side; ``None`` when both have voxels."""
    if gt_empty and pred_empty:
        return {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "asd_mm": 0.0}
    if gt_empty or pred_empty:
        return {"dice": 0.0, "iou": 0.0, "hd95_mm": diagonal_mm, "asd_mm": diagonal_mm}
    return None


def case_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
                 spacing: Sequence[float], class_names: Sequence[str]) -> list[dict[str, float | str]]:
    """Dice, IoU, HD95, ASD (mm), volumes (mL) and lesion-wise detection for each foreground class of one case.

    Args:
        pred: predicted label volume (X, Y, Z) or (1, X, Y, Z), integer classes.
        label: ground-truth label volume on the same grid.
        spacing: voxel spacing in mm along X, Y, Z.
        class_names: names of all classes, background first.

    Raises:
        ValueError: the two volumes are not on the same grid.
    """
    pred_t = torch.as_tensor(np.asarray(pred)).long().squeeze()
    label_t = torch.as_tensor(np.asarray(label)).long().squeeze()
    if pred_t.shape != label_t.shape:
        raise ValueError(f"prediction shape {tuple(pred_t.shape)} != label shape {tuple(label_t.shape)}")
    if pred_t.ndim != 3:
        raise ValueError(f"expected 3-D label volumes, got shape {tuple(pred_t.shape)}")
    spacing = [float(s) for s in spacing]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    diagonal = float(np.linalg.norm(np.array(pred_t.shape) * np.array(spacing)))
    n = len(class_names)
    p1 = one_hot(pred_t[None, None], n)
    l1 = one_hot(label_t[None, None], n)
    rows: list[dict[str, float | str]] = []
    for c in range(1, n):
        gt_vox = int(l1[0, c].sum())
        pr_vox = int(p1[0, c].sum())
        row: dict[str, float | str] = {"class": class_names[c], "class_index": c,
                                       "volume_gt_ml": gt_vox * voxel_ml, "volume_pred_ml": pr_vox * voxel_ml}
        defined = empty_rule(gt_vox == 0, pr_vox == 0, diagonal)
        if defined is not None:
            row.update(defined)
        else:
            yp, yl = p1[:, c : c + 1], l1[:, c : c + 1]
            row["dice"] = float(compute_dice(yp, yl, include_background=True))
            row["iou"] = float(compute_iou(yp, yl, include_background=True))
            row["hd95_mm"] = float(compute_hausdorff_distance(yp, yl, include_background=True, percentile=95,
                                                              spacing=spacing))
            row["asd_mm"] = float(compute_average_surface_distance(yp, yl, include_background=True, symmetric=True,
                                                                   spacing=spacing))
        row.update(lesion_metrics(p1[0, c].numpy(), l1[0, c].numpy(), spacing))
        rows.append(row)
    return rows
