"""The DICOM mutation corpus (issue 30): real series as anonymisers leave them either read on the right grid and
give a valid DICOM SEG, or are refused with one line that names the attribute. Also: an enhanced MR without a
frame of reference or dimension index reads on its classic twin's grid, and ``medt3d infer --output-format
dicom-seg`` survives blank SOP class and instance UIDs. The outcome table is docs/dicom_robustness.md.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_mutants import (
    ENHANCED,
    MUTATIONS,
    RT_MUTATIONS,
    SOURCES,
    copy_source,
    dciodvfy_errors,
    expected,
    mutate,
    outcome,
    rt_mutate,
    rt_outcome,
)
from dicom_utils import rotation, write_dicom_series

#: the sarcoma series run the UID, geometry and enhanced mutants; the small series run them all
_SARCOMA = [m for m in MUTATIONS if "UID" in m or m.split(":")[-1] in ("PixelSpacing", "ImagePositionPatient",
                                                                        "RescaleSlope", "anonymised") or m in ENHANCED]
CASES = [(s, m) for s in SOURCES for m in (MUTATIONS if s in ("ct_3slice", "mr_4slice") else _SARCOMA)]


@pytest.fixture(scope="module")
def sources(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {name: copy_source(shared_data, name, root / name) for name in SOURCES}


def _check_dciodvfy(seg: Path) -> None:
    errors = dciodvfy_errors(seg)
    if errors is None:
        if os.environ.get("MEDT3D_REQUIRE_DCIODVFY"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is required here but not installed")
        return  # the SEG was written and read back; dciodvfy's verdict is checked where it is installed
    assert not errors, errors


@pytest.mark.parametrize(("source", "mutation"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_each_mutant_reads_right_and_writes_a_valid_seg_or_is_refused_naming_the_attribute(
        sources: dict[str, Path], tmp_path: Path, source: str, mutation: str):
    mutant = mutate(sources[source], tmp_path / "series", mutation)
    result = outcome(mutant, sources[source], tmp_path)
    assert result.status == expected(mutation, sources[source]), result.detail
    attribute = mutation.partition(":")[2]
    if result.status == "refused":
        assert "\n" not in result.detail and "Traceback" not in result.detail
        assert attribute in result.detail and str(mutant) in result.detail, result.detail
        return
    seg = pydicom.dcmread(result.seg)
    assert seg.Modality == "SEG" and seg.SOPClassUID and seg.FrameOfReferenceUID and seg.StudyInstanceUID
    if mutation.startswith("remove:Rescale"):  # read as 1 and 0 with a warning: the grid is right, the values
        return                                 # are what is stored
    # enhanced: highdicom rescales in float32, ITK in float64; classic: the very same voxels
    assert result.voxel_error <= (1e-6 if mutation in ENHANCED else 0.0), result.voxel_error
    _check_dciodvfy(result.seg)


def test_anonymised_identifiers_are_filled_consistently_and_patient_fields_stay_empty(sources, tmp_path: Path):
    """The blank SOP class, instance, study and series UIDs of issue 30: filled once per series, listed in one note."""
    mutant = mutate(sources["ct_3slice"], tmp_path / "series", "blank:anonymised")
    result = outcome(mutant, sources["ct_3slice"], tmp_path)
    assert result.status == "reads" and result.detail.count("filled in memory") == 1
    for name in ("SOPClassUID from the file meta", "SOPInstanceUID", "StudyInstanceUID new", "SeriesInstanceUID new"):
        assert name in result.detail
    seg = pydicom.dcmread(result.seg)
    assert seg.PatientID == "" and str(seg.PatientName) == "" and seg.StudyID == ""
    assert seg.StudyInstanceUID in result.detail
    referenced = [r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert len(set(referenced)) == 3 and all(referenced)


def test_synthetic_enhanced_mr_without_frame_of_reference_reads_on_its_classic_twins_grid(tmp_path: Path):
    """No FrameOfReferenceUID, no DimensionIndexSequence, pixel measures per frame: highdicom gives no volume
    geometry; the frames' planes give the exact grid of the classic series."""
    import highdicom as hd

    from medt3d.data.readers import load_volume, read_header

    volume = np.random.default_rng(3).integers(-500, 1500, size=(12, 10, 7)).astype(np.int16)
    files = write_dicom_series(tmp_path / "classic", volume, (0.9, 1.2, 2.5), rotation(15.0, -10.0, 30.0),
                               (4.0, -7.0, 11.0), modality="MR", shuffle=True)
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage([pydicom.dcmread(f) for f in files],
                                                        series_instance_uid=hd.UID(), series_number=2,
                                                        sop_instance_uid=hd.UID(), instance_number=1)
    del enhanced.FrameOfReferenceUID, enhanced.DimensionIndexSequence
    measures = enhanced.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    del enhanced.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    for item in enhanced.PerFrameFunctionalGroupsSequence:
        item.PixelMeasuresSequence = copy.deepcopy(measures)
        if "DimensionIndexValues" in item.FrameContentSequence[0]:
            del item.FrameContentSequence[0].DimensionIndexValues
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "volume.dcm", enforce_file_format=True)
    assert hd.imread(str(tmp_path / "enhanced" / "volume.dcm")).get_volume_geometry() is None
    classic, multiframe = load_volume(tmp_path / "classic"), load_volume(tmp_path / "enhanced")
    np.testing.assert_array_equal(multiframe.numpy(), classic.numpy())
    np.testing.assert_allclose(np.asarray(multiframe.affine), np.asarray(classic.affine), atol=1e-6)
    assert read_header(tmp_path / "enhanced").multiframe


