"""Transform pipelines built from the config, on small real NIfTI files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.transforms import (
    CropForegroundd,
    RandAffined,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
)

from medt3d.config import CT_WINDOWS, load_config
from medt3d.data.datasets import build_dataset
from medt3d.data.phantoms import make_phantom
from medt3d.data.transforms import (
    CheckLabelValuesd,
    build_infer_transforms,
    build_postprocessing,
    build_train_transforms,
    build_val_transforms,
    intensity_transform,
    unwrap_transform_error,
    window_bounds,
)

NO_AUG = [f"augment.{k}=false" for k in ("flip", "rotate90", "affine", "intensity_shift", "intensity_scale", "noise")]


def cfg_(*overrides: str, base: str | None = None):
    return load_config(base, overrides=list(overrides))


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


def lps_affine(spacing=(1.0, 1.0, 3.0), origin=(10.0, 20.0, -5.0)) -> np.ndarray:
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = origin
    return aff


def block_case(tmp_path: Path, shape=(20, 18, 10), block=(slice(6, 14), slice(5, 13), slice(3, 7)),
               affine=None, image_fill=(-1000.0, 40.0), label_value=1, name="case") -> dict:
    """An image with a body block (HU) in air and a label on a sub-block of it."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    image = np.full(shape, image_fill[0], np.float32)
    image[block] = image_fill[1]
    label = np.zeros(shape, np.uint8)
    inner = tuple(slice(s.start + 1, s.stop - 1) for s in block)
    label[inner] = label_value
    return {"name": name,
            "image": save(tmp_path / f"{name}_img.nii.gz", image, affine),
            "label": save(tmp_path / f"{name}_lbl.nii.gz", label, affine)}


# ------------------------------------------------------------------------------------ geometry


def test_orientation_and_spacing_are_applied(tmp_path):
    case = block_case(tmp_path, affine=lps_affine(spacing=(1.0, 1.0, 3.0)))
    cfg = cfg_("preprocess.spacing=[2.0, 2.0, 1.5]", "preprocess.orientation=RAS", "data.labels=[bg, fg]")
    out = build_val_transforms(cfg)(case)
    for key in ("image", "label"):
        affine = np.asarray(out[key].affine)
        assert "".join(nib.aff2axcodes(affine)) == "RAS"
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (2.0, 2.0, 1.5), atol=1e-6)
    # the physical extent is kept to within one new voxel (20 x 1 mm -> about 10 x 2 mm, ...)
    for n_out, new, n_in, old in zip(out["image"].shape[1:], (2.0, 2.0, 1.5), (20, 18, 10), (1.0, 1.0, 3.0)):
        assert abs((n_out - 1) * new - (n_in - 1) * old) <= new
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}  # nearest: no blended label values
    # orientation only, keeping the spacing
    cfg = cfg_("preprocess.spacing=null", "preprocess.orientation=LPI")
    out = build_val_transforms(cfg)(case)
    assert "".join(nib.aff2axcodes(np.asarray(out["image"].affine))) == "LPI"
    assert tuple(out["image"].shape[1:]) == (20, 18, 10)


@pytest.mark.parametrize("preset", sorted(CT_WINDOWS))
def test_ct_window_presets_map_window_to_unit_range(preset):
    width, level = CT_WINDOWS[preset]
    cfg = cfg_(f"preprocess.ct_window={preset}")
    assert window_bounds(cfg) == pytest.approx((level - width / 2, level + width / 2))
    values = torch.tensor([level - width / 2, level, level + width / 2, level - width, level + width, -3000.0])
    out = intensity_transform(cfg)({"image": values.reshape(1, 6, 1, 1)})["image"].flatten()
    np.testing.assert_allclose(out.numpy(), [0.0, 0.5, 1.0, 0.0, 1.0, 0.0], atol=1e-6)


def test_explicit_window_overrides_preset():
    cfg = cfg_("preprocess.ct_window=lung", "preprocess.window=[200, 100]")
    assert window_bounds(cfg) == (0.0, 200.0)
    values = torch.tensor([0.0, 50.0, 100.0, 200.0, 250.0]).reshape(1, 5, 1, 1)
    out = intensity_transform(cfg)({"image": values})["image"].flatten()
    np.testing.assert_allclose(out.numpy(), [0.0, 0.25, 0.5, 1.0, 1.0], atol=1e-6)


