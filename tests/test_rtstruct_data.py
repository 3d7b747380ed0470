"""RTSTRUCT labels through the data paths (issue 32, item 1): a data folder whose DICOM series hold their RTSTRUCT,
a JSON datalist entry with the RTSTRUCT beside its series, ``inspect``, ``train`` and ``evaluate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import tiny_cfg

from medt3d.cli import main
from medt3d.data.datalist import build_datalist
from medt3d.data.readers import LoadVolumed, align_to, load_volume
from medt3d.data.readers.rtstruct import RoiMap

ROIS = {"GTV_Mass_PET": "tumour"}
SETS = ["data.labels=[background,tumour]", "data.roi_names={GTV_Mass_PET: tumour}",
        "data.rtstruct_match=frame_of_reference", "data.modality=MR"]


@pytest.fixture(scope="module", params=["inside", "beside"])
def pet_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A data folder of two PET cases (the small 5 mm PETs), each a case folder with its RTSTRUCT: inside the
    DICOM series folder (``sts_002/`` holds the slices and ``rtstruct.dcm``), or beside it (``sts_002/series/``
    and ``sts_002/rtstruct.dcm``, as the shared data and TCIA exports keep them)."""
    root = tmp_path_factory.mktemp("rt") / "data"
    for patient in ("STS_002", "STS_003"):
        source = shared_data / "ct_pet_mr_sts" / patient / "PET" / "dicom"
        series = root / patient.lower() / ("series" if request.param == "beside" else "")
        shutil.copytree(source / "series", series)
        shutil.copyfile(source / "rtstruct.dcm", root / patient.lower() / "rtstruct.dcm")
    return root


def test_a_data_folder_takes_the_rtstruct_of_each_case_folder_as_its_label(pet_folder: Path, shared_data: Path):
    datalist = build_datalist(pet_folder)
    assert [(c["name"], Path(c["label"]).name) for c in datalist.cases] == [("sts_002", "rtstruct.dcm"),
                                                                             ("sts_003", "rtstruct.dcm")]
    for case in datalist.cases:  # the image is the series itself (its slices), not the case folder around it
        assert len([p for p in Path(case["image"]).iterdir() if p.name != "rtstruct.dcm"]) > 10, case
    loader = LoadVolumed(("image", "label"), rois=RoiMap(("background", "tumour"), ROIS, "frame_of_reference"))
    case = loader(datalist.cases[0])
    gtv = load_volume(shared_data / "ct_pet_mr_sts" / "STS_002" / "PET" / "gtv.nii.gz")
    shipped = align_to(gtv, case["label"].affine.numpy(), case["label"].shape[-3:], what="gtv")
    np.testing.assert_array_equal(case["label"].numpy(), shipped.numpy())


def test_a_json_entry_with_the_rtstruct_beside_its_series(shared_data: Path, tmp_path: Path):
    folder = shared_data / "ct_pet_mr_sts" / "STS_001" / "CT" / "dicom"
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([{"image": str(folder / "series"), "label": str(folder / "rtstruct.dcm")}]))
    case = build_datalist(listing).cases[0]
    loaded = LoadVolumed(("image", "label"), rois=RoiMap(("background", "tumour"), {"GTV_Mass_CT": "tumour"},
                                                         "frame_of_reference"))(case)
    assert loaded["label"].shape == loaded["image"].shape and int(loaded["label"].sum()) == 117145


def test_inspect_counts_the_rasterised_tumour(pet_folder: Path, shared_data: Path, capsys):
    args = [a for s in SETS for a in ("--set", s)]
    assert main(["inspect", str(pet_folder), "--json", *args]) == 0
    fp = json.loads(capsys.readouterr().out)["fingerprint"]
    gtv = load_volume(shared_data / "ct_pet_mr_sts" / "STS_002" / "PET" / "gtv.nii.gz")
    assert fp["cases"][0]["classes"]["1"] == int(gtv.sum())


def test_an_unmapped_roi_stops_inspect_with_its_name(pet_folder: Path, capsys):
    assert main(["inspect", str(pet_folder), "--json", "--set", "data.labels=[background,tumour]",
                 "--set", "data.rtstruct_match=frame_of_reference"]) == 2
    assert "'GTV_Mass_PET' match no class" in capsys.readouterr().err


def test_train_and_evaluate_on_rtstruct_labels(pet_folder: Path, tmp_path: Path):
    from medt3d.evaluation.evaluate import evaluate
    from medt3d.training.engine import train

    cfg = tiny_cfg(*SETS, "train.max_epochs=1", "data.val_fraction=0.5", "preprocess.spacing=null")
    result = train(cfg, pet_folder, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file(), result
    summary = evaluate(tmp_path / "run", pet_folder, tmp_path / "eval", split="val", overlays=False)
    assert summary["n_cases"] >= 1 and (tmp_path / "eval" / "metrics.csv").is_file()
    assert "tumour" in (tmp_path / "eval" / "metrics.csv").read_text()


def test_an_exported_bundle_scores_rtstruct_labels(pet_folder: Path, tmp_path: Path):
    # the bundle's evaluate.json reads the RTSTRUCT with the ROI map of the model's own config
    from monai.bundle import run

    from medt3d.bundle.export import export_bundle
    from medt3d.training.engine import train

    cfg = tiny_cfg(*SETS, "train.max_epochs=1", "train.val_interval=0", "preprocess.spacing=null")
    train(cfg, pet_folder, tmp_path / "run")
    bundle = export_bundle(tmp_path / "run", tmp_path / "bundle").bundle_dir
    configs = bundle / "configs"
    run(config_file=[str(configs / "inference.json"), str(configs / "evaluate.json")], logging_file=False,
        bundle_root=str(bundle), dataset_dir=str(pet_folder), output_dir=str(tmp_path / "eval"))
    rows = (tmp_path / "eval" / "mean_dice_raw.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 2 and len(list((tmp_path / "eval").glob("*_seg.nii.gz"))) == 2
