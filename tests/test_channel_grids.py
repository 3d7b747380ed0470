"""Channels on different grids (issue 32, item 4): the real PET/CT of the sarcoma set as one two-channel case,
resampled onto a reference channel; channels from different frames of reference and stray labels refused."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medt3d.config import ConfigError, load_config
from medt3d.data.readers import LoadVolumed, load_image, load_volume
from medt3d.data.readers.channels import MIN_OVERLAP, frame_of_reference, grid_of, overlap_fraction
from medt3d.data.transforms import ChannelIntensityd
from medt3d.errors import InputError


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def sts(shared_data: Path) -> Path:
    return shared_data / "ct_pet_mr_sts" / "STS_001"


def test_pet_ct_is_one_two_channel_case_on_the_ct_grid(sts: Path) -> None:
    ct, pet = sts / "CT" / "image.nii.gz", sts / "PET" / "image.nii.gz"
    image = load_image([ct, pet], channels=2)
    ct_shape = nib.load(ct).shape
    assert tuple(image.shape) == (2, *ct_shape)
    np.testing.assert_array_equal(image[0].numpy(), load_volume(ct)[0].numpy())  # the reference is not touched
    suv = np.asarray(nib.load(pet).dataobj)
    assert 0.9 * suv.max() < float(image[1].max()) <= suv.max() + 1e-3  # linear: no new extremes
    assert image.meta["filename_or_obj"] == str(ct)
    # the label drawn on the PET grid comes onto the CT grid by nearest neighbour and matches the CT's own
    loaded = LoadVolumed(("image", "label"), channels=2)({"image": [str(ct), str(pet)],
                                                         "label": str(sts / "PET" / "gtv.nii.gz")})
    label = loaded["label"]
    assert tuple(label.shape[1:]) == ct_shape and set(np.unique(label.numpy())) == {0.0, 1.0}
    assert _dice(label[0].numpy(), np.asarray(nib.load(sts / "CT" / "gtv.nii.gz").dataobj)) > 0.95
    on_pet = load_image([ct, pet], channels=2, reference_channel=1)  # the PET's grid instead
    assert tuple(on_pet.shape) == (2, *nib.load(pet).shape)
    np.testing.assert_allclose(on_pet[1].numpy(), suv, atol=1e-4)


def test_dicom_pet_ct_share_a_frame_of_reference_and_other_patients_do_not(shared_data: Path) -> None:
    root = shared_data / "ct_pet_mr_sts"
    ct, pet = root / "STS_001" / "CT" / "dicom" / "series", root / "STS_001" / "PET" / "dicom" / "series"
    assert frame_of_reference(ct) == frame_of_reference(pet) is not None
    image = load_image([ct, pet], channels=2)
    assert tuple(image.shape[1:]) == tuple(load_volume(ct).shape[1:])
    other = root / "STS_002" / "PET" / "dicom" / "series"
    with pytest.raises(InputError, match="FrameOfReferenceUID .*not in one frame of reference"):
        load_image([ct, other], channels=2)


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def test_nifti_channels_far_apart_and_stray_labels_are_refused(tmp_path: Path) -> None:
    fine = np.diag([1.0, 1.0, 2.0, 1.0])
    coarse = np.diag([3.0, 3.0, 2.0, 1.0])
    coarse[:3, 3] = [1.0, 1.0, 0.0]  # 3 mm voxels whose centres sit between the 1 mm ones
    ramp = np.tile(np.arange(30, dtype=np.float32)[:, None, None], (1, 30, 10))
    a = _save(tmp_path / "a.nii.gz", ramp, fine)
    b = _save(tmp_path / "b.nii.gz", np.tile(np.arange(10, dtype=np.float32)[:, None, None], (1, 10, 10)), coarse)
    image = load_image([a, b], channels=2)
    # a linear ramp stays linear: b's value 1 per 3 mm is x/3 on a's grid (inside b's extent)
    np.testing.assert_allclose(image[1, 1:28, 5, 5].numpy(), (np.arange(1, 28) - 1) / 3.0, atol=1e-4)
    far = fine.copy()
    far[:3, 3] = [500.0, 0.0, 0.0]
    c = _save(tmp_path / "c.nii.gz", ramp, far)
    assert overlap_fraction(grid_of(a, load_volume(a)), grid_of(c, load_volume(c))) < MIN_OVERLAP
    with pytest.raises(InputError, match="overlap in 0% .*register them onto one scan first"):
        load_image([a, c], channels=2)
    stray = _save(tmp_path / "label.nii.gz", np.zeros((20, 20, 10), np.uint8), fine)
    with pytest.raises(InputError, match="label .*label.nii.gz .*on none of the channels' grids"):
        LoadVolumed(("image", "label"), channels=2)({"image": [str(a), str(b)], "label": str(stray)})


def test_pet_channel_is_scaled_by_suv_and_the_reference_channel_is_checked() -> None:
    ct = torch.linspace(-400, 600, 4000).reshape(10, 20, 20)
    suv = torch.linspace(0, 20, 4000).reshape(10, 20, 20)
    out = ChannelIntensityd("image", ["CT", "PET"], (-160.0, 240.0), suv_max=10.0)(
        {"image": MetaTensor(torch.stack([ct, suv]))})["image"]
    np.testing.assert_allclose(out[1].numpy(), (suv.clamp(0, 10) / 10).numpy(), atol=1e-6)
    cfg = load_config("pet_ct")
    assert cfg.data.channel_kinds == ["CT", "PET"] and cfg.data.in_channels == 2
    with pytest.raises(ConfigError, match="data.reference_channel"):
        load_config("pet_ct", ["data.reference_channel=2"])
