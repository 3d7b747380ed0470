"""Reading volumes with the right geometry: kinds, NIfTI/NRRD/DICOM loading, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_utils import ras_affine, rotation, write_dicom_series
from monai.transforms import Orientation
from reader_utils import ORIGIN, SHAPE, SPACING, oblique_ras, volume, write_nifti_file, write_nrrd_file

from medt3d.data.readers import (
    LoadVolumed,
    detect_kind,
    load_volume,
    read_header,
)

# ---------------------------------------------------------------------------------------------- kinds


def test_detect_kind(tmp_path: Path) -> None:
    vol = volume()
    assert detect_kind(write_nifti_file(tmp_path / "a.nii.gz", vol)) == "nifti"
    assert detect_kind(write_nifti_file(tmp_path / "b.nii", vol)) == "nifti"
    assert detect_kind(write_nrrd_file(tmp_path / "c.nrrd", vol, np.eye(3))) == "nrrd"
    files = write_dicom_series(tmp_path / "d", vol, SPACING, np.eye(3), ORIGIN)
    assert detect_kind(tmp_path / "d") == "dicom"
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        detect_kind(tmp_path / "nope.nii.gz")
    (tmp_path / "e.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=r"unsupported input .*e\.png"):
        detect_kind(tmp_path / "e.png")
    with pytest.raises(ValueError, match="single DICOM file"):
        detect_kind(files[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.* without DICOM files"):
        detect_kind(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- good input


def test_nifti_keeps_voxels_and_oblique_affine(tmp_path: Path) -> None:
    vol = volume()
    path = write_nifti_file(tmp_path / "img.nii.gz", vol)
    img = load_volume(path)
    assert tuple(img.shape) == (1, *SHAPE)
    np.testing.assert_array_equal(img[0].numpy(), vol)
    np.testing.assert_allclose(np.asarray(img.affine), oblique_ras(), atol=1e-5)
    assert img.meta["filename_or_obj"] == str(path)
    np.testing.assert_allclose(read_header(path).spacing, SPACING, atol=1e-5)


def test_nrrd_affine_is_converted_from_lps_to_ras(tmp_path: Path) -> None:
    vol = volume()
    direction = rotation(0, 25, -15)
    path = write_nrrd_file(tmp_path / "img.nrrd", vol, direction)
    img = load_volume(path)
    assert detect_kind(path) == "nrrd"
    np.testing.assert_array_equal(img[0].numpy(), vol)
    expected = ras_affine(SPACING, direction, ORIGIN)
    np.testing.assert_allclose(np.asarray(img.affine), expected, atol=1e-5)
    np.testing.assert_allclose(read_header(path).affine, expected, atol=1e-5)


@pytest.mark.parametrize("shuffle", [False, True])
def test_dicom_series_with_oblique_orientation(tmp_path: Path, shuffle: bool) -> None:
    vol = volume()
    direction = rotation(20, -10, 35)
    write_dicom_series(tmp_path / "s", vol, SPACING, direction, ORIGIN, shuffle=shuffle, seed=3)
    img = load_volume(tmp_path / "s")
    assert tuple(img.shape) == (1, *SHAPE)
    np.testing.assert_array_equal(img[0].numpy(), vol)
    expected = ras_affine(SPACING, direction, ORIGIN)
    np.testing.assert_allclose(np.asarray(img.affine), expected, atol=1e-3)
    np.testing.assert_allclose(read_header(tmp_path / "s").affine, expected, atol=1e-3)
    assert img.meta["filename_or_obj"] == str(tmp_path / "s")


def test_dicom_slices_against_the_normal_are_reversed_with_matching_geometry(tmp_path: Path) -> None:
    """Slices stacked opposite to row x column: the volume comes back flipped along z, same world."""
    vol = volume()
    direction = rotation(10, 0, 0) @ np.diag([1.0, 1.0, -1.0])  # left-handed: z against the normal
    write_dicom_series(tmp_path / "s", vol, SPACING, direction, ORIGIN, shuffle=True)
    img = load_volume(tmp_path / "s")
    np.testing.assert_array_equal(img[0].numpy(), vol[:, :, ::-1])
    written = ras_affine(SPACING, direction, ORIGIN)
    # voxel k of the result is written slice nz-1-k: same world position
    for k in (0, 3, SHAPE[2] - 1):
        np.testing.assert_allclose(np.asarray(img.affine) @ [2, 3, k, 1], written @ [2, 3, SHAPE[2] - 1 - k, 1],
                                   atol=1e-3)


def test_dicom_rescale_slope_and_intercept(tmp_path: Path) -> None:
    vol = (volume() // 2 * 2).astype(np.int16)  # even, so (v + 1024) / 2 is exact
    write_dicom_series(tmp_path / "s", vol, SPACING, np.eye(3), ORIGIN, modality="CT", rescale=(2.0, -1024.0))
    np.testing.assert_array_equal(load_volume(tmp_path / "s")[0].numpy(), vol)


def test_dicom_pick_one_of_two_series(tmp_path: Path) -> None:
    a, b = volume(seed=1), volume(seed=2)
    write_dicom_series(tmp_path / "s", a, SPACING, np.eye(3), ORIGIN, series_uid="1.2.3.1", prefix="a")
    write_dicom_series(tmp_path / "s", b, SPACING, rotation(0, 0, 90), ORIGIN, series_uid="1.2.3.2", prefix="b")
    with pytest.raises(ValueError) as err:
        load_volume(tmp_path / "s")
    message = str(err.value)
    assert str(tmp_path / "s") in message and "2 DICOM series" in message
    assert "1.2.3.1" in message and "1.2.3.2" in message and "series_uid" in message
    np.testing.assert_array_equal(load_volume(tmp_path / "s", series_uid="1.2.3.2")[0].numpy(), b)
    out = LoadVolumed("image")({"image": str(tmp_path / "s"), "series_uid": "1.2.3.1"})
    np.testing.assert_array_equal(out["image"][0].numpy(), a)
    with pytest.raises(ValueError, match=r"no series with SeriesInstanceUID 9\.9.*1\.2\.3\.1"):
        load_volume(tmp_path / "s", series_uid="9.9")


def test_singleton_4d_is_squeezed(tmp_path: Path) -> None:
    vol = volume()
    img = load_volume(write_nifti_file(tmp_path / "t.nii.gz", vol[..., None]))
    assert tuple(img.shape) == (1, *SHAPE)
    np.testing.assert_array_equal(img[0].numpy(), vol)


# ---------------------------------------------------------------------------------------------- bad input


def test_dicom_missing_slice_names_the_gap(tmp_path: Path) -> None:
    files = write_dicom_series(tmp_path / "s", volume(), SPACING, rotation(5, 5, 5), ORIGIN, skip_slices=[4])
    with pytest.raises(ValueError) as err:
        load_volume(tmp_path / "s")
    message = str(err.value)
    assert "missing slice" in message and str(tmp_path / "s") in message
    assert "between slice 3" in message and "slice 4" in message
    assert files[3].name in message and files[4].name in message  # files around the gap (slices 3 and 5)
    assert "5.000 mm, expected 2.500 mm" in message and "about 1 slice(s) missing" in message


def test_dicom_uneven_spacing_is_refused(tmp_path: Path) -> None:
    files = write_dicom_series(tmp_path / "s", volume(), SPACING, np.eye(3), ORIGIN)
    import pydicom

    ds = pydicom.dcmread(files[-1])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 1.0
    ds.save_as(files[-1], enforce_file_format=True)
    with pytest.raises(ValueError, match="uneven slice spacing"):
        load_volume(tmp_path / "s")


def test_dicom_positions_rounded_in_headers_still_load(tmp_path: Path) -> None:
    """Positions rounded to 0.1 mm (steps 1.2/1.3 for 1.25 mm) are jitter, not gaps."""
    import pydicom

    vol = volume()
    files = write_dicom_series(tmp_path / "s", vol, (0.7, 0.8, 1.25), np.eye(3), (0.0, 0.0, 0.03))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [f"{float(v):.1f}" for v in ds.ImagePositionPatient]
        ds.save_as(path, enforce_file_format=True)
    img = load_volume(tmp_path / "s")
    np.testing.assert_array_equal(img[0].numpy(), vol)
    np.testing.assert_allclose(np.asarray(img.affine)[2, 2], 7.5 / 6, atol=1e-6)  # first to last / (n - 1)


def test_dicom_mixed_rows_columns(tmp_path: Path, caplog) -> None:
    from dicom_utils import set_slice_size

    files = write_dicom_series(tmp_path / "s", volume(), SPACING, np.eye(3), ORIGIN)
    set_slice_size(files[2], 8, 9)  # a minority of another size is left out, which leaves a gap here
    with caplog.at_level("WARNING", logger="medt3d.data.readers"), pytest.raises(ValueError) as err:
        load_volume(tmp_path / "s")
    assert "left out 1 slice(s) whose size or plane differs from the other 6 (10x12" in caplog.text
    assert files[2].name in caplog.text
    assert "missing slice(s)" in str(err.value) and str(tmp_path / "s") in str(err.value)
    set_slice_size(files[3], 8, 9)
    for path in files[4:6]:
        set_slice_size(path, 9, 8)  # three sizes, none held by more than half: refused as before
    with pytest.raises(ValueError) as err:
        load_volume(tmp_path / "s")
    message = str(err.value)
    assert "differ in size (rows x columns)" in message and str(tmp_path / "s") in message
    assert "size 10x12: 3 file(s)" in message and f"size 8x9: 2 file(s), e.g. {files[2].name}" in message


def test_dicom_mixed_orientation_is_reported_in_plain_numbers(tmp_path: Path) -> None:
    import pydicom

    files = write_dicom_series(tmp_path / "s", volume(), SPACING, np.eye(3), ORIGIN)
    ds = pydicom.dcmread(files[3])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9998, 0.0159]  # one slice tilted by 0.9 degrees
    ds.save_as(files[3])
    with pytest.raises(ValueError) as err:
        load_volume(tmp_path / "s")
    message = str(err.value)
    assert "slices differ in ImageOrientationPatient" in message
    assert "orientation (1, 0, 0, 0, 0.9998, 0.0159): 1 file(s)" in message
    assert "np.float64" not in message and "array(" not in message


def test_dicom_duplicate_positions(tmp_path: Path) -> None:
    vol = volume()
    write_dicom_series(tmp_path / "s", vol, SPACING, np.eye(3), ORIGIN, series_uid="1.2.5", prefix="e1_")
    write_dicom_series(tmp_path / "s", vol, SPACING, np.eye(3), ORIGIN, series_uid="1.2.5", prefix="e2_")
    with pytest.raises(ValueError, match="share one position.*echoes"):
        load_volume(tmp_path / "s")


def _blob(world_lps: np.ndarray) -> np.ndarray:
    """A smooth 1000 HU blob in world millimetres (LPS), for resampling checks."""
    centre = np.array([8.0, 10.0, 14.0])
    return 1000.0 * np.exp(-np.sum(((world_lps - centre) / np.array([6.0, 5.0, 7.0])) ** 2, axis=-1))


def _sample(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = (affine[:3, :3] @ grid.T).T + affine[:3, 3]
    return _blob(world).reshape(shape)


@pytest.mark.parametrize("tilt_deg", [15.0, -20.0])
def test_gantry_tilted_series_is_moved_onto_a_regular_grid_with_a_warning(tmp_path: Path, caplog, tilt_deg) -> None:
    from dicom_utils import lps_affine

    shape, spacing = (24, 26, 16), (1.0, 1.0, 2.0)
    t = np.radians(tilt_deg)
    direction = np.eye(3)
    direction[:, 2] = [0.0, np.tan(t), 1.0]  # the table steps 2 mm along z; each slice is shifted in y (a tilt)
    sheared = lps_affine(spacing, direction, (0.0, 0.0, 0.0))
    write_dicom_series(tmp_path / "s", np.rint(_sample(sheared, shape)).astype(np.int16), spacing, direction,
                       (0.0, 0.0, 0.0), modality="CT")
    with caplog.at_level("WARNING", logger="medt3d.data.readers"):
        img = load_volume(tmp_path / "s")
    assert f"gantry tilt of {abs(tilt_deg):.2f} degrees" in caplog.text and "regular grid" in caplog.text
    regular = lps_affine(spacing, np.eye(3), (0.0, 0.0, 0.0))  # axial planes, 2 mm apart along their normal
    np.testing.assert_allclose(np.asarray(img.affine), np.diag([-1.0, -1.0, 1.0, 1.0]) @ regular, atol=1e-4)
    expected = _sample(regular, shape)
    # the blob, where the corrected voxel comes from inside the scanned slice (the rest is filled, not compared)
    j, k = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    source_row = j - k * np.tan(t) * spacing[2] / spacing[1]
    inside = (expected > 50) & ((source_row >= 0) & (source_row <= shape[1] - 1))[None]
    error = np.abs(img[0].numpy() - expected)[inside]
    assert error.max() < 40.0  # linear interpolation of a smooth blob (1000 HU peak)
    assert np.abs(_sample(sheared, shape) - expected)[inside].max() > 300  # what stacking as given would give


def test_uneven_shear_is_still_refused(tmp_path: Path) -> None:
    import pydicom

    files = write_dicom_series(tmp_path / "s", volume(), SPACING, np.eye(3), ORIGIN)
    ds = pydicom.dcmread(files[3])
    position = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [position[0], position[1] + 3.0, position[2]]  # one slice off, the rest stacked
    ds.save_as(files[3])
    with pytest.raises(ValueError, match="not as a gantry tilt either"):
        load_volume(tmp_path / "s")


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_multiframe_object_reads_as_its_classic_series(tmp_path: Path, modality: str) -> None:
    import highdicom as hd
    import pydicom
    from dicom_utils import rotation

    files = write_dicom_series(tmp_path / "classic", volume(), SPACING, rotation(10.0, -5.0, 25.0), ORIGIN,
                               modality=modality, shuffle=True)
    convert = hd.legacy.LegacyConvertedEnhancedCTImage if modality == "CT" else hd.legacy.LegacyConvertedEnhancedMRImage
    enhanced = convert([pydicom.dcmread(f) for f in files], series_instance_uid=hd.UID(), series_number=2,
                       sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "volume.dcm")
    assert int(pydicom.dcmread(tmp_path / "enhanced" / "volume.dcm").NumberOfFrames) == len(files)
    classic, multiframe = load_volume(tmp_path / "classic"), load_volume(tmp_path / "enhanced")
    np.testing.assert_array_equal(multiframe.numpy(), classic.numpy())
    np.testing.assert_allclose(np.asarray(multiframe.affine), np.asarray(classic.affine), atol=1e-4)
    assert read_header(tmp_path / "enhanced").multiframe


def test_enhanced_object_with_frames_that_are_no_volume_is_refused(tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    files = write_dicom_series(tmp_path / "classic", volume(), SPACING, np.eye(3), ORIGIN, modality="CT",
                               skip_slices=[2])  # a missing frame position
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage([pydicom.dcmread(f) for f in files],
                                                        series_instance_uid=hd.UID(), series_number=2,
                                                        sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "volume.dcm")
    with pytest.raises(ValueError, match=r"volume.dcm do not form one regular 3-D volume"):
        load_volume(tmp_path / "enhanced")


def test_dicom_truncated_file(tmp_path: Path) -> None:
    files = write_dicom_series(tmp_path / "s", volume(), SPACING, np.eye(3), ORIGIN)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError) as err:
        load_volume(tmp_path / "s")
    assert str(tmp_path / "s") in str(err.value)
    assert f"corrupt or truncated pixel data: {files[1].name}" in str(err.value)


def test_single_slice_dicom_is_2d(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "s", volume((12, 10, 1)), SPACING, np.eye(3), ORIGIN)
    with pytest.raises(ValueError, match=r"2-D image \(shape 12x10x1\)"):
        load_volume(tmp_path / "s")


def test_corrupt_and_truncated_nifti(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a nifti file at all" * 20)
    with pytest.raises(ValueError, match=r"garbage\.nii\.gz"):
        load_volume(garbage)
    full = write_nifti_file(tmp_path / "full.nii.gz", volume((24, 24, 24)))
    raw = full.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cannot read .*truncated\.nii\.gz.*corrupt or truncated"):
        load_volume(truncated)
    plain = tmp_path / "short.nii"
    plain.write_bytes(gzip.decompress(raw)[:-500])
    with pytest.raises(ValueError, match=r"short\.nii"):
        load_volume(plain)
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.nii\.gz"):
        load_volume(empty)


def test_corrupt_nrrd(tmp_path: Path) -> None:
    path = write_nrrd_file(tmp_path / "img.nrrd", volume(), np.eye(3))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 200])
    with pytest.raises(ValueError, match=r"img\.nrrd"):
        load_volume(path)
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nnonsense\n")
    with pytest.raises(ValueError, match=r"bad\.nrrd"):
        load_volume(bad)


def test_2d_and_4d_images_are_refused(tmp_path: Path) -> None:
    flat = write_nifti_file(tmp_path / "flat.nii.gz", volume()[:, :, 0])
    with pytest.raises(ValueError, match=r"flat\.nii\.gz is a 2-D image \(shape 12x10\)"):
        load_volume(flat)
    four = write_nifti_file(tmp_path / "four.nii.gz", np.stack([volume()] * 3, axis=-1))
    with pytest.raises(ValueError, match=r"four\.nii\.gz is a 4-D image \(shape 12x10x7x3\)"):
        load_volume(four)
    flat_nrrd = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(volume()[:, :, 0]), str(flat_nrrd))
    with pytest.raises(ValueError, match=r"flat\.nrrd is a 2-D image"):
        load_volume(flat_nrrd)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gone.nii.gz"):
        load_volume(tmp_path / "gone.nii.gz")
    with pytest.raises(FileNotFoundError, match="gone.nii.gz"):
        LoadVolumed("image")({"image": str(tmp_path / "gone.nii.gz")})


# ---------------------------------------------------------------------------------------------- real scans


@pytest.mark.shared_data
def test_shared_mr_series_matches_reference(shared_data: Path) -> None:
    """The real Siemens series equals its reference NIfTI voxel for voxel, affine to 1e-3 mm."""
    folder = shared_data / "mr_dicom_series"
    assert detect_kind(folder / "series") == "dicom"
    series = load_volume(folder / "series")
    reference = load_volume(folder / "reference.nii.gz")
    to_ras = Orientation(axcodes="RAS", labels=None)
    a, b = to_ras(series), to_ras(reference)
    assert a.shape == b.shape == (1, 4, 256, 256)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine), atol=1e-3)
    np.testing.assert_allclose(read_header(folder / "series").affine, np.asarray(series.affine), atol=1e-3)
    assert float(a.float().std()) > 0  # not a blank image


@pytest.mark.shared_data
def test_shared_ct_spleen_header(shared_data: Path) -> None:
    info = read_header(shared_data / "ct_spleen" / "spleen_2_ct.nii.gz")
    assert info.shape == (164, 166, 26)
    np.testing.assert_allclose(info.spacing, (0.795, 0.795, 5.0), atol=1e-3)
    label = load_volume(shared_data / "ct_spleen" / "spleen_2_label.nii.gz")
    assert int(label.sum()) == 96672


def test_scout_slices_in_a_series_are_left_out_with_a_warning_naming_them(tmp_path, caplog):
    from dicom_utils import rotation, write_dicom_series

    from medt3d.data.readers import load_volume

    rng = np.random.default_rng(0)
    volume = rng.integers(-500, 500, size=(16, 14, 8)).astype(np.int16)
    clean, mixed = tmp_path / "clean", tmp_path / "mixed"
    write_dicom_series(clean, volume, (1.0, 1.0, 2.0), np.eye(3), (0, 0, 0), modality="CT", series_uid="1.2.3")
    write_dicom_series(mixed, volume, (1.0, 1.0, 2.0), np.eye(3), (0, 0, 0), modality="CT", series_uid="1.2.3")
    # two localizers of the same series: another size and orientation (sagittal)
    write_dicom_series(mixed, volume[:12, :10, :2], (1.0, 1.0, 5.0), rotation(0.0, 90.0, 0.0), (-40, 0, 0),
                       modality="CT", series_uid="1.2.3", prefix="scout_")
    with caplog.at_level("WARNING", logger="medt3d.data.readers"):
        loaded = load_volume(mixed)
    reference = load_volume(clean)
    np.testing.assert_array_equal(loaded.numpy(), reference.numpy())
    np.testing.assert_allclose(loaded.affine, reference.affine, atol=1e-4)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "left out 2 slice(s)" in warning and "scout_" in warning and "the other 8 (14x16" in warning
    assert "np.float64" not in warning


def test_a_half_and_half_series_is_still_refused_and_two_slices_warn(tmp_path, caplog):
    from dicom_utils import rotation, write_dicom_series

    from medt3d.data.readers import check_dicom_series

    volume = np.zeros((16, 14, 2), np.int16)
    write_dicom_series(tmp_path / "half", volume, (1.0, 1.0, 2.0), np.eye(3), (0, 0, 0), series_uid="1.2.4")
    write_dicom_series(tmp_path / "half", volume[:12], (1.0, 1.0, 2.0), rotation(0.0, 90.0, 0.0), (0, 0, 0),
                       series_uid="1.2.4", prefix="other_")
    with pytest.raises(ValueError, match=r"slices differ in size") as err:
        check_dicom_series(tmp_path / "half")
    assert "np.float64" not in str(err.value)
    write_dicom_series(tmp_path / "two", volume, (1.0, 1.0, 2.0), np.eye(3), (0, 0, 0))
    with caplog.at_level("WARNING", logger="medt3d.data.readers"):
        assert len(check_dicom_series(tmp_path / "two")) == 2
    assert "only 2 slices" in caplog.text