def test_enhanced_frames_that_repeat_a_position_are_refused_with_the_reason(tmp_path: Path):
    import highdicom as hd

    from medt3d.data.readers import load_volume

    files = write_dicom_series(tmp_path / "classic", np.zeros((8, 8, 4), np.int16), (1.0, 1.0, 2.0), np.eye(3),
                               (0, 0, 0), modality="MR")
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage([pydicom.dcmread(f) for f in files],
                                                        series_instance_uid=hd.UID(), series_number=2,
                                                        sop_instance_uid=hd.UID(), instance_number=1)
    del enhanced.FrameOfReferenceUID
    enhanced.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0].ImagePositionPatient = \
        enhanced.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "volume.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match=r"frames of volume.dcm do not form one regular 3-D volume: .*share one "
                                         r"position.*volume.dcm frame 2 and volume.dcm frame 3"):
        load_volume(tmp_path / "enhanced")


def test_infer_cli_writes_a_valid_seg_for_a_series_with_blank_sop_class_and_instance_uids(sources, tmp_path: Path):
    import torch
    from support import threshold_config

    from medt3d.cli import main
    from medt3d.models.checkpoint import save_checkpoint
    from medt3d.networks import build_network

    series = tmp_path / "series"
    mutate(sources["ct_3slice"], series, "blank:SOPClassUID")
    for f in series.iterdir():
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = "", "", ""
        ds.save_as(f)
    cfg = threshold_config("network.preset=tiny")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "model.pt", network=build_network(cfg), cfg=cfg, epoch=1, iteration=1)
    out = tmp_path / "out"
    rc = main(["infer", str(series), "--model", str(ckpt), "--output", str(out), "--device", "cpu", "--no-progress",
               "--roi-size", "64", "64", "16", "--output-format", "dicom-seg"])
    assert rc == 0, json.loads((out / "summary.json").read_text())["failed"]
    sidecar = json.loads((out / "series_seg.json").read_text())
    (filled,) = [n for n in sidecar["notes"] if "filled in memory" in n]
    assert "SOPClassUID from the file meta" in filled and "SOPInstanceUID" in filled
    seg = pydicom.dcmread(out / "series_seg.dcm")
    assert seg.Modality == "SEG" and seg.StudyInstanceUID in filled
    _check_dciodvfy(out / "series_seg.dcm")


