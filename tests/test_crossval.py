"""Cross-validation like nnU-Net's (issue 34): folds, ``train --folds``, ensembles, postprocessing, ``score``,
``config show`` and the log files, on phantoms in nnU-Net's raw layout."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from support import TINY, tiny_cfg, write_nnunet_phantoms

from medt3d.cli import main
from medt3d.data.folds import nnunet_folds, read_splits, resolve_splits
from medt3d.data.nifti import write_nifti
from medt3d.data.readers import load_volume
from medt3d.errors import InputError
from medt3d.inference.postprocess import ClassStep, PostprocessingPlan, apply_step

# tiny settings: 16^3 patches of a tiny MedT3D, one epoch; the folds come from a 2-fold splits file
CV_SETTINGS = [f"--set={o}" for o in TINY if not o.startswith(("train.max_epochs", "data.cache"))] + [
    "--set=train.max_epochs=1", "--set=tracking.mlflow=false", "--set=tracking.tensorboard=false"]


# --------------------------------------------------------------------------- folds


def test_folds_follow_nnunet_rule_sorted_names_kfold_seed_12345():
    from sklearn.model_selection import KFold

    names = [f"case_{i:02d}" for i in (7, 3, 9, 1, 0, 5, 2)]
    folds = nnunet_folds(names)
    ordered = sorted(names)
    expected = [[ordered[i] for i in val] for _, val in KFold(5, shuffle=True, random_state=12345).split(ordered)]
    assert [f["val"] for f in folds] == expected
    assert folds == nnunet_folds(list(reversed(names)))  # input order does not matter
    for fold in folds:
        assert sorted(fold["train"] + fold["val"]) == ordered and not set(fold["train"]) & set(fold["val"])
    with pytest.raises(InputError, match="needs at least 5 cases"):
        nnunet_folds(names[:4])


def test_dataset_splits_file_wins_over_the_rule_and_explicit_file_wins_over_it(tmp_path: Path):
    names = ["a", "b", "c", "d"]
    own = tmp_path / "splits_final.json"
    own.write_text(json.dumps([{"train": ["a", "b"], "val": ["c", "d"]}]))
    folds, source = resolve_splits(names, tmp_path)
    assert folds == [{"train": ["a", "b"], "val": ["c", "d"]}] and source == str(own)
    other = tmp_path / "mine.json"
    other.write_text(json.dumps([{"train": ["c", "d"], "val": ["a", "b"]}]))
    assert resolve_splits(names, tmp_path, other)[0][0]["val"] == ["a", "b"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"train": ["a"], "val": ["zz"]}]))
    with pytest.raises(InputError, match=r"bad.json: 1 case\(s\) not in the dataset"):
        read_splits(bad, names)
    bad.write_text(json.dumps({"train": []}))
    with pytest.raises(InputError, match="bad.json: not a list"):
        read_splits(bad, names)


def test_train_with_data_fold_validates_on_nnunet_fold(tmp_path: Path):
    from medt3d.training.run_data import prepare_datalist

    raw = write_nnunet_phantoms(tmp_path / "raw", 5, shape=(12, 12, 12),
                                labels={"background": 0, "a": 1, "b": 2, "c": 3})
    cfg = tiny_cfg("data.fold=3", "data.labels=[background,a,b,c]")
    datalist = prepare_datalist(cfg, raw / "dataset.json")
    expected = nnunet_folds([f"phantom_00{i}" for i in range(5)])[3]
    assert [c["name"] for c in datalist.val] == expected["val"]
    assert [c["name"] for c in datalist.train] == expected["train"]
    assert datalist.folds is not None and datalist.folds[3] == expected


def test_a_single_fold_run_keeps_the_folds_it_used(tmp_path: Path):
    """A ``data.fold`` run writes the folds beside its checkpoints, as ``train --folds`` does."""
    from medt3d.models.layout import RunLayout
    from medt3d.training.engine import train

    raw = write_nnunet_phantoms(tmp_path / "raw", 5, shape=(16, 16, 16),
                                labels={"background": 0, "a": 1, "b": 2, "c": 3})
    cfg = tiny_cfg("data.fold=1", "train.max_epochs=1", "data.labels=[background,a,b,c]")
    run = tmp_path / "run"
    train(cfg, raw / "dataset.json", run)
    kept = read_splits(RunLayout(run).splits, [f"phantom_00{i}" for i in range(5)])
    assert kept == nnunet_folds([f"phantom_00{i}" for i in range(5)])


# --------------------------------------------------------------------------- postprocessing


def _blobs(shape=(20, 20, 20)) -> tuple[torch.Tensor, torch.Tensor]:
    ref = torch.zeros((1, *shape), dtype=torch.uint8)
    ref[0, 4:12, 4:12, 4:12] = 1
    pred = ref.clone()
    pred[0, 16:18, 16:18, 16:18] = 1  # a small false component
    return ref, pred


def test_steps_remove_only_the_class_components_they_target():
    ref, pred = _blobs()
    pred[0, 0:2, 0:2, 0:2] = 2  # another class, small: untouched by class 1's steps
    largest = apply_step(pred, 1, ClassStep("keep_largest"))
    assert int((largest == 1).sum()) == 512 and int((largest == 2).sum()) == 8
    small = apply_step(MetaTensor(pred, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))), 1,
                       ClassStep("remove_small", min_size_mm3=100.0))  # the 8-voxel blob is 64 mm^3
    assert int((small == 1).sum()) == 512 and int((small == 2).sum()) == 8


def test_postprocessing_is_chosen_only_where_it_raises_out_of_fold_dice(tmp_path: Path):
    from medt3d.crossval.postprocessing import choose_postprocessing

    pairs = []
    for i in range(2):
        ref, pred = _blobs()
        ref[0, 14:18, 2:6, 2:6] = 2
        pred[0, 14:18, 2:6, 2:6] = 2  # class 2 perfect: nothing can raise it
        r, p = tmp_path / f"ref_{i}.nii.gz", tmp_path / f"pred_{i}.nii.gz"
        write_nifti(ref, np.eye(4), r)
        write_nifti(pred, np.eye(4), p)
        pairs.append((r, p))
    plan = choose_postprocessing(pairs, ["background", "organ", "other"])
    assert plan.steps[1].operation in ("keep_largest", "remove_small")
    assert plan.steps[2].operation == "none"
    gain = plan.evidence["organ"]["mean_dice"]
    assert gain[plan.steps[1].operation] > gain["none"]
    saved = PostprocessingPlan.load(plan.save(tmp_path / "pp.json"))
    assert saved.steps == plan.steps
    (tmp_path / "pp.json").write_text('{"classes": {"1": {"operation": "erode"}}}')
    with pytest.raises(InputError, match="pp.json: unknown operation"):
        PostprocessingPlan.load(tmp_path / "pp.json")


# --------------------------------------------------------------------------- score


def test_score_pairs_nnunet_and_medt3d_names_and_writes_nnunet_shaped_summary(tmp_path: Path):
    from medt3d.evaluation.metrics import case_metrics

    refs, preds = tmp_path / "labelsTr", tmp_path / "pred"
    refs.mkdir()
    preds.mkdir()
    ref, pred = _blobs()
    write_nifti(ref, np.eye(4), refs / "case_a.nii.gz")
    write_nifti(pred, np.eye(4), preds / "case_a_seg.nii.gz")  # medt3d's name
    write_nifti(ref, np.eye(4), refs / "case_b.nii.gz")
    write_nifti(ref, np.eye(4), preds / "case_b.nii.gz")  # nnU-Net's name
    (preds / "case_b_seg.json").write_text("{}")  # a sidecar is not a prediction
    code = main(["score", str(refs), str(preds), "--labels", "background", "organ", "absent"])
    assert code == 0
    summary = json.loads((preds / "score" / "summary.json").read_text())
    assert set(summary) >= {"metric_per_case", "mean", "foreground_mean"}
    by_case = {c["case"]: c["metrics"] for c in summary["metric_per_case"]}
    expected = case_metrics(pred, ref, [1, 1, 1], ["background", "organ"])[0]["dice"]
    assert by_case["case_a"]["1"]["Dice"] == pytest.approx(expected, abs=1e-9)
    assert by_case["case_a"]["1"]["FP"] == 8 and by_case["case_b"]["1"]["Dice"] == 1.0
    assert by_case["case_a"]["1"]["lesion_fp"] == 1 and by_case["case_a"]["1"]["lesion_tp"] == 1  # issue 32's metrics
    assert by_case["case_a"]["2"]["Dice"] is None  # absent from both: undefined, as nnU-Net
    assert summary["mean"]["1"]["Dice"] == pytest.approx((expected + 1.0) / 2)
    assert summary["foreground_mean"]["Dice"] == pytest.approx(summary["mean"]["1"]["Dice"])  # class 2 left out
    assert (preds / "score" / "score.log").is_file()
    assert main(["score", str(refs), str(preds), "--labels", "background"]) == 2  # value 1 has no name
    (preds / "case_b.nii.gz").unlink()
    assert main(["score", str(refs), str(preds)]) == 2  # case_b has no prediction: named, exit 2


# --------------------------------------------------------------------------- the whole cross-validation


@pytest.fixture(scope="module")
def crossval(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-fold cross-validation (a dataset splits_final.json) of four 16^3-voxel phantoms, from the CLI."""
    root = tmp_path_factory.mktemp("cv")
    raw = write_nnunet_phantoms(root / "raw", 4, shape=(20, 20, 16),
                                labels={"background": 0, "liver": 1, "kidney": 2, "lesion": 3})
    (raw / "splits_final.json").write_text(json.dumps(
        [{"train": ["phantom_000", "phantom_001"], "val": ["phantom_002", "phantom_003"]},
         {"train": ["phantom_002", "phantom_003"], "val": ["phantom_000", "phantom_001"]}]))
    cv = root / "cv"
    assert main(["train", "--config", "demo", "--data-dir", str(raw / "dataset.json"), "--output", str(cv),
                 "--folds", "all", *CV_SETTINGS]) == 0
    return {"raw": raw, "cv": cv}


