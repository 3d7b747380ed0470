"""The readers registry: every format is one entry, and every header passes the one claims check."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import medt3d.data.readers.registry as registry
from medt3d.data.readers import FORMATS, KINDS, detect_kind, load_volume, read_header, strip_suffix
from medt3d.data.readers.common import VolumeInfo


def _nifti(path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([1.0, 2.0, 3.0, 1.0])), str(path))
    return path


def _nrrd(path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 5, 4), np.int16)), str(path))
    return path


def test_registry_lists_each_format_once_with_its_functions():
    assert KINDS == ("nifti", "nrrd", "dicom", "rtstruct")  # rtstruct: labels only (issue 32)
    for name, fmt in FORMATS.items():
        assert fmt.name == name and callable(fmt.detect) and callable(fmt.read_header) and callable(fmt.load)
    assert registry.supported() == ("NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), a folder holding one DICOM series or "
                                    "a DICOM RTSTRUCT file (labels only) beside or inside its series folder")
    assert registry.file_suffixes() == (".nii.gz", ".nii", ".nrrd", ".nhdr")
    assert strip_suffix("a/ct.NII.GZ") == "ct" and strip_suffix("b/seg.nhdr") == "seg"


@pytest.mark.parametrize("make, kind", [(lambda p: _nifti(p / "ct.nii.gz"), "nifti"),
                                        (lambda p: _nrrd(p / "ct.nrrd"), "nrrd")])
def test_every_header_passes_the_claims_check_before_loading(tmp_path, monkeypatch, make, kind):
    seen: list[VolumeInfo] = []
    monkeypatch.setattr(registry, "check_claims", lambda info, max_voxels=None: seen.append(info))
    path = make(tmp_path)
    assert detect_kind(path) == kind
    info = read_header(path)
    img = load_volume(path)
    assert [i.kind for i in seen] == [kind, kind] and seen[0].shape == info.shape
    assert tuple(img.shape) == (1, *info.shape[:3])


def test_a_refused_claim_stops_before_the_voxels_are_read(tmp_path, monkeypatch):
    def refuse(info: VolumeInfo, max_voxels: int | None = None) -> None:
        raise ValueError(f"{info.path}: claims too much")

    monkeypatch.setattr(registry, "check_claims", refuse)
    loaded = []
    fmt = FORMATS["nifti"]
    monkeypatch.setitem(FORMATS, "nifti", registry.ReaderFormat(
        fmt.name, fmt.description, fmt.suffixes, fmt.detect, fmt.read_header, lambda *a: loaded.append(a)))
    with pytest.raises(ValueError, match="claims too much"):
        load_volume(_nifti(tmp_path / "ct.nii"))
    assert not loaded


def test_the_old_module_still_serves_exported_bundles():
    import medt3d.data.io as old
    import medt3d.data.readers as readers

    assert old.LoadVolumed is readers.LoadVolumed and old.load_volume is readers.load_volume
