"""``--series-uid`` for ``infer`` and ``inspect`` (issue 35, item 4): one series out of a DICOM folder that
holds several; without it the folder is refused with a list of its series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_utils import write_dicom_series
from support import ThresholdNet, blob_volume, threshold_config

from medt3d.cli import main
from medt3d.inference.batch import InferOptions, run_inference

UID_A = "1.2.826.0.1.3680043.8.498.1001"
UID_B = "1.2.826.0.1.3680043.8.498.1002"


@pytest.fixture()
def two_series(tmp_path: Path) -> Path:
    """A folder holding two series of one blob: A (14 slices) and B (10 slices, shifted)."""
    image, _ = blob_volume((16, 16, 14), (1.0, 1.0, 2.0))
    folder = tmp_path / "study"
    write_dicom_series(folder, image.astype(np.int16), (1, 1, 2), np.eye(3), (0, 0, 0), series_uid=UID_A,
                       prefix="a_", modality="CT")
    write_dicom_series(folder, image[:, :, :10].astype(np.int16), (1, 1, 2), np.eye(3), (0, 0, 100),
                       series_uid=UID_B, prefix="b_", modality="CT")
    return folder


def test_infer_reads_the_series_it_is_told_and_refuses_the_folder_without_one(two_series: Path, tmp_path: Path):
    net = (ThresholdNet(), threshold_config())
    summary = run_inference([two_series], tmp_path / "none", network=net, options=InferOptions(progress=False))
    assert summary["exit_code"] == 1
    error = summary["failed"][0]["error"]
    assert "holds 2 DICOM series" in error and UID_A in error and UID_B in error and "--series-uid" in error

    options = InferOptions(progress=False, series_uid=UID_B, output_formats=("dicom-seg",))
    summary = run_inference([two_series], tmp_path / "b", network=net, options=options)
    assert summary["done"] == 1, summary["failed"]
    sidecar = json.loads((tmp_path / "b" / "study_seg.json").read_text())
    assert sidecar["shape"] == [16, 16, 10]
    seg = pydicom.dcmread(tmp_path / "b" / "study_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == UID_B


def test_the_infer_command_takes_series_uid(two_series: Path, tmp_path: Path, monkeypatch):
    import medt3d.commands.infer as infer

    seen = {}

    def fake(inputs, output, model=None, options=None):
        seen["uid"] = options.series_uid
        return {"done": 0, "skipped": 0, "n_failed": 0, "n_cases": 0, "output": str(output), "failed": [],
                "exit_code": 0}

    monkeypatch.setattr("medt3d.inference.batch.run_inference", fake)
    assert infer is not None
    assert main(["infer", str(two_series), "--model", "m.pt", "--output", str(tmp_path / "o"), "--series-uid",
                 UID_A]) == 0
    assert seen["uid"] == UID_A


def test_inspect_reads_the_series_it_is_told_and_lists_them_without_one(two_series: Path, capsys):
    assert main(["inspect", str(two_series), "--json"]) == 2
    err = capsys.readouterr().err
    assert "holds 2 DICOM series" in err and UID_A in err and UID_B in err and "--series-uid" in err
    assert main(["inspect", str(two_series), "--json", "--series-uid", UID_A]) == 0
    fp = json.loads(capsys.readouterr().out)["fingerprint"]
    assert fp["cases"][0]["shape"] == [16, 16, 14] and fp["cases"][0]["series_uid"] == UID_A
