"""``medt3d infer``: batch outputs, sidecars, DICOM SEG, bad inputs, skip-existing, no overwrite, torchrun.

Most tests run the batch runner with the deterministic :class:`ThresholdNet` (see test_inference.py),
so each case's right answer is ``scan > 500 HU``. The command-line tests use a real tiny checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_utils import rotation, write_dicom_series
from support import THRESHOLD_HU, ThresholdNet, blob_volume, save, threshold_config

from medt3d.data.readers import read_header
from medt3d.inference.batch import InferOptions, discover_cases, run_inference
from medt3d.label_table import label_table

QUIET = InferOptions(progress=False)


def _run(inputs, out: Path, *overrides: str, options: InferOptions = QUIET, net=None) -> dict:
    return run_inference([str(i) for i in inputs], out, network=(net or ThresholdNet(), threshold_config(*overrides)),
                         options=options)


@pytest.fixture()
def scans(tmp_path: Path) -> dict[str, Path]:
    """A NIfTI (LPS), an NRRD and an oblique DICOM series, each holding a 1000 HU blob."""
    import SimpleITK as sitk

    data = tmp_path / "scans"
    data.mkdir()
    image, affine = blob_volume((20, 18, 10), (1.0, 1.2, 2.0), "LPS")
    nifti = save(data / "ct_a.nii.gz", image, affine)
    nrrd_img, _ = blob_volume((16, 20, 12), (0.9, 0.9, 1.5), "RAS")
    itk = sitk.GetImageFromArray(np.transpose(nrrd_img, (2, 1, 0)))
    itk.SetSpacing((0.9, 0.9, 1.5))
    nrrd = data / "ct_b.nrrd"
    sitk.WriteImage(itk, str(nrrd))
    dcm_img, _ = blob_volume((18, 16, 8), (1.1, 1.0, 2.5), rotation(10.0, 0.0, 20.0))
    dicom = data / "ct_c"
    write_dicom_series(dicom, dcm_img.astype(np.int16), (1.1, 1.0, 2.5), rotation(10.0, 0.0, 20.0), (0, 0, 0),
                       modality="CT")
    return {"nifti": nifti, "nrrd": nrrd, "dicom": dicom, "folder": data}


# ------------------------------------------------------------------------------------- outputs


def test_folder_of_mixed_inputs_gives_labels_on_each_scans_grid_and_sidecars(scans, tmp_path: Path):
    out = tmp_path / "out"
    summary = _run([scans["folder"]], out)
    assert summary["exit_code"] == 0 and summary["done"] == 3 and summary["failed"] == []
    for name, source in (("ct_a", scans["nifti"]), ("ct_b", scans["nrrd"]), ("ct_c", scans["dicom"])):
        seg = nib.load(str(out / f"{name}_seg.nii.gz"))
        header = read_header(source)
        assert seg.shape == tuple(header.shape[:3])
        np.testing.assert_allclose(seg.affine, header.affine, atol=1e-3)
        from medt3d.data.readers import load_volume

        truth = load_volume(source)[0].numpy() > THRESHOLD_HU
        np.testing.assert_array_equal(np.asarray(seg.dataobj).astype(bool), truth)

        sidecar = json.loads((out / f"{name}_seg.json").read_text())
        assert sidecar["labels"] == label_table(threshold_config())
        assert [(t["name"], t["type"] and t["type"]["meaning"]) for t in sidecar["labels"]] == [
            ("background", None), ("blob", "Tissue")]
        voxel_ml = abs(np.linalg.det(header.affine[:3, :3])) / 1000.0
        assert sidecar["voxels"]["blob"] == int(truth.sum())
        assert sidecar["volumes_ml"]["blob"] == pytest.approx(truth.sum() * voxel_ml, rel=1e-4)
        assert sidecar["volumes_ml"]["blob"] > 0
        assert sidecar["input"] == str(source.resolve())
        assert sidecar["outputs"]["label"] == f"{name}_seg.nii.gz"
        assert sidecar["seconds"] > 0 and sidecar["model"]["network"] == "medt3d"
        assert set(sidecar["timings"]) == {"load_s", "preprocess_s", "windows_s", "postprocess_s", "write_s"}
        assert set(sidecar["peak_rss_mb"]) == {"load", "preprocess", "windows", "postprocess", "write"}
        assert sum(sidecar["timings"].values()) <= sidecar["seconds"] + 0.005  # each rounded to ms
        assert sidecar["inference"]["roi_size"] == [16, 16, 16]
    written = json.loads((out / "summary.json").read_text())
    assert [c["case"] for c in written["cases"]] == ["ct_a", "ct_b", "ct_c"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_label_colours_are_distinct_and_background_black():
    table = label_table(threshold_config("data.labels=[bg,a,b,c,d]"))
    assert [t["name"] for t in table] == ["bg", "a", "b", "c", "d"]
    assert table[0]["color"] == [0, 0, 0]
    colours = {tuple(t["color"]) for t in table}
    assert len(colours) == 5 and all(0 <= c <= 255 for rgb in colours for c in rgb)


def test_options_override_the_config_and_probabilities_are_written(scans, tmp_path: Path):
    out = tmp_path / "out"
    options = InferOptions(progress=False, roi_size=(8, 8, 8), overlap=0.5, mode="constant", sw_batch_size=3,
                           save_probabilities=True, tta_flips=True, padding_mode="reflect")
    summary = _run([scans["nifti"]], out, options=options)
    assert summary["exit_code"] == 0
    sidecar = json.loads((out / "ct_a_seg.json").read_text())
    assert sidecar["inference"]["device"] == "cpu" and sidecar["inference"]["sw_batch_size"] == 3
    assert sidecar["inference"]["roi_size"] == [8, 8, 8] and sidecar["inference"]["overlap"] == 0.5
    assert sidecar["inference"]["mode"] == "constant" and sidecar["inference"]["tta_flips"] is True
    assert sidecar["inference"]["padding_mode"] == "reflect"  # the config's default is replicate
    probs = nib.load(str(out / "ct_a_probs.nii.gz"))
    seg = nib.load(str(out / "ct_a_seg.nii.gz"))
    assert probs.shape == (*seg.shape, 2) and probs.get_data_dtype() == np.float32
    np.testing.assert_allclose(probs.affine, seg.affine)
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=1e-5)
    assert sidecar["outputs"]["probabilities"] == "ct_a_probs.nii.gz"


def test_dicom_seg_references_the_series_and_holds_the_label(scans, tmp_path: Path):
    import highdicom as hd
    import pydicom

    from medt3d.data.readers import check_dicom_series

    out = tmp_path / "out"
    summary = _run([scans["dicom"], scans["nifti"]], out, options=InferOptions(progress=False, output_formats=("dicom-seg",)))
    assert summary["exit_code"] == 0
    assert not (out / "ct_a_seg.dcm").exists()
    assert "not a DICOM series" in json.loads((out / "ct_a_seg.json").read_text())["notes"][0]
    seg = hd.seg.segread(out / "ct_c_seg.dcm")
    files = check_dicom_series(scans["dicom"])
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.number_of_segments == 1 and seg.get_segment_description(1).SegmentLabel == "blob"
    uids = [s.SOPInstanceUID for s in sources]
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(uids)
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    label = np.asarray(nib.load(str(out / "ct_c_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(frames, np.transpose(label, (2, 1, 0)))
    assert frames.any()


# ------------------------------------------------------------------------------------- bad input


def test_bad_cases_fail_alone_with_clear_messages(scans, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    image, affine = blob_volume((12, 12, 8), (1.0, 1.0, 1.0))
    nib.save(nib.Nifti1Image(np.stack([image, image], -1), affine), str(bad / "four_d.nii.gz"))
    nib.save(nib.Nifti1Image(image[:, :, :1], affine), str(bad / "two_d.nii.gz"))
    nan = image.copy()
    nan[1, 1, 1] = np.nan
    save(bad / "nan.nii.gz", nan, affine)
    (bad / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    two = bad / "two_series"
    write_dicom_series(two, image.astype(np.int16), (1, 1, 1), np.eye(3), (0, 0, 0), prefix="a_")
    write_dicom_series(two, image.astype(np.int16), (1, 1, 1), np.eye(3), (0, 0, 50), prefix="b_")
    inputs = [scans["nifti"], *sorted(p for p in bad.iterdir() if p.name.endswith(".nii.gz")), two]
    out = tmp_path / "out"
    summary = _run(inputs, out)
    assert summary["exit_code"] == 1
    assert summary["done"] == 1 and (out / "ct_a_seg.nii.gz").is_file()
    errors = {f["case"]: f["error"] for f in summary["failed"]}
    assert set(errors) == {"four_d", "two_d", "nan", "corrupt", "two_series"}
    assert "4-D image" in errors["four_d"] and "four_d.nii.gz" in errors["four_d"]
    assert "2-D image" in errors["two_d"]
    assert "1 NaN and 0 Inf" in errors["nan"] and "nan.nii.gz" in errors["nan"]
    assert "corrupt.nii.gz" in errors["corrupt"]
    assert "holds 2 DICOM series" in errors["two_series"]
    assert json.loads((out / "summary.json").read_text())["failed"] == summary["failed"]
    for name in errors:  # nothing half-written for failed cases
        assert not list(out.glob(f"{name}_*"))
    missing = tmp_path / "missing.nii.gz"  # a missing input is bad usage: nothing is segmented (exit code 2)
    with pytest.raises(FileNotFoundError, match=r"input\(s\) not found: .*missing\.nii\.gz; nothing was segmented"):
        _run([scans["nifti"], missing], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_a_series_without_frame_of_reference_gets_a_dicom_seg_with_a_new_one(shared_data: Path, tmp_path: Path):
    """The real MR series has no FrameOfReferenceUID, which a DICOM SEG must have: a new one is filled, and said."""
    import pydicom

    series = shared_data / "mr_dicom_series" / "series"
    out = tmp_path / "out"
    summary = _run([series], out, "patch.roi_size=[64,64,16]", options=InferOptions(progress=False, output_formats=("dicom-seg",)))
    assert summary["exit_code"] == 0 and summary["done"] == 1 and summary["failed_outputs"] == []
    notes = json.loads((out / "series_seg.json").read_text())["notes"]
    (filled,) = [n for n in notes if "filled in memory" in n]
    assert "FrameOfReferenceUID new" in filled and str(series) in filled
    seg = pydicom.dcmread(out / "series_seg.dcm")
    assert seg.FrameOfReferenceUID and seg.FrameOfReferenceUID in filled
    assert "FrameOfReferenceUID" not in pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)


def test_dicom_seg_of_a_real_series_with_an_empty_character_set(shared_data: Path, tmp_path: Path):
    """dcmqi's real 3-slice CT: empty SpecificCharacterSet; the SEG is written and references every slice."""
    import pydicom

    series = shared_data / "ct_dicom_3slice" / "series"
    sources = sorted(series.iterdir())
    assert pydicom.dcmread(sources[0], stop_before_pixels=True).get("SpecificCharacterSet", "x") in ("", None, [])
    out = tmp_path / "out"
    summary = _run([series], out, "patch.roi_size=[64,64,16]", options=InferOptions(progress=False, output_formats=("dicom-seg",)))
    assert summary["exit_code"] == 0, summary["failed"]
    seg = pydicom.dcmread(out / "series_seg.dcm")
    assert seg.Modality == "SEG"
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in sources}


