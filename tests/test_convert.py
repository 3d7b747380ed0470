"""``medt3d convert`` (issue 32, item 3) on the shared DICOM: each conversion exact in geometry (affine to
1e-3 mm, voxels equal), outputs atomic and never over or inside an input, ``--series-uid`` for folders that
hold several series."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_rtstruct import dciodvfy_errors

from medt3d.cli import main
from medt3d.data.readers import GEOMETRY_ATOL_MM, align_to, load_volume, read_header

STS_PET = ("ct_pet_mr_sts", "STS_002", "PET")
SARCOMA = ["--set", "data.labels=[background,tumour]", "--set", "data.roi_names={GTV_Mass_PET: tumour}",
           "--set", "data.rtstruct_match=frame_of_reference"]
TWO = ["--set", "data.labels=[background,tumour,rim]"]


def _convert(*args: str | Path) -> int:
    return main(["convert", *map(str, args)])


def _same_grid(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine), atol=GEOMETRY_ATOL_MM)
    assert tuple(a.shape) == tuple(b.shape)


def test_dicom_series_to_nifti_matches_the_reference_nifti(shared_data: Path, tmp_path: Path):
    """The MR series whose direction cosines are not axis-aligned: its converted NIfTI is the reference's voxels."""
    out = tmp_path / "mr.nii.gz"
    assert _convert(shared_data / "mr_dicom_series" / "series", out) == 0
    mine, reference = load_volume(out), load_volume(shared_data / "mr_dicom_series" / "reference.nii.gz")
    moved = align_to(mine, reference.affine.numpy(), reference.shape[-3:], what="converted MR")
    np.testing.assert_array_equal(moved.numpy(), reference.numpy())
    header = nib.load(out).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1


@pytest.mark.parametrize("series", ["ct_dicom_3slice/series", *(f"ct_pet_mr_sts/{p}/CT/dicom/series"
                                                                   for p in ("STS_001", "STS_002", "STS_003"))])
def test_ct_series_to_nifti_keeps_grid_and_values(shared_data: Path, tmp_path: Path, series: str):
    out = tmp_path / "ct.nii.gz"
    assert _convert(shared_data / series, out) == 0
    written, source = load_volume(out), load_volume(shared_data / series)
    _same_grid(written, source)
    np.testing.assert_array_equal(written.numpy(), source.numpy())
    if "STS" in series:  # and the grid of the NIfTI the data come with (LPS there)
        shipped = load_volume(shared_data / series.replace("dicom/series", "image.nii.gz"))
        align_to(shipped, written.affine.numpy(), written.shape[-3:], what="image.nii.gz")


def test_rtstruct_to_label_nifti_is_the_shared_mask(shared_data: Path, tmp_path: Path):
    folder = shared_data.joinpath(*STS_PET)
    out = tmp_path / "gtv.nii.gz"
    assert _convert(folder / "dicom" / "rtstruct.dcm", out, *SARCOMA) == 0
    label, series = load_volume(out), load_volume(folder / "dicom" / "series")
    _same_grid(label, series)
    shipped = align_to(load_volume(folder / "gtv.nii.gz"), label.affine.numpy(), label.shape[-3:], what="gtv")
    np.testing.assert_array_equal(label.numpy(), shipped.numpy())


def _two_class_label(shared_data: Path, tmp_path: Path) -> tuple[Path, np.ndarray, Path]:
    """The PET GTV and a rim around it as a label NIfTI stored in LPS (the series reads as RAS)."""
    from scipy.ndimage import binary_dilation

    folder = shared_data.joinpath(*STS_PET)
    series = folder / "dicom" / "series"
    info = read_header(series)
    gtv = align_to(load_volume(folder / "gtv.nii.gz"), info.affine, info.shape, what="gtv")[0].numpy() > 0
    label = gtv.astype(np.uint8)
    label[binary_dilation(gtv, iterations=1) & ~gtv] = 2
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # the same voxels, axes 0 and 1 reversed: an LPS-ordered file
    flip[:2, 3] = [info.shape[0] - 1, info.shape[1] - 1]
    path = tmp_path / "label_lps.nii.gz"
    nib.save(nib.Nifti1Image(label[::-1, ::-1].copy(), info.affine @ flip), path)
    return path, label, series