def test_a_requested_output_that_fails_fails_the_case_and_keeps_its_nifti(tmp_path: Path, monkeypatch):
    """A statistics or .seg.nrrd failure: the case is failed in summary.json (exit 1), its NIfTI label is kept."""
    from support import ThresholdNet, blob_volume, save, threshold_config

    import medt3d.inference.batch as batch
    from medt3d.inference.batch import InferOptions, run_inference

    image, affine = blob_volume((20, 18, 10), (1.0, 1.2, 2.0), "RAS")
    scan = save(tmp_path / "ct_a.nii.gz", image, affine)

    def broken(*args, **kwargs):
        raise ValueError("statistics exploded")

    monkeypatch.setattr(batch, "structure_statistics", broken)
    out = tmp_path / "out"
    summary = run_inference([str(scan)], out, network=(ThresholdNet(), threshold_config()),
                            options=InferOptions(progress=False, statistics=True, output_formats=("seg-nrrd",)))
    assert summary["exit_code"] == 1 and summary["done"] == 0 and summary["n_failed"] == 1
    (failure,) = summary["failed"]
    assert failure["case"] == "ct_a" and "statistics: statistics exploded" in failure["error"]
    assert [f["output"] for f in summary["failed_outputs"]] == ["statistics"]
    assert (out / "ct_a_seg.nii.gz").is_file() and (out / "ct_a_seg.seg.nrrd").is_file()
    assert json.loads((out / "ct_a_seg.json").read_text())["failed_outputs"] == {"statistics": "statistics exploded"}
    again = run_inference([str(scan)], out, network=(ThresholdNet(), threshold_config()),
                          options=InferOptions(progress=False, skip_existing=True))
    assert again["done"] == 1 and again["skipped"] == 0  # not taken as finished by --skip-existing


@pytest.mark.parametrize("mutation", list(RT_MUTATIONS))
def test_each_rtstruct_mutant_reads_as_the_mask_or_is_refused_with_a_reason(shared_data: Path, tmp_path: Path,
                                                                           mutation: str):
    """Anonymised RTSTRUCTs vary: blank identifiers and colours, no contour image references, one of the two
    frame-of-reference references missing still read right; no frame of reference, another frame or another
    series, and an ROI without a name are refused in one line naming the file."""
    path = rt_mutate(shared_data, tmp_path, mutation)
    result = rt_outcome(path, shared_data)
    assert result.status == RT_MUTATIONS[mutation], result.detail
    if result.status == "reads":
        assert result.detail == "Dice 1.0000"
    else:
        assert "\n" not in result.detail and str(path) in result.detail, result.detail
        reason = {"missing:frame-of-reference": "references no frame of reference",
                  "other:frame-of-reference": "drawn on another scan",
                  "other:series": "rtstruct_match: frame_of_reference", "blank:ROIName": "match no class"}
        assert reason[mutation] in result.detail, result.detail


def test_an_rtstruct_for_an_anonymised_series_passes_dciodvfy_and_reads_back(sources, tmp_path: Path):
    from medt3d.data.readers import load_volume
    from medt3d.data.readers.rtstruct import RoiMap
    from medt3d.inference.rtstruct import write_rtstruct

    mutant = mutate(sources["ct_3slice"], tmp_path / "series", "blank:anonymised")
    volume = load_volume(mutant)[0].numpy()
    label = (volume > np.percentile(volume, 75)).astype(np.uint8)
    out = tmp_path / "rtstruct.dcm"
    notes = write_rtstruct(label, mutant, out, [{"value": 0, "name": "background", "color": [0, 0, 0]},
                                                {"value": 1, "name": "blob", "color": [255, 0, 0]}])
    assert "SeriesInstanceUID new" in notes[0]
    _check_dciodvfy(out)
    # the series has no SeriesInstanceUID to reference (the RTSTRUCT names the one filled in memory): by its frame
    back = load_volume(out, rois=RoiMap(("background", "blob"), {}, "frame_of_reference"))[0].numpy()
    np.testing.assert_array_equal(back, label)
