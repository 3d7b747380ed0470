"""The outputs registry: one entry per output file, the same formats as the config's list."""

from __future__ import annotations

from pathlib import Path

from medt3d.config import OUTPUT_FORMATS
from medt3d.inference.batch import InferOptions
from medt3d.inference.outputs import OUTPUTS, case_outputs, selectable_formats


def test_the_registry_and_the_configs_list_of_formats_agree():
    # config.py cannot import inference (layers contract): its tuple is checked here instead
    assert selectable_formats() == OUTPUT_FORMATS
    assert InferOptions(output_formats=("dicom-seg",)).output_formats == ("nifti", "dicom-seg")


def test_each_output_has_its_own_key_and_suffix():
    keys = [f.key for f in OUTPUTS.values()]
    suffixes = [f.suffix for f in OUTPUTS.values()]
    assert len(set(keys)) == len(keys) and len(set(suffixes)) == len(suffixes)
    assert [name for name, f in OUTPUTS.items() if f.needs_dicom] == ["dicom-seg", "rtstruct"]
    paths = case_outputs(Path("out"), "ct")
    assert {k: p.name for k, p in paths.items()} == {
        "label": "ct_seg.nii.gz", "probabilities": "ct_probs.nii.gz", "seg_nrrd": "ct_seg.seg.nrrd",
        "dicom_seg": "ct_seg.dcm", "rtstruct": "ct_rtstruct.dcm", "sidecar": "ct_seg.json"}
