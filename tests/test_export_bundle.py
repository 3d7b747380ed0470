"""``medt3d export`` on a tiny MedT3D trained for a few iterations on tiny phantoms.

The checks the issue asks for run MONAI's own command line (``python -m monai.bundle ...``) in
subprocesses; everything else runs in this process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from support import root_cause

from medt3d.bundle.export import export_bundle
from medt3d.cli import main as medt3d_main
from medt3d.config import config_to_dict, load_config
from medt3d.data.phantoms import write_phantom_dataset
from medt3d.evaluation.evaluate import evaluate
from medt3d.models.checkpoint import load_checkpoint
from medt3d.models.loading import is_bundle, load_bundle_model
from medt3d.models.loading import load_checkpoint_model as load_model
from medt3d.models.loading import load_model as load_inference_model
from medt3d.training.engine import train

OVERRIDES = [
    "preprocess.spacing=[3,3,3]", "patch.roi_size=[16,16,16]", "network.preset=tiny", "train.max_epochs=1",
    "train.val_interval=1", "tracking.mlflow=false", "tracking.tensorboard=false", "data.cache=none",
]


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> SimpleNamespace:
    """A tiny model trained for one epoch, its evaluation, in the layout ``medt3d demo`` leaves."""
    root = tmp_path_factory.mktemp("export")
    data = write_phantom_dataset(root / "data", 2, 1, shape=(32, 32, 20))
    cfg = load_config("demo", OVERRIDES)
    result = train(cfg, data, root / "run")
    summary = evaluate(result.best_checkpoint, data, root / "evaluation", overlays=False)
    return SimpleNamespace(root=root, data=data, ckpt=result.best_checkpoint, cfg=cfg, summary=summary)


@pytest.fixture(scope="module")
def exported(trained) -> SimpleNamespace:
    result = export_bundle(trained.ckpt, trained.root / "phantom_bundle", name="phantom_demo_medt3d",
                           zip_bundle_too=True)
    return SimpleNamespace(**vars(trained), bundle=result.bundle_dir, result=result)


def _logits_of_checkpoint(ckpt: Path, x: torch.Tensor) -> torch.Tensor:
    model, _ = load_model(ckpt)
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------------------------------- layout


def test_bundle_layout_metadata_and_readme(exported):
    b = exported.bundle
    for rel in ("LICENSE", "docs/README.md", "configs/metadata.json", "configs/medt3d.yaml",
                "configs/inference.json", "configs/train.json", "configs/evaluate.json",
                "configs/multi_gpu_train.json", "configs/logging.conf", "models/model.pt", "models/model.ts"):
        assert (b / rel).is_file(), rel
    assert not (b / "models" / "model.onnx").exists()
    assert not [p for p in b.parent.iterdir() if p.name.startswith(".phantom_bundle")]  # no temporary folder left
    meta = json.loads((b / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["version"] in meta["changelog"]
    assert meta["required_packages_version"]["medt3d"]
    assert meta["monai_version"] and meta["pytorch_version"] and meta["numpy_version"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["outputs"]["pred"]["num_channels"] == 4
    assert fmt["inputs"]["image"]["spatial_shape"] == [16, 16, 16]
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "organ_a", "2": "organ_b",
                                                     "3": "organ_c"}
    dice = exported.summary["foreground_mean"]["dice"]
    assert meta["eval_metrics"]["mean_dice"] == round(dice, 4)
    # the shipped medt3d config is the checkpoint's, without machine-specific paths
    shipped = config_to_dict(load_config(b / "configs" / "medt3d.yaml"))
    assert shipped == config_to_dict(exported.cfg)
    readme = (b / "docs" / "README.md").read_text(encoding="utf-8")
    assert f"| **foreground mean** | {dice:.3f} |" in readme
    for section in ("## What it segments", "## Input", "## Training", "## Metrics", "## How to run it", "## Limits"):
        assert section in readme
    assert "3 x 3 x 3 mm" in readme and "-150 to 250 HU" in readme
    assert (b / "LICENSE").read_text(encoding="utf-8").startswith("Copyright")


# MONAI's bundle commands are called in this process, with the arguments and working folder of their
# ``python -m monai.bundle ...`` command lines (which only parse those arguments for the same functions):
# each command line is a new process that spends about 10 s importing MONAI. The guide runs
# ``python -m monai.bundle run`` itself (docs/deploy.md), and test_bundle_inference_cli_equals_medt3d_infer below.


def test_metadata_passes_monai_verify_metadata(exported, meta_schema_file: Path, monkeypatch):
    from monai.bundle import verify_metadata

    monkeypatch.chdir(exported.bundle)
    verify_metadata(meta_file="configs/metadata.json", filepath=str(meta_schema_file))  # raises when invalid


def test_verify_net_in_out_and_ckpt_export(exported, tmp_path: Path, monkeypatch):
    from monai.bundle import ckpt_export, verify_net_in_out

    ts = tmp_path / "again.ts"
    trace = {"use_trace": True, "input_shape": [1, 1, 16, 16, 16]} if exported.result.torchscript == "trace" else {}
    monkeypatch.chdir(exported.bundle)
    verify_net_in_out("network_def", meta_file="configs/metadata.json", config_file="configs/inference.json",
                      device="cpu")
    ckpt_export("network_def", filepath=str(ts), ckpt_file="models/model.pt", meta_file="configs/metadata.json",
                config_file="configs/inference.json", **trace)
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((torch.jit.load(str(ts))(x) - _logits_of_checkpoint(exported.ckpt, x)).abs().max()) <= 1e-5


def test_torchscript_gives_the_checkpoint_logits_with_metadata_embedded(exported):
    from monai.data import load_net_with_metadata

    ts = exported.bundle / "models" / "model.ts"
    for shape in ((2, 1, 16, 16, 16), (1, 1, 19, 24, 11)):  # the ROI, and another size
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
        expected = _logits_of_checkpoint(exported.ckpt, x)
        with torch.no_grad():
            plain = torch.jit.load(str(ts))(x)
            net, meta, extra = load_net_with_metadata(str(ts), more_extra_files=["inference.json"])
            with_meta = net(x)
        assert float((plain - expected).abs().max()) <= 1e-5
        assert float((with_meta - expected).abs().max()) <= 1e-5
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 4
    assert meta["version"] == json.loads((exported.bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"]
    assert json.loads(extra["inference.json"])["network_def"] == "$medt3d.networks.build_network(@medt3d_cfg)"


def test_workflow_properties_are_complete(exported):
    from monai.bundle import ConfigWorkflow

    configs = exported.bundle / "configs"
    images = exported.data / "val" / "images"
    for kind, files, data in (("infer", ["inference.json"], images),
                              ("infer", ["inference.json", "evaluate.json"], exported.data),
                              ("train", ["train.json"], exported.data)):
        workflow = ConfigWorkflow(config_file=[str(configs / f) for f in files], workflow_type=kind,
                                  logging_file=False, init_id="_none_", bundle_root=str(exported.bundle),
                                  dataset_dir=str(data), output_dir=str(exported.root / f"props_{kind}_{len(files)}"))
        workflow.initialize()
        assert workflow.check_properties() == [], files


# ------------------------------------------------------------------------------------------- running


def _labels(folder: Path) -> dict[str, nib.Nifti1Image]:
    return {p.name: nib.load(p) for p in sorted(folder.glob("*_seg.nii.gz"))}


def _assert_same_labels(a: dict[str, nib.Nifti1Image], b: dict[str, nib.Nifti1Image]) -> None:
    assert sorted(a) == sorted(b) and a
    for name in a:
        x, y = np.asarray(a[name].dataobj), np.asarray(b[name].dataobj)
        assert x.shape == y.shape and x.dtype == y.dtype == np.uint8, name
        assert np.array_equal(x, y), f"{name}: {int((x != y).sum())} voxels differ"
        np.testing.assert_allclose(a[name].affine, b[name].affine, atol=1e-4)


def test_bundle_inference_cli_equals_medt3d_infer(exported, tmp_path: Path):
    images = tmp_path / "images"  # RAS and LPS-stored phantoms, names that collide or hold dots
    for split, name, target in (("train", "phantom_001", "a/scan.nii.gz"), ("val", "phantom_002", "b/scan.nii.gz"),
                                ("train", "phantom_000", "case.v2.nii.gz")):
        (images / target).parent.mkdir(parents=True, exist_ok=True)
        (images / target).write_bytes((exported.data / split / "images" / f"{name}.nii.gz").read_bytes())
    _run(["-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir", str(images),
          "--output_dir", str(tmp_path / "bundle_out")], cwd=exported.bundle)
    assert medt3d_main(["infer", str(images), "--model", str(exported.ckpt), "--output", str(tmp_path / "infer_out"),
                        "--no-progress"]) == 0
    bundle_labels = _labels(tmp_path / "bundle_out")
    assert sorted(bundle_labels) == ["a_scan_seg.nii.gz", "b_scan_seg.nii.gz", "case.v2_seg.nii.gz"]
    _assert_same_labels(bundle_labels, _labels(tmp_path / "infer_out"))
    assert len(np.unique(np.asarray(next(iter(bundle_labels.values())).dataobj))) > 1
    assert not (exported.bundle / "eval").exists()  # the bundle folder is left as it was


def test_bundle_inference_equals_medt3d_infer_on_the_real_spleen_ct(exported, shared_data: Path, tmp_path: Path):
    from monai.bundle import run

    images = tmp_path / "ct"
    images.mkdir()
    (images / "spleen_2_ct.nii.gz").write_bytes((shared_data / "ct_spleen" / "spleen_2_ct.nii.gz").read_bytes())
    run(config_file=str(exported.bundle / "configs" / "inference.json"), logging_file=False,
        bundle_root=str(exported.bundle), dataset_dir=str(images), output_dir=str(tmp_path / "bundle_out"))
    assert medt3d_main(["infer", str(images), "--model", str(exported.bundle), "--output", str(tmp_path / "infer_out"),
                        "--no-progress"]) == 0
    labels = _labels(tmp_path / "bundle_out")
    _assert_same_labels(labels, _labels(tmp_path / "infer_out"))
    image = nib.load(images / "spleen_2_ct.nii.gz")
    assert labels["spleen_2_ct_seg.nii.gz"].shape == image.shape  # on the scan's own 0.8 x 0.8 x 5 mm grid
    np.testing.assert_allclose(labels["spleen_2_ct_seg.nii.gz"].affine, image.affine, atol=1e-4)


def test_bundle_inference_in_bf16_equals_medt3d_infer_in_bf16(exported, tmp_path: Path):
    from monai.bundle import run

    images = exported.data / "val" / "images"
    run(config_file=str(exported.bundle / "configs" / "inference.json"), logging_file=False,
        bundle_root=str(exported.bundle), dataset_dir=str(images), output_dir=str(tmp_path / "bundle_bf16"),
        precision="bf16")
    assert medt3d_main(["infer", str(images), "--model", str(exported.bundle), "--output", str(tmp_path / "infer_bf16"),
                        "--precision", "bf16", "--no-progress"]) == 0
    _assert_same_labels(_labels(tmp_path / "bundle_bf16"), _labels(tmp_path / "infer_bf16"))


def test_precision_comparison_reports_dice_speed_and_agreement(exported):
    from medt3d.bundle.precision import compare_precisions

    result = compare_precisions(exported.bundle, exported.data, ("fp32", "bf16"), repeats=1)
    fp32, bf16 = result["precisions"]["fp32"], result["precisions"]["bf16"]
    assert fp32["labels_differing_from_fp32"] == 0.0 and 0.0 <= bf16["labels_differing_from_fp32"] < 0.5
    assert bf16["dice_change"] == pytest.approx(bf16["foreground_dice"] - fp32["foreground_dice"])
    assert bf16["speedup"] > 0 and result["cases"] == 1
    assert fp32["foreground_dice"] == pytest.approx(exported.summary["foreground_mean"]["dice"], abs=1e-6)


def test_bundle_evaluate_config_scores_the_labels(exported, tmp_path: Path):
    from monai.bundle import run

    configs = exported.bundle / "configs"
    run(config_file=[str(configs / "inference.json"), str(configs / "evaluate.json")], logging_file=False,
        bundle_root=str(exported.bundle), dataset_dir=str(exported.data), output_dir=str(tmp_path / "eval"))
    assert len(list((tmp_path / "eval").glob("*_seg.nii.gz"))) == 3
    rows = (tmp_path / "eval" / "mean_dice_raw.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 3
    assert (tmp_path / "eval" / "metrics.csv").read_text(encoding="utf-8").startswith("mean_dice")


def test_bundle_trains_one_epoch_and_logs_to_sqlite_mlflow(exported, tmp_path: Path):
    out = tmp_path / "train_out"
    _run(["-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--dataset_dir", str(exported.data),
          "--output_dir", str(out), "--train#trainer#max_epochs", "1", "--tracking", "mlflow"],
         cwd=exported.bundle)
    model, _ = load_inference_model(out)  # a medt3d run folder: checkpoints/best.pt
    bundle_model, _ = load_bundle_model(exported.bundle)
    assert set(model.state_dict()) == set(bundle_model.state_dict())
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    with sqlite3.connect(out / "mlflow.db") as db:
        runs = db.execute("SELECT status FROM runs").fetchall()
        metrics = dict(db.execute("SELECT key, COUNT(*) FROM metrics GROUP BY key").fetchall())
    assert ("FINISHED",) in runs
    assert metrics.get("train_loss", 0) >= 1 and metrics.get("val_mean_dice", 0) == 1
    assert sorted(p.name for p in exported.bundle.iterdir()) == ["LICENSE", "configs", "docs", "models"]


def test_bundle_train_resumes_from_its_own_last_checkpoint_like_medt3d_train(exported, tmp_path: Path, monkeypatch):
    from monai.bundle import run

    import medt3d.training.handlers as handlers

    def bundle_train(out: Path, resume: bool) -> None:
        run(config_file=str(exported.bundle / "configs" / "train.json"), logging_file=False,
            bundle_root=str(exported.bundle), dataset_dir=str(exported.data), output_dir=str(out),
            resume=resume, **{"train#trainer#max_epochs": 2})

    real_save = handlers.save_checkpoint

    def save_then_crash(path, **kwargs):
        real_save(path, **kwargs)
        if Path(path).name == "last.pt" and kwargs["epoch"] == 1:
            raise KeyboardInterrupt("simulated crash right after the epoch-1 checkpoint")

    out = tmp_path / "bundle_run"
    monkeypatch.setattr(handlers, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        bundle_train(out, resume=False)
    monkeypatch.setattr(handlers, "save_checkpoint", real_save)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    bundle_train(out, resume=True)

    cfg = load_config(exported.bundle / "configs" / "medt3d.yaml", ["train.max_epochs=2"])
    uninterrupted = train(cfg, exported.data, tmp_path / "cli_run")  # medt3d train, never interrupted
    resumed = json.loads((out / "history.json").read_text())
    straight = json.loads((uninterrupted.run_dir / "history.json").read_text())
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in straight], rel=1e-5)
    a = load_checkpoint(out / "checkpoints" / "last.pt")["network"]
    b = load_checkpoint(uninterrupted.last_checkpoint)["network"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps what a config expression raises
        bundle_train(tmp_path / "never_ran", resume=True)
    cause = root_cause(raised.value)
    assert isinstance(cause, FileNotFoundError) and "last.pt" in str(cause)


# slow (pytest -m slow): two processes that each import MONAI, 60-80 s of CPU; DDP training itself is
# covered in the default suite by tests/test_training.py's torchrun test
@pytest.mark.slow
def test_multi_gpu_train_config_runs_under_torchrun_on_two_cpu_processes(exported, tmp_path: Path):
    out = tmp_path / "ddp_out"
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
          "--config_file", "['configs/train.json','configs/multi_gpu_train.json']", "--dataset_dir",
          str(exported.data), "--output_dir", str(out), "--train#trainer#max_epochs", "1"],
         cwd=exported.bundle, timeout=300)
    model, _ = load_inference_model(out)  # rank 0 saved the unwrapped network's checkpoints
    bundle_model, _ = load_bundle_model(exported.bundle)
    assert set(model.state_dict()) == set(bundle_model.state_dict())
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1


# ------------------------------------------------------------------------------------------- loading


def test_medt3d_infer_loads_the_bundle_folder_and_zip(exported):
    ckpt_model, ckpt_cfg = load_model(exported.ckpt)
    zip_path = exported.result.zip_path
    assert zip_path == exported.bundle.with_name("phantom_bundle.zip")
    names = zipfile.ZipFile(zip_path).namelist()
    assert "phantom_bundle/models/model.ts" in names and all(n.startswith("phantom_bundle/") for n in names)
    for source in (exported.bundle, zip_path):
        assert is_bundle(source)
        model, cfg = load_inference_model(source)
        assert config_to_dict(cfg) == config_to_dict(ckpt_cfg)
        for key, value in ckpt_model.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key


# ------------------------------------------------------------------------------------------- refusals


def test_medt3d_evaluate_takes_the_bundle_folder_and_zip(exported, tmp_path: Path):
    for i, source in enumerate((exported.bundle, exported.result.zip_path)):
        code = medt3d_main(["evaluate", "--model", str(source), "--data-dir", str(exported.data),
                            "--output", str(tmp_path / f"eval{i}"), "--no-overlays"])
        assert code == 0
        summary = json.loads((tmp_path / f"eval{i}" / "summary.json").read_text())
        assert summary["foreground_mean"]["dice"] == pytest.approx(exported.summary["foreground_mean"]["dice"],
                                                                    abs=1e-6)


def _tampered(trained, tmp_path: Path, change) -> Path:
    payload = load_checkpoint(trained.ckpt)
    payload.pop("path")
    change(payload)
    target = tmp_path / "tampered.pt"
    torch.save(payload, target)
    return target


def test_export_refuses_weights_made_for_other_channels(trained, tmp_path: Path):
    def two_channels(p):
        p["config"]["data"]["in_channels"] = 2

    bad = _tampered(trained, tmp_path, two_channels)
    with pytest.raises(ValueError, match=r"data.in_channels=2.*wrong shapes: .*\[4, 1.*network needs \[4, 2") as err:
        export_bundle(bad, tmp_path / "b1")
    assert str(bad) in str(err.value)
    assert not (tmp_path / "b1").exists() and [p.name for p in tmp_path.iterdir()] == ["tampered.pt"]


def test_export_refuses_missing_entries_and_keys(trained, tmp_path: Path):
    bad = _tampered(trained, tmp_path, lambda p: p.pop("config"))
    with pytest.raises(ValueError, match="has no 'config' entry"):
        export_bundle(bad, tmp_path / "b")
    first = next(iter(load_checkpoint(trained.ckpt)["network"]))
    bad = _tampered(trained, tmp_path, lambda p: p["network"].pop(first))
    with pytest.raises(ValueError, match=f"missing keys: {first}"):
        export_bundle(bad, tmp_path / "b")
    bad = _tampered(trained, tmp_path, lambda p: p["config"]["network"].update(preset="nope"))
    with pytest.raises(ValueError, match="network.preset"):
        export_bundle(bad, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_export_refuses_a_source_whose_contract_differs_and_the_cli_says_why(trained, tmp_path: Path, capsys):
    with pytest.raises(ValueError, match=r"does not match bundle source spleen_ct_medt3d: data.labels is "):
        export_bundle(trained.ckpt, tmp_path / "spleen", name="spleen_ct_medt3d")
    code = medt3d_main(["export", "--model", str(trained.ckpt), "--output", str(tmp_path / "spleen"),
                        "--name", "spleen_ct_medt3d"])
    assert code == 2
    assert "medt3d export: error:" in capsys.readouterr().err
    assert not (tmp_path / "spleen").exists()


def test_export_never_overwrites(trained, tmp_path: Path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        export_bundle(trained.ckpt, target)
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    (tmp_path / "fresh.zip").write_text("someone's zip")
    with pytest.raises(ValueError, match="fresh.zip already exists"):
        export_bundle(trained.ckpt, tmp_path / "fresh", zip_bundle_too=True)
    assert not (tmp_path / "fresh").exists() and (tmp_path / "fresh.zip").read_text(encoding="utf-8") == "someone's zip"


def test_export_with_onnx_matches_onnxruntime(trained, tmp_path: Path):
    import onnxruntime as ort

    result = export_bundle(trained.ckpt, tmp_path / "with_onnx", onnx=True)
    onnx_file = result.bundle_dir / "models" / "model.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for shape in ((3, 1, 16, 16, 16), (1, 1, 21, 18, 13)):  # the ROI, and another size (MedT3D takes any)
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
        out = session.run(["pred"], {"image": x.numpy()})[0]
        assert out.shape == (shape[0], 4, *shape[2:])
        assert float(np.abs(out - _logits_of_checkpoint(trained.ckpt, x).numpy()).max()) <= 1e-4
    readme = (result.bundle_dir / "docs" / "README.md").read_text(encoding="utf-8")
    assert "`models/model.ts` and `models/model.onnx` take any spatial size" in readme
