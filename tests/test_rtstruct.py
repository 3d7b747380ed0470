"""DICOM RTSTRUCT in and out (issue 32, items 1-2) on the real sarcoma series of ../shared/data.

In: the contours of each shared ``rtstruct.dcm`` rasterised onto its series' grid agree with the expert mask
the data come with (``gtv.nii.gz``, made from the same contours): Dice per patient and modality, required
>= 0.95 (measured: 1.0000 for all six, docs/dicom_robustness.md). Refusals: another series, another or no
frame of reference, an ROI of no class, a class without an ROI. Out: ``--output-format rtstruct`` writes a
file that dciodvfy accepts and that reads back as the written label.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from support import ThresholdNet, threshold_config

from medt3d.data.readers import align_to, detect_kind, load_volume
from medt3d.data.readers.rtstruct import RoiMap
from medt3d.inference.batch import InferOptions, run_inference
from medt3d.inference.rtstruct import write_rtstruct

STS = "ct_pet_mr_sts"
CASES = [(p, m) for p in ("STS_001", "STS_002", "STS_003") for m in ("CT", "PET")]
#: the shared series are crops that kept the original series' references: same frame of reference
SARCOMA = RoiMap(("background", "tumour"), {"GTV_Mass_CT": "tumour", "GTV_Mass_PET": "tumour"}, "frame_of_reference")
TABLE = [
    {"value": 0, "name": "background", "color": [0, 0, 0], "category": None, "type": None},
    *({"value": v, "name": n, "color": c, "category": {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"},
       "type": {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"}}
      for v, n, c in ((1, "tumour", [255, 0, 0]), (2, "rim", [0, 128, 255]))),
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        if os.environ.get("MEDT3D_REQUIRE_DCIODVFY"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is required here but not installed")
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    report = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]


def _copy_case(shared_data: Path, patient: str, modality: str, dst: Path) -> Path:
    """A writable copy of a case's ``dicom/`` folder (series/ and rtstruct.dcm); returns the RTSTRUCT."""
    shutil.copytree(shared_data / STS / patient / modality / "dicom", dst)
    return dst / "rtstruct.dcm"


@pytest.mark.parametrize(("patient", "modality"), CASES, ids=[f"{p}-{m}" for p, m in CASES])
def test_contours_rasterise_onto_the_series_as_the_shared_mask(shared_data: Path, patient: str, modality: str):
    folder = shared_data / STS / patient / modality
    assert detect_kind(folder / "dicom" / "rtstruct.dcm") == "rtstruct"
    label = load_volume(folder / "dicom" / "rtstruct.dcm", rois=SARCOMA, dtype=np.uint8)
    image = load_volume(folder / "dicom" / "series")
    np.testing.assert_allclose(label.affine.numpy(), image.affine.numpy(), atol=1e-6)
    assert label.shape == image.shape
    mask = align_to(load_volume(folder / "gtv.nii.gz"), label.affine.numpy(), label.shape[-3:], what="gtv")
    score = dice(label[0].numpy() > 0, mask[0].numpy() > 0)
    print(f"{patient} {modality}: Dice {score:.4f}")
    assert score >= 0.95


def test_an_rtstruct_inside_its_series_folder_reads_and_the_series_still_reads(shared_data: Path, tmp_path: Path):
    source = shared_data / STS / "STS_002" / "PET" / "dicom"
    inside = tmp_path / "series"
    shutil.copytree(source / "series", inside)
    shutil.copyfile(source / "rtstruct.dcm", inside / "rtstruct.dcm")
    image = load_volume(inside)  # the RTSTRUCT is not a slice of the series
    label = load_volume(inside / "rtstruct.dcm", rois=SARCOMA)
    assert label.shape == image.shape and label.sum() > 0


def test_another_series_is_refused_unless_the_frame_of_reference_is_enough(shared_data: Path):
    path = shared_data / STS / "STS_001" / "PET" / "dicom" / "rtstruct.dcm"
    strict = RoiMap(SARCOMA.labels, SARCOMA.names, "series")
    with pytest.raises(ValueError, match=r"references series .* not the series in .*rtstruct_match: frame_of_ref"):
        load_volume(path, rois=strict)


def test_no_or_another_frame_of_reference_is_refused_with_a_reason(shared_data: Path, tmp_path: Path):
    path = _copy_case(shared_data, "STS_002", "PET", tmp_path / "none")
    ds = pydicom.dcmread(path)
    for item in ds.ReferencedFrameOfReferenceSequence:
        item.FrameOfReferenceUID = ""
    for roi in ds.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = ""
    ds.save_as(path)
    with pytest.raises(ValueError, match="references no frame of reference.*contours cannot be placed"):
        load_volume(path, rois=SARCOMA)

    path = _copy_case(shared_data, "STS_002", "PET", tmp_path / "other")
    ds = pydicom.dcmread(path)
    other = pydicom.uid.generate_uid()
    for item in ds.ReferencedFrameOfReferenceSequence:
        item.FrameOfReferenceUID = other
    for roi in ds.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = other
    ds.save_as(path)
    with pytest.raises(ValueError, match="no series of its frame of reference"):
        load_volume(path, rois=SARCOMA)