def test_dicom_seg_of_the_real_series_passes_dciodvfy_and_reads_back_as_the_label(shared_data: Path, tmp_path: Path):
    """dciodvfy (dicom3tools) finds no error; highdicom reads back the label's frames on the source slices."""
    import shutil

    import highdicom as hd
    import pydicom

    from medt3d.data.readers import check_dicom_series
    from medt3d.inference.dicom_seg import label_map_frames

    series = shared_data / "ct_dicom_3slice" / "series"
    out = tmp_path / "out"
    assert _run([series], out, "patch.roi_size=[64,64,16]",
                options=InferOptions(progress=False, output_formats=("dicom-seg",)))["exit_code"] == 0
    seg_path = out / "series_seg.dcm"
    tool = shutil.which("dciodvfy")
    if tool is None:
        if os.environ.get("MEDT3D_REQUIRE_DCIODVFY"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is required here but not installed")
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    report = subprocess.run([tool, str(seg_path)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors

    seg = hd.seg.segread(seg_path)
    files = check_dicom_series(series)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = seg.get_pixels_by_source_instance(uids, segment_numbers=[1], combine_segments=True)
    label = np.asarray(nib.load(out / "series_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(frames, label_map_frames(label))
    assert frames.any()  # the threshold network found bone in the real CT


def test_dicom_seg_of_a_series_without_study_uid_and_patient_id(tmp_path: Path):
    import pydicom

    image, _ = blob_volume((20, 20, 6), (1.0, 1.0, 2.0))
    files = write_dicom_series(tmp_path / "series", image.astype(np.int16), (1.0, 1.0, 2.0), np.eye(3), (0, 0, 0),
                               modality="CT")
    for f in files:  # as some anonymisers leave them
        ds = pydicom.dcmread(f)
        del ds.StudyInstanceUID
        ds.PatientID = ""
        ds.save_as(f)
    out = tmp_path / "out"
    summary = _run([tmp_path / "series"], out, options=InferOptions(progress=False, output_formats=("dicom-seg",)))
    assert summary["exit_code"] == 0, summary["failed"]
    assert (out / "series_seg.dcm").is_file() and (out / "series_seg.nii.gz").is_file()
    notes = json.loads((out / "series_seg.json").read_text())["notes"]
    assert any("StudyInstanceUID new" in n for n in notes)
    assert pydicom.dcmread(files[0]).get("StudyInstanceUID") is None  # the source files are untouched


def test_a_case_failing_while_writing_leaves_no_files(scans, tmp_path: Path, monkeypatch):
    import medt3d.inference.outputs as outputs

    def broken(*args, **kwargs):
        raise ValueError("disk on fire")

    monkeypatch.setattr(outputs, "save_nifti", broken)
    out = tmp_path / "out"
    summary = _run([scans["dicom"]], out, options=InferOptions(progress=False, output_formats=("dicom-seg",)))
    assert summary["exit_code"] == 1 and "disk on fire" in summary["failed"][0]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_model_channels_that_do_not_fit_fail_every_case(scans, tmp_path: Path):
    summary = _run([scans["nifti"], scans["nrrd"]], tmp_path / "out", "data.in_channels=2")
    assert summary["exit_code"] == 1 and summary["n_failed"] == 2
    assert all("model expects 2" in f["error"] for f in summary["failed"])


# ------------------------------------------------------------------------------------- batches


def test_skip_existing_redoes_only_unfinished_cases(scans, tmp_path: Path):
    out = tmp_path / "out"
    net = ThresholdNet()
    assert _run([scans["folder"]], out, net=net)["done"] == 3
    first_calls = net.calls
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.json")}
    (out / "ct_b_seg.json").unlink()  # as if interrupted before ct_b finished
    (out / "ct_c_seg.nii.gz").unlink()  # a label removed by hand
    options = InferOptions(progress=False, skip_existing=True)
    summary = _run([scans["folder"]], out, net=net, options=options)
    assert summary["skipped"] == 1 and summary["done"] == 2 and summary["exit_code"] == 0
    assert {c["case"]: c["status"] for c in summary["cases"]} == {"ct_a": "skipped", "ct_b": "done",
                                                                  "ct_c": "done"}
    assert (out / "ct_a_seg.json").stat().st_mtime_ns == stamps["ct_a_seg.json"]
    assert (out / "ct_b_seg.json").is_file() and (out / "ct_c_seg.nii.gz").is_file()
    assert 0 < net.calls - first_calls < first_calls


def test_a_new_run_removes_the_temp_files_of_a_killed_one(scans, tmp_path: Path):
    import os

    out = tmp_path / "out"
    out.mkdir()
    leftover = out / ".ct_a_seg.nii.gz.k3j2.tmp.nii.gz"  # what kill -9 during a write leaves
    leftover.write_bytes(b"partial")
    old = leftover.stat().st_mtime - 60
    os.utime(leftover, (old, old))
    assert _run([scans["folder"]], out, options=InferOptions(progress=False, skip_existing=True))["done"] == 3
    assert not leftover.exists()
    assert not list(out.glob(".*"))


def test_skip_existing_redoes_outputs_of_another_model(scans, tmp_path: Path, caplog):
    out = tmp_path / "out"
    assert _run([scans["folder"]], out)["done"] == 3
    sidecar = out / "ct_a_seg.json"
    made = json.loads(sidecar.read_text())
    made["model"]["sha256"] = "0" * 64  # as if another model had written ct_a
    sidecar.write_text(json.dumps(made))
    caplog.set_level("WARNING", logger="medt3d.inference.batch")
    summary = _run([scans["folder"]], out, options=InferOptions(progress=False, skip_existing=True))
    assert {c["case"]: c["status"] for c in summary["cases"]} == {"ct_a": "done", "ct_b": "skipped",
                                                                  "ct_c": "skipped"}
    assert "made by another model" in caplog.text and str(sidecar) in caplog.text
    assert json.loads(sidecar.read_text())["model"].get("sha256") != "0" * 64  # rewritten by this model


def test_outputs_never_overwrite_inputs(scans, tmp_path: Path):
    with pytest.raises(ValueError, match="inside the DICOM input folder"):
        _run([scans["dicom"]], scans["dicom"] / "out")
    # an input that is named like an output, in the output folder itself
    out = tmp_path / "out"
    out.mkdir()
    image, affine = blob_volume((12, 12, 8), (1.0, 1.0, 1.0))
    scan = save(out / "x.nii.gz", image, affine)
    victim = save(out / "x_seg.nii.gz", image, affine)  # would be the label of x.nii.gz
    before = victim.read_bytes()
    with pytest.raises(ValueError, match="would overwrite the input"):
        _run([scan, victim], out)
    assert victim.read_bytes() == before


def test_results_inside_a_searched_input_folder_are_not_inputs(scans):
    out = scans["folder"] / "results"
    assert _run([scans["folder"]], out)["done"] == 3
    names = [c.name for c in discover_cases([scans["folder"]], out)]
    assert names == ["ct_a", "ct_b", "ct_c"]


def test_a_dataset_folder_gives_its_images_not_its_masks(tmp_path: Path):
    image, affine = blob_volume((8, 8, 8), (1.0, 1.0, 1.0))
    for folder, name in [("train/images", "p1.nii.gz"), ("train/masks", "p1.nii.gz"), ("imagesTr", "c_0000.nii.gz"),
                         ("labelsTr", "c.nii.gz"), ("flat", "spleen_2.nii.gz"), ("flat", "spleen_2_label.nii.gz"),
                         ("flat", "spleen_3_seg.nii.gz"), ("flat", "spleen_4_mask.nii")]:
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        save(tmp_path / "data" / folder / name, image, affine)
    found = sorted(str(c.path.relative_to(tmp_path / "data")) for c in discover_cases([tmp_path / "data"], tmp_path / "o"))
    assert found == ["flat/spleen_2.nii.gz", "imagesTr/c_0000.nii.gz", "train/images/p1.nii.gz"]
    # named explicitly, a file is segmented whatever its name
    named = discover_cases([tmp_path / "data" / "flat" / "spleen_3_seg.nii.gz"], tmp_path / "o")
    assert [c.path.name for c in named] == ["spleen_3_seg.nii.gz"]


def test_a_scan_with_nan_voxels_fails_its_case_and_the_batch_goes_on(scans, tmp_path: Path):
    image, affine = blob_volume((16, 16, 12), (1.0, 1.0, 1.0))
    image[2, 3, 4] = np.nan
    bad = save(tmp_path / "nan_scan.nii.gz", image, affine)
    summary = _run([bad, scans["nifti"]], tmp_path / "out")
    assert summary["exit_code"] == 1 and summary["done"] == 1
    (failed,) = summary["failed"]
    assert f"{bad}: 1 NaN and 0 Inf voxel(s) of {image.size}" in failed["error"]
    assert not (tmp_path / "out" / "nan_scan_seg.nii.gz").exists()


def test_statistics_per_structure_and_the_batch_volume_table(scans, tmp_path: Path):
    import csv

    out = tmp_path / "out"
    summary = _run([scans["nifti"], scans["nrrd"]], out, options=InferOptions(progress=False, statistics=True))
    assert summary["done"] == 2
    rows = {r["case"]: r for r in csv.DictReader((out / "volumes.csv").open())}
    assert set(rows) == {"ct_a", "ct_b"}
    for name in rows:
        sidecar = json.loads((out / f"{name}_seg.json").read_text())
        stats = sidecar["statistics"]["blob"]
        label = np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj)
        assert stats["voxels"] == int(label.sum()) == sidecar["voxels"]["blob"]
        # ThresholdNet marks the 1000 HU blob: the HU inside it are the blob's
        assert stats["mean"] == pytest.approx(1000.0) and stats["std"] == pytest.approx(0.0)
        assert stats["min"] == stats["max"] == pytest.approx(1000.0)
        where = np.nonzero(label)
        assert stats["bbox"] == [[int(a.min()), int(a.max())] for a in where]
        assert float(rows[name]["blob_ml"]) == pytest.approx(sidecar["volumes_ml"]["blob"])
        assert float(rows[name]["blob_mean"]) == pytest.approx(1000.0)
    plain = _run([scans["nifti"]], tmp_path / "plain")  # without --statistics: volumes only
    assert json.loads((tmp_path / "plain" / "ct_a_seg.json").read_text())["statistics"] is None
    assert "blob_ml" in (tmp_path / "plain" / "volumes.csv").read_text() and plain["done"] == 1


def test_viewers_get_the_names_and_colours_and_dicom_seg_the_snomed_codes(scans, tmp_path: Path):
    import pydicom

    from medt3d.label_table import snomed_codes

    assert snomed_codes("spleen")[1]["code"] == "78961009" and snomed_codes("Liver")[1]["code"] == "10200004"
    assert snomed_codes("kidney_right")[1]["meaning"] == snomed_codes("left kidney")[1]["meaning"] == "Kidney"
    assert snomed_codes("blob")[1]["meaning"] == "Tissue"
    assert snomed_codes("spleen")[0]["meaning"] == "Anatomical Structure"

    out = tmp_path / "out"
    summary = _run([scans["dicom"]], out, "data.labels=[background, spleen]",
                   options=InferOptions(progress=False, output_formats=("dicom-seg",)))
    assert summary["done"] == 1
    seg = pydicom.dcmread(out / "ct_c_seg.dcm")
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "spleen"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"

    itk = [line.split() for line in (out / "labels_itksnap.txt").read_text().splitlines() if not line.startswith("#")]
    sidecar_table = json.loads((out / "ct_c_seg.json").read_text())["labels"]
    assert [int(row[0]) for row in itk] == [0, 1] and itk[1][-1] == '"spleen"'
    assert [int(v) for v in itk[1][1:4]] == sidecar_table[1]["color"]
    slicer = [line.split() for line in (out / "labels_slicer.ctbl").read_text().splitlines() if not line.startswith("#")]
    assert slicer[1][:2] == ["1", "spleen"] and [int(v) for v in slicer[1][2:5]] == sidecar_table[1]["color"]


def test_case_names_stay_unique(tmp_path: Path):
    image, affine = blob_volume((8, 8, 8), (1.0, 1.0, 1.0))
    for sub in ("site1", "site2"):
        (tmp_path / sub).mkdir()
        save(tmp_path / sub / "ct.nii.gz", image, affine)
    names = sorted(c.name for c in discover_cases([tmp_path / "site1", tmp_path / "site2"], tmp_path / "o"))
    assert names == ["site1_ct", "site2_ct"]


# ------------------------------------------------------------------------------------- command line


def _tiny_checkpoint(path: Path, *overrides: str) -> Path:
    """A real (untrained) tiny MedT3D checkpoint with the threshold config's preprocessing."""
    from medt3d.models.checkpoint import save_checkpoint
    from medt3d.networks import build_network

    cfg = threshold_config("network.preset=tiny", *overrides)
    torch.manual_seed(0)
    return save_checkpoint(path, network=build_network(cfg), cfg=cfg, epoch=1, iteration=1)


def _cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, encoding="utf-8", errors="replace",
                          timeout=timeout)


def test_cli_with_a_checkpoint_exit_codes_and_summary(scans, tmp_path: Path):
    from medt3d.cli import main

    ckpt = _tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    rc = main(["infer", str(scans["nifti"]), str(scans["dicom"]), "--model", str(ckpt), "--output", str(out),
               "--device", "cpu", "--no-progress", "--roi-size", "16", "16", "16"])
    assert rc == 0
    sidecar = json.loads((out / "ct_a_seg.json").read_text())
    assert sidecar["model"]["file"] == str(ckpt.resolve()) and len(sidecar["model"]["sha256"]) == 64
    seg = nib.load(str(out / "ct_c_seg.nii.gz"))
    np.testing.assert_allclose(seg.affine, read_header(scans["dicom"]).affine, atol=1e-3)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt.rename(run_dir / "checkpoints" / "best.pt")
    ckpt = run_dir  # a training run folder works as --model too
    (tmp_path / "nope.nii.gz").write_bytes(b"not a scan")  # a bad file fails its case (a missing one: exit code 2)
    rc = main(["infer", str(scans["nifti"]), str(tmp_path / "nope.nii.gz"), "--model", str(ckpt),
               "--output", str(tmp_path / "out2"), "--no-progress"])
    assert rc == 1
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert [f["case"] for f in summary["failed"]] == ["nope"] and summary["done"] == 1
    assert summary["model"]["file"] == str((run_dir / "checkpoints" / "best.pt").resolve())
    assert main(["infer", str(scans["nifti"]), "--model", str(tmp_path / "none.pt"), "--output",
                 str(tmp_path / "o3")]) == 2


def test_torchrun_two_cpu_processes_split_the_cases(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        image, affine = blob_volume((12 + i, 14, 8), (1.0, 1.0, 1.5), "RAS")
        save(data / f"case{i}.nii.gz", image, affine)
    ckpt = _tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    proc = _cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medt3d", "infer",
                 str(data), "--model", str(ckpt), "--output", str(out), "--device", "cpu", "--no-progress"],
                tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("*_seg.json"))]
    assert [s["case"] for s in sidecars] == [f"case{i}" for i in range(5)]
    assert {s["world_size"] for s in sidecars} == {2}
    ranks = [s["rank"] for s in sidecars]
    assert sorted(ranks) == [0, 0, 0, 1, 1], "each case once, shared by both ranks"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 5 and summary["world_size"] == 2
    assert (proc.stdout + proc.stderr).count("medt3d infer: 5 done") == 1, "only rank 0 reports"


@pytest.mark.slow
def test_bench_infer_measures_both_routes_in_fresh_processes(tmp_path: Path):
    from medt3d.bench.inference import bench_infer

    cfg = threshold_config("network.preset=tiny", "preprocess.spacing=[1.5,1.5,2.0]", "patch.roi_size=[32,32,32]")
    result = bench_infer(cfg, tmp_path, volumes={"small": ((24, 24, 16), (1.0, 1.0, 1.5))}, log=lambda m: None,
                         batch=2)
    rows = result["rows"]
    assert [(r["network"], r["rc"]) for r in rows] == [("medt3d-tiny", 0), ("unet", 0)], result
    for row in rows:
        assert 0 < row["peak_rss_gb"] < 8 and row["process_wall_s"] >= row["case_s"] >= row["window_s"] >= 0
        assert set(row["phases_s"]) == {"load", "preprocess", "windows", "postprocess", "write"}
        assert sum(row["phases_s"].values()) <= row["case_s"] + 0.05
        assert set(row["phase_peak_mb"]) == set(row["phases_s"]) and max(row["phase_peak_mb"].values()) > 50
    assert rows[0]["batch"] == 2 and rows[0]["batch_rc"] == 0 and rows[0]["batch_process_wall_s"] > 0
    assert len(list((tmp_path / "medt3d_small_batch_out").glob("*_seg.nii.gz"))) == 2
    assert "Batch of 2 on small" in result["table"]
    assert result["settings"]["roi_size"] == [32, 32, 32]
    assert (tmp_path / "medt3d_small" / "ct_small_seg.nii.gz").is_file() and (tmp_path / "unet_small_seg.nii.gz").is_file()
    assert "| small | unet |" in result["table"]


def test_a_gantry_tilted_series_is_segmented_on_its_corrected_grid_and_gets_no_dicom_seg(tmp_path: Path):
    """The SEG that was asked for cannot be made: the case fails (exit 1), its NIfTI label stays."""
    image, _ = blob_volume((20, 22, 12), (1.0, 1.0, 2.0), "LPS")
    direction = np.eye(3)
    direction[:, 2] = [0.0, np.tan(np.radians(12.0)), 1.0]  # the table steps along z, the slices are tilted
    write_dicom_series(tmp_path / "tilted", image.astype(np.int16), (1.0, 1.0, 2.0), direction, (0, 0, 0),
                       modality="CT")
    from medt3d.data.readers import read_header as header_of

    corrected = header_of(tmp_path / "tilted").affine
    summary = _run([tmp_path / "tilted"], tmp_path / "out", options=InferOptions(progress=False,
                                                                                 output_formats=("dicom-seg",)))
    assert summary["done"] == 0 and summary["exit_code"] == 1 and summary["failed_outputs"][0]["output"] == "dicom_seg"
    assert "gantry-tilted" in summary["failed_outputs"][0]["error"] and "gantry-tilted" in summary["failed"][0]["error"]
    label = nib.load(tmp_path / "out" / "tilted_seg.nii.gz")
    np.testing.assert_allclose(label.affine, corrected, atol=1e-4)
    assert np.allclose(np.linalg.norm(label.affine[:3, :3], axis=0), [1.0, 1.0, 2.0])  # the table step along z
    columns = label.affine[:3, :3] / np.linalg.norm(label.affine[:3, :3], axis=0)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-6)  # a regular grid, no shear left
    assert not (tmp_path / "out" / "tilted_seg.dcm").exists() and np.asarray(label.dataobj).sum() > 0
