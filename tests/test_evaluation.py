"""Evaluation: metrics in physical units, defined values for empty structures, outputs on disk."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medt3d.cli import main
from medt3d.config import load_config
from medt3d.data.phantoms import write_phantom_dataset
from medt3d.evaluation.evaluate import evaluate, summarise
from medt3d.evaluation.metrics import case_metrics
from medt3d.training.engine import train

NAMES = ["background", "a", "b"]


def test_dice_iou_and_volume_of_shifted_boxes():
    gt = np.zeros((20, 20, 10), np.uint8)
    gt[4:12, 4:12, 2:6] = 1
    pred = np.zeros_like(gt)
    pred[6:14, 4:12, 2:6] = 1  # shifted by 2 voxels along x: overlap 6/8
    (row_a, row_b) = case_metrics(pred, gt, (0.5, 1.0, 3.0), NAMES)
    assert row_a["dice"] == pytest.approx(0.75, abs=1e-6)
    assert row_a["iou"] == pytest.approx(6 / 10, abs=1e-6)
    voxels = 8 * 8 * 4
    assert row_a["volume_gt_ml"] == pytest.approx(voxels * 0.5 * 1.0 * 3.0 / 1000)
    assert row_a["volume_pred_ml"] == pytest.approx(row_a["volume_gt_ml"])
    # surfaces are 2 voxels apart along x only, where a voxel is 0.5 mm: 1 mm, not 2 voxels
    assert row_a["hd95_mm"] == pytest.approx(1.0, abs=1e-6)
    assert 0 < row_a["asd_mm"] <= 1.0
    assert row_b["class"] == "b" and row_b["dice"] == 1.0  # empty on both sides


def test_spacing_changes_distances_but_not_overlap():
    gt = np.zeros((16, 16, 16), np.uint8)
    gt[4:10, 4:10, 4:10] = 1
    pred = np.zeros_like(gt)
    pred[4:10, 4:10, 6:12] = 1  # shifted along z
    iso = case_metrics(pred, gt, (1, 1, 1), NAMES[:2])[0]
    thick = case_metrics(pred, gt, (1, 1, 5), NAMES[:2])[0]
    assert iso["dice"] == pytest.approx(thick["dice"])
    assert thick["hd95_mm"] == pytest.approx(5 * iso["hd95_mm"])


def test_empty_structures_give_defined_values():
    gt = np.zeros((10, 12, 8), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:5, 2:5, 2:5] = 1
    spacing = (1.0, 2.0, 3.0)
    diagonal = math.sqrt(10**2 + 24**2 + 24**2)
    missed = case_metrics(pred, gt, spacing, NAMES[:2])[0]  # nothing predicted
    assert missed["dice"] == 0.0 and missed["iou"] == 0.0
    assert missed["hd95_mm"] == pytest.approx(diagonal) and missed["asd_mm"] == pytest.approx(diagonal)
    invented = case_metrics(gt, pred, spacing, NAMES[:2])[0]  # predicted where nothing is
    assert invented["dice"] == 0.0 and invented["hd95_mm"] == pytest.approx(diagonal)
    nothing = case_metrics(pred, pred, spacing, NAMES[:2])[0]
    assert (nothing["dice"], nothing["iou"], nothing["hd95_mm"], nothing["asd_mm"]) == (1.0, 1.0, 0.0, 0.0)
    summary = summarise([{"case": "c1", **missed}, {"case": "c2", **nothing}], NAMES[:2])
    flat = json.dumps(summary)
    assert "NaN" not in flat and "Infinity" not in flat
    assert summary["per_class"]["a"]["dice"]["mean"] == pytest.approx(0.5)


def test_mismatched_grids_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1), NAMES)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("eval")
    data = write_phantom_dataset(root / "data", n_train=2, n_val=2, shape=(32, 32, 20))
    cfg = load_config("demo", ["preprocess.spacing=[3.0, 3.0, 3.0]", "patch.roi_size=[16, 16, 16]",
                               "network.preset=tiny", "train.max_epochs=2", "train.val_interval=1",
                               "train.iterations_per_epoch=null", "train.max_seconds=null",
                               "tracking.mlflow=false", "tracking.tensorboard=false"])
    result = train(cfg, data, root / "run")
    return data, result


def test_evaluate_writes_metrics_summary_overlays_and_curves(trained, tmp_path: Path):
    data, result = trained
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(result.best_checkpoint), "--data-dir", str(data), "--output", str(out)])
    assert code == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    cases = sorted(p.name.split(".")[0] for p in (data / "val" / "images").iterdir())
    assert sorted({r["case"] for r in rows}) == cases
    assert len(rows) == len(cases) * 3  # three foreground classes
    for r in rows:
        for key in ("dice", "iou", "hd95_mm", "asd_mm", "volume_gt_ml", "volume_pred_ml"):
            assert math.isfinite(float(r[key])), (key, r)
        # Dice and IoU are two views of one overlap: IoU = Dice / (2 - Dice)
        assert float(r["iou"]) == pytest.approx(float(r["dice"]) / (2 - float(r["dice"])), abs=1e-4)
        assert float(r["volume_gt_ml"]) > 0  # every phantom holds every organ
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == len(cases)
    assert set(summary["per_class"]) == {"organ_a", "organ_b", "organ_c"}
    means = [summary["per_class"][c]["dice"]["mean"] for c in summary["per_class"]]
    assert summary["foreground_mean"]["dice"] == pytest.approx(float(np.mean(means)))
    for case in cases:
        with Image.open(out / "overlays" / f"{case}.png") as img:
            assert img.size[0] > 300 and img.size[1] > 200
    with Image.open(out / "curves.png") as img:
        assert img.format == "PNG"


def test_evaluate_gt_volume_matches_mask_on_disk(trained, tmp_path: Path):
    import nibabel as nib

    data, result = trained
    evaluate(result.best_checkpoint, data, tmp_path / "e", overlays=False)
    rows = list(csv.DictReader((tmp_path / "e" / "metrics.csv").open()))
    mask = sorted((data / "val" / "masks").iterdir())[0]
    img = nib.load(mask)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
    expected = float((np.asarray(img.dataobj) == 1).sum()) * voxel_ml
    row = next(r for r in rows if r["case"] == mask.name.split(".")[0] and r["class"] == "organ_a")
    assert float(row["volume_gt_ml"]) == pytest.approx(expected, rel=1e-4)


def test_evaluate_bad_split_and_missing_model(trained, tmp_path: Path):
    data, result = trained
    with pytest.raises(ValueError, match="split"):
        evaluate(result.best_checkpoint, data, tmp_path / "x", split="holdout")
    assert main(["evaluate", "--model", str(tmp_path / "nope.pt"), "--data-dir", str(data),
                 "--output", str(tmp_path / "y")]) == 2


def test_overlays_look_the_same_whatever_the_storage_order(tmp_path: Path):
    import matplotlib.image as mpimg
    import nibabel as nib
    from support import blob_volume

    from medt3d.evaluation.plots import save_overlay

    image, ras_affine = blob_volume((30, 26, 14), (0.9, 1.1, 2.5), frame="RAS")
    label = (image > 500).astype(np.uint8)
    pictures = []
    for frame in ("RAS", "LPS", "PIL"):
        ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                               nib.orientations.axcodes2ornt(frame))
        stored = nib.orientations.apply_orientation(image, ornt)
        stored_label = nib.orientations.apply_orientation(label, ornt)
        affine = ras_affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
        path = save_overlay(stored, stored_label, stored_label, tmp_path / f"{frame}.png", title="case",
                            affine=affine)
        pictures.append(mpimg.imread(path))
    # LPS or PIL storage is shown as RAS is: not upside down or mirrored
    for picture in pictures[1:]:
        np.testing.assert_array_equal(picture, pictures[0])


def test_overlay_planes_are_radiological_with_superior_and_anterior_up():
    from medt3d.evaluation.plots import _slice

    volume = np.zeros((4, 5, 6))
    volume[3, 4, 2] = 1.0  # the patient's right (high x in RAS), anterior (high y)
    axial = _slice(volume, 2, 2)
    assert np.argwhere(axial == 1).tolist() == [[0, 0]]  # top (anterior), left (the patient's right)
    volume[:] = 0
    volume[3, 1, 5] = 1.0  # right, superior
    coronal = _slice(volume, 1, 1)
    assert np.argwhere(coronal == 1).tolist() == [[0, 0]]  # top (superior), left (the patient's right)


def test_overlay_of_several_classes_draws_each_class_in_its_own_colour(tmp_path: Path):
    import matplotlib.image as mpimg

    from medt3d.evaluation.plots import save_overlay

    image = np.random.default_rng(0).normal(0.0, 1.0, (24, 24, 24)).astype(np.float32)
    label = np.zeros((24, 24, 24), np.uint8)
    label[3:10, 3:21, 3:21] = 1
    label[14:21, 3:21, 3:21] = 2
    pred = label.copy()
    pred[14:21] = 1  # the second structure predicted as the first class: it must show in class 1's colour
    classes = [{"value": 0, "name": "background", "color": [0, 0, 0]},
               {"value": 1, "name": "liver", "color": [255, 0, 0]},
               {"value": 2, "name": "kidney", "color": [0, 0, 255]}]

    def pixels_near(picture: np.ndarray, rgb: tuple[float, float, float]) -> int:
        return int((np.abs(picture[..., :3] - np.asarray(rgb)).max(axis=-1) < 0.1).sum())

    several = mpimg.imread(save_overlay(image, label, pred, tmp_path / "several.png", classes=classes))
    assert pixels_near(several, (1, 0, 0)) > 50 and pixels_near(several, (0, 0, 1)) > 50
    assert pixels_near(several, (1, 0, 1)) == 0  # not the one-class prediction colour (magenta)
    # with one foreground class: ground truth and prediction in the two fixed colours, as before
    one = mpimg.imread(save_overlay(image, label == 1, pred == 1, tmp_path / "one.png", classes=classes))
    assert pixels_near(one, (1, 0, 1)) > 50 and pixels_near(one, (1, 0, 0)) == 0