def test_unknown_and_missing_rois_are_named(shared_data: Path):
    path = shared_data / STS / "STS_003" / "CT" / "dicom" / "rtstruct.dcm"
    with pytest.raises(ValueError, match=r"ROI\(s\) 'GTV_Mass_CT' match no class.*data.roi_names"):
        load_volume(path, rois=RoiMap(("background", "tumour"), {}, "frame_of_reference"))
    with pytest.raises(ValueError, match=r"no ROI for class\(es\) 'node' \(ROIs there: 'GTV_Mass_CT'\)"):
        load_volume(path, rois=RoiMap(("background", "tumour", "node"), SARCOMA.names, "frame_of_reference"))
    # an ROI named as a class needs no entry; one mapped to background is left out
    ok = load_volume(path, rois=RoiMap(("background", "gtv_mass_ct"), {}, "frame_of_reference"))
    assert ok.sum() > 0


def test_written_rtstruct_passes_dciodvfy_and_reads_back_as_the_label(shared_data: Path, tmp_path: Path):
    """Two classes (the GTV and a rim around it, with holes in slices) on the 5 mm PET: Dice per structure."""
    from scipy.ndimage import binary_dilation

    series = shared_data / STS / "STS_002" / "PET" / "dicom" / "series"
    gtv = load_volume(shared_data / STS / "STS_002" / "PET" / "dicom" / "rtstruct.dcm", rois=SARCOMA)[0].numpy() > 0
    label = gtv.astype(np.uint8)
    label[binary_dilation(gtv, iterations=2) & ~gtv] = 2  # a ring: every slice's contour has a hole
    out = tmp_path / "out" / "pred_rtstruct.dcm"
    write_rtstruct(label, series, out, TABLE, model_name="medt3d test")
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # written atomically, nothing else left
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    referenced = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["tumour", "rim"]
    assert [list(map(int, c.ROIDisplayColor)) for c in ds.ROIContourSequence] == [[255, 0, 0], [0, 128, 255]]
    shutil.copytree(series, out.parent / "series")  # read back beside its series
    back = load_volume(out, rois=RoiMap(("background", "tumour", "rim")))[0].numpy()
    for value in (1, 2):
        assert dice(back == value, label == value) >= 0.95
    np.testing.assert_array_equal(back, label)  # centre-inside contours at half-pixel: exact


def test_infer_writes_an_rtstruct_for_a_dicom_series(shared_data: Path, tmp_path: Path):
    series = tmp_path / "ct" / "series"
    shutil.copytree(shared_data / "ct_dicom_3slice" / "series", series)
    out = tmp_path / "out"
    summary = run_inference([str(series)], out, network=(ThresholdNet(), threshold_config("patch.roi_size=[64,64,16]")),
                            options=InferOptions(progress=False, output_formats=("rtstruct",)))
    assert summary["exit_code"] == 0
    path = out / "series_rtstruct.dcm"
    assert dciodvfy_errors(path) == []
    import nibabel as nib

    written = np.asarray(nib.load(out / "series_seg.nii.gz").dataobj)
    shutil.copyfile(path, series.parent / "pred.dcm")
    back = load_volume(series.parent / "pred.dcm", rois=RoiMap(("background", "blob")))[0].numpy()
    assert written.any() and dice(back == 1, written == 1) >= 0.95


def test_infer_finds_the_series_beside_an_rtstruct_and_refuses_the_rtstruct_itself(shared_data: Path,
                                                                                   tmp_path: Path):
    from medt3d.data.readers import find_inputs

    rtstruct = _copy_case(shared_data, "STS_002", "PET", tmp_path / "pet")  # pet/ holds rtstruct.dcm and series/
    assert find_inputs(tmp_path) == [tmp_path / "pet" / "series"]
    assert find_inputs(tmp_path / "pet") == [tmp_path / "pet" / "series"]
    with pytest.raises(ValueError, match=r"rtstruct.dcm is an RTSTRUCT \(contours, a label, not a scan\); pass"):
        find_inputs(rtstruct)


def test_an_rtstruct_in_a_folder_of_two_series_goes_onto_the_one_it_references(shared_data: Path, tmp_path: Path):
    mr = shared_data / "mr_dicom_series" / "series"
    label = np.zeros((256, 256, 4), np.uint8)
    label[100:140, 90:150, 1:3] = 1
    both = tmp_path / "both"
    shutil.copytree(shared_data / "ct_dicom_3slice" / "series", both)
    for f in mr.iterdir():
        shutil.copyfile(f, both / f"mr_{f.name}")
    write_rtstruct(label, mr, both / "rtstruct.dcm", TABLE[:2])
    back = load_volume(both / "rtstruct.dcm", rois=RoiMap(("background", "tumour")))
    assert back.shape[-3:] == (256, 256, 4)
    np.testing.assert_array_equal(back[0].numpy(), label)
