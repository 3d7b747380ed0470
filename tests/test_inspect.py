"""``medt3d inspect`` through the CLI entry point."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from medt3d.cli import main
from medt3d.data.phantoms import write_phantom_dataset

SHAPE = (24, 24, 16)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("inspect") / "phantoms", n_train=2, n_val=1, shape=SHAPE)


def _valid_png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas
    return pixels


def test_inspect_text_report_and_png(data, tmp_path, capsys):
    png = tmp_path / "out" / "overview.png"
    assert main(["inspect", str(data), "--config", "demo", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "3 case(s), layout split, modality CT" in out
    for name in ("phantom_000", "phantom_001", "phantom_002"):
        assert name in out
    assert "24x24x16" in out and "LPS" in out and "organ_c" in out
    assert "suggested config fragment" in out and "roi_size" in out and "window" in out
    assert f"overview PNG: {png}" in out
    pixels = _valid_png(png)
    # the mask overlay is coloured: some pixels are far from grey
    rgb = pixels[..., :3]
    assert float((rgb.max(axis=-1) - rgb.min(axis=-1)).max()) > 0.3
    assert not [p for p in png.parent.iterdir() if p.name != "overview.png"]  # no temp files left


def test_inspect_json(data, tmp_path, capsys):
    png = tmp_path / "o.png"
    assert main(["inspect", str(data), "--json", "--png", str(png), "--memory-gb", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    fp, plan = result["fingerprint"], result["plan"]
    assert fp["n_cases"] == 3 and fp["modality"] == "CT"
    assert [c["shape"] for c in fp["cases"]] == [list(SHAPE)] * 3
    assert set(fp["classes"]) == {"background", "class_1", "class_2", "class_3"}  # no config: generic names
    assert set(plan["preprocess"]) >= {"spacing", "window"} and len(plan["patch"]["roi_size"]) == 3
    assert result["png"] == str(png) and png.is_file()


def test_inspect_writes_its_png_only_into_a_folder_it_is_given(data, tmp_path, monkeypatch, capsys):
    """Issue 35: inspect wrote <case>_overview.png into the current folder without being asked."""
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", str(data)]) == 0
    assert "overview PNG" not in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.png"))
    assert main(["inspect", str(data), "--png-dir", str(tmp_path / "pngs")]) == 0
    assert f"overview PNG: {tmp_path / 'pngs' / 'phantoms_overview.png'}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.rglob("*.png")] == ["phantoms_overview.png"]
    assert main(["inspect", str(data), "--no-png"]) == 0
    assert main(["inspect", str(data), "--png-dir", "d", "--png", "f.png"]) == 2
    assert "pass one of them" in capsys.readouterr().err


def test_inspect_errors(tmp_path, data, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "medt3d inspect: error:" in capsys.readouterr().err
    assert main(["inspect", str(data), "--memory-gb", "0", "--no-png"]) == 2
    assert "--memory-gb" in capsys.readouterr().err


def test_inspect_reports_unreadable_case(tmp_path, capsys):
    data = write_phantom_dataset(tmp_path / "d", n_train=2, n_val=0, shape=SHAPE)
    # replace one mask by one on another grid: the case is reported, the other still fingerprinted
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)),
             data / "train" / "masks" / "phantom_001.nii.gz")
    rc = main(["inspect", str(data), "--no-png"])
    captured = capsys.readouterr()
    if rc == 2:  # the datalist's own header check caught it first: still one clear line naming the file
        assert "phantom_001.nii.gz" in captured.err
    else:
        assert rc == 1
        assert "could not be read" in captured.out and "phantom_001.nii.gz" in captured.out
        assert "phantom_000" in captured.out


@pytest.mark.shared_data
def test_inspect_spleen(shared_data, tmp_path, capsys):
    png = tmp_path / "spleen.png"
    assert main(["inspect", str(shared_data / "ct_spleen"), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "164x166x26" in out
    assert "0.795x0.795x5.000" in out
    assert "96,672" in out
    _valid_png(png)
    assert main(["inspect", str(shared_data / "ct_spleen"), "--json", "--no-png"]) == 0
    case = json.loads(capsys.readouterr().out)["fingerprint"]["cases"][0]
    assert case["shape"] == [164, 166, 26] and case["classes"]["1"] == 96672


def test_inspect_reports_label_values_outside_the_configs_classes_and_nan_voxels(data, tmp_path, capsys):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    mask = sorted((copy / "train" / "masks").glob("*.nii*"))[0]
    img = nib.load(mask)
    array = np.asarray(img.dataobj).copy()
    array[0, 0, 0] = 9  # a value the demo config (4 classes) does not have
    nib.save(nib.Nifti1Image(array, img.affine), mask)
    image = sorted((copy / "val" / "images").glob("*.nii*"))[0]
    img = nib.load(image)
    pixels = np.asarray(img.dataobj, dtype=np.float32)
    pixels[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(pixels, img.affine), image)
    code = main(["inspect", str(copy), "--config", "demo", "--json", "--no-png"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert set(result["fingerprint"]["classes"]) == {"background", "organ_a", "organ_b", "organ_c"}
    problems = result["fingerprint"]["problems"]
    assert any(f"{mask}: label values 9 are outside 0..3" in p for p in problems)
    assert any(f"{image}: 1 voxel(s) are NaN or Inf" in p for p in problems)


def test_inspect_takes_one_scan_a_dicom_series_or_unlabelled_images(tmp_path, monkeypatch, capsys):
    from dicom_utils import write_dicom_series
    from support import blob_volume, save

    image, affine = blob_volume((20, 18, 10), (1.0, 1.2, 2.0), "LPS")
    (tmp_path / "scans").mkdir()
    scan = save(tmp_path / "scans" / "abdomen_ct.nii.gz", image, affine)
    save(tmp_path / "scans" / "chest_ct.nii.gz", image[:, :, :8], affine)
    write_dicom_series(tmp_path / "series", image.astype(np.int16), (1.0, 1.2, 2.0), np.eye(3), (0, 0, 0),
                       modality="CT")
    monkeypatch.chdir(tmp_path)
    for source, names, shape in ((scan, ["abdomen"], "20x18x10"), (tmp_path / "series", ["series"], "20x18x10"),
                                 (tmp_path / "scans", ["abdomen", "chest"], "20x18x8")):
        assert main(["inspect", str(source), "--config", "demo", "--json", "--no-png"]) == 0, capsys.readouterr().err
        fp = json.loads(capsys.readouterr().out)["fingerprint"]
        assert [c["name"] for c in fp["cases"]] == names and fp["modality"] == "CT"
        assert "x".join(map(str, fp["cases"][-1]["shape"])) == shape
        assert all(c.get("label") is None for c in fp["cases"]) and fp["problems"] == []
    assert main(["inspect", str(scan), "--png-dir", "."]) == 0  # the overview is named after the scan
    assert "layout scan" in capsys.readouterr().out and (tmp_path / "abdomen_ct_overview.png").is_file()
    _valid_png(tmp_path / "abdomen_ct_overview.png")
