"""Dataset fingerprint and suggested plan, on phantoms and the real spleen CT."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from medt3d.config import CT_WINDOWS, config_from_dict, load_config
from medt3d.data.datalist import build_datalist
from medt3d.data.fingerprint import (
    PATCH_MULTIPLE,
    estimate_training_memory_gb,
    fingerprint_case,
    fingerprint_dataset,
    suggest_plan,
)
from medt3d.data.phantoms import make_phantom, write_phantom_dataset

SHAPE = (24, 24, 16)


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("fp") / "data", n_train=3, n_val=1, shape=SHAPE)


def test_fingerprint_case_matches_the_phantom(phantom_data):
    ph = make_phantom(3, shape=SHAPE)  # stored PLS: permuted and flipped axes
    case = {"name": ph.name, "image": str(phantom_data / "val" / "images" / f"{ph.name}.nii.gz"),
            "label": str(phantom_data / "val" / "masks" / f"{ph.name}.nii.gz")}
    fp = fingerprint_case(case)
    assert fp["name"] == ph.name
    assert fp["shape"] == list(ph.image.shape)
    assert fp["spacing"] == pytest.approx(ph.spacing, abs=1e-5)
    assert fp["orientation"] == ph.axcodes == "PLS"
    # in RAS order the first two axes swap back
    assert fp["ras_shape"] == [ph.image.shape[1], ph.image.shape[0], ph.image.shape[2]]
    assert fp["ras_spacing"] == pytest.approx([ph.spacing[1], ph.spacing[0], ph.spacing[2]], abs=1e-5)
    values, counts = np.unique(ph.label, return_counts=True)
    assert fp["classes"] == {str(v): int(c) for v, c in zip(values, counts)}
    assert fp["intensity"]["p50"] == pytest.approx(float(np.percentile(ph.image, 50)), abs=1e-3)
    assert fp["intensity"]["min"] == pytest.approx(float(ph.image.min()))
    fg = ph.image[ph.label > 0]
    assert fp["foreground_intensity"]["p99.5"] == pytest.approx(float(np.percentile(fg, 99.5)), abs=1e-3)


def test_fingerprint_dataset_summary(phantom_data):
    datalist = build_datalist(phantom_data)
    fp = fingerprint_dataset(datalist, labels=load_config("demo").data.labels, progress=False)
    assert fp["n_cases"] == 4 and not fp["problems"]
    assert fp["layout"] == "split"
    assert fp["modality"] == "CT"  # guessed from air in HU
    phantoms = [make_phantom(i, shape=SHAPE) for i in range(4)]
    ras_spacings = [sorted(ph.spacing[:2]) + [ph.spacing[2]] for ph in phantoms]  # in-plane spacing is equal
    assert fp["median_spacing"] == pytest.approx(np.median(ras_spacings, axis=0).tolist(), abs=1e-5)
    assert fp["median_shape"] == [24, 24, 16]
    assert list(fp["classes"]) == ["background", "organ_a", "organ_b", "organ_c"]
    total = sum(int(ph.label.size) for ph in phantoms)
    for value, c in enumerate(fp["classes"].values()):
        assert c["voxels"] == sum(int((ph.label == value).sum()) for ph in phantoms)
        assert c["fraction"] == pytest.approx(c["voxels"] / total)
        assert c["cases"] == 4
    assert sum(c["fraction"] for c in fp["classes"].values()) == pytest.approx(1.0)
    assert sum(c["foreground_fraction"] for c in list(fp["classes"].values())[1:]) == pytest.approx(1.0)
    fg = fp["foreground_intensity"]
    assert fg["p0.5"] < fg["p50"] < fg["p99.5"]
    assert 0 < fg["p50"] < 150  # organs are soft tissue in HU


def test_unreadable_cases_are_listed_and_others_kept(tmp_path, phantom_data):
    good = {"name": "good", "image": str(phantom_data / "train" / "images" / "phantom_000.nii.gz"),
            "label": str(phantom_data / "train" / "masks" / "phantom_000.nii.gz")}
    other_grid = tmp_path / "other_grid.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), other_grid)
    bad = {**good, "name": "bad", "label": str(other_grid)}
    missing = {**good, "name": "missing", "image": str(tmp_path / "nope.nii.gz")}
    fp = fingerprint_dataset([good, bad, missing], progress=False)
    assert [c["name"] for c in fp["cases"]] == ["good"]
    assert len(fp["problems"]) == 2
    assert any("other_grid.nii.gz" in p and "grid" in p for p in fp["problems"])
    assert any("nope.nii.gz" in p for p in fp["problems"])
    with pytest.raises(ValueError, match="none of the 2"):
        fingerprint_dataset([bad, missing], progress=False)


def test_non_integer_label_is_a_problem(tmp_path):
    image, label = tmp_path / "i.nii.gz", tmp_path / "l.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), image)
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 0.5, np.float32), np.eye(4)), label)
    with pytest.raises(ValueError, match=r"l\.nii\.gz.*0\.5"):
        fingerprint_case({"image": str(image), "label": str(label)})


def test_mr_is_guessed_and_gets_no_window(tmp_path):
    rng = np.random.default_rng(0)
    cases = []
    for i in range(2):
        arr = np.zeros((20, 20, 20), np.float32)
        arr[4:16, 4:16, 4:16] = rng.uniform(100, 800, size=(12, 12, 12))
        path = tmp_path / f"mr{i}.nii.gz"
        nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 1.2, 1.0])), path)
        cases.append({"name": f"mr{i}", "image": str(path)})
    fp = fingerprint_dataset(cases, progress=False)
    assert fp["modality"] == "MR"
    assert fp["classes"] == {} and fp["foreground_intensity"] == {}
    plan = suggest_plan(fp)
    assert "window" not in plan["preprocess"]
    assert plan["preprocess"]["spacing"] == [1.0, 1.0, 1.2]


def _synthetic_fp(spacings, shapes, modality="CT", fg=None):
    return {
        "modality": modality,
        "spacings": [list(s) for s in spacings],
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_shape": np.median(shapes, axis=0).tolist(),
        "cases": [{"ras_shape": list(sh), "ras_spacing": list(sp)} for sh, sp in zip(shapes, spacings)],
        "foreground_intensity": fg or {},
    }


def test_plan_spacing_median_and_anisotropic_rule():
    iso = _synthetic_fp([(1.0, 1.0, 1.0), (1.2, 1.2, 1.4), (0.8, 0.8, 1.0)], [(100, 100, 100)] * 3)
    assert suggest_plan(iso)["preprocess"]["spacing"] == [1.0, 1.0, 1.0]
    # z is >= 3x the in-plane spacing: resample z to its 10th percentile, finer than the median
    zs = [5.0, 5.0, 5.0, 2.5, 3.0, 5.0, 5.0, 4.0, 5.0, 5.0]
    aniso = _synthetic_fp([(0.8, 0.8, z) for z in zs], [(200, 200, 40)] * len(zs))
    spacing = suggest_plan(aniso)["preprocess"]["spacing"]
    assert spacing[:2] == [0.8, 0.8]
    assert spacing[2] == pytest.approx(np.percentile(zs, 10), abs=1e-3) and spacing[2] < np.median(zs)


def test_plan_patch_fits_memory_budget():
    fp = _synthetic_fp([(1.0, 1.0, 1.0)] * 3, [(300, 300, 200)] * 3)
    cfg = load_config(None)
    patches = cfg.train.batch_size * cfg.patch.num_samples
    big = suggest_plan(fp, memory_budget_gb=16)["patch"]["roi_size"]
    small = suggest_plan(fp, memory_budget_gb=2)["patch"]["roi_size"]
    for roi, budget in ((big, 16), (small, 2)):
        assert all(r % PATCH_MULTIPLE == 0 and r >= PATCH_MULTIPLE for r in roi)
        assert estimate_training_memory_gb(roi, patches) <= budget
        # the next larger patch along any axis would not fit (the budget is used, not wasted)
        assert any(estimate_training_memory_gb([r + PATCH_MULTIPLE if i == j else r for j, r in enumerate(roi)],
                                               patches) > budget for i in range(3))
    assert math.prod(small) < math.prod(big)
    # small volumes: the patch is the volume rounded up, not more
    tiny = _synthetic_fp([(1.0, 1.0, 1.0)] * 2, [(40, 50, 20)] * 2)
    assert suggest_plan(tiny)["patch"]["roi_size"] == [48, 64, 32]
    # more patches per step -> smaller patch
    more = load_config(None, ["train.batch_size=8"])
    assert math.prod(suggest_plan(fp, memory_budget_gb=16, cfg=more)["patch"]["roi_size"]) < math.prod(big)
    with pytest.raises(ValueError, match="memory budget"):
        suggest_plan(fp, memory_budget_gb=0)


def test_plan_ct_window_spans_foreground_and_is_valid_config():
    fp = _synthetic_fp([(1.0, 1.0, 1.0)], [(64, 64, 64)], fg={"p0.5": -20.0, "p50": 80.0, "p99.5": 180.0})
    plan = suggest_plan(fp)
    width, level = plan["preprocess"]["window"]
    assert (level - width / 2, level + width / 2) == (-20.0, 180.0)
    assert plan["preprocess"]["ct_window"] in CT_WINDOWS
    cfg = config_from_dict(plan)  # a valid config fragment
    assert list(cfg.patch.roi_size) == plan["patch"]["roi_size"]
    assert cfg.preprocess.window == (200.0, 80.0)


@pytest.mark.shared_data
def test_spleen_fingerprint(shared_data):
    datalist = build_datalist(shared_data / "ct_spleen")
    fp = fingerprint_dataset(datalist, progress=False)
    assert fp["n_cases"] == 1 and not fp["problems"]
    case = fp["cases"][0]
    assert case["name"] == "spleen_2"
    assert case["shape"] == [164, 166, 26]
    assert case["spacing"] == pytest.approx([0.795, 0.795, 5.0], abs=1e-3)
    assert case["orientation"] == "RAS"
    assert case["classes"]["1"] == 96672
    assert case["classes"]["0"] == 164 * 166 * 26 - 96672
    assert case["intensity"]["min"] == pytest.approx(-1019) and case["intensity"]["max"] == pytest.approx(949)
    assert fp["modality"] == "CT"
    # spleen is soft tissue: its HU percentiles lie in a soft-tissue range
    fg = fp["foreground_intensity"]
    assert -100 < fg["p0.5"] < fg["p50"] < fg["p99.5"] < 250
    plan = suggest_plan(fp)
    assert plan["preprocess"]["spacing"] == pytest.approx([0.795, 0.795, 5.0], abs=1e-3)