def test_mr_zscore_over_nonzero_voxels():
    cfg = cfg_(base="mri")
    rng = np.random.default_rng(0)
    image = np.zeros((1, 12, 12, 12), np.float32)
    image[:, 3:9, 2:10, 4:11] = rng.normal(300.0, 40.0, size=(1, 6, 8, 7))
    out = intensity_transform(cfg)({"image": torch.from_numpy(image)})["image"].numpy()
    nonzero = image != 0
    assert abs(out[nonzero].mean()) < 1e-4 and abs(out[nonzero].std() - 1.0) < 1e-3
    assert np.all(out[~nonzero] == 0)


def test_foreground_crop_shrinks_padded_volume(tmp_path):
    case = block_case(tmp_path)  # body block 8 x 8 x 4 in a 20 x 18 x 10 air volume, 1 mm
    common = ["preprocess.spacing=null"]
    full = build_val_transforms(cfg_(*common))(case)
    cropped = build_val_transforms(cfg_(*common, "preprocess.crop_foreground=true"))(case)
    assert tuple(full["image"].shape[1:]) == (20, 18, 10)
    assert tuple(cropped["image"].shape[1:]) == (8, 8, 4)
    assert tuple(cropped["label"].shape[1:]) == (8, 8, 4)
    assert int(cropped["label"].sum()) == int(full["label"].sum())  # the label lies inside the body
    # MR: crop to nonzero voxels
    mr = block_case(tmp_path, image_fill=(0.0, 500.0), name="mr")
    out = build_val_transforms(cfg_("preprocess.crop_foreground=true", base="mri"))(mr)
    assert tuple(out["image"].shape[1:]) == (8, 8, 4)  # mri preset is 1 mm, like the file


# ------------------------------------------------------------------------------------ patches


def _sample(cfg, case, n):
    transform = build_train_transforms(cfg)
    patches = []
    for seed in range(n):
        transform.set_random_state(seed=seed)
        patches += transform(case)
    return patches