def test_train_folds_writes_folds_oof_summary_postprocessing_and_log(crossval: dict[str, Path]):
    cv, raw = crossval["cv"], crossval["raw"]
    assert json.loads((cv / "crossval.json").read_text())["finished"] == [0, 1]
    assert json.loads((cv / "splits_final.json").read_text()) == json.loads((raw / "splits_final.json").read_text())
    fold_cfg = (cv / "fold_0" / "config.yaml").read_text()
    assert "liver" in fold_cfg and "fold: 0" in fold_cfg  # dataset.json's class names used as they are
    assert sorted(p.name for p in (cv / "oof_predictions").iterdir()) == [f"phantom_00{i}.nii.gz" for i in range(4)]
    summary = json.loads((cv / "crossval_summary.json").read_text())
    folds_of = {c["case"]: c["fold"] for c in summary["metric_per_case"]}
    assert folds_of == {"phantom_000": 1, "phantom_001": 1, "phantom_002": 0, "phantom_003": 0}
    assert set(summary["mean"]) == {"1", "2", "3"} and set(summary["per_fold_foreground_mean"]) == {"0", "1"}
    plan = PostprocessingPlan.load(cv / "postprocessing.json")
    assert set(plan.steps) == {1, 2, 3} and set(plan.evidence) == {"liver", "kidney", "lesion"}
    log = (cv / "train.log").read_text()
    assert "command: medt3d train" in log and "fold 1: training" in log and "out-of-fold" in log


