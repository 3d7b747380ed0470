"""Multi-channel cases and nnU-Net v2 raw datasets, end to end: read, train, infer, evaluate, export.

The dataset is laid out as nnU-Net v2's documentation describes (``dataset_format.md``):
``Dataset042_TwoChannel/dataset.json`` with ``channel_names``, ``labels`` (name -> value),
``numTraining`` and ``file_ending``; ``imagesTr/<case>_0000.nii.gz`` and ``_0001``;
``labelsTr/<case>.nii.gz``; ``imagesTs/``. Channel 0 is a CT phantom, channel 1 an MR-like image
of the same anatomy with another contrast.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from support import tiny_cfg

from medt3d.data.datalist import DatasetError, build_datalist, fold_cases
from medt3d.data.phantoms import make_phantom
from medt3d.data.readers import load_image
from medt3d.data.transforms import ChannelIntensityd

SHAPE = (32, 32, 24)
#: listed out of value order on purpose: classes are ordered by value, as nnU-Net does
LABELS = {"organ_b": 2, "background": 0, "organ_c": 3, "organ_a": 1}
TWO_CHANNELS = ["data.in_channels=2", "data.channels=[CT, T2]", "data.labels=[background, organ_a, organ_b, organ_c]"]


def _second_channel(label: np.ndarray, index: int) -> np.ndarray:
    """An MR-like channel: another contrast per class (organ_a bright, organ_b dark), noise, no HU."""
    rng = np.random.default_rng(index)
    levels = np.array([20.0, 400.0, 60.0, 250.0], dtype=np.float32)
    return (levels[label] + rng.normal(0, 10, label.shape)).astype(np.float32)


def _write_case(folder: Path, name: str, index: int, label_dir: Path | None) -> None:
    phantom = make_phantom(index, shape=SHAPE)
    for channel, array in enumerate((phantom.image, _second_channel(phantom.label, index))):
        nib.save(nib.Nifti1Image(array, phantom.affine), folder / f"{name}_{channel:04d}.nii.gz")
    if label_dir is not None:
        nib.save(nib.Nifti1Image(phantom.label, phantom.affine), label_dir / f"{name}.nii.gz")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nnunet") / "Dataset042_TwoChannel"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        _write_case(root / "imagesTr", f"phantom_{i:03d}", i, root / "labelsTr")
    _write_case(root / "imagesTs", "phantom_100", 100, root / "labelsTs")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "T2"}, "labels": LABELS, "numTraining": 3, "file_ending": ".nii.gz"}))
    return root


def test_nnunet_v2_dataset_is_read_as_it_is(dataset: Path):
    datalist = build_datalist(dataset)
    assert datalist.layout == "nnunet" and datalist.channels == ["CT", "T2"]
    assert datalist.labels == ["background", "organ_a", "organ_b", "organ_c"]  # by value
    assert [c["name"] for c in datalist.train] == ["phantom_000", "phantom_001", "phantom_002"]
    first = datalist.train[0]
    assert first["image"] == [str(dataset / "imagesTr" / f"phantom_000_000{c}.nii.gz") for c in (0, 1)]
    assert first["label"] == str(dataset / "labelsTr" / "phantom_000.nii.gz")
    assert [c["name"] for c in datalist.test] == ["phantom_100"] and "label" in datalist.test[0]
    assert build_datalist(dataset / "dataset.json").layout == "nnunet"


@pytest.mark.parametrize(("change", "match"), [
    ({"labels": {"background": 0, "tumour": [1, 2]}}, "region-based labels"),
    ({"labels": {"background": 0, "a": 1, "b": 3}}, r"must be 0..2 \(nnU-Net's rule"),
    ({"channel_names": {"0": "CT", "1": "T2", "2": "ADC"}}, "channel files _0000, _0001, but channel_names lists 3"),
    ({"numTraining": 5}, "numTraining is 5 but"),
])
def test_bad_nnunet_datasets_are_refused_naming_the_problem(dataset: Path, tmp_path: Path, change, match):
    copy = tmp_path / dataset.name
    subprocess.run(["cp", "-r", str(dataset), str(copy)], check=True)
    meta = json.loads((copy / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(DatasetError, match=match):
        build_datalist(copy)


def test_five_folds_cover_every_case_once_and_repeat_with_the_seed():
    cases = [{"name": f"c{i:02d}"} for i in range(12)]
    folds = [fold_cases(cases, k, seed=12345) for k in range(5)]
    held = [sorted(c["name"] for c in val) for _, val in folds]
    assert sorted(n for names in held for n in names) == sorted(c["name"] for c in cases)
    assert all(len(names) in (2, 3) for names in held)
    assert all(set(c["name"] for c in train).isdisjoint(names) for (train, _), names in zip(folds, held))
    assert fold_cases(list(reversed(cases)), 2, seed=12345) == folds[2]  # order of the input does not matter
    assert [c["name"] for c in fold_cases(cases, 2, seed=1)[1]] != held[2]
    with pytest.raises(ValueError, match="needs at least 5 cases"):
        fold_cases(cases[:4], 0, seed=0)


def test_channel_files_load_stacked_and_must_share_a_frame_of_reference(dataset: Path, tmp_path: Path):
    files = [dataset / "imagesTr" / f"phantom_000_000{c}.nii.gz" for c in (0, 1)]
    image = load_image(files, channels=2)
    assert tuple(image.shape) == (2, *nib.load(files[0]).shape)
    np.testing.assert_array_equal(image[1].numpy(), np.asarray(nib.load(files[1]).dataobj))
    four_d = tmp_path / "stacked.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([np.asarray(nib.load(f).dataobj) for f in files], -1),
                             nib.load(files[0]).affine), four_d)
    np.testing.assert_array_equal(load_image(four_d, channels=2).numpy(), image.numpy())
    with pytest.raises(ValueError, match="image has 2 channel"):
        load_image(files, channels=1)
    moved = tmp_path / "moved_0001.nii.gz"
    affine = nib.load(files[1]).affine.copy()
    affine[0, 3] += 2 * affine[0, 0]  # two voxels along x: the same frame of reference, another grid
    nib.save(nib.Nifti1Image(np.asarray(nib.load(files[1]).dataobj), affine), moved)
    np.testing.assert_allclose(load_image([files[0], moved], channels=2)[1, 2:].numpy(), image[1, :-2].numpy(),
                               atol=1e-3)  # resampled onto channel 0's grid (test_channel_grids.py)
    affine[0, 3] += 1000.0
    nib.save(nib.Nifti1Image(np.asarray(nib.load(files[1]).dataobj), affine), moved)
    with pytest.raises(ValueError, match="channels of one case must share one frame of reference"):
        load_image([files[0], moved], channels=2)


def test_each_channel_is_normalised_by_its_name():
    ct = torch.linspace(-400, 600, 4000).reshape(10, 20, 20)
    mr = torch.rand(10, 20, 20) * 300 + 50
    out = ChannelIntensityd("image", [True, False], (-160.0, 240.0))({"image": MetaTensor(torch.stack([ct, mr]))})
    image = out["image"]
    assert isinstance(image, MetaTensor)
    assert image[0].min() == 0.0 and image[0].max() == 1.0
    expected = ((ct.clamp(-160, 240) + 160) / 400).numpy()  # the window's linear map to 0..1
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-5)
    assert abs(image[1].mean().item()) < 1e-4 and abs(image[1].std().item() - 1) < 1e-2


def test_two_channel_phantom_trains_infers_evaluates_and_exports(dataset: Path, tmp_path: Path, capsys):
    from medt3d.bundle.export import export_bundle
    from medt3d.evaluation.evaluate import evaluate
    from medt3d.training.engine import train

    cfg = tiny_cfg(*TWO_CHANNELS, "train.max_epochs=2", "train.val_interval=1", "data.val_fraction=0.34")
    result = train(cfg, dataset, tmp_path / "run")
    assert result.best_checkpoint.is_file()

    # channel files by nnU-Net's names, and the same case as one 4-D file, give the same labels
    tests = tmp_path / "tests"
    tests.mkdir()
    for channel in (0, 1):
        subprocess.run(["cp", str(dataset / "imagesTs" / f"phantom_100_000{channel}.nii.gz"), str(tests)], check=True)
    arrays = [np.asarray(nib.load(tests / f"phantom_100_000{c}.nii.gz").dataobj) for c in (0, 1)]
    affine = nib.load(tests / "phantom_100_0000.nii.gz").affine
    stacked = tmp_path / "stacked"
    stacked.mkdir()
    nib.save(nib.Nifti1Image(np.stack(arrays, -1), affine), stacked / "phantom_100.nii.gz")
    only_one = tmp_path / "only_one"
    only_one.mkdir()
    subprocess.run(["cp", str(tests / "phantom_100_0000.nii.gz"), str(only_one)], check=True)
    from medt3d.cli import main

    run = ["infer", "--model", str(tmp_path / "run"), "--no-progress"]
    for source, out in ((tests, "out_files"), (stacked, "out_4d")):
        assert main([*run, str(source), "--output", str(tmp_path / out)]) == 0, capsys.readouterr().err
    from_files = nib.load(tmp_path / "out_files" / "phantom_100_seg.nii.gz")
    from_4d = nib.load(tmp_path / "out_4d" / "phantom_100_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(from_files.dataobj), np.asarray(from_4d.dataobj))
    assert from_files.shape == arrays[0].shape
    sidecar = json.loads((tmp_path / "out_files" / "phantom_100_seg.json").read_text())
    assert [Path(f).name for f in sidecar["input_files"]] == ["phantom_100_0000.nii.gz", "phantom_100_0001.nii.gz"]
    capsys.readouterr()
    assert main([*run, str(only_one), "--output", str(tmp_path / "out_one")]) == 1
    assert "channel files _0000, but the model takes 2 channels" in capsys.readouterr().err

    summary = evaluate(result.best_checkpoint, dataset, tmp_path / "eval", split="test", overlays=False)
    assert summary["n_cases"] == 1 and {"organ_a", "organ_b", "organ_c"} <= set(summary["per_class"])
    assert 0.0 <= summary["foreground_mean"]["dice"] <= 1.0

    bundle = export_bundle(result.best_checkpoint, tmp_path / "bundle")
    metadata = json.loads((bundle.bundle_dir / "configs" / "metadata.json").read_text())
    image = metadata["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 2 and image["channel_def"] == {"0": "CT", "1": "T2"}
