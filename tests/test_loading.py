"""LoadVolumed (the readers as a MONAI transform, against LoadImaged and its inverse) and find_inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_utils import rotation, write_dicom_series
from monai.transforms import Compose, Invertd, LoadImaged, Orientationd, Spacingd
from reader_utils import ORIGIN, SHAPE, SPACING, oblique_ras, volume, write_nifti_file, write_nrrd_file

from medt3d.data.readers import (
    LoadVolumed,
    find_inputs,
    load_volume,
)

# ---------------------------------------------------------------------------------------------- LoadVolumed


def test_loadvolumed_matches_loadimaged(tmp_path: Path) -> None:
    vol = volume()
    lab = (vol > 0).astype(np.uint8)
    data = {"image": str(write_nifti_file(tmp_path / "i.nii.gz", vol)), "label": str(write_nifti_file(tmp_path / "l.nii.gz", lab))}
    ours = LoadVolumed(("image", "label"))(data)
    ref = LoadImaged(("image", "label"), image_only=True, ensure_channel_first=True)(data)
    for key in ("image", "label"):
        assert ours[key].shape == ref[key].shape and ours[key].dtype == ref[key].dtype
        np.testing.assert_array_equal(ours[key].numpy(), ref[key].numpy())
        np.testing.assert_allclose(np.asarray(ours[key].affine), np.asarray(ref[key].affine))
        assert ours[key].meta["filename_or_obj"] == ref[key].meta["filename_or_obj"]
    assert LoadVolumed(("image", "label"), allow_missing_keys=True)({"image": data["image"]}).keys() == {"image"}
    with pytest.raises(KeyError):
        LoadVolumed(("image", "label"))({"image": data["image"]})


def test_loadvolumed_matches_monai_itk_reader_on_dicom(tmp_path: Path) -> None:
    vol = volume()
    write_dicom_series(tmp_path / "s", vol, SPACING, rotation(30, 0, -20), ORIGIN, shuffle=True)
    data = {"image": str(tmp_path / "s")}
    ours = LoadVolumed("image")(data)["image"]
    ref = LoadImaged("image", reader="ITKReader", image_only=True, ensure_channel_first=True)(data)["image"]
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    np.testing.assert_allclose(np.asarray(ours.affine), np.asarray(ref.affine), atol=1e-4)


def test_loadvolumed_refuses_mismatched_grids(tmp_path: Path) -> None:
    image = write_nifti_file(tmp_path / "i.nii.gz", volume())
    small = write_nifti_file(tmp_path / "small.nii.gz", np.zeros((12, 10, 6), np.uint8))
    nudged_affine = oblique_ras().copy()
    nudged_affine[:3, 3] += 1e-5  # float rounding in another tool: still one grid
    nudged = write_nifti_file(tmp_path / "nudged.nii.gz", np.zeros(SHAPE, np.uint8), nudged_affine)
    moved_affine = oblique_ras().copy()
    moved_affine[0, 3] += 2.0
    moved = write_nifti_file(tmp_path / "moved.nii.gz", np.zeros(SHAPE, np.uint8), moved_affine)
    load = LoadVolumed(("image", "label"))
    with pytest.raises(ValueError, match=r"shape 12x10x7 of .*i\.nii\.gz differs from 12x10x6 of .*small\.nii\.gz"):
        load({"image": str(image), "label": str(small)})
    with pytest.raises(ValueError, match=r"affine of .*i\.nii\.gz differs from .*moved\.nii\.gz by up to 2 mm"):
        load({"image": str(image), "label": str(moved)})
    assert load({"image": str(image), "label": str(nudged)})["label"].shape == (1, *SHAPE)


def test_dicom_pipeline_inverts_to_the_scan_grid(tmp_path: Path) -> None:
    """Orientationd + Spacingd after LoadVolumed, then Invertd back, as with LoadImaged."""
    vol = volume((16, 14, 8))
    write_dicom_series(tmp_path / "s", vol, SPACING, rotation(0, 0, 90) @ np.diag([1.0, -1.0, -1.0]), ORIGIN)
    pre = Compose([LoadVolumed("image"), Orientationd("image", axcodes="RAS", labels=None),
                   Spacingd("image", pixdim=(1.5, 1.5, 3.0), mode="nearest")])
    out = pre({"image": str(tmp_path / "s")})
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out["image"].affine)[:3, :3], axis=0), (1.5, 1.5, 3.0))
    out["pred"] = out["image"].clone()
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(out)
    original = load_volume(tmp_path / "s")
    assert inv["pred"].shape == original.shape
    np.testing.assert_allclose(np.asarray(inv["pred"].affine), np.asarray(original.affine), atol=1e-3)


# ---------------------------------------------------------------------------------------------- find_inputs


def test_find_inputs(tmp_path: Path) -> None:
    vol = volume()
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    a = write_nifti_file(root / "b_case.nii.gz", vol)
    b = write_nrrd_file(root / "sub" / "a_case.nrrd", vol, np.eye(3))
    write_dicom_series(root / "sub" / "deeper" / "series", vol, SPACING, np.eye(3), ORIGIN)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.nii.gz").write_bytes(b"x")
    single = write_nifti_file(tmp_path / "single.nii", vol)
    found = find_inputs([root, single])
    assert found == sorted([a, b, root / "sub" / "deeper" / "series", single])
    assert find_inputs(root / "sub" / "deeper" / "series") == [root / "sub" / "deeper" / "series"]

    (tmp_path / "empty").mkdir()
    write_dicom_series(tmp_path / "two", vol, SPACING, np.eye(3), ORIGIN, series_uid="1.9.1", prefix="a")
    write_dicom_series(tmp_path / "two", vol, SPACING, np.eye(3), ORIGIN, series_uid="1.9.2", prefix="b")
    with pytest.raises(ValueError) as err:
        find_inputs([root, tmp_path / "empty", tmp_path / "missing.nii.gz", tmp_path / "two"])
    message = str(err.value)
    assert "3 problem(s)" in message
    assert f"no NIfTI, NRRD or DICOM series found in {tmp_path / 'empty'}" in message
    assert f"input not found: {tmp_path / 'missing.nii.gz'}" in message
    assert "1.9.1" in message and "1.9.2" in message
    assert find_inputs(tmp_path / "two", series_uid="1.9.2") == [tmp_path / "two"]
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        find_inputs(tmp_path / "missing.nii.gz")
