"""The MedT3D-vs-baseline quality comparison: equal budgets, schedules fitted to them, JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_training import TINY

from medt3d.bench.compare import BUDGET_USE, _epoch_seconds, compare_models, self_validation_datalist
from medt3d.data.datalist import build_datalist


def test_epoch_seconds_is_the_median_without_the_first_epoch():
    history = [{"seconds": 30.0}, {"seconds": 2.0}, {"seconds": 4.0}, {"seconds": 3.0}]
    assert _epoch_seconds(history) == 3.0
    assert _epoch_seconds([{"seconds": 5.0}]) == 5.0


def test_compare_fits_each_networks_epochs_to_the_budget(phantom_dir: Path, tmp_path: Path):
    budget = 2.0
    # UNet needs more than one voxel at its 1/16 bottleneck
    overrides = [*TINY, "patch.roi_size=[32, 32, 16]"]
    report = compare_models(phantom_dir, tmp_path, ["medt3d", "unet"], budget, "demo", overrides,
                            calibration_epochs=2)
    assert report["budget_s_per_network"] == budget and report["fit_epochs"] is True
    assert set(report["results"]) == {"medt3d", "unet"}
    for name, row in report["results"].items():
        calibration = json.loads((tmp_path / name / "calibration" / "history.json").read_text())
        assert len(calibration) == 2
        assert row["fitted_max_epochs"] == max(1, int(BUDGET_USE * budget / calibration[1]["seconds"]))
        assert 1 <= row["epochs_run"] <= row["fitted_max_epochs"]
        assert 0.0 <= row["eval_foreground_dice"] <= 1.0
        assert set(row["eval_per_class_dice"]) == {"organ_a", "organ_b", "organ_c"}
        assert (tmp_path / name / "evaluation" / "metrics.csv").is_file()
    assert report["results"]["unet"]["params_m"] > report["results"]["medt3d"]["params_m"]


def test_compare_without_fitting_keeps_the_configured_epochs(phantom_dir: Path, tmp_path: Path):
    report = compare_models(phantom_dir, tmp_path, ["medt3d"], 600.0, "demo", TINY, fit_epochs=False)
    row = report["results"]["medt3d"]
    assert row["epochs_run"] == 2 and "fitted_max_epochs" not in row
    assert not (tmp_path / "medt3d" / "calibration").exists()


def test_compare_refuses_a_one_epoch_calibration(phantom_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="calibration_epochs must be >= 2"):
        compare_models(phantom_dir, tmp_path, ["medt3d"], 10.0, "demo", TINY, calibration_epochs=1)


def test_self_validation_datalist_validates_on_the_training_scans(phantom_dir: Path, tmp_path: Path):
    path = self_validation_datalist(phantom_dir, tmp_path)
    datalist = build_datalist(path)
    original = build_datalist(phantom_dir)
    assert [c["image"] for c in datalist.train] == [c["image"] for c in original.cases]
    assert [c["image"] for c in datalist.val] == [c["image"] for c in original.cases]
    assert {c["name"] for c in datalist.val} == {f"{c['name']}-as-val" for c in original.cases}
