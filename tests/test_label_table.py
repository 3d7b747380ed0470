"""The label table in the config, and the outputs it feeds: sidecar, .seg.nrrd, ITK-SNAP, Slicer, DICOM SEG.

The ``.seg.nrrd`` is read back twice: with slicerio (as 3D Slicer reads a segmentation: segment
names, colours, codes) and with plain pynrrd (geometry and voxels, against the NIfTI label).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_utils import rotation, write_dicom_series
from support import ThresholdNet, blob_volume, save, threshold_config

from medt3d.config import ConfigError, load_config
from medt3d.inference.batch import InferOptions, run_inference
from medt3d.label_table import label_table

#: two classes: "spleen" with its own colour and codes from the config, "kidney_left" derived
TABLE = ("data.labels=[background, spleen, kidney_left]",
         "data.label_table={spleen: {color: [10, 200, 30], category: {code: '91723000', meaning: Anatomical "
         "Structure}, type: {code: '78961009', meaning: Spleen}}}")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def test_config_colours_and_codes_win_and_names_fill_the_rest():
    table = label_table(load_config(None, list(TABLE)))
    assert [t["name"] for t in table] == ["background", "spleen", "kidney_left"]
    assert table[0]["color"] == [0, 0, 0] and table[0]["type"] is None
    assert table[1]["color"] == [10, 200, 30]
    assert table[1]["type"] == {"scheme": "SCT", "code": "78961009", "meaning": "Spleen"}
    assert table[2]["type"]["meaning"] == "Kidney" and table[2]["category"]["meaning"] == "Anatomical Structure"
    assert table[2]["color"] != table[1]["color"] and table[2]["color"] != [0, 0, 0]


@pytest.mark.parametrize(("override", "match"), [
    ("data.label_table={liver: {color: [1, 2, 3]}}", "data.label_table.liver' names no class"),
    ("data.label_table={foreground: {color: [1, 2]}}", "color' must be 3 integers"),
    ("data.label_table={foreground: {color: [1, 2, 300]}}", "color' must be 3 integers"),
    ("data.label_table={foreground: {type: {code: '1', meaning: x}}}", "both category and type"),
    ("data.label_table={foreground: {category: {code: '1', meaning: x}, type: {code: '', meaning: y}}}",
     "needs code, meaning and scheme"),
    ("data.label_table={foreground: {colour: [1, 2, 3]}}", "unknown config key 'data.label_table.foreground.colour'"),
    ("data.label_table=[1, 2]", "must be a mapping of names"),
])
def test_bad_label_tables_are_refused_by_key(override: str, match: str):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def _two_organ_net() -> ThresholdNet:
    """Blob voxels above 500 HU are 'spleen' (1), nothing is 'kidney_left' (2)."""
    return ThresholdNet(num_classes=3)


def _read_back(path: Path) -> tuple[dict, np.ndarray, dict]:
    import nrrd
    import slicerio

    segmentation = slicerio.read_segmentation(str(path))
    voxels, header = nrrd.read(str(path), index_order="F")
    return segmentation, voxels, header


@pytest.mark.parametrize("kind", ["nifti_lps", "oblique_dicom"])
def test_seg_nrrd_reads_back_with_names_colours_codes_and_the_labels_geometry(tmp_path: Path, kind: str):
    if kind == "nifti_lps":
        image, affine = blob_volume((20, 18, 10), (1.0, 1.2, 2.0), "LPS")
        scan = save(tmp_path / "case.nii.gz", image, affine)
    else:
        image, _ = blob_volume((18, 16, 8), (1.1, 1.0, 2.5), rotation(10.0, 0.0, 20.0))
        scan = tmp_path / "case"
        write_dicom_series(scan, image.astype(np.int16), (1.1, 1.0, 2.5), rotation(10.0, 0.0, 20.0), (5, -3, 8),
                           modality="CT")
    out = tmp_path / "out"
    summary = run_inference([str(scan)], out, network=(_two_organ_net(), threshold_config(*TABLE)),
                            options=InferOptions(progress=False, output_formats=("seg-nrrd",)))
    assert summary["done"] == 1, summary["failed"]
    label_nii = nib.load(out / "case_seg.nii.gz")
    label = np.asarray(label_nii.dataobj)
    assert 0 < (label == 1).sum() < label.size

    segmentation, voxels, header = _read_back(out / "case_seg.seg.nrrd")
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert list(segments) == ["spleen", "kidney_left"]
    spleen, kidney = segments["spleen"], segments["kidney_left"]
    assert spleen["labelValue"] == 1 and kidney["labelValue"] == 2
    np.testing.assert_allclose(spleen["color"], np.array([10, 200, 30]) / 255, atol=1e-5)
    assert spleen["terminology"]["type"] == ["SCT", "78961009", "Spleen"]
    assert spleen["terminology"]["category"] == ["SCT", "91723000", "Anatomical Structure"]
    assert kidney["terminology"]["type"][2] == "Kidney"
    # the extent is the spleen's bounding box in voxels; the empty kidney has Slicer's empty extent
    hit = np.argwhere(label == 1)
    assert spleen["extent"] == [int(v) for pair in zip(hit.min(0), hit.max(0)) for v in pair]
    assert kidney["extent"] == [0, -1, 0, -1, 0, -1]

    # geometry and voxels: the NIfTI label, its affine turned into LPS
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_array_equal(voxels, label)
    ijk_to_ras = LPS_TO_RAS @ np.vstack([np.column_stack([header["space directions"].T, header["space origin"]]),
                                         [0, 0, 0, 1]])
    np.testing.assert_allclose(ijk_to_ras, label_nii.affine, atol=1e-4)

    sidecar = json.loads((out / "case_seg.json").read_text())
    assert sidecar["outputs"]["seg_nrrd"] == "case_seg.seg.nrrd"
    assert sidecar["labels"][1]["color"] == [10, 200, 30] and sidecar["labels"][1]["type"]["code"] == "78961009"


def test_itksnap_slicer_tables_and_dicom_seg_carry_the_config_table(tmp_path: Path):
    import pydicom

    image, _ = blob_volume((18, 16, 8), (1.1, 1.0, 2.5), rotation(0.0, 0.0, 0.0))
    series = tmp_path / "series"
    write_dicom_series(series, image.astype(np.int16), (1.1, 1.0, 2.5), rotation(0.0, 0.0, 0.0), (0, 0, 0),
                       modality="CT")
    out = tmp_path / "out"
    summary = run_inference([str(series)], out, network=(_two_organ_net(), threshold_config(*TABLE)),
                            options=InferOptions(progress=False, output_formats=("dicom-seg", "seg-nrrd")))
    assert summary["done"] == 1 and summary["failed"] == []
    assert (out / "series_seg.seg.nrrd").is_file() and (out / "series_seg.dcm").is_file()

    itk = [line.split() for line in (out / "labels_itksnap.txt").read_text().splitlines() if not line.startswith("#")]
    assert [row[0] for row in itk] == ["0", "1", "2"]
    assert itk[1][1:4] == ["10", "200", "30"] and itk[1][-1] == '"spleen"' and itk[2][-1] == '"kidney_left"'
    slicer = [line.split() for line in (out / "labels_slicer.ctbl").read_text().splitlines() if not line.startswith("#")]
    assert slicer[1] == ["1", "spleen", "10", "200", "30", "255"]

    seg = pydicom.dcmread(out / "series_seg.dcm")
    by_label = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert by_label["spleen"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"
    assert by_label["kidney_left"].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Kidney"


def test_output_formats_are_checked_and_nifti_is_always_written(tmp_path: Path):
    with pytest.raises(ValueError, match=r"unknown output format\(s\) \['png'\]"):
        InferOptions(output_formats=("png",))
    assert InferOptions(output_formats=("seg-nrrd",)).output_formats == ("nifti", "seg-nrrd")

    image, affine = blob_volume((12, 12, 8), (1.0, 1.0, 2.0), "RAS")
    scan = save(tmp_path / "ct.nii.gz", image, affine)
    run_inference([str(scan)], tmp_path / "plain", network=(ThresholdNet(), threshold_config()),
                  options=InferOptions(progress=False))
    assert sorted(p.name for p in (tmp_path / "plain").glob("ct_*")) == ["ct_seg.json", "ct_seg.nii.gz"]


def test_command_line_output_format_choices(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "medt3d", "infer", "--help"], capture_output=True, text=True,
                            check=True)
    assert "--output-format" in result.stdout and "seg-nrrd" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "medt3d", "infer", str(tmp_path), "--output", str(tmp_path / "o"),
                          "--model", str(tmp_path / "m.pt"), "--output-format", "png"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'png'" in bad.stderr


def test_bundle_metadata_names_the_channels_and_carries_the_table(meta_schema: dict):
    import jsonschema

    from medt3d.bundle.docs import ModelFacts, build_metadata
    from medt3d.bundle.source import generic_source

    cfg = load_config(None, list(TABLE))
    metadata = build_metadata(generic_source(cfg), ModelFacts(cfg=cfg, parameters=1))
    jsonschema.validate(metadata, meta_schema)
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background", "1": "spleen", "2": "kidney_left"}
    assert metadata["label_table"] == label_table(cfg)
    assert metadata["label_table"][1]["color"] == [10, 200, 30]
