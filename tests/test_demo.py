"""The main job: ``medt3d demo`` end to end (a shortened run in the default suite, the real one marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medt3d.cli import main
from medt3d.config import load_config
from medt3d.demo import run_demo


def test_short_demo_writes_every_output(tmp_path: Path):
    cfg = load_config("demo", ["train.max_epochs=1", "train.iterations_per_epoch=2", "train.val_interval=1",
                               "preprocess.spacing=[3.0, 3.0, 3.0]", "patch.roi_size=[16, 16, 16]",
                               "tracking.mlflow=false"])
    report = run_demo(tmp_path / "demo", cfg, cases=(2, 1, 1), shape=(32, 32, 20))
    assert Path(report["best_checkpoint"]).is_file()
    assert (tmp_path / "demo" / "evaluation" / "metrics.csv").is_file()
    assert (tmp_path / "demo" / "run" / "tensorboard").is_dir()
    (pred,) = report["predictions"]
    image = nib.load(tmp_path / "demo" / "data" / "test" / "images" / Path(pred).name.replace("_seg", ""))
    label = nib.load(pred)
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2, 3}
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["best_checkpoint"] == report["best_checkpoint"]
    bundle = Path(report["bundle"])  # the demo ends by exporting its MONAI bundle, with the evaluation's metrics
    assert (bundle / "models" / "model.ts").is_file() and (bundle / "configs" / "inference.json").is_file()
    assert "## Metrics" in (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    evaluated = json.loads((tmp_path / "demo" / "evaluation" / "summary.json").read_text())
    shipped = json.loads((bundle / "configs" / "metadata.json").read_text())["eval_metrics"]["mean_dice"]
    assert shipped == pytest.approx(evaluated["foreground_mean"]["dice"], abs=1e-4)


def test_demo_refuses_a_used_folder(tmp_path: Path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(["demo", "--output", str(used)]) == 2
    assert (used / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_full_demo_reaches_the_promised_dice(tmp_path: Path):
    """The README's main job: default demo config, Dice >= 0.85 on the validation phantoms."""
    report = run_demo(tmp_path / "demo")
    assert report["eval_foreground_mean_dice"] >= 0.85, report