@pytest.mark.parametrize("to", ["rtstruct", "seg"])
def test_label_nifti_to_dicom_and_back_is_exact(shared_data: Path, tmp_path: Path, to: str):
    path, label, series = _two_class_label(shared_data, tmp_path)
    dicom = tmp_path / "out" / f"label_{to}.dcm"
    assert _convert(path, dicom, "--to", to, "--reference", series, *TWO) == 0
    assert dciodvfy_errors(dicom) == []
    back = tmp_path / "back.nii.gz"
    if to == "rtstruct":  # read beside its series
        shutil.copytree(series, dicom.parent / "series")
        assert _convert(dicom, back, *TWO) == 0
    else:
        assert _convert(dicom, back, "--reference", series) == 0
    result = load_volume(back)
    _same_grid(result, load_volume(series))
    np.testing.assert_array_equal(result[0].numpy(), label)


def test_outputs_never_over_or_inside_an_input(shared_data: Path, tmp_path: Path, capsys):
    series = tmp_path / "series"
    shutil.copytree(shared_data / "ct_dicom_3slice" / "series", series)
    before = sorted(p.name for p in series.iterdir())
    assert _convert(series, series / "ct.nii.gz") == 2
    assert "lies inside the input folder" in capsys.readouterr().err
    label = tmp_path / "label.nii.gz"
    assert _convert(series, label) == 0
    assert _convert(label, label, "--to", "rtstruct", "--reference", series) == 2
    assert "is an input of this conversion" in capsys.readouterr().err
    assert _convert(label, tmp_path / "x.dcm", "--reference", series) == 2
    assert "pass --to" in capsys.readouterr().err
    assert _convert(label, tmp_path / "x.dcm", "--to", "seg") == 2
    assert "pass its folder with --reference" in capsys.readouterr().err
    assert sorted(p.name for p in series.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label.nii.gz", "series"]  # no partial files


def test_a_label_on_another_grid_is_refused(shared_data: Path, tmp_path: Path, capsys):
    label = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)), label)
    assert _convert(label, tmp_path / "x.dcm", "--to", "rtstruct", "--reference",
                    shared_data / "ct_dicom_3slice" / "series") == 2
    assert "is not on the grid" in capsys.readouterr().err
    assert not (tmp_path / "x.dcm").exists()


def test_series_uid_picks_one_of_several_series(shared_data: Path, tmp_path: Path, capsys):
    both = tmp_path / "both"
    shutil.copytree(shared_data / "ct_dicom_3slice" / "series", both)
    for f in (shared_data / "mr_dicom_series" / "series").iterdir():
        shutil.copyfile(f, both / f"mr_{f.name}")
    assert _convert(both, tmp_path / "x.nii.gz") == 2
    assert "--series-uid" in capsys.readouterr().err
    uid = read_header(shared_data / "mr_dicom_series" / "series").series_uid
    assert _convert(both, tmp_path / "mr.nii.gz", "--series-uid", uid) == 0
    assert load_volume(tmp_path / "mr.nii.gz").shape[-3:] == (256, 256, 4)


def test_seg_segments_become_classes_by_name(shared_data: Path, tmp_path: Path, capsys):
    """A SEG's segments map to data.labels by name, as an RTSTRUCT's ROIs do: reordered classes follow the
    names, another source's segment names map through data.roi_names, and a segment that matches no class
    (while others do) is refused with the setting that fixes it."""
    import pydicom

    path, label, series = _two_class_label(shared_data, tmp_path)
    seg = tmp_path / "out" / "label.dcm"
    assert _convert(path, seg, "--to", "seg", "--reference", series, *TWO) == 0

    swapped = tmp_path / "swapped.nii.gz"
    assert _convert(seg, swapped, "--reference", series, "--set", "data.labels=[background,rim,tumour]") == 0
    expected = np.choose(label, [0, 2, 1])  # tumour (1) is now class 2, rim (2) class 1
    np.testing.assert_array_equal(load_volume(swapped)[0].numpy(), expected)

    ds = pydicom.dcmread(seg)  # as another system would name them
    for item, name in zip(ds.SegmentSequence, ["GTV", "Ring 3mm"]):
        item.SegmentLabel = name
    renamed = tmp_path / "other" / "renamed.dcm"
    renamed.parent.mkdir()
    ds.save_as(renamed)
    capsys.readouterr()
    assert _convert(renamed, tmp_path / "refused.nii.gz", "--reference", series,
                    "--set", "data.labels=[background,tumour,rim]", "--set", "data.roi_names={GTV: tumour}") == 2
    err = capsys.readouterr().err
    assert "renamed.dcm" in err and "'Ring 3mm'" in err and "data.roi_names" in err
    assert not (tmp_path / "refused.nii.gz").exists()
    kept = tmp_path / "tumour_only.nii.gz"
    assert _convert(renamed, kept, "--reference", series, *SARCOMA[:2],
                    "--set", "data.roi_names={GTV: tumour, Ring 3mm: background}") == 0
    np.testing.assert_array_equal(load_volume(kept)[0].numpy(), (label == 1).astype(np.uint8))
