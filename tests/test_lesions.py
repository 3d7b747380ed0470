"""Lesion-wise metrics on synthetic cases whose answers are counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medt3d.evaluation.lesions import LESION_METRIC_NAMES, lesion_metrics, match_lesions

SPACING = (1.0, 2.0, 0.5)  # 1 mm^3 per voxel: volumes in mL are voxels / 1000


def _box(vol: np.ndarray, lo: tuple[int, int, int], size: int) -> None:
    x, y, z = lo
    vol[x : x + size, y : y + size, z : z + size] = 1


def test_two_lesions_one_missed_one_false() -> None:
    ref = np.zeros((40, 40, 40), np.uint8)
    pred = np.zeros_like(ref)
    _box(ref, (2, 2, 2), 6)  # lesion A, 216 voxels
    _box(ref, (20, 20, 20), 4)  # lesion B, 64 voxels: missed
    _box(pred, (3, 2, 2), 6)  # A found, shifted by one voxel (same volume)
    pred[3:9, 2:8, 8] = 1  # ... and 36 voxels more
    _box(pred, (30, 2, 30), 5)  # a false lesion, 125 voxels
    report = match_lesions(pred, ref, SPACING)
    kinds = sorted((lesion.kind, round(lesion.volume_error_ml * 1000)) for lesion in report.lesions)
    assert kinds == [("fn", -64), ("fp", 125), ("tp", 36)]
    m = report.metrics()
    assert set(m) == set(LESION_METRIC_NAMES)
    assert (m["lesions_ref"], m["lesions_pred"]) == (2, 2)
    assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (1, 1, 1)
    assert m["lesion_f1"] == pytest.approx(0.5)
    assert m["lesion_precision"] == pytest.approx(0.5) and m["lesion_recall"] == pytest.approx(0.5)
    assert m["lesion_volume_error_ml"] == pytest.approx((36 + 64 + 125) / 3 / 1000)
    tp = next(lesion for lesion in report.lesions if lesion.kind == "tp")
    assert tp.iou == pytest.approx(180 / (216 + 252 - 180))


def test_all_found_gives_f1_one_and_nothing_anywhere_is_perfect() -> None:
    ref = np.zeros((20, 20, 20), np.uint8)
    _box(ref, (1, 1, 1), 3)
    _box(ref, (10, 10, 10), 3)
    assert lesion_metrics(ref, ref, SPACING)["lesion_f1"] == 1.0
    empty = lesion_metrics(np.zeros_like(ref), np.zeros_like(ref), SPACING)
    assert (empty["lesion_f1"], empty["lesion_volume_error_ml"], empty["lesions_ref"]) == (1.0, 0.0, 0)
    missed = lesion_metrics(np.zeros_like(ref), ref, SPACING)
    assert (missed["lesion_f1"], missed["lesion_fn"], missed["lesion_recall"]) == (0.0, 2, 0.0)
    invented = lesion_metrics(ref, np.zeros_like(ref), SPACING)
    assert (invented["lesion_f1"], invented["lesion_fp"], invented["lesion_precision"]) == (0.0, 2, 0.0)


def test_matching_is_one_to_one_merges_and_splits_are_errors() -> None:
    ref = np.zeros((20, 20, 20), np.uint8)
    _box(ref, (2, 2, 2), 3)
    _box(ref, (2, 2, 7), 3)
    merged = ref.copy()
    merged[2:5, 2:5, 5:7] = 1  # one predicted lesion bridging the two
    m = lesion_metrics(merged, ref, SPACING)
    assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (1, 0, 1)
    split = lesion_metrics(ref, merged, SPACING)  # the other way round: two pieces of one lesion
    assert (split["lesion_tp"], split["lesion_fp"], split["lesion_fn"]) == (1, 1, 0)


def test_connectivity_and_threshold_change_the_count() -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2, 2, 2] = ref[3, 3, 3] = 1  # touching only at a corner
    assert lesion_metrics(ref, ref, SPACING)["lesions_ref"] == 1  # 26-connected
    assert lesion_metrics(ref, ref, SPACING, connectivity=1)["lesions_ref"] == 2
    pred = np.zeros_like(ref)
    pred[3, 3, 3] = pred[3, 3, 4] = pred[3, 4, 4] = 1  # shares one voxel: IoU 1/4
    assert lesion_metrics(pred, ref, SPACING)["lesion_tp"] == 1
    assert lesion_metrics(pred, ref, SPACING, min_iou=0.5)["lesion_tp"] == 0


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        match_lesions(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), SPACING)
    with pytest.raises(ValueError, match="connectivity"):
        match_lesions(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), SPACING, connectivity=4)


def test_case_metrics_carry_the_lesion_columns_beside_dice() -> None:
    from medt3d.evaluation.metrics import METRIC_NAMES, case_metrics

    ref = np.zeros((30, 30, 30), np.uint8)
    _box(ref, (2, 2, 2), 5)
    _box(ref, (20, 20, 20), 3)
    pred = np.zeros_like(ref)
    _box(pred, (2, 2, 2), 5)  # the first found exactly, the second missed, one false lesion
    _box(pred, (2, 20, 20), 2)
    (row,) = case_metrics(pred, ref, SPACING, ["background", "tumour"])
    assert set(LESION_METRIC_NAMES) <= set(METRIC_NAMES) <= set(row)
    assert (row["lesion_tp"], row["lesion_fp"], row["lesion_fn"], row["lesion_f1"]) == (1, 1, 1, 0.5)
    assert row["dice"] == pytest.approx(2 * 125 / (125 + 8 + 125 + 27))