def _centre(t: torch.Tensor) -> float:
    _, x, y, z = t.shape
    return float(t[0, x // 2, y // 2, z // 2])


def test_patches_respect_roi_and_pos_neg(tmp_path):
    case = block_case(tmp_path, shape=(32, 32, 24), block=(slice(8, 24), slice(8, 24), slice(6, 18)))
    base = [*NO_AUG, "preprocess.spacing=null", "patch.roi_size=[8, 8, 8]", "patch.num_samples=3"]
    pos = _sample(cfg_(*base, "patch.pos=1", "patch.neg=0"), case, 4)
    assert len(pos) == 12
    assert all(tuple(p["image"].shape) == (1, 8, 8, 8) and tuple(p["label"].shape) == (1, 8, 8, 8) for p in pos)
    assert all(_centre(p["label"]) == 1 for p in pos)
    neg = _sample(cfg_(*base, "patch.pos=0", "patch.neg=1"), case, 4)
    assert all(_centre(p["label"]) == 0 for p in neg)


def test_class_ratio_sampling(tmp_path):
    shape = (32, 32, 24)
    label = np.zeros(shape, np.uint8)
    label[6:14, 6:14, 6:18] = 1
    label[18:26, 18:26, 6:18] = 2
    image = np.full(shape, 40.0, np.float32)
    case = {"image": save(tmp_path / "i.nii.gz", image, np.eye(4)), "label": save(tmp_path / "l.nii.gz", label, np.eye(4))}
    base = [*NO_AUG, "preprocess.spacing=null", "data.labels=[bg, a, b]", "patch.mode=class_ratio",
            "patch.roi_size=[6, 6, 6]", "patch.num_samples=4"]
    only_b = _sample(cfg_(*base, "patch.class_ratios=[0, 0, 1]"), case, 3)
    assert all(_centre(p["label"]) == 2 for p in only_b)
    only_a = _sample(cfg_(*base, "patch.class_ratios=[0, 1, 0]"), case, 3)
    assert all(_centre(p["label"]) == 1 for p in only_a)
    equal = _sample(cfg_(*base), case, 6)  # class_ratios null = equal: all three classes appear
    assert {_centre(p["label"]) for p in equal} == {0.0, 1.0, 2.0}


def test_volume_smaller_than_roi_is_padded(tmp_path):
    case = block_case(tmp_path, shape=(10, 9, 6), block=(slice(2, 8), slice(2, 7), slice(1, 5)))
    patches = _sample(cfg_(*NO_AUG, "preprocess.spacing=null", "patch.roi_size=[16, 16, 16]"), case, 1)
    assert all(tuple(p["image"].shape) == (1, 16, 16, 16) for p in patches)


def test_training_output_is_windowed_float(tmp_path):
    case = block_case(tmp_path)
    patches = _sample(cfg_("preprocess.spacing=null", "patch.roi_size=[8, 8, 8]"), case, 2)
    for p in patches:
        assert p["image"].dtype == torch.float32
        assert float(p["image"].min()) >= -0.5 and float(p["image"].max()) <= 1.5  # 0..1 plus augmentation


# ------------------------------------------------------------------------------------ augmentation

AUG_TYPES = {
    "flip": RandFlipd, "rotate90": RandRotate90d, "affine": RandAffined, "intensity_shift": RandShiftIntensityd,
    "intensity_scale": RandScaleIntensityd, "noise": RandGaussianNoised,
}


def _types(cfg) -> list[type]:
    return [type(t) for t in build_train_transforms(cfg).transforms]


@pytest.mark.parametrize("switch", sorted(AUG_TYPES))
def test_each_augmentation_switch_toggles_its_transform(switch):
    off = _types(cfg_(*NO_AUG))
    assert not any(t in off for t in AUG_TYPES.values())
    on = _types(cfg_(*NO_AUG, f"augment.{switch}=true"))
    present = {name for name, t in AUG_TYPES.items() if t in on}
    assert present == {switch}
    if switch == "flip":
        assert on.count(RandFlipd) == 3  # one per axis


def test_augmentation_settings_reach_the_transforms():
    pipeline = build_train_transforms(cfg_(*NO_AUG, "augment.noise=true", "augment.noise_std=0.3",
                                           "augment.noise_prob=0.7"))
    noise = next(t for t in pipeline.transforms if isinstance(t, RandGaussianNoised))
    assert noise.rand_gaussian_noise.std == pytest.approx(0.3) and noise.prob == pytest.approx(0.7)


def test_rotate90_needs_square_axial_patch():
    with pytest.raises(ValueError, match="roi_size"):
        build_train_transforms(cfg_("patch.roi_size=[32, 16, 16]"))
    build_train_transforms(cfg_("patch.roi_size=[32, 16, 16]", "augment.rotate90=false"))


def test_pipelines_follow_config_switches():
    assert Spacingd not in _types(cfg_("preprocess.spacing=null"))
    assert CropForegroundd in _types(cfg_("preprocess.crop_foreground=true"))
    assert RandCropByLabelClassesd in _types(cfg_("patch.mode=class_ratio"))
    assert RandCropByPosNegLabeld in _types(cfg_("patch.mode=pos_neg"))
    val = [type(t) for t in build_val_transforms(cfg_()).transforms]
    assert not any(t.__name__.startswith("Rand") for t in val)


# ------------------------------------------------------------------------------------ label checks


def test_label_values_out_of_range_name_file_and_values(tmp_path):
    case = block_case(tmp_path, label_value=5, name="bad")
    cfg = cfg_("data.labels=[bg, a, b]")
    with pytest.raises(ValueError) as err:
        build_val_transforms(cfg)(case)
    message = str(err.value)
    assert "bad_lbl.nii.gz" in message and "5 (" in message and "0..2" in message
    # also when read through a MONAI Dataset (MONAI wraps transform errors in RuntimeError; Pipeline unwraps)
    with pytest.raises(ValueError, match="bad_lbl.nii.gz"):
        Dataset([case], transform=build_val_transforms(cfg))[0]
    for cache in ("memory", "disk"):  # caching datasets run the transforms their own way
        cached_cfg = cfg_("data.labels=[bg, a, b]", f"data.cache={cache}", f"data.cache_dir={tmp_path / 'cache'}")
        with pytest.raises(ValueError, match="bad_lbl.nii.gz"):
            build_dataset([case], build_val_transforms(cached_cfg), cached_cfg)[0]
    wrapped = RuntimeError("applying transform")
    wrapped.__cause__ = err.value
    assert unwrap_transform_error(wrapped) is err.value
    assert unwrap_transform_error(RuntimeError("other")) is None


def test_non_integer_label_values_are_rejected():
    label = MetaTensor(torch.tensor([0.0, 1.0, 0.5, -1.0]).reshape(1, 4, 1, 1), meta={"filename_or_obj": "x.nii"})
    with pytest.raises(ValueError, match=r"x\.nii.*0\.5 \(1 voxels\), -1 \(1 voxels\)|x\.nii.*-1 \(1 voxels\), 0\.5"):
        CheckLabelValuesd("label", num_classes=2)({"label": label})
    ok = MetaTensor(torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1))
    assert CheckLabelValuesd("label", num_classes=2)({"label": ok})["label"] is ok


# ------------------------------------------------------------------------------------ inversion


@pytest.mark.parametrize("crop", [False, True])
def test_inference_then_invert_returns_label_on_original_grid(tmp_path, crop):
    """A non-RAS, anisotropic input: the inverted prediction has the input's shape and affine."""
    ph = make_phantom(3, shape=(24, 20, 12), spacing=(1.3, 1.3, 3.0))  # stored as PLS
    assert ph.axcodes != "RAS"
    image = save(tmp_path / "img.nii.gz", ph.image, ph.affine)
    label = save(tmp_path / "lbl.nii.gz", ph.label, ph.affine)
    cfg = cfg_("preprocess.spacing=[2.0, 2.0, 2.0]", f"preprocess.crop_foreground={str(crop).lower()}",
               base="demo")
    pre = build_infer_transforms(cfg)
    data = pre({"image": image})
    assert tuple(data["image"].shape[1:]) != ph.image.shape  # really resampled
    # a perfect "network": one-hot logits of the label taken through the validation pipeline
    val_label = build_val_transforms(cfg)({"image": image, "label": label})["label"]
    assert val_label.shape == data["image"].shape
    logits = torch.nn.functional.one_hot(val_label[0].long(), cfg.data.num_classes).permute(3, 0, 1, 2).float()
    pred = MetaTensor(logits * 10, meta=dict(data["image"].meta),
                      applied_operations=list(data["image"].applied_operations))
    out = build_postprocessing(cfg, pre, argmax=True)({**data, "pred": pred})["pred"]
    assert tuple(out.shape) == (1, *ph.image.shape)
    np.testing.assert_allclose(np.asarray(out.affine), ph.affine, atol=1e-4)
    agreement = float((out[0].numpy() == ph.label).mean())
    assert agreement > 0.95  # only resampling losses at organ borders
    assert set(np.unique(out.numpy())) <= {0, 1, 2, 3}
    # probabilities: one channel per class on the original grid
    prob = MetaTensor(logits * 10, meta=dict(data["image"].meta),
                      applied_operations=list(data["image"].applied_operations))
    probs = build_postprocessing(cfg, pre, argmax=False)({**data, "pred": prob})["pred"]
    assert tuple(probs.shape) == (cfg.data.num_classes, *ph.image.shape)
    assert float(probs.max()) <= 1.0 + 1e-5 and float(probs.min()) >= -1e-5


def test_postprocessing_without_softmax_keeps_probabilities(tmp_path):
    ph = make_phantom(0, shape=(16, 16, 8))
    image = save(tmp_path / "img.nii.gz", ph.image, ph.affine)
    cfg = cfg_("preprocess.spacing=null", base="demo")
    pre = build_infer_transforms(cfg)
    data = pre({"image": image})
    probs = torch.full((4, *data["image"].shape[1:]), 0.25)
    probs[1] = 0.4
    probs[0] = 0.1
    pred = MetaTensor(probs, meta=dict(data["image"].meta), applied_operations=list(data["image"].applied_operations))
    out = build_postprocessing(cfg, pre, argmax=False, softmax=False)({**data, "pred": pred})["pred"]
    np.testing.assert_allclose(out[:, 3, 3, 3].numpy(), [0.1, 0.4, 0.25, 0.25], atol=1e-5)


# ------------------------------------------------------------------------------------ datasets


def test_dataset_kind_follows_config(tmp_path):
    cases = [block_case(tmp_path, name=f"c{i}") for i in range(2)]
    val = build_val_transforms(cfg_())
    plain = build_dataset(cases, val, cfg_("data.cache=none"))
    assert type(plain) is Dataset
    memory = build_dataset(cases, val, cfg_("data.cache=memory"))
    assert isinstance(memory, CacheDataset)
    assert tuple(memory[0]["image"].shape) == tuple(plain[0]["image"].shape)
    with pytest.raises(ValueError, match="cache_dir"):
        build_dataset(cases, val, cfg_("data.cache=disk"))


def test_persistent_dataset_writes_and_refreshes_disk_cache(tmp_path, recwarn):
    cases = [block_case(tmp_path, name=f"c{i}") for i in range(2)]
    cache = tmp_path / "cache"
    cfg = cfg_("data.cache=disk", f"data.cache_dir={cache}")
    ds = build_dataset(cases, build_val_transforms(cfg), cfg)
    assert isinstance(ds, PersistentDataset)
    first = ds[0]
    ds[1]
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    again = build_dataset(cases, build_val_transforms(cfg), cfg)[0]
    assert [f.stat().st_mtime_ns for f in files] == stamps  # loaded, not recomputed
    assert not [w for w in recwarn if "cache" in str(w.message).lower()]
    assert isinstance(again["image"], MetaTensor)  # read from the cache, with its geometry
    torch.testing.assert_close(again["image"].as_tensor(), first["image"].as_tensor())
    np.testing.assert_allclose(np.asarray(again["image"].affine), np.asarray(first["image"].affine))
    # an explicit folder wins over data.cache_dir
    other = tmp_path / "other"
    build_dataset(cases, build_val_transforms(cfg), cfg, cache_dir=other)[0]
    assert len(list(other.glob("*.pt"))) == 1
    # other preprocessing settings never reuse entries
    cfg2 = cfg_("data.cache=disk", f"data.cache_dir={cache}", "preprocess.spacing=[2.0, 2.0, 2.0]")
    item = build_dataset(cases, build_val_transforms(cfg2), cfg2)[0]
    assert len(list(cache.glob("*.pt"))) == 3
    assert tuple(item["image"].shape) != tuple(first["image"].shape)
    # a rewritten input file is read again, not served stale
    block_case(tmp_path, name="c0", block=(slice(2, 18), slice(2, 16), slice(1, 9)))
    fresh = build_dataset(cases, build_val_transforms(cfg), cfg)[0]
    assert float(fresh["label"].sum()) > float(first["label"].sum())


class _Planted:
    """A pickle that would create a file when unpickled with weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_disk_cache_loads_weights_only_and_rebuilds_planted_or_corrupt_entries(tmp_path, caplog):
    cases = [block_case(tmp_path, name=f"c{i}") for i in range(2)]
    cache = tmp_path / "cache"
    cfg = cfg_("data.cache=disk", f"data.cache_dir={cache}")
    first = [build_dataset(cases, build_val_transforms(cfg), cfg)[i] for i in range(2)]
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 2
    for f in files:  # every entry is plain data
        torch.load(f, weights_only=True)

    marker = tmp_path / "code_ran"
    torch.save({"image": _Planted(marker)}, files[0])  # a file planted in the cache folder
    files[1].write_bytes(files[1].read_bytes()[:100])  # a truncated entry (disk full, kill -9)
    caplog.set_level("WARNING", logger="medt3d.data")
    again = build_dataset(cases, build_val_transforms(cfg), cfg)
    items = [again[i] for i in range(2)]
    assert not marker.exists(), "a planted cache file ran code"
    assert caplog.text.count("cannot be loaded safely") == 2 and "rebuilding" in caplog.text
    for old, new in zip(first, items):
        assert isinstance(new["image"], MetaTensor)
        torch.testing.assert_close(new["image"].as_tensor(), old["image"].as_tensor())
        np.testing.assert_allclose(np.asarray(new["image"].affine), np.asarray(old["image"].affine))
    for f in sorted(cache.glob("*.pt")):  # rebuilt, loadable again
        torch.load(f, weights_only=True)
