"""Synthetic phantoms: deterministic, labelled as promised, CT-like, written in the folder layout."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medt3d.cli import main
from medt3d.config import load_config
from medt3d.data.phantoms import CLASS_NAMES, make_phantom, write_phantom_dataset

SHAPE = (32, 32, 20)


def _world_centroid(ph, value: int) -> np.ndarray:
    idx = np.argwhere(ph.label == value)
    centre = idx.mean(axis=0)
    return (ph.affine @ np.append(centre, 1.0))[:3]


def test_deterministic_for_index_and_seed():
    a, b = make_phantom(3, shape=SHAPE, seed=7), make_phantom(3, shape=SHAPE, seed=7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.name == "phantom_003"
    assert not np.array_equal(make_phantom(3, shape=SHAPE, seed=8).label, a.label)
    assert not np.array_equal(make_phantom(4, shape=SHAPE, seed=7).image, a.image)


def test_labels_types_and_demo_class_names():
    ph = make_phantom(0, shape=SHAPE)
    assert ph.image.dtype == np.float32 and ph.label.dtype == np.uint8
    assert ph.image.shape == ph.label.shape == SHAPE
    assert set(np.unique(ph.label)) == {0, 1, 2, 3}
    assert list(CLASS_NAMES) == load_config("demo").data.labels
    # CT-like HU: air outside the body, bone present
    assert ph.image.min() < -900 and ph.image.max() > 300


def test_intensity_ranges_overlap_so_intensity_alone_is_not_enough():
    ph = make_phantom(1)
    ranges = {c: np.percentile(ph.image[ph.label == c], [5, 95]) for c in (1, 2, 3)}
    means = {c: float(ph.image[ph.label == c].mean()) for c in (1, 2, 3)}
    assert means[1] < means[2] < means[3]  # distinct ...
    assert ranges[1][1] > ranges[2][0] and ranges[2][1] > ranges[3][0]  # ... but overlapping
    # the unlabelled background also holds voxels in every organ's range (muscle wall, bowel, aorta)
    background = ph.image[ph.label == 0]
    for c in (1, 2, 3):
        lo, hi = np.percentile(ph.image[ph.label == c], [25, 75])
        assert ((background > lo) & (background < hi)).sum() > 0.2 * (ph.label == c).sum()


def test_anisotropic_spacing_and_some_non_ras_orientation():
    phantoms = [make_phantom(i, shape=SHAPE) for i in range(4)]
    for ph in phantoms:
        sp = ph.spacing
        assert max(sp) / min(sp) > 1.3
    codes = [ph.axcodes for ph in phantoms]
    assert "RAS" in codes and any(c != "RAS" for c in codes)
    # explicit spacing is honoured (in the stored axis order)
    ph = make_phantom(0, shape=SHAPE, spacing=(1.0, 1.0, 3.0))
    assert ph.spacing == pytest.approx((1.0, 1.0, 3.0))


def test_orientation_changes_storage_not_anatomy():
    """A non-RAS case has the same anatomy in world space: organ_a on the right, organ_b on the left."""
    for index in range(4):
        ph = make_phantom(index, shape=SHAPE)
        assert _world_centroid(ph, 1)[0] > 0 > _world_centroid(ph, 2)[0], ph.axcodes
        assert _world_centroid(ph, 3)[1] < _world_centroid(ph, 1)[1]  # kidneys posterior


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="index"):
        make_phantom(-1)
    with pytest.raises(ValueError, match="shape"):
        make_phantom(0, shape=(4, 32, 32))
    with pytest.raises(ValueError, match="spacing"):
        make_phantom(0, shape=SHAPE, spacing=(1.0, 0.0, 1.0))


def test_write_dataset_layout_and_roundtrip(tmp_path):
    out = write_phantom_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, shape=SHAPE, seed=0)
    for split, names in (("train", ["phantom_000", "phantom_001"]), ("val", ["phantom_002"]),
                         ("test", ["phantom_003"])):
        images = sorted(p.name for p in (out / split / "images").iterdir())
        masks = sorted(p.name for p in (out / split / "masks").iterdir())
        assert images == masks == [f"{n}.nii.gz" for n in names]
    img = nib.load(out / "train" / "images" / "phantom_001.nii.gz")
    seg = nib.load(out / "train" / "masks" / "phantom_001.nii.gz")
    ph = make_phantom(1, shape=SHAPE, seed=0)
    np.testing.assert_allclose(img.affine, ph.affine, atol=1e-5)
    np.testing.assert_allclose(seg.affine, ph.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), ph.image)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), ph.label)
    assert "".join(nib.aff2axcodes(img.affine)) == ph.axcodes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_write_dataset_refuses_non_empty_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        write_phantom_dataset(tmp_path / "data", n_train=1, n_val=0, shape=SHAPE)
    assert (tmp_path / "data" / "keep.txt").read_text() == "x"
    with pytest.raises(ValueError, match="n_train"):
        write_phantom_dataset(tmp_path / "other", n_train=0, n_val=1, shape=SHAPE)


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine reordered to RAS axes, for comparing the same volume stored two ways."""
    ornt = nib.io_orientation(affine)
    return (nib.orientations.apply_orientation(array, ornt),
            affine @ nib.orientations.inv_ornt_aff(ornt, array.shape))


def test_dicom_series_matches_nifti(tmp_path):
    out = write_phantom_dataset(tmp_path / "data", n_train=4, n_val=0, shape=(24, 20, 8), dicom=True)
    for name in ("phantom_000", "phantom_001", "phantom_003"):  # RAS, LPS and PLS storage
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(str(out / "dicom" / "train" / name))
        assert len(files) == 8
        reader.SetFileNames(files)
        vol = reader.Execute()
        nii = nib.load(out / "train" / "images" / f"{name}.nii.gz")
        # ITK geometry (LPS) -> RAS affine
        spacing = np.array(vol.GetSpacing())
        affine = np.eye(4)
        affine[:3, :3] = np.array(vol.GetDirection()).reshape(3, 3) * spacing
        affine[:3, 3] = vol.GetOrigin()
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        values = sitk.GetArrayFromImage(vol).transpose(2, 1, 0)
        # the same voxels at the same world positions (a left-handed in-plane basis, as in PLS,
        # makes DICOM readers stack the slices the other way round, so compare in RAS order)
        dicom_ras, dicom_affine = _canonical(values, affine)
        nii_ras, nii_affine = _canonical(np.rint(np.asarray(nii.dataobj)), nii.affine)
        np.testing.assert_allclose(dicom_affine, nii_affine, atol=1e-3)
        np.testing.assert_array_equal(dicom_ras, nii_ras)


def test_cli_writes_phantoms(tmp_path, capsys):
    rc = main(["phantoms", str(tmp_path / "p"), "--n-train", "1", "--n-val", "1", "--shape", "16", "16", "8",
               "--seed", "3"])
    assert rc == 0
    assert "wrote 2 phantoms" in capsys.readouterr().out
    label = np.asarray(nib.load(tmp_path / "p" / "val" / "masks" / "phantom_001.nii.gz").dataobj)
    np.testing.assert_array_equal(label, make_phantom(1, shape=(16, 16, 8), seed=3).label)
    # a second run into the same folder is refused with a one-line error
    assert main(["phantoms", str(tmp_path / "p"), "--n-train", "1", "--n-val", "0"]) == 2
    assert "not empty" in capsys.readouterr().err
