"""The input gate that train, evaluate and inspect share: grids up to axis order, full reads, label values."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_utils import ras_affine, write_dicom_series
from support import THRESHOLD_HU, ThresholdNet, blob_volume, save, threshold_config, tiny_cfg

from medt3d.data.datalist import DatasetError
from medt3d.data.fingerprint import fingerprint_case
from medt3d.data.preflight import check_cases
from medt3d.training.engine import train

SPACING, ORIGIN = (1.5, 1.5, 3.0), (10.0, -20.0, 5.0)


def _stored(array: np.ndarray, affine: np.ndarray, ornt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored in another axis order or direction (nibabel orientation ``ornt``)."""
    moved = nib.orientations.apply_orientation(array, ornt)
    return np.ascontiguousarray(moved), affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)


@pytest.fixture(scope="module")
def lps_series(tmp_path_factory) -> tuple[Path, np.ndarray, dict[str, Path]]:
    """A CT series written with pydicom (read as LPS) and its label saved as LPS-stored, LAS and RAS NIfTI."""
    root = tmp_path_factory.mktemp("gate")
    ras = ras_affine(SPACING, np.eye(3), ORIGIN)
    image, _ = blob_volume((24, 28, 10), SPACING, ras[:3, :3] / np.asarray(SPACING), origin=ras[:3, 3])
    series = root / "series"
    write_dicom_series(series, image.astype(np.int16), SPACING, np.eye(3), ORIGIN, modality="CT")
    truth = (image > THRESHOLD_HU).astype(np.uint8)
    labels = {}
    for name, ornt in {"as_series": [[0, 1], [1, 1], [2, 1]], "LAS": [[0, 1], [1, -1], [2, 1]],
                       "RAS": [[0, -1], [1, -1], [2, 1]], "transposed_RAS": [[1, -1], [0, -1], [2, 1]]}.items():
        array, affine = _stored(truth, ras, np.asarray(ornt, dtype=float))
        labels[name] = save(root / f"label_{name}.nii.gz", array, affine)
    assert nib.aff2axcodes(nib.load(labels["LAS"]).affine) == ("L", "A", "S")
    assert nib.aff2axcodes(nib.load(labels["RAS"]).affine) == ("R", "A", "S")
    return series, truth, labels


def _datalist(path: Path, cases: list[dict]) -> Path:
    path.write_text(json.dumps({"train": [{k: str(v) for k, v in c.items()} for c in cases]}))
    return path


@pytest.mark.parametrize("stored", ["as_series", "LAS", "RAS", "transposed_RAS"])
def test_evaluate_and_inspect_move_a_label_stored_another_way_onto_its_image(lps_series, stored, tmp_path,
                                                                                monkeypatch):
    import medt3d.evaluation.evaluate as evaluation

    series, truth, labels = lps_series
    monkeypatch.setattr("medt3d.inference.ensemble.load_model", lambda _: (ThresholdNet(), threshold_config()))  # evaluate loads through load_members
    data = _datalist(tmp_path / "data.json", [{"name": "case", "image": series, "label": labels[stored]}])
    summary = evaluation.evaluate("threshold", data, tmp_path / "eval", split="all", overlays=False)
    # ThresholdNet finds the blob exactly, so only a wrongly flipped label could lower this
    assert summary["per_class"]["blob"]["dice"]["mean"] == pytest.approx(1.0)

    fp = fingerprint_case({"image": series, "label": labels[stored]})
    assert fp["classes"] == {"0": int((truth == 0).sum()), "1": int(truth.sum())}
    assert fp["foreground_intensity"]["p50"] == pytest.approx(1000.0)  # the label lies on the blob


def test_training_accepts_a_label_stored_another_way_and_learns_the_same(lps_series, tmp_path):
    series, _, labels = lps_series
    results = []
    for stored in ("as_series", "LAS", "RAS"):
        cases = [{"name": f"c{i}", "image": series, "label": labels[stored]} for i in range(2)]
        data = _datalist(tmp_path / f"{stored}.json", cases)
        cfg = tiny_cfg("train.max_epochs=1", "data.modality=CT", "preprocess.spacing=null", "data.cache=none")
        results.append(train(cfg, data, tmp_path / stored))
    # after reorientation the runs see the very same arrays: the same losses and validation Dice
    for other in results[1:]:
        np.testing.assert_allclose(other.losses, results[0].losses, rtol=1e-5)
        assert other.best_metric == pytest.approx(results[0].best_metric, abs=1e-6)


def test_the_gate_reports_every_problem_together_with_its_file(lps_series, tmp_path, monkeypatch):
    import medt3d.evaluation.evaluate as evaluation

    series, truth, labels = lps_series
    ras = nib.load(labels["as_series"]).affine
    nine = save(tmp_path / "nine.nii.gz", np.where(truth > 0, 9, 0).astype(np.uint8), ras)
    half = save(tmp_path / "half.nii.gz", truth.astype(np.float32) * 1.5, ras)
    shifted_affine = ras.copy()
    shifted_affine[0, 3] += 15.0
    shifted = save(tmp_path / "shifted.nii.gz", truth, shifted_affine)
    image = np.asarray(nib.load(labels["as_series"]).dataobj, dtype=np.float32) * 1000
    image[0, 0, 0] = np.nan
    nan_image = save(tmp_path / "nan_image.nii.gz", image, ras)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(save(tmp_path / "whole.nii.gz", image, ras).read_bytes()[:400])
    cases = [{"name": "nine", "image": series, "label": nine}, {"name": "half", "image": series, "label": half},
             {"name": "shifted", "image": series, "label": shifted},
             {"name": "nan", "image": nan_image, "label": labels["as_series"]},
             {"name": "truncated", "image": truncated, "label": labels["as_series"]}]
    with pytest.raises(DatasetError) as caught:
        check_cases(cases, num_classes=2)
    problems = caught.value.problems
    assert len(problems) == 5
    text = str(caught.value)
    assert f"{nine}: label values 9 are outside 0..1" in text
    assert f"{half}: label values 1.5 are outside 0..1" in text
    assert "shifted" in text and "15 mm" in text
    assert f"{nan_image}: 1 NaN and 0 Inf voxel(s)" in text
    assert str(truncated) in text

    # evaluate applies the same gate before predicting anything (it used to score these)
    monkeypatch.setattr("medt3d.inference.ensemble.load_model", lambda _: (ThresholdNet(), threshold_config()))  # evaluate loads through load_members
    for case in cases[:3]:
        data = _datalist(tmp_path / f"{case['name']}.json", [case])
        with pytest.raises(DatasetError, match=case["name"] if case["name"] == "shifted" else str(case["label"])):
            evaluation.evaluate("threshold", data, tmp_path / f"eval_{case['name']}", split="all", overlays=False)
        assert not (tmp_path / f"eval_{case['name']}" / "summary.json").exists()
