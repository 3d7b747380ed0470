"""Distillation through the training engine's seam: ``medt3d distill`` and a student taught by a teacher alone."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from support import ThresholdNet, tiny_cfg, tiny_cli_args

from medt3d.cli import main
from medt3d.data.datalist import build_datalist
from medt3d.data.transforms import build_val_transforms
from medt3d.models.checkpoint import load_checkpoint
from medt3d.training.distill import DistillationLoss, DistillationObjective
from medt3d.training.engine import build_training, train


def test_distill_cli_writes_an_ordinary_run_that_infer_uses(phantom_dir: Path, tmp_path: Path):
    teacher = tmp_path / "teacher"
    train(tiny_cfg("train.max_epochs=1"), phantom_dir, teacher)
    student = tmp_path / "student"
    code = main(["distill", "--teacher", str(teacher), "--data-dir", str(phantom_dir), "--output", str(student),
                 "--temperature", "3", "--alpha", "0.5", *tiny_cli_args("train.seed=1")])
    assert code == 0
    history = json.loads((student / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    # both terms are logged, and the loss is their alpha-weighted sum
    for h in history:
        assert h["loss"] == pytest.approx(0.5 * h["loss_labels"] + 0.5 * h["loss_teacher"], rel=1e-4)
    last = load_checkpoint(student / "checkpoints" / "last.pt")
    assert last["config"]["train"]["seed"] == 1 and last["epoch"] == 2
    assert (student / "config.yaml").is_file() and (student / "distill.log").is_file()

    preds = tmp_path / "preds"
    assert main(["infer", "--model", str(student), "--output", str(preds), "--no-progress",
                 str(phantom_dir / "val" / "images")]) == 0
    assert len(list(preds.glob("*_seg.nii.gz"))) == 1


def test_distill_resumes_with_its_own_objective(phantom_dir: Path, tmp_path: Path):
    teacher = tmp_path / "teacher"
    train(tiny_cfg("train.max_epochs=1", "train.val_interval=0"), phantom_dir, teacher)
    student = tmp_path / "student"
    common = ["distill", "--teacher", str(teacher), "--data-dir", str(phantom_dir), "--output", str(student),
              "--alpha", "0"]
    assert main([*common, *tiny_cli_args("train.max_epochs=1", "train.val_interval=0")]) == 0
    assert main([*common, "--resume", "--epochs", "2"]) == 0
    history = json.loads((student / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["loss"] == pytest.approx(h["loss_teacher"]) and "loss_labels" not in h for h in history)
    assert load_checkpoint(student / "checkpoints" / "last.pt")["epoch"] == 2


def test_distill_refuses_a_teacher_prepared_otherwise(phantom_dir: Path, tmp_path: Path, capsys):
    teacher = tmp_path / "teacher"
    train(tiny_cfg("train.max_epochs=1", "train.val_interval=0"), phantom_dir, teacher)
    code = main(["distill", "--teacher", str(teacher), "--data-dir", str(phantom_dir), "--output",
                 str(tmp_path / "student"), *tiny_cli_args("preprocess.spacing=[2.0,2.0,2.0]")])
    err = capsys.readouterr().err
    assert code == 2 and "preprocess.spacing" in err and str(teacher) in err
    assert not (tmp_path / "student").exists()


def test_temperature_and_alpha_are_checked():
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="--temperature 0"):
        DistillationObjective(cfg, ThresholdNet(4), cfg, temperature=0)
    with pytest.raises(ValueError, match="--alpha 1.5"):
        DistillationObjective(cfg, ThresholdNet(4), cfg, alpha=1.5)


def test_the_teacher_term_is_zero_for_a_student_that_matches_the_teacher():
    loss = DistillationLoss(torch.nn.Identity(), num_classes=2, temperature=2.0, alpha=0.0)
    logits = torch.randn(1, 2, 4, 4, 4)
    loss.teacher_logits = logits
    assert float(loss(logits.clone(), torch.zeros(1, 1, 4, 4, 4))) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(-logits, torch.zeros(1, 1, 4, 4, 4))) > 0.01


class _Teacher(ThresholdNet):
    """ThresholdNet taking the valid mask as a MedT3D teacher does; it records that it got one."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        assert not torch.is_grad_enabled() and not self.training, "the teacher runs in eval mode under no_grad"
        self.masked = getattr(self, "masked", 0) + (valid is not None)
        return super().forward(x)


def _agreement(network: torch.nn.Module, teacher: torch.nn.Module, images: list[torch.Tensor]) -> float:
    network.eval()
    with torch.no_grad():
        same = [float((network(x).argmax(1) == teacher(x).argmax(1)).float().mean()) for x in images]
    return sum(same) / len(same)


def _without_labels(phantom_dir: Path, out: Path) -> Path:
    """A datalist of the phantoms' training images with no label at all (the labels stay unread)."""
    cases = [{"name": c["name"], "image": c["image"]} for c in build_datalist(phantom_dir).train]
    out.write_text(json.dumps({"train": cases, "labels": ["background", "blob"]}))
    return out


