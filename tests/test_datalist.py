"""Datalists: every layout, every problem reported together, seeded split, header-only pair checks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_utils import rotation, write_dicom_series

from medt3d.data.datalist import (
    Datalist,
    DatasetError,
    build_datalist,
    case_name,
    check_pairs,
    split_cases,
)

SHAPE = (8, 7, 6)


def _nifti(path: Path, shape=SHAPE, affine=None, label: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, np.uint8) if label else np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 2.0, 1.0]) if affine is None else affine), str(path))
    return path


def _nrrd(path: Path, shape=SHAPE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.zeros(shape[::-1], np.int16))
    img.SetSpacing((0.9, 0.9, 2.0))
    # LPS direction that equals the RAS diag(0.9, 0.9, 2) NIfTI grid above once converted
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(path))
    return path


def _dicom(folder: Path, series_uid: str | None = None, prefix: str = "") -> Path:
    # LPS direction diag(-1, -1, 1) = RAS diag(1, 1, 1): the grid of the NIfTI files above
    write_dicom_series(folder, np.zeros(SHAPE, np.int16), (0.9, 0.9, 2.0), rotation(0, 0, 180), (0, 0, 0),
                       series_uid=series_uid, prefix=prefix)
    return folder


def _names(cases: list[dict]) -> list[str]:
    return [c["name"] for c in cases]


# ---------------------------------------------------------------------------------------------- layouts


def test_case_names() -> None:
    assert case_name("spleen_2_ct.nii.gz") == "spleen_2"
    assert case_name("spleen_2_label.nii.gz", "label") == "spleen_2"
    assert case_name("/x/case_007_0000.nii.gz") == "case_007"
    assert case_name("brain_MASK.nrrd", "label") == "brain"
    assert case_name("series_folder") == "series_folder"
    assert case_name("_ct.nii.gz") == "_ct"  # nothing left once stripped: keep the name


def test_split_layout(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    _nifti(root / "train" / "images" / "case1.nii.gz")
    _nifti(root / "train" / "masks" / "case1.nii.gz", label=True)
    _nrrd(root / "train" / "images" / "case2_0000.nrrd")
    _nifti(root / "train" / "masks" / "case2_mask.nii.gz", label=True)
    _dicom(root / "train" / "images" / "case3")
    _nifti(root / "train" / "masks" / "case3.nii.gz", label=True)
    _nifti(root / "val" / "images" / "case4_ct.nii.gz")
    _nifti(root / "val" / "labels" / "case4_seg.nii.gz", label=True)
    dl = build_datalist(root)
    assert dl.layout == "split" and dl.root == root
    assert _names(dl.train) == ["case1", "case2", "case3"]
    assert dl.train[1] == {"name": "case2", "image": str(root / "train/images/case2_0000.nrrd"),
                           "label": str(root / "train/masks/case2_mask.nii.gz")}
    assert dl.train[2]["image"] == str(root / "train" / "images" / "case3")
    assert _names(dl.val) == ["case4"]
    assert dl.val[0]["label"] == str(root / "val" / "labels" / "case4_seg.nii.gz")
    assert dl.labels is None and dl.modality is None
    check_pairs(dl.cases)  # NIfTI, NRRD and DICOM on one grid


def test_the_split_layout_reads_its_test_folder(tmp_path: Path) -> None:
    """D8 (issue 35): DATA/test/ was ignored in the train/val layout."""
    root = tmp_path / "DATA"
    _nifti(root / "train" / "images" / "case1.nii.gz")
    _nifti(root / "train" / "masks" / "case1.nii.gz", label=True)
    _nifti(root / "test" / "images" / "case5.nii.gz")
    _nifti(root / "test" / "masks" / "case5.nii.gz", label=True)
    _nifti(root / "test" / "images" / "case6.nii.gz")  # a test image without a mask is kept, unlabelled
    dl = build_datalist(root)
    assert dl.layout == "split" and _names(dl.train) == ["case1"] and dl.val == []
    assert _names(dl.test) == ["case5", "case6"]
    assert dl.test[0]["label"] == str(root / "test" / "masks" / "case5.nii.gz") and "label" not in dl.test[1]
    _nifti(root / "test" / "images" / "case1.nii.gz")  # one name in train and test is refused
    with pytest.raises(DatasetError, match="case1"):
        build_datalist(root)


def test_folders_layout_without_split(tmp_path: Path) -> None:
    _nifti(tmp_path / "images" / "a.nii.gz")
    _nifti(tmp_path / "labels" / "a.nii.gz", label=True)
    _nifti(tmp_path / "images" / "b.nii")
    _nifti(tmp_path / "labels" / "b.nii", label=True)
    dl = build_datalist(tmp_path)
    assert dl.layout == "folders" and _names(dl.train) == ["a", "b"] and dl.val == []


def test_msd_dataset_json(tmp_path: Path) -> None:
    for name in ("spleen_10", "spleen_2"):
        _nifti(tmp_path / "imagesTr" / f"{name}.nii.gz")
        _nifti(tmp_path / "labelsTr" / f"{name}.nii.gz", label=True)
    (tmp_path / "imagesTr" / "._spleen_2.nii.gz").write_bytes(b"macOS resource fork")  # as shipped by MSD
    meta = {
        "name": "Spleen",
        "modality": {"0": "CT"},
        "labels": {"1": "spleen", "0": "background"},
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                     for n in ("spleen_2", "spleen_10")],
        "test": ["./imagesTs/spleen_1.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for source in (tmp_path, tmp_path / "dataset.json"):
        dl = build_datalist(source)
        assert dl.layout == "msd" and dl.root == tmp_path
        assert dl.labels == ["background", "spleen"] and dl.modality == "CT"
        assert _names(dl.train) == ["spleen_10", "spleen_2"] and dl.val == []
        assert dl.train[1]["image"] == str(tmp_path / "imagesTr" / "spleen_2.nii.gz")
        assert dl.test == []  # imagesTs/ left out of this copy: a warning, not a problem
    _nifti(tmp_path / "imagesTs" / "spleen_1.nii.gz")
    assert [c["name"] for c in build_datalist(tmp_path).test] == ["spleen_1"]
    meta["modality"] = {"0": "FLAIR", "1": "T1w"}
    meta["validation"] = [meta["training"].pop()]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    dl = build_datalist(tmp_path)
    assert dl.modality == "FLAIR, T1w" and _names(dl.train) == ["spleen_2"] and _names(dl.val) == ["spleen_10"]


def test_flat_layout_with_suffixes(tmp_path: Path) -> None:
    _nifti(tmp_path / "spleen_2_ct.nii.gz")
    _nifti(tmp_path / "spleen_2_label.nii.gz", label=True)
    _nifti(tmp_path / "liver_img.nii.gz")
    _nifti(tmp_path / "liver_seg.nii.gz", label=True)
    _dicom(tmp_path / "knee")
    _nifti(tmp_path / "knee_mask.nii.gz", label=True)
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    dl = build_datalist(tmp_path)
    assert dl.layout == "flat"
    assert [(c["name"], Path(c["image"]).name, Path(c["label"]).name) for c in dl.train] == [
        ("knee", "knee", "knee_mask.nii.gz"),
        ("liver", "liver_img.nii.gz", "liver_seg.nii.gz"),
        ("spleen_2", "spleen_2_ct.nii.gz", "spleen_2_label.nii.gz"),
    ]


def test_explicit_json_with_series_uid_and_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dicom(tmp_path / "dcm", series_uid="1.2.840.1", prefix="a")
    _dicom(tmp_path / "dcm", series_uid="1.2.840.2", prefix="b")
    _nifti(tmp_path / "lab" / "x.nii.gz", label=True)
    _nifti(tmp_path / "img" / "y.nii.gz")
    _nifti(tmp_path / "lab" / "y.nii.gz", label=True)
    spec = {
        "train": [{"name": "x", "image": "dcm", "label": "lab/x.nii.gz", "series_uid": "1.2.840.2"}],
        "val": [{"image": "img/y.nii.gz", "label": str(tmp_path / "lab" / "y.nii.gz")}],
        "labels": ["background", "bone"],
    }
    (tmp_path / "list.json").write_text(json.dumps(spec))
    dl = build_datalist(tmp_path / "list.json")
    assert dl.layout == "json" and dl.labels == ["background", "bone"]
    assert dl.train == [{"name": "x", "image": str(tmp_path / "dcm"), "label": str(tmp_path / "lab" / "x.nii.gz"),
                         "series_uid": "1.2.840.2"}]
    assert _names(dl.val) == ["y"]
    check_pairs(dl.cases)
    saved = dl.save(tmp_path / "out" / "datalist.json")
    again = build_datalist(saved)
    assert (again.train, again.val, again.labels) == (dl.train, dl.val, dl.labels)
    monkeypatch.chdir(tmp_path)
    relative = build_datalist("list.json")
    assert relative.train == dl.train and relative.root == tmp_path
    (tmp_path / "plain.json").write_text(json.dumps([{"image": "img/y.nii.gz", "label": "lab/y.nii.gz"}]))
    assert _names(build_datalist(tmp_path / "plain.json").train) == ["y"]


def test_images_only_when_labels_are_not_required(tmp_path: Path) -> None:
    _nifti(tmp_path / "images" / "a.nii.gz")
    _nifti(tmp_path / "images" / "b.nii.gz")
    with pytest.raises(DatasetError, match="no masks/ or labels/ folder"):
        build_datalist(tmp_path)
    dl = build_datalist(tmp_path, require_labels=False)
    assert dl.train == [{"name": "a", "image": str(tmp_path / "images" / "a.nii.gz")},
                        {"name": "b", "image": str(tmp_path / "images" / "b.nii.gz")}]


# ---------------------------------------------------------------------------------------------- problems


def test_every_folder_problem_is_reported_together(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    tr = root / "train"
    _nifti(tr / "images" / "ok.nii.gz")
    _nifti(tr / "masks" / "ok.nii.gz", label=True)
    _nifti(tr / "images" / "nomask.nii.gz")  # image without a mask
    _nifti(tr / "masks" / "orphan.nii.gz", label=True)  # mask without an image
    _nifti(tr / "images" / "dup.nii.gz")  # duplicate names
    _nrrd(tr / "images" / "dup.nrrd")
    _nifti(tr / "masks" / "dup.nii.gz", label=True)
    _dicom(tr / "images" / "two", series_uid="1.2.3.4.1", prefix="a")  # two series
    _dicom(tr / "images" / "two", series_uid="1.2.3.4.2", prefix="b")
    _nifti(tr / "masks" / "two.nii.gz", label=True)
    (tr / "images" / "notes.txt").write_text("stray")  # not an image
    (root / "val" / "images").mkdir(parents=True)  # empty folder
    (root / "val" / "masks").mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        build_datalist(root)
    problems = err.value.problems
    text = str(err.value)
    expected = [
        f"image without a label: {tr / 'images' / 'nomask.nii.gz'}",
        f"label without an image: {tr / 'masks' / 'orphan.nii.gz'}",
        f"duplicate case name 'dup' among images: {tr / 'images' / 'dup.nii.gz'}, {tr / 'images' / 'dup.nrrd'}",
        f"not a NIfTI file, NRRD file or DICOM series folder: {tr / 'images' / 'notes.txt'}",
        f"empty folder: {root / 'val' / 'images'}",
        f"empty folder: {root / 'val' / 'masks'}",
        f"{tr / 'images' / 'two'} holds 2 DICOM series",
    ]
    for piece in expected:
        assert sum(piece in p for p in problems) == 1, (piece, problems)
    assert "1.2.3.4.1" in text and "1.2.3.4.2" in text and "series_uid" in text
    assert len(problems) == len(expected)
    assert text.startswith(f"{len(expected)} problem(s) in {root}; fix each one below")


def test_flat_and_json_problems(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    _nifti(flat / "a_pet.nii.gz")
    _nifti(flat / "a_label.nii.gz", label=True)
    with pytest.raises(DatasetError) as err:
        build_datalist(flat)
    assert len(err.value.problems) == 2
    assert f"label without an image: {flat / 'a_label.nii.gz'}" in str(err.value)
    assert f"image without a label: {flat / 'a_pet.nii.gz'}" in str(err.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=f"empty folder: {tmp_path / 'empty'}"):
        build_datalist(tmp_path / "empty")

    _nifti(tmp_path / "d" / "i.nii.gz")
    _nifti(tmp_path / "d" / "l.nii.gz", label=True)
    spec = {
        "train": [
            {"image": "d/i.nii.gz", "label": "d/l.nii.gz"},
            {"image": "d/missing.nii.gz", "label": "d/l.nii.gz"},
            {"image": "d/i.nii.gz"},
            "d/i.nii.gz",
            42,
            {"label": "d/l.nii.gz"},
        ],
        "val": [{"image": "d/i.nii.gz", "label": "d/l.nii.gz"}],
    }
    (tmp_path / "list.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError) as err:
        build_datalist(tmp_path / "list.json")
    text = str(err.value)
    assert f"image of case 'missing' not found: {tmp_path / 'd' / 'missing.nii.gz'}" in text
    assert f"train[2]: image without a label: {tmp_path / 'd' / 'i.nii.gz'}" in text
    assert f"train[3]: image without a label: {tmp_path / 'd' / 'i.nii.gz'}" in text
    assert "train[4] must be an object" in text
    assert 'train[5] has no "image" path' in text
    assert "duplicate case name 'i' in train" in text
    assert "case 'i' is in both train and val" in text

    (tmp_path / "bad.json").write_text('{"train": [\n  {"image": }\n]}')
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON: .* line 2"):
        build_datalist(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text('{"cases": []}')
    with pytest.raises(ValueError, match=r"odd\.json: expected a list of cases"):
        build_datalist(tmp_path / "odd.json")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_datalist(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"i\.nii\.gz is a single scan without a label"):
        build_datalist(tmp_path / "d" / "i.nii.gz")


def test_msd_bad_labels(tmp_path: Path) -> None:
    _nifti(tmp_path / "i.nii.gz")
    _nifti(tmp_path / "l.nii.gz", label=True)
    meta = {"labels": {"0": "background", "2": "tumour"}, "training": [{"image": "i.nii.gz", "label": "l.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"dataset\.json: \"labels\" keys must be 0\.\.1, got \[0, 2\]"):
        build_datalist(tmp_path)


def test_check_pairs_reports_every_bad_case(tmp_path: Path) -> None:
    good = {"name": "good", "image": str(_nifti(tmp_path / "g.nii.gz")),
            "label": str(_nifti(tmp_path / "g_label.nii.gz", label=True))}
    shape = {"name": "shape", "image": str(_nifti(tmp_path / "s.nii.gz")),
             "label": str(_nifti(tmp_path / "s_label.nii.gz", shape=(8, 7, 5), label=True))}
    moved = np.diag([0.9, 0.9, 2.0, 1.0])
    moved[2, 3] = 4.0
    geom = {"name": "geom", "image": str(_nifti(tmp_path / "m.nii.gz")),
            "label": str(_nifti(tmp_path / "m_label.nii.gz", affine=moved, label=True))}
    flat = {"name": "flat", "image": str(_nifti(tmp_path / "f.nii.gz", shape=(8, 7))),
            "label": str(_nifti(tmp_path / "f_label.nii.gz", shape=(8, 7), label=True))}
    (tmp_path / "c.nii.gz").write_bytes(b"garbage" * 10)
    corrupt = {"name": "corrupt", "image": str(tmp_path / "c.nii.gz"), "label": good["label"]}
    check_pairs([good])
    with pytest.raises(DatasetError) as err:
        check_pairs([good, shape, geom, flat, corrupt])
    problems = err.value.problems
    assert len(problems) == 5, problems  # flat: image and label both 2-D
    assert "case 'shape': image and label differ: shape 8x7x6 of" in problems[0] and "s_label.nii.gz" in problems[0]
    assert "case 'geom': image and label differ: affine of" in problems[1] and "by up to 4 mm" in problems[1]
    assert f"{tmp_path / 'f.nii.gz'} is a 2-D image" in problems[2]
    assert f"{tmp_path / 'f_label.nii.gz'} is a 2-D image" in problems[3]
    assert "case 'corrupt'" in problems[4] and str(tmp_path / "c.nii.gz") in problems[4]


# ---------------------------------------------------------------------------------------------- split


def test_split_cases_is_seeded_and_order_free() -> None:
    cases = [{"name": f"case{i:02d}", "image": f"{i}.nii.gz"} for i in range(10)]
    train, val = split_cases(cases, 0.2, seed=7)
    assert len(val) == 2 and len(train) == 8
    assert {c["name"] for c in train} | {c["name"] for c in val} == {c["name"] for c in cases}
    assert not {c["name"] for c in train} & {c["name"] for c in val}
    assert split_cases(list(reversed(cases)), 0.2, seed=7) == (train, val)
    assert len({tuple(_names(split_cases(cases, 0.2, seed=s)[1])) for s in range(10)}) > 1
    assert split_cases(cases, 0.0, seed=0) == (cases, [])
    assert len(split_cases(cases[:2], 0.01, seed=0)[1]) == 1  # at least one validation case
    assert len(split_cases(cases[:2], 0.9, seed=0)[0]) == 1  # at least one training case
    with pytest.raises(ValueError, match="val_fraction"):
        split_cases(cases, 1.0, seed=0)
    with pytest.raises(ValueError, match="need at least 2"):
        split_cases(cases[:1], 0.2, seed=0)


# ---------------------------------------------------------------------------------------------- real scans


@pytest.mark.shared_data
def test_shared_ct_spleen_is_one_flat_case(shared_data: Path) -> None:
    dl = build_datalist(shared_data / "ct_spleen")
    assert isinstance(dl, Datalist) and dl.layout == "flat"
    assert dl.train == [{"name": "spleen_2", "image": str(shared_data / "ct_spleen" / "spleen_2_ct.nii.gz"),
                         "label": str(shared_data / "ct_spleen" / "spleen_2_label.nii.gz")}]
    check_pairs(dl.train)
