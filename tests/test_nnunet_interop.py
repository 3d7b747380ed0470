"""medt3d against nnU-Net v2 itself (issue 34, item 9): the same folds, the same Dice.

Runs where ``nnunetv2`` is importable (it is not a dependency of medt3d: ``pip install nnunetv2==2.8.1``)
and skips with that reason elsewhere. The fast tests call nnU-Net's own case listing, split rule and
evaluator; the slow one runs its planning and preprocessing and its trainer's ``do_split`` (which writes
``splits_final.json``), then ``nnUNetv2_evaluate_folder``; docs/benchmarks.md records a run of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import write_nnunet_phantoms

from medt3d.cli import main
from medt3d.data.datalist import build_datalist
from medt3d.data.folds import resolve_splits
from medt3d.data.nifti import write_nifti
from medt3d.data.readers import load_volume

nnunetv2 = pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed (pip install nnunetv2==2.8.1); "
                                                  "the agreement check with nnU-Net needs it")

LABELS = {"background": 0, "liver": 1, "kidney": 2, "lesion": 3}
BIN = Path(sys.executable).parent


def _dataset(root: Path, n_cases: int = 6) -> Path:
    return write_nnunet_phantoms(root / "Dataset901_Phantoms", n_cases, shape=(24, 24, 24), labels=LABELS)


def _predictions(raw: Path, out: Path) -> Path:
    """Imperfect predictions under nnU-Net's names: labels shifted by a voxel, one class dropped in one case,
    one class added where the reference has none."""
    out.mkdir()
    for i, ref in enumerate(sorted((raw / "labelsTr").iterdir())):
        label = load_volume(ref)
        values = np.roll(np.asarray(label[0]), shift=i % 3 + 1, axis=i % 3).astype(np.uint8)
        if i == 1:
            values[values == 3] = 0  # a class missed: Dice 0
        if i == 2:
            values[values == 0] = 0
            values[:2, :2, :2] = 3
        write_nifti(values, np.asarray(label.affine), out / ref.name)
    return out


def _medt3d_folds(raw: Path) -> list[dict[str, list[str]]]:
    datalist = build_datalist(raw / "dataset.json")
    return resolve_splits([c["name"] for c in datalist.train], datalist.root)[0]


def _dice_pairs(ours: dict, theirs: dict) -> list[tuple[float | None, float]]:
    """(medt3d's Dice, nnU-Net's Dice) for every case and class, matched by case identifier."""
    by_case = {Path(c["reference_file"]).name: c["metrics"] for c in theirs["metric_per_case"]}
    pairs = []
    for case in ours["metric_per_case"]:
        nn = by_case[Path(case["reference_file"]).name]
        pairs += [(case["metrics"][k]["Dice"], nn[k]["Dice"]) for k in case["metrics"]]
    return pairs


def _same_dice(ours: dict, theirs: dict) -> None:
    pairs = _dice_pairs(ours, theirs)
    defined = [abs(m - n) for m, n in pairs if m is not None]
    print(f"\nDice compared: {len(defined)} case-class values (+{len(pairs) - len(defined)} undefined in both), "
          f"largest difference {max(defined):.2e}; foreground mean medt3d {ours['foreground_mean']['Dice']:.6f}, "
          f"nnU-Net {theirs['foreground_mean']['Dice']:.6f}")
    assert len(pairs) == len(theirs["metric_per_case"]) * 3
    for mine, nn in pairs:
        if mine is None:  # absent from both: nnU-Net writes NaN, medt3d null
            assert np.isnan(nn)
        else:
            assert mine == pytest.approx(nn, abs=1e-6)
    for k in ("1", "2", "3"):
        assert ours["mean"][k]["Dice"] == pytest.approx(theirs["mean"][k]["Dice"], abs=1e-6)
    assert ours["foreground_mean"]["Dice"] == pytest.approx(theirs["foreground_mean"]["Dice"], abs=1e-6)


def test_folds_equal_nnunet_split_of_its_own_case_listing(tmp_path: Path):
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    raw = _dataset(tmp_path, 7)
    identifiers = sorted(get_filenames_of_train_images_and_targets(str(raw), json.loads((raw / "dataset.json").read_text())))
    theirs = generate_crossval_split(identifiers, seed=12345, n_splits=5)
    assert _medt3d_folds(raw) == [{"train": list(f["train"]), "val": list(f["val"])} for f in theirs]


def test_score_equals_nnunet_evaluator_on_dice(tmp_path: Path):
    """nnU-Net's per-case evaluator (``compute_metrics``, what ``nnUNetv2_evaluate_folder`` runs in a pool)
    in this process, and its means (NaN-mean per class, mean of those), against ``medt3d score``."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    raw = _dataset(tmp_path)
    pred = _predictions(raw, tmp_path / "pred")
    cases = [compute_metrics(str(ref), str(pred / ref.name), SimpleITKIO(), [1, 2, 3])
             for ref in sorted((raw / "labelsTr").iterdir())]
    means = {str(k): {"Dice": float(np.nanmean([c["metrics"][k]["Dice"] for c in cases]))} for k in (1, 2, 3)}
    theirs = {"metric_per_case": [{**c, "metrics": {str(k): v for k, v in c["metrics"].items()}} for c in cases],
              "mean": means, "foreground_mean": {"Dice": float(np.mean([m["Dice"] for m in means.values()]))}}
    assert main(["score", str(raw / "labelsTr"), str(pred), "--output", str(tmp_path / "ours"),
                 "--dataset-json", str(raw / "dataset.json")]) == 0
    _same_dice(json.loads((tmp_path / "ours" / "summary.json").read_text()), theirs)


