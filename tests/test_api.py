"""The notebook API: ``medt3d.load_model`` and ``medt3d.predict`` on every kind of input, against ``medt3d infer``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from support import ThresholdNet, blob_volume, save, threshold_config

import medt3d
from medt3d.inference.batch import InferOptions, run_inference
from medt3d.inference.predictor import Predictor

# resampling to 1.2 mm and back, on an LPS-stored anisotropic grid: inversion has work to do
OVERRIDES = ("preprocess.spacing=[1.2, 1.2, 1.2]",)


@pytest.fixture(scope="module")
def scan_and_reference(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A scan and the labels ``medt3d infer`` writes for it with the threshold network."""
    root = tmp_path_factory.mktemp("api")
    image, affine = blob_volume((30, 26, 14), (0.9, 1.1, 2.5), frame="LPS")
    scan = save(root / "scan.nii.gz", image, affine)
    summary = run_inference([scan], root / "infer", options=InferOptions(progress=False),
                            network=(ThresholdNet(), threshold_config(*OVERRIDES)))
    assert summary["done"] == 1
    reference = np.asarray(nib.load(root / "infer" / "scan_seg.nii.gz").dataobj)
    assert 0 < reference.sum() < reference.size  # the blob, not nothing or everything
    return scan, reference


@pytest.fixture(scope="module")
def model() -> Predictor:
    return Predictor(ThresholdNet(), threshold_config(*OVERRIDES), "cpu")


def test_a_path_and_a_nibabel_image_give_what_infer_writes(scan_and_reference, model):
    scan, reference = scan_and_reference
    for image in (scan, str(scan), nib.load(scan)):
        result = medt3d.predict(image, model)
        assert isinstance(result.label, nib.Nifti1Image)
        np.testing.assert_array_equal(np.asarray(result.label.dataobj), reference)
        np.testing.assert_allclose(result.label.affine, nib.load(scan).affine, atol=1e-5)
    assert [(t["value"], t["name"]) for t in result.labels] == [(0, "background"), (1, "blob")]
    assert result.labels == json.loads((scan.parent / "infer" / "scan_seg.json").read_text())["labels"]
    voxel_ml = abs(np.linalg.det(nib.load(scan).affine[:3, :3])) / 1000
    assert result.volumes_ml["blob"] == pytest.approx(reference.sum() * voxel_ml, rel=1e-4)


def test_a_simpleitk_image_comes_back_as_one_on_its_grid(scan_and_reference, model):
    scan, reference = scan_and_reference
    image = sitk.ReadImage(str(scan))
    result = medt3d.predict(image, model)
    assert isinstance(result.label, sitk.Image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label).transpose(), reference)
    assert result.label.GetOrigin() == pytest.approx(image.GetOrigin())
    assert result.label.GetDirection() == pytest.approx(image.GetDirection())
    assert result.label.GetSpacing() == pytest.approx(image.GetSpacing())


def test_a_metatensor_and_a_numpy_array_with_affine(scan_and_reference, model):
    scan, reference = scan_and_reference
    loaded = LoadImage(image_only=True)(str(scan))
    assert isinstance(loaded, MetaTensor) and loaded.dim() == 3
    result = medt3d.predict(loaded, model)
    assert isinstance(result.label, MetaTensor)
    np.testing.assert_array_equal(result.label.numpy(), reference)
    np.testing.assert_allclose(np.asarray(result.label.affine), np.asarray(loaded.affine), atol=1e-5)

    img = nib.load(scan)
    array = np.asarray(img.dataobj, dtype=np.float32)
    result = medt3d.predict(array, model, affine=img.affine, probabilities=True)
    np.testing.assert_array_equal(result.label, reference)
    assert result.probabilities.shape == (2, *array.shape)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-4)
    # labels are resampled after the argmax, probabilities before it: they differ only along boundaries
    assert (result.probabilities.argmax(0) == reference).mean() > 0.98
    with pytest.raises(ValueError, match="needs its affine"):
        medt3d.predict(array, model)
    with pytest.raises(ValueError, match="must be a 3-D volume"):
        medt3d.predict(array[..., 0], model, affine=img.affine)
    with pytest.raises(ValueError, match="cannot segment a list"):
        medt3d.predict([1, 2, 3], model)
    bad = array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN and 0 Inf"):
        medt3d.predict(bad, model, affine=img.affine)


def test_load_model_once_and_reuse_it_like_infer_with_a_checkpoint(scan_and_reference, tmp_path: Path):
    from medt3d.models.checkpoint import save_checkpoint
    from medt3d.networks import build_network

    scan, _ = scan_and_reference
    cfg = threshold_config("network.preset=tiny", *OVERRIDES)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", network=build_network(cfg), cfg=cfg, epoch=1, iteration=1)
    assert run_inference([scan], tmp_path / "infer", model=checkpoint, options=InferOptions(progress=False))["done"] == 1
    expected = np.asarray(nib.load(tmp_path / "infer" / "scan_seg.nii.gz").dataobj)
    model = medt3d.load_model(checkpoint, device="cpu")
    first = medt3d.predict(scan, model)
    again = medt3d.predict(nib.load(scan), model)
    np.testing.assert_array_equal(np.asarray(first.label.dataobj), expected)
    np.testing.assert_array_equal(np.asarray(again.label.dataobj), expected)
    with pytest.raises(FileNotFoundError):
        medt3d.load_model(tmp_path / "missing.pt")


def test_inputs_a_cast_would_change_silently_are_refused(scan_and_reference, model):
    """D12: a SimpleITK direction of 2*I gave volumes 8x too large; bool and complex arrays were cast."""
    scan, _ = scan_and_reference
    image = sitk.ReadImage(str(scan))
    image.SetDirection([2.0, 0, 0, 0, 2.0, 0, 0, 0, 2.0])
    with pytest.raises(ValueError, match=r"direction .* is not a rotation \(its columns have lengths 2, 2, 2"):
        medt3d.predict(image, model)
    img = nib.load(scan)
    array = np.asarray(img.dataobj, dtype=np.float32)
    with pytest.raises(ValueError, match=r"NumPy array is boolean \(a mask\?\)"):
        medt3d.predict(array > 0, model, affine=img.affine)
    with pytest.raises(ValueError, match=r"NumPy array holds complex values"):
        medt3d.predict(array.astype(np.complex64), model, affine=img.affine)
    with pytest.raises(ValueError, match=r"MetaTensor is boolean"):
        medt3d.predict(MetaTensor(torch.from_numpy(array > 0), affine=torch.as_tensor(img.affine)), model)
    with pytest.raises(ValueError, match=r"SimpleITK image is boolean|SimpleITK image holds complex"):
        medt3d.predict(sitk.Cast(sitk.ReadImage(str(scan)), sitk.sitkComplexFloat32), model)
    flat = img.affine.copy()
    flat[:3, 0] = 0
    with pytest.raises(ValueError, match=r"affine of the NumPy array is not finite or has a zero voxel size"):
        medt3d.predict(array, model, affine=flat)


def test_a_complex_nifti_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.complex64), np.eye(4)), str(path))
    with pytest.raises(ValueError, match=r"complex\.nii\.gz: the voxels are complex \(complex64\)"):
        medt3d.predict(path, Predictor(ThresholdNet(), threshold_config(*OVERRIDES), "cpu"))