def test_five_folds_by_nnunet_rule_in_one_command(tmp_path: Path):
    """No splits file: the five folds of nnU-Net's rule, each trained, every case predicted out of fold once."""
    raw = write_nnunet_phantoms(tmp_path / "raw", 5, shape=(16, 16, 16),
                                labels={"background": 0, "a": 1, "b": 2, "c": 3})
    cv = tmp_path / "cv"
    assert main(["train", "--config", "demo", "--data-dir", str(raw / "dataset.json"), "--output", str(cv),
                 "--folds", "0", "1", "2", "3", "4", *CV_SETTINGS, "--set=train.iterations_per_epoch=1"]) == 0
    folds = nnunet_folds([f"phantom_00{i}" for i in range(5)])
    assert json.loads((cv / "splits_final.json").read_text()) == folds
    summary = json.loads((cv / "crossval_summary.json").read_text())
    assert {c["case"]: c["fold"] for c in summary["metric_per_case"]} == {
        name: i for i, fold in enumerate(folds) for name in fold["val"]}
    assert [f"fold_{i}" for i in range(5)] == sorted(p.name for p in cv.glob("fold_*"))


def test_train_folds_resume_leaves_finished_folds_and_retrains_the_unfinished(crossval: dict[str, Path]):
    cv, raw = crossval["cv"], crossval["raw"]
    args = ["train", "--config", "demo", "--data-dir", str(raw / "dataset.json"), "--output", str(cv), "--folds",
            "all", *CV_SETTINGS]
    assert main(args) == 2  # a cross-validation folder is not replaced without --resume or --overwrite
    kept = (cv / "fold_0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    state = json.loads((cv / "crossval.json").read_text())
    state["finished"] = [0]  # as if fold 1 had been interrupted after its first checkpoint
    (cv / "crossval.json").write_text(json.dumps(state))
    assert main([*args, "--resume"]) == 0
    assert (cv / "fold_0" / "checkpoints" / "last.pt").stat().st_mtime_ns == kept
    assert json.loads((cv / "crossval.json").read_text())["finished"] == [0, 1]
    assert "fold 0: finished earlier" in (cv / "train.log").read_text()
    shutil.rmtree(cv / "fold_1" / "checkpoints")  # as if stopped before its first epoch ended
    (cv / "crossval.json").write_text(json.dumps(state))
    assert main([*args, "--resume"]) == 0
    assert (cv / "fold_1" / "checkpoints" / "last.pt").is_file()
    assert "fold 1: training" in (cv / "train.log").read_text().rsplit("command: medt3d train", 1)[1]


def test_infer_with_the_crossval_folder_averages_folds_applies_postprocessing_nnunet_names(
        crossval: dict[str, Path], tmp_path: Path):
    from medt3d.inference.postprocess import PostprocessingPlan

    cv, raw = crossval["cv"], crossval["raw"]
    plan = PostprocessingPlan({1: ClassStep("keep_largest")})
    plan.save(cv / "postprocessing.json")
    out = tmp_path / "pred"
    image = raw / "imagesTr" / "phantom_000_0000.nii.gz"
    assert main(["infer", str(image), "--model", str(cv), "--output", str(out), "--output-naming", "nnunet",
                 "--tta", "--no-progress"]) == 0
    sidecar = json.loads((out / "phantom_000_seg.json").read_text())
    assert (out / "phantom_000.nii.gz").is_file() and (out / "infer.log").is_file()
    assert [Path(m["path"]).name for m in sidecar["model"]["ensemble"]] == ["fold_0", "fold_1"]
    assert sidecar["model"]["postprocessing"]["1"]["operation"] == "keep_largest"
    assert sidecar["inference"]["tta_flips"] is True


def test_ensemble_probabilities_are_the_mean_of_the_members(crossval: dict[str, Path]):
    from medt3d.inference.ensemble import load_members
    from medt3d.inference.predictor import Predictor

    members = load_members([crossval["cv"]])
    image = torch.rand(1, 16, 16, 16)
    both = Predictor(members.networks, members.cfg, "cpu").probabilities(image)
    alone = [Predictor(n, members.cfg, "cpu").probabilities(image) for n in members.networks]
    torch.testing.assert_close(both, (alone[0] + alone[1]) / 2, rtol=1e-5, atol=1e-6)


def test_evaluate_scores_only_the_folds_validation_cases_and_warns_for_training_cases(
        crossval: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cv, raw = crossval["cv"], crossval["raw"]
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(cv / "fold_0"), "--data-dir", str(raw / "dataset.json"), "--output",
                 str(out), "--no-overlays"]) == 0
    rows = (out / "metrics.csv").read_text()
    assert "phantom_002" in rows and "phantom_003" in rows and "phantom_000" not in rows
    assert "command: medt3d evaluate" in (out / "evaluate.log").read_text()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", "--model", str(cv / "fold_0"), "--data-dir", str(raw / "dataset.json"), "--output",
                     str(tmp_path / "ev_train"), "--split", "train", "--no-overlays"]) == 0
    assert "trained on" in caplog.text