@pytest.mark.slow
def test_nnunet_planning_writes_medt3d_folds_and_evaluate_folder_gives_its_dice(tmp_path: Path):
    """nnU-Net's planning + preprocessing, its trainer's splits_final.json, nnUNetv2_evaluate_folder (minutes)."""
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "res"), "OMP_NUM_THREADS": "1"}
    raw = _dataset(tmp_path / "raw")
    subprocess.run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "3d_fullres", "-np", "1",
                    "--verify_dataset_integrity"], check=True, capture_output=True, env=env)
    pre = tmp_path / "pre" / raw.name
    split = ("import torch; from batchgenerators.utilities.file_and_folder_operations import load_json; "
             "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer; "
             f"p = load_json({str(pre / 'nnUNetPlans.json')!r}); p['continue_training'] = False; "
             f"nnUNetTrainer(p, '3d_fullres', 0, load_json({str(pre / 'dataset.json')!r}), "
             "device=torch.device('cpu')).do_split()")
    subprocess.run([sys.executable, "-c", split], check=True, capture_output=True, env=env)
    assert json.loads((pre / "splits_final.json").read_text()) == _medt3d_folds(raw)
    print(f"\nnnU-Net's splits_final.json: {[f['val'] for f in _medt3d_folds(raw)]} (validation cases), equal to medt3d's")
    pred = _predictions(raw, tmp_path / "pred")
    subprocess.run([str(BIN / "nnUNetv2_evaluate_folder"), str(raw / "labelsTr"), str(pred), "-djfile",
                    str(pre / "dataset.json"), "-pfile", str(pre / "nnUNetPlans.json"), "-np", "1"],
                   check=True, capture_output=True, env=env)
    theirs = json.loads((pred / "summary.json").read_text())
    shutil.move(pred / "summary.json", tmp_path / "nnunet_summary.json")  # medt3d pairs volumes only anyway
    assert main(["score", str(raw / "labelsTr"), str(pred), "--dataset-json", str(raw / "dataset.json")]) == 0
    _same_dice(json.loads((pred / "score" / "summary.json").read_text()), theirs)
