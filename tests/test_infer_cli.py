"""``medt3d infer`` from the command line (a checkpoint, exit codes, torchrun), the inference benchmark, a gantry-tilted series."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_utils import write_dicom_series
from infer_utils import run_threshold, write_scans
from support import blob_volume, save, threshold_config

from medt3d.data.readers import read_header
from medt3d.inference.batch import InferOptions


@pytest.fixture()
def scans(tmp_path: Path) -> dict[str, Path]:
    """A NIfTI (LPS), an NRRD and an oblique DICOM series, each holding a 1000 HU blob."""
    return write_scans(tmp_path)


def _tiny_checkpoint(path: Path, *overrides: str) -> Path:
    """A real (untrained) tiny MedT3D checkpoint with the threshold config's preprocessing."""
    from medt3d.models.checkpoint import save_checkpoint
    from medt3d.networks import build_network

    cfg = threshold_config("network.preset=tiny", *overrides)
    torch.manual_seed(0)
    return save_checkpoint(path, network=build_network(cfg), cfg=cfg, epoch=1, iteration=1)


def _cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, encoding="utf-8", errors="replace",
                          timeout=timeout)


def test_cli_with_a_checkpoint_exit_codes_and_summary(scans, tmp_path: Path):
    from medt3d.cli import main

    ckpt = _tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    rc = main(["infer", str(scans["nifti"]), str(scans["dicom"]), "--model", str(ckpt), "--output", str(out),
               "--device", "cpu", "--no-progress", "--roi-size", "16", "16", "16"])
    assert rc == 0
    sidecar = json.loads((out / "ct_a_seg.json").read_text())
    assert sidecar["model"]["file"] == str(ckpt.resolve()) and len(sidecar["model"]["sha256"]) == 64
    seg = nib.load(str(out / "ct_c_seg.nii.gz"))
    np.testing.assert_allclose(seg.affine, read_header(scans["dicom"]).affine, atol=1e-3)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt.rename(run_dir / "checkpoints" / "best.pt")
    ckpt = run_dir  # a training run folder works as --model too
    (tmp_path / "nope.nii.gz").write_bytes(b"not a scan")  # a bad file fails its case (a missing one: exit code 2)
    rc = main(["infer", str(scans["nifti"]), str(tmp_path / "nope.nii.gz"), "--model", str(ckpt),
               "--output", str(tmp_path / "out2"), "--no-progress"])
    assert rc == 1
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert [f["case"] for f in summary["failed"]] == ["nope"] and summary["done"] == 1
    assert summary["model"]["file"] == str((run_dir / "checkpoints" / "best.pt").resolve())
    assert main(["infer", str(scans["nifti"]), "--model", str(tmp_path / "none.pt"), "--output",
                 str(tmp_path / "o3")]) == 2


# slow (pytest -m slow): two processes that each import MONAI, about 50 s of CPU. The default suite still
# runs torchrun (tests/test_training.py's DDP training); the split of cases between ranks is covered only here.
@pytest.mark.slow
def test_torchrun_two_cpu_processes_split_the_cases(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        image, affine = blob_volume((12 + i, 14, 8), (1.0, 1.0, 1.5), "RAS")
        save(data / f"case{i}.nii.gz", image, affine)
    ckpt = _tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    proc = _cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medt3d", "infer",
                 str(data), "--model", str(ckpt), "--output", str(out), "--device", "cpu", "--no-progress"],
                tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("*_seg.json"))]
    assert [s["case"] for s in sidecars] == [f"case{i}" for i in range(5)]
    assert {s["world_size"] for s in sidecars} == {2}
    ranks = [s["rank"] for s in sidecars]
    assert sorted(ranks) == [0, 0, 0, 1, 1], "each case once, shared by both ranks"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 5 and summary["world_size"] == 2
    assert (proc.stdout + proc.stderr).count("medt3d infer: 5 done") == 1, "only rank 0 reports"


@pytest.mark.slow
def test_bench_infer_measures_both_routes_in_fresh_processes(tmp_path: Path):
    from medt3d.bench.inference import bench_infer

    cfg = threshold_config("network.preset=tiny", "preprocess.spacing=[1.5,1.5,2.0]", "patch.roi_size=[32,32,32]")
    result = bench_infer(cfg, tmp_path, volumes={"small": ((24, 24, 16), (1.0, 1.0, 1.5))}, log=lambda m: None,
                         batch=2)
    rows = result["rows"]
    assert [(r["network"], r["rc"]) for r in rows] == [("medt3d-tiny", 0), ("unet", 0)], result
    for row in rows:
        assert 0 < row["peak_rss_gb"] < 8 and row["process_wall_s"] >= row["case_s"] >= row["window_s"] >= 0
        assert set(row["phases_s"]) == {"load", "preprocess", "windows", "postprocess", "write"}
        assert sum(row["phases_s"].values()) <= row["case_s"] + 0.05
        assert set(row["phase_peak_mb"]) == set(row["phases_s"]) and max(row["phase_peak_mb"].values()) > 50
    assert rows[0]["batch"] == 2 and rows[0]["batch_rc"] == 0 and rows[0]["batch_process_wall_s"] > 0
    assert len(list((tmp_path / "medt3d_small_batch_out").glob("*_seg.nii.gz"))) == 2
    assert "Batch of 2 on small" in result["table"]
    assert result["settings"]["roi_size"] == [32, 32, 32]
    assert (tmp_path / "medt3d_small" / "ct_small_seg.nii.gz").is_file() and (tmp_path / "unet_small_seg.nii.gz").is_file()
    assert "| small | unet |" in result["table"]


def test_a_gantry_tilted_series_is_segmented_on_its_corrected_grid_and_gets_no_dicom_seg(tmp_path: Path):
    """The SEG that was asked for cannot be made: the case fails (exit 1), its NIfTI label stays."""
    image, _ = blob_volume((20, 22, 12), (1.0, 1.0, 2.0), "LPS")
    direction = np.eye(3)
    direction[:, 2] = [0.0, np.tan(np.radians(12.0)), 1.0]  # the table steps along z, the slices are tilted
    write_dicom_series(tmp_path / "tilted", image.astype(np.int16), (1.0, 1.0, 2.0), direction, (0, 0, 0),
                       modality="CT")
    from medt3d.data.readers import read_header as header_of

    corrected = header_of(tmp_path / "tilted").affine
    summary = run_threshold([tmp_path / "tilted"], tmp_path / "out", options=InferOptions(progress=False,
                                                                                 output_formats=("dicom-seg",)))
    assert summary["done"] == 0 and summary["exit_code"] == 1 and summary["failed_outputs"][0]["output"] == "dicom_seg"
    assert "gantry-tilted" in summary["failed_outputs"][0]["error"] and "gantry-tilted" in summary["failed"][0]["error"]
    label = nib.load(tmp_path / "out" / "tilted_seg.nii.gz")
    np.testing.assert_allclose(label.affine, corrected, atol=1e-4)
    assert np.allclose(np.linalg.norm(label.affine[:3, :3], axis=0), [1.0, 1.0, 2.0])  # the table step along z
    columns = label.affine[:3, :3] / np.linalg.norm(label.affine[:3, :3], axis=0)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-6)  # a regular grid, no shear left
    assert not (tmp_path / "out" / "tilted_seg.dcm").exists() and np.asarray(label.dataobj).sum() > 0
