"""``medt3d bench --quality --quality-data DIR``: leave one patient out on any folder of labelled patients,
per channel setting, end to end on phantoms with a tiny network (issue 32, item 6)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medt3d.bench.patients import (
    bench_patients,
    find_patients,
    holds_abdomens,
    parse_settings,
    patients_markdown,
)
from medt3d.data.phantoms import make_phantom
from medt3d.errors import InputError

FAST = ["network.preset=tiny", "patch.roi_size=[16, 16, 16]", "patch.num_samples=1", "train.batch_size=1",
        "preprocess.spacing=[4.0, 4.0, 4.0]", "train.iterations_per_epoch=2", "data.cache=none"]


def _patients(root: Path, n: int = 3) -> Path:
    """``root/<patient>/{CT,PET}/image.nii.gz + gtv.nii.gz``: the PET on a grid twice as coarse in plane."""
    for i in range(n):
        phantom = make_phantom(i, shape=(32, 32, 16))
        lesion = (phantom.label == 3).astype(np.uint8)  # the smallest structure as the 'tumour'
        ct = root / f"P{i}" / "CT"
        pet = root / f"P{i}" / "PET"
        ct.mkdir(parents=True)
        pet.mkdir(parents=True)
        nib.save(nib.Nifti1Image(phantom.image, phantom.affine), ct / "image.nii.gz")
        nib.save(nib.Nifti1Image(lesion, phantom.affine), ct / "gtv.nii.gz")
        coarse = phantom.affine.copy()
        coarse[:3, :2] *= 2  # 2x the voxel size along x and y
        coarse[:3, 3] += (phantom.affine[:3, 0] + phantom.affine[:3, 1]) / 2  # centres between the CT's
        uptake = (1.0 + 8.0 * lesion[::2, ::2] + 0.1 * np.random.default_rng(i).random((16, 16, 16))).astype(np.float32)
        nib.save(nib.Nifti1Image(uptake, coarse), pet / "image.nii.gz")
        nib.save(nib.Nifti1Image(lesion[::2, ::2].copy(), coarse), pet / "gtv.nii.gz")
    return root


def test_patient_folders_are_found_and_settings_parsed(tmp_path: Path) -> None:
    root = _patients(tmp_path / "data")
    patients, channels = find_patients(root)
    assert [p.name for p in patients] == ["P0", "P1", "P2"] and channels == ["CT", "PET"]
    assert patients[1].label_for("PET").endswith("P1/PET/gtv.nii.gz")
    assert parse_settings(["CT", "CT+PET", "PET"], channels) == [["CT"], ["CT", "PET"], ["PET"]]
    assert parse_settings(None, channels) == [["CT"], ["PET"]]
    with pytest.raises(InputError, match="'CT\\+MR'.*choose from CT, PET"):
        parse_settings(["CT+MR"], channels)
    assert not holds_abdomens(root)
    single = tmp_path / "one"
    _patients(single, n=1)
    with pytest.raises(InputError, match="1 labelled patient"):
        find_patients(single)


def test_leave_one_patient_out_runs_every_setting_and_fold(tmp_path: Path) -> None:
    root = _patients(tmp_path / "data")
    report = bench_patients(root, tmp_path / "bench", ["medt3d"], budget_s=1.0, config="pet_ct", overrides=FAST,
                            settings=["CT+PET"], log=lambda m: None, epochs={"medt3d": 1})
    assert [s["name"] for s in report["settings"]] == ["CT+PET"]
    both = report["settings"][0]
    assert [f["test"] for f in both["folds"]] == ["P0", "P1", "P2"]
    for fold in both["folds"]:
        work = tmp_path / "bench" / "CT_PET" / fold["test"]
        train = json.loads((work / "train.json").read_text())["train"]
        assert fold["test"] not in [c["name"] for c in train] and len(train) == 2  # the left-out patient unseen
        assert all(len(c["image"]) == 2 and c["label"].endswith("CT/gtv.nii.gz") for c in train)
        r = fold["results"]["medt3d"]
        assert r["epochs_run"] == 1 and Path(r["overlay"]).is_file()
        (row,) = list(csv.DictReader((work / "medt3d" / "test" / "metrics.csv").open()))
        assert r["dice"] == pytest.approx(float(row["dice"]), abs=1e-4)
        assert r["lesion_f1"] == pytest.approx(float(row["lesion_f1"]), abs=1e-3)
        # the reference volume is the CT label's (the reference channel's grid)
        lesion = nib.load(root / fold["test"] / "CT" / "gtv.nii.gz")
        voxel_ml = abs(np.linalg.det(lesion.affine[:3, :3])) / 1000
        assert r["volume_ref_ml"] == pytest.approx(np.asarray(lesion.dataobj).sum() * voxel_ml, abs=0.05)
    assert both["mean"]["medt3d"]["dice"] == pytest.approx(np.mean([f["results"]["medt3d"]["dice"]
                                                                    for f in both["folds"]]), abs=1e-4)
    markdown = patients_markdown(report)
    assert "| CT+PET | P0 | medt3d |" in markdown and "| CT+PET | medt3d |" in markdown


def test_cli_runs_on_a_patient_folder_and_names_a_bad_setting(tmp_path: Path, capsys) -> None:
    from medt3d.cli import main

    root = _patients(tmp_path / "data")
    assert main(["bench", "--quality", "--quality-data", str(root), "--quality-channels", "CT+MR"]) == 2
    assert "--quality-channels 'CT+MR'" in capsys.readouterr().err
