"""``medt3d infer``: batch outputs, sidecars, DICOM SEG, bad inputs, skip-existing, no overwrite.

Most tests run the batch runner with the deterministic :class:`ThresholdNet` (see test_inference.py),
so each case's right answer is ``scan > 500 HU``. The command-line tests are in test_infer_cli.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_utils import write_dicom_series
from infer_utils import run_threshold, write_scans
from support import THRESHOLD_HU, ThresholdNet, blob_volume, save, threshold_config

from medt3d.data.readers import read_header
from medt3d.inference.batch import InferOptions, discover_cases
from medt3d.label_table import label_table


@pytest.fixture()
def scans(tmp_path: Path) -> dict[str, Path]:
    """A NIfTI (LPS), an NRRD and an oblique DICOM series, each holding a 1000 HU blob."""
    return write_scans(tmp_path)


# ------------------------------------------------------------------------------------- outputs


def test_folder_of_mixed_inputs_gives_labels_on_each_scans_grid_and_sidecars(scans, tmp_path: Path):
    out = tmp_path / "out"
    summary = run_threshold([scans["folder"]], out)
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
    summary = run_threshold([scans["nifti"]], out, options=options)
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
    summary = run_threshold([scans["dicom"], scans["nifti"]], out, options=InferOptions(progress=False, output_formats=("dicom-seg",)))
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
    summary = run_threshold(inputs, out)
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
        run_threshold([scans["nifti"], missing], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_a_series_without_frame_of_reference_gets_a_dicom_seg_with_a_new_one(shared_data: Path, tmp_path: Path):
    """The real MR series has no FrameOfReferenceUID, which a DICOM SEG must have: a new one is filled, and said."""
    import pydicom

    series = shared_data / "mr_dicom_series" / "series"
    out = tmp_path / "out"
    summary = run_threshold([series], out, "patch.roi_size=[64,64,16]", options=InferOptions(progress=False, output_formats=("dicom-seg",)))
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
    summary = run_threshold([series], out, "patch.roi_size=[64,64,16]", options=InferOptions(progress=False, output_formats=("dicom-seg",)))
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
    assert run_threshold([series], out, "patch.roi_size=[64,64,16]",
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
    summary = run_threshold([tmp_path / "series"], out, options=InferOptions(progress=False, output_formats=("dicom-seg",)))
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
    summary = run_threshold([scans["dicom"]], out, options=InferOptions(progress=False, output_formats=("dicom-seg",)))
    assert summary["exit_code"] == 1 and "disk on fire" in summary["failed"][0]["error"]
    # a ValueError from medt3d's own code is a bug, not the user's input, and the case's error says so
    assert summary["failed"][0]["error"].startswith("internal error (a bug in medt3d, not in your input): ValueError")
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_model_channels_that_do_not_fit_fail_every_case(scans, tmp_path: Path):
    summary = run_threshold([scans["nifti"], scans["nrrd"]], tmp_path / "out", "data.in_channels=2")
    assert summary["exit_code"] == 1 and summary["n_failed"] == 2
    assert all("model expects 2" in f["error"] for f in summary["failed"])


# ------------------------------------------------------------------------------------- batches


def test_skip_existing_redoes_only_unfinished_cases(scans, tmp_path: Path):
    out = tmp_path / "out"
    net = ThresholdNet()
    assert run_threshold([scans["folder"]], out, net=net)["done"] == 3
    first_calls = net.calls
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.json")}
    (out / "ct_b_seg.json").unlink()  # as if interrupted before ct_b finished
    (out / "ct_c_seg.nii.gz").unlink()  # a label removed by hand
    options = InferOptions(progress=False, skip_existing=True)
    summary = run_threshold([scans["folder"]], out, net=net, options=options)
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
    assert run_threshold([scans["folder"]], out, options=InferOptions(progress=False, skip_existing=True))["done"] == 3
    assert not leftover.exists()
    assert not list(out.glob(".*"))


def test_skip_existing_redoes_outputs_of_another_model(scans, tmp_path: Path, caplog):
    out = tmp_path / "out"
    assert run_threshold([scans["folder"]], out)["done"] == 3
    sidecar = out / "ct_a_seg.json"
    made = json.loads(sidecar.read_text())
    made["model"]["sha256"] = "0" * 64  # as if another model had written ct_a
    sidecar.write_text(json.dumps(made))
    caplog.set_level("WARNING", logger="medt3d.inference.batch")
    summary = run_threshold([scans["folder"]], out, options=InferOptions(progress=False, skip_existing=True))
    assert {c["case"]: c["status"] for c in summary["cases"]} == {"ct_a": "done", "ct_b": "skipped",
                                                                  "ct_c": "skipped"}
    assert "made by another model" in caplog.text and str(sidecar) in caplog.text
    assert json.loads(sidecar.read_text())["model"].get("sha256") != "0" * 64  # rewritten by this model


def test_outputs_never_overwrite_inputs(scans, tmp_path: Path):
    with pytest.raises(ValueError, match="inside the DICOM input folder"):
        run_threshold([scans["dicom"]], scans["dicom"] / "out")
    # an input that is named like an output, in the output folder itself
    out = tmp_path / "out"
    out.mkdir()
    image, affine = blob_volume((12, 12, 8), (1.0, 1.0, 1.0))
    scan = save(out / "x.nii.gz", image, affine)
    victim = save(out / "x_seg.nii.gz", image, affine)  # would be the label of x.nii.gz
    before = victim.read_bytes()
    with pytest.raises(ValueError, match="would overwrite the input"):
        run_threshold([scan, victim], out)
    assert victim.read_bytes() == before


def test_results_inside_a_searched_input_folder_are_not_inputs(scans):
    out = scans["folder"] / "results"
    assert run_threshold([scans["folder"]], out)["done"] == 3
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
    summary = run_threshold([bad, scans["nifti"]], tmp_path / "out")
    assert summary["exit_code"] == 1 and summary["done"] == 1
    (failed,) = summary["failed"]
    assert f"{bad}: 1 NaN and 0 Inf voxel(s) of {image.size}" in failed["error"]
    assert not (tmp_path / "out" / "nan_scan_seg.nii.gz").exists()


def test_statistics_per_structure_and_the_batch_volume_table(scans, tmp_path: Path):
    import csv

    out = tmp_path / "out"
    summary = run_threshold([scans["nifti"], scans["nrrd"]], out, options=InferOptions(progress=False, statistics=True))
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
    plain = run_threshold([scans["nifti"]], tmp_path / "plain")  # without --statistics: volumes only
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
    summary = run_threshold([scans["dicom"]], out, "data.labels=[background, spleen]",
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