def test_a_student_learns_from_the_teacher_alone_without_labels(phantom_dir: Path, tmp_path: Path):
    # training cases without labels: the only signal is the teacher's (a threshold of the intensity); at the
    # default alpha the loss is (1 - alpha) times the teacher's term
    cfg = tiny_cfg("train.seed=1", "train.max_epochs=4", "train.iterations_per_epoch=8", "train.lr=0.01",
                   "train.val_interval=0")
    teacher = _Teacher(cfg.data.num_classes)
    objective = DistillationObjective(cfg, teacher, cfg, temperature=2.0, alpha=0.5)
    data = _without_labels(phantom_dir, tmp_path / "unlabelled.json")
    training = build_training(cfg, data, tmp_path / "student", objective=objective)
    untrained = copy.deepcopy(training.trainer.network)
    result = training.run()

    history = json.loads((tmp_path / "student" / "history.json").read_text())
    assert all("loss_labels" not in h for h in history)
    assert history[-1]["loss_teacher"] < 0.5 * history[0]["loss_teacher"]
    assert [h["loss"] for h in history] == pytest.approx([0.5 * h["loss_teacher"] for h in history])
    cases = build_datalist(phantom_dir).val
    images = [build_val_transforms(cfg)(dict(c))["image"].as_tensor()[None] for c in cases]
    before = _agreement(untrained, teacher.eval(), images)
    after = _agreement(training.trainer.network, teacher.eval(), images)
    assert after > max(0.9, before + 0.1), (before, after)
    assert result.epochs_run == 4
    assert teacher.masked > 0, "the teacher never got the padded patches' valid mask"


def test_a_batch_mixing_labelled_and_unlabelled_cases_keeps_the_unlabelled_out_of_the_label_term():
    seen: list[torch.Tensor] = []

    def supervised(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        seen.append(label)
        return pred.sum() * 0 + 1.0

    loss = DistillationLoss(supervised, num_classes=2, temperature=1.0, alpha=0.25)
    logits = torch.randn(2, 2, 4, 4, 4)
    loss.teacher_logits = logits
    label = torch.stack([torch.ones(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)])
    loss.labelled = torch.tensor([True, False])
    value = float(loss(logits.clone(), label))
    assert len(seen) == 1 and seen[0].shape[0] == 1 and bool((seen[0] == 1).all())  # only the labelled sample
    assert value == pytest.approx(0.25, abs=1e-5)  # alpha * 1 + (1 - alpha) * 0 (the student matches the teacher)
    loss.labelled = torch.tensor([False, False])
    assert float(loss(-logits, label)) == pytest.approx(0.75 * loss.last["loss_teacher"])
    assert len(seen) == 1, "a batch without labels never reaches the supervised loss"


def test_training_cases_without_labels_are_only_for_distillation(phantom_dir: Path, tmp_path: Path):
    data = _without_labels(phantom_dir, tmp_path / "unlabelled.json")
    cfg = tiny_cfg("train.val_interval=0", "train.max_epochs=1")
    with pytest.raises(ValueError, match="label"):
        train(cfg, data, tmp_path / "plain")
    # distillation keeps them for training, but validation needs a label
    objective = DistillationObjective(cfg, ThresholdNet(2), cfg, alpha=0.5)
    validated = tiny_cfg("train.val_interval=1", "train.max_epochs=1")
    with pytest.raises(ValueError, match="no training case has a label.*val_interval=0"):
        build_training(validated, data, tmp_path / "validated", objective=objective)
    # at alpha 1 (labels only) a case without a label would teach nothing: refused like train's
    with pytest.raises(ValueError, match="label"):
        build_training(cfg, data, tmp_path / "labels_only", objective=DistillationObjective(cfg, ThresholdNet(2), cfg,
                                                                                            alpha=1.0))


def test_distill_cli_takes_a_data_folder_where_some_images_have_no_label(phantom_dir: Path, tmp_path: Path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    (data / "train" / "masks" / "phantom_001.nii.gz").unlink()  # phantom_001 is not contoured
    teacher = tmp_path / "teacher"
    train(tiny_cfg("train.max_epochs=1"), phantom_dir, teacher)
    assert main(["train", "--data-dir", str(data), "--output", str(tmp_path / "plain"), *tiny_cli_args()]) == 2
    assert "phantom_001" in capsys.readouterr().err  # train names the image without a label
    student = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--data-dir", str(data), "--output", str(student),
                 *tiny_cli_args("train.seed=1")]) == 0
    assert "1 of 2 training cases have no label" in (student / "distill.log").read_text()
    history = json.loads((student / "history.json").read_text())
    assert all(h["loss_teacher"] > 0 for h in history) and all("val_mean_dice" in h for h in history)
