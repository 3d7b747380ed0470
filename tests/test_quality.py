"""``medt3d bench --quality``: the cross-patient benchmark on the real CT patients of ../shared/data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medt3d.bench.quality import (
    FOLDS,
    PATIENTS,
    bench_quality,
    find_shared_data,
    organ_datalist,
    quality_markdown,
    select_folds,
)
from medt3d.data.datalist import build_datalist

pytestmark = pytest.mark.shared_data

FAST = ["network.preset=tiny", "patch.roi_size=[32, 32, 32]", "patch.num_samples=1", "train.batch_size=1",
        "preprocess.spacing=[4.0, 4.0, 4.0]", "train.iterations_per_epoch=2"]


def test_organ_datalist_renumbers_the_chosen_organs_and_clears_the_rest(shared_data: Path, tmp_path: Path):
    path = organ_datalist(shared_data, "ct_abdomen_ts", ("liver", "spleen"), tmp_path)
    datalist = build_datalist(path)
    assert [c["name"] for c in datalist.train] == ["ct_abdomen_ts"] and datalist.labels == ["background", "liver", "spleen"]
    source = np.asarray(nib.load(shared_data / PATIENTS["ct_abdomen_ts"].label).dataobj)
    mapped = nib.load(datalist.train[0]["label"])
    values = np.asarray(mapped.dataobj)
    assert np.array_equal(values == 1, source == 4) and np.array_equal(values == 2, source == 1)
    assert set(np.unique(values)) == {0, 1, 2}  # the kidneys are background now
    assert np.allclose(mapped.affine, nib.load(shared_data / PATIENTS["ct_abdomen_ts"].label).affine)
    with pytest.raises(ValueError, match="ct_spleen has no label for \\['liver'\\]"):
        organ_datalist(shared_data, "ct_spleen", ("liver",), tmp_path)


def test_missing_shared_data_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="spleen_2_ct.nii.gz"):
        find_shared_data(tmp_path)


def test_quality_train_picks_the_folds_and_names_an_unknown_patient(capsys):
    from medt3d.cli import main

    assert select_folds(None) == FOLDS and select_folds(["ct_abdomen_ts"]) == (("ct_abdomen_ts", "ct_spleen"),)
    assert main(["bench", "--quality", "--quality-train", "ct_liver"]) != 0
    assert "ct_liver trains no fold; choose from ct_spleen, ct_abdomen_ts" in capsys.readouterr().err


def test_quality_bench_trains_on_one_patient_and_scores_the_other(shared_data: Path, tmp_path: Path):
    report = bench_quality(tmp_path, shared_data, networks=["medt3d"], budget_s=2.0,
                           overrides=[*FAST, "train.clock=cpu"], folds=[("ct_abdomen_ts", "ct_spleen")],
                           log=lambda m: None)
    row = report["folds"][0]["results"]["medt3d"]
    # the budget counted CPU time, as asked, and the report says so
    assert report["clock"] == row["clock"] == "cpu" and 0 < row["clock_seconds"] < 2 * 2.0
    assert report["folds"][0]["train"] == "ct_abdomen_ts" and report["folds"][0]["test"] == "ct_spleen"
    # the reference volume is ct_spleen's: 96,672 voxels of 0.795 x 0.795 x 5 mm
    assert row["volume_ref_ml"] == pytest.approx(96672 * 0.794922**2 * 5.0 / 1000, abs=0.2)
    assert row["epochs_run"] >= 1 and row["iterations"] >= 2 * row["epochs_run"]  # 2 iterations per epoch
    scored = tmp_path / "ct_abdomen_ts_to_ct_spleen" / "medt3d" / "test" / "metrics.csv"
    (spleen_row,) = [r for r in csv.DictReader(scored.open()) if r["class"] == "spleen"]
    assert row["dice"] == pytest.approx(float(spleen_row["dice"]), abs=1e-4)
    assert Path(row["overlay"]).is_file()
    # no validation during training, so the test patient is never seen: only its own training case
    run = tmp_path / "ct_abdomen_ts_to_ct_spleen" / "medt3d" / "run"
    assert not (run / "checkpoints" / "best.pt").exists()
    assert json.loads((run / "history.json").read_text())[0].get("val_mean_dice") is None
    assert report["mean_dice"]["medt3d"] == row["dice"]
    markdown = quality_markdown(report)
    assert "| ct_abdomen_ts → ct_spleen | medt3d |" in markdown and "Mean cross-patient spleen Dice" in markdown
    assert "2 s of CPU time per thread of training" in markdown
    (table_row,) = [line for line in markdown.splitlines() if line.startswith("| ct_abdomen_ts → ct_spleen | medt3d |")]
    assert "| wall s | CPU s per thread |" in markdown
    assert table_row.endswith(f"| {row['train_seconds']:.0f} | {row['clock_seconds']:.0f} |")


def test_fixed_epochs_replace_the_clock_for_each_network(shared_data: Path, tmp_path: Path, capsys):
    from medt3d.cli import main

    report = bench_quality(tmp_path, shared_data, networks=["medt3d"], overrides=FAST, budget_s=0.001,
                           folds=[("ct_abdomen_ts", "ct_spleen")], log=lambda m: None, epochs={"medt3d": 2})
    row = report["folds"][0]["results"]["medt3d"]
    # a budget of 1 ms would stop after one epoch: the fixed epochs ran instead, with no clock
    assert row["epochs_run"] == 2 and row["iterations"] == 4
    assert report["epochs_fixed"] == {"medt3d": 2} and report["budget_s"] is None
    assert "fixed epochs (medt3d 2) of training" in quality_markdown(report)
    with pytest.raises(ValueError, match="one entry per network compared \\(medt3d, unet\\)"):
        bench_quality(tmp_path, shared_data, networks=["medt3d", "unet"], epochs={"medt3d": 2})
    assert main(["bench", "--quality", "--quality-epochs", "medt3d=zero"]) == 2
    assert "expected NETWORK=EPOCHS" in capsys.readouterr().err


def test_multi_organ_runs_alone_from_the_command_line(shared_data: Path, tmp_path: Path, capsys):
    from medt3d.cli import main

    sets = [arg for override in FAST for arg in ("--set", override)]
    assert main(["bench", "--quality", "--quality-train", "none", "--multi-organ", "--quality-networks", "medt3d",
                 "--quality-epochs", "medt3d=1", "--quality-data", str(shared_data), "--quality-dir",
                 str(tmp_path / "q"), "--markdown", str(tmp_path / "q.md"), *sets]) == 0
    report = json.loads(capsys.readouterr().out)["quality"]
    assert report["folds"] == [] and "mean_dice" not in report  # no fold ran
    multi = report["multi_organ"]["results"]["medt3d"]
    assert list(multi["self_fit"]) == ["spleen", "right_kidney", "left_kidney", "liver"]
    assert multi["epochs_run"] == 1 and 0.0 <= multi["test_spleen"]["dice"] <= 1.0
    # the liver of ct_abdomen_ts: its reference volume is what the TotalSegmentator label holds
    label = nib.load(shared_data / PATIENTS["ct_abdomen_ts"].label)
    liver_ml = float((np.asarray(label.dataobj) == 4).sum() * abs(np.linalg.det(label.affine[:3, :3])) / 1000)
    assert multi["self_fit"]["liver"]["volume_ref_ml"] == pytest.approx(liver_ml, rel=1e-3)
    markdown = (tmp_path / "q.md").read_text()
    assert "Multi-organ: trained on ct_abdomen_ts" in markdown and "train → test" not in markdown
    assert (tmp_path / "q" / "multi_organ" / "medt3d" / "self" / "overlays" / "ct_abdomen_ts.png").is_file()
    # 'none' beside a patient, or no fold and no multi-organ run, is refused with the reason
    assert main(["bench", "--quality", "--quality-train", "none", "ct_spleen"]) == 2
    assert "'none' runs no fold and cannot stand beside ct_spleen" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nothing to benchmark"):
        bench_quality(tmp_path, shared_data, folds=select_folds(["none"]))


def test_quality_seeds_repeat_each_fold_and_report_the_mean(shared_data: Path, tmp_path: Path):
    import torch
    import yaml

    report = bench_quality(tmp_path, shared_data, networks=["medt3d"], overrides=FAST, folds=[("ct_abdomen_ts", "ct_spleen")],
                           log=lambda m: None, epochs={"medt3d": 1}, seeds=[3, 4])
    result = report["folds"][0]["results"]["medt3d"]
    assert [row["seed"] for row in result["per_seed"]] == [3, 4] and report["seeds"] == [3, 4]
    dices = [row["dice"] for row in result["per_seed"]]
    assert result["dice"] == pytest.approx(np.mean(dices), abs=1e-4) and report["mean_dice"]["medt3d"] == result["dice"]
    assert (result["dice_min"], result["dice_max"]) == (min(dices), max(dices))
    fold = tmp_path / "ct_abdomen_ts_to_ct_spleen" / "medt3d"
    # each seed trained its own model with its own seed
    seeds = [yaml.safe_load((fold / f"seed{s}" / "run" / "config.yaml").read_text())["train"]["seed"] for s in (3, 4)]
    assert seeds == [3, 4]
    weights = [torch.load(row["checkpoint"], map_location="cpu", weights_only=False)["network"] for row in result["per_seed"]]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    markdown = quality_markdown(report)
    assert "| medt3d, seed 3 |" in markdown and "**medt3d, mean of 2 seeds**" in markdown
    assert "(each fold averaged over seeds 3, 4)" in markdown
    # one seed: its row alone, not a second 'mean of 1 seeds' row with the same figures
    one = {**report, "seeds": [3], "folds": [{**report["folds"][0], "results": {"medt3d": {**result, "per_seed": result["per_seed"][:1]}}}]}
    markdown = quality_markdown(one)
    assert "| medt3d, seed 3 |" in markdown and "mean of" not in markdown and "(seed 3)" in markdown
    with pytest.raises(ValueError, match="distinct seeds"):
        bench_quality(tmp_path, shared_data, seeds=[1, 1])