def test_evaluate_scores_the_crossval_ensemble_on_held_out_data_only(crossval: dict[str, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture):
    from medt3d.inference.postprocess import PostprocessingPlan

    cv, raw = crossval["cv"], crossval["raw"]
    PostprocessingPlan({}).save(cv / "postprocessing.json")
    # the cross-validation's own cases trained one member or the other: no val (or train) split of its own
    assert main(["evaluate", "--model", str(cv), "--data-dir", str(raw / "dataset.json"), "--output",
                 str(tmp_path / "refused"), "--no-overlays"]) == 2
    assert "ensemble of 2 models" in capsys.readouterr().err
    held_out = write_nnunet_phantoms(tmp_path / "held_out", 2, shape=(20, 20, 16),
                                     labels={"background": 0, "liver": 1, "kidney": 2, "lesion": 3}, seed=7)
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(cv), "--data-dir", str(held_out / "dataset.json"), "--output", str(out),
                 "--split", "all", "--no-overlays"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["model"] == str(cv)
    # the ensemble's scores are those of its averaged prediction: infer with the folder, then compare by hand
    preds = tmp_path / "preds"
    assert main(["infer", str(held_out / "imagesTr"), "--model", str(cv), "--output", str(preds),
                 "--no-progress"]) == 0
    case = sorted(p.name for p in (held_out / "labelsTr").glob("*.nii.gz"))[0].removesuffix(".nii.gz")
    predicted = np.asarray(nib.load(next(preds.glob(f"{case}*.nii.gz"))).dataobj)
    reference = np.asarray(nib.load(held_out / "labelsTr" / f"{case}.nii.gz").dataobj)
    liver = 2 * ((predicted == 1) & (reference == 1)).sum() / max(1, (predicted == 1).sum() + (reference == 1).sum())
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    scored = next(r for r in rows if r["case"] == case and r["class"] == "liver")
    assert float(scored["dice"]) == pytest.approx(float(liver), abs=1e-4)


def test_export_of_the_fold_set_is_an_ensemble_infer_reads_like_the_crossval_folder(
        crossval: dict[str, Path], tmp_path: Path):
    cv, raw = crossval["cv"], crossval["raw"]
    exported = tmp_path / "exported"
    assert main(["export", "--model", str(cv), "--output", str(exported)]) == 0
    assert (exported / "fold_0" / "models" / "model.pt").is_file() and (exported / "fold_1" / "models" / "model.ts").is_file()
    assert (exported / "postprocessing.json").read_text() == (cv / "postprocessing.json").read_text()
    image = raw / "imagesTr" / "phantom_001_0000.nii.gz"
    for model, out in ((cv, tmp_path / "from_cv"), (exported, tmp_path / "from_bundles")):
        assert main(["infer", str(image), "--model", str(model), "--output", str(out), "--no-progress"]) == 0
    a, b = (np.asarray(load_volume(p / "phantom_001_0000_seg.nii.gz")) for p in (tmp_path / "from_cv",
                                                                                  tmp_path / "from_bundles"))
    assert np.array_equal(a, b)
    assert main(["export", "--model", str(cv), "--output", str(tmp_path / "z"), "--zip"]) == 2


# --------------------------------------------------------------------------- config show


def test_config_show_prints_resolved_config_of_preset_run_and_overrides(crossval: dict[str, Path],
                                                                        capsys: pytest.CaptureFixture):
    import yaml

    assert main(["config", "show", "demo", "--set", "train.max_epochs=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["max_epochs"] == 7 and "infer" in shown
    assert main(["config", "show", str(crossval["cv"] / "fold_1")]) == 0
    run = yaml.safe_load(capsys.readouterr().out)
    assert run["data"]["fold"] == 1 and run["data"]["labels"][1] == "liver"
    assert main(["config", "show", str(crossval["cv"] / "fold_1" / "checkpoints" / "last.pt")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["fold"] == 1
    assert main(["config", "show", "demo", "--set", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_output_namings_of_the_config_equal_the_registrys():
    from medt3d.config import OUTPUT_NAMINGS
    from medt3d.inference.outputs import LABEL_NAMES, case_outputs

    assert tuple(LABEL_NAMES) == OUTPUT_NAMINGS
    assert case_outputs(Path("out"), "c1", "nnunet")["label"] == Path("out/c1.nii.gz")
    assert case_outputs(Path("out"), "c1")["label"] == Path("out/c1_seg.nii.gz")


# --------------------------------------------------------------------------- real CT


@pytest.mark.shared_data
def test_score_on_medt3ds_own_predictions_equals_evaluate_on_the_shared_ct(shared_data: Path, tmp_path: Path):
    """A tiny model trained one epoch on the shared spleen CT: infer + score gives evaluate's Dice."""
    from medt3d.evaluation.evaluate import evaluate
    from medt3d.inference.batch import InferOptions, run_inference
    from medt3d.training.engine import train

    data = shared_data / "ct_spleen"
    cfg = tiny_cfg("train.max_epochs=1", "train.iterations_per_epoch=2", "train.val_interval=0",
                   "data.labels=[background,spleen]", "preprocess.spacing=[4.0,4.0,5.0]")
    run = train(cfg, data, tmp_path / "run").run_dir
    summary = evaluate(run, data, tmp_path / "ev", split="all", overlays=False)
    rows = (tmp_path / "ev" / "metrics.csv").read_text().splitlines()
    dice = float(rows[1].split(",")[rows[0].split(",").index("dice")])
    run_inference([data / "spleen_2_ct.nii.gz"], tmp_path / "pred", model=run,
                  options=InferOptions(progress=False, output_naming="nnunet"))
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "spleen_2_ct.nii.gz").symlink_to(data / "spleen_2_label.nii.gz")  # the case name infer gives
    assert main(["score", str(refs), str(tmp_path / "pred"), "--labels", "background", "spleen"]) == 0
    scored = json.loads((tmp_path / "pred" / "score" / "summary.json").read_text())
    assert scored["metric_per_case"][0]["metrics"]["1"]["Dice"] == pytest.approx(dice, abs=1e-6)
    assert scored["foreground_mean"]["Dice"] == pytest.approx(summary["foreground_mean"]["dice"], abs=1e-6)


# --------------------------------------------------------------------------- log files


def test_log_files_land_in_new_output_folders_and_never_in_a_refused_input_folder(crossval: dict[str, Path],
                                                                                   tmp_path: Path):
    out = tmp_path / "phantoms"
    assert main(["phantoms", str(out), "--n-train", "1", "--n-val", "0", "--shape", "12", "12", "12"]) == 0
    assert "command: medt3d phantoms" in (out / "phantoms.log").read_text()
    images = crossval["raw"] / "imagesTr"
    before = sorted(p.name for p in images.iterdir())
    # infer into its own input folder is refused: nothing written there, no log either
    assert main(["infer", str(images), "--model", str(crossval["cv"] / "fold_0"), "--output", str(images)]) == 2
    assert sorted(p.name for p in images.iterdir()) == before
    # a refused command leaves no folder behind for a log alone
    assert main(["score", str(tmp_path / "missing"), str(tmp_path), "--output", str(tmp_path / "sc")]) == 2
    assert not (tmp_path / "sc").exists()


def test_a_log_file_that_cannot_be_opened_never_fails_the_command(tmp_path: Path):
    """A read-only or full disk: the log's open fails (here: the log's name is a folder). The chaos run's
    read-only infer once ended in an internal error from the log file instead of exit code 3."""
    import logging

    from medt3d.commands.logfile import FolderLogHandler

    (tmp_path / "infer.log").mkdir()
    handler = FolderLogHandler(tmp_path / "infer.log")
    record = logging.makeLogRecord({"name": "medt3d", "levelno": logging.INFO, "levelname": "INFO", "msg": "x"})
    handler.handle(record)  # raised IsADirectoryError from logging's FileHandler._open before the fix
    assert handler.unwritable
    handler.handle(record)
    handler.close()
