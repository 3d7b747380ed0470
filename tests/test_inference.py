"""Predictor: geometry round trips, awkward sizes, TTA, largest component, probabilities, bad scans.

A deterministic "network" (:class:`ThresholdNet`) labels every voxel whose preprocessed intensity is
above 0.5 as class 1, so the right answer is known: with the CT window ``[1000, 500]`` (0..1000 HU
mapped to 0..1) it is ``scan > 500`` on the scan's own grid. It runs through the real pipeline
(loading, orientation, spacing, windowing, sliding window, inversion).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_utils import ras_affine, rotation, write_dicom_series
from scipy import ndimage
from support import THRESHOLD_HU, ThresholdNet, blob_volume, save, threshold_config

from medt3d.config import ConfigError, override_config
from medt3d.data.readers import load_volume, read_header
from medt3d.inference.inferer import fitted_window
from medt3d.inference.predictor import Predictor, check_finite, flip_tta_axes


def threshold_predictor(*overrides: str, net: torch.nn.Module | None = None) -> Predictor:
    return Predictor(net or ThresholdNet(), threshold_config(*overrides), torch.device("cpu"))


def boundary_distance_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from each voxel centre to the nearest voxel centre of the other class."""
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return np.where(mask, inside, outside)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


FRAMES = {"RAS": "RAS", "LPS": "LPS", "oblique": rotation(20.0, -10.0, 25.0)}


# ------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("frame", list(FRAMES))
def test_round_trip_is_exact_without_resampling(tmp_path: Path, frame: str):
    """With the model keeping each scan's spacing only reorientation is undone: every voxel must match."""
    image, affine = blob_volume((30, 26, 14), (0.8, 1.1, 2.5), FRAMES[frame])
    path = save(tmp_path / "scan.nii.gz", image, affine)
    pred = threshold_predictor().predict(path)
    assert tuple(pred.label.shape) == (1, 30, 26, 14)
    np.testing.assert_allclose(pred.affine, affine, atol=1e-6)
    assert pred.label.dtype == torch.uint8
    np.testing.assert_array_equal(pred.label[0].numpy(), image > THRESHOLD_HU)


@pytest.mark.parametrize("frame", list(FRAMES))
def test_round_trip_with_resampling_differs_only_at_the_boundary(tmp_path: Path, frame: str):
    """Anisotropic scan resampled to the model's 1.5 mm grid and back.

    Tolerance: a scan voxel takes (nearest neighbour) the label of a model-grid point at most half a
    model-voxel diagonal away (h = 1.3 mm); that point's intensity is a trilinear blend of the 8 scan
    voxels around it, all within one scan-voxel diagonal (d = 2.8 mm). So a voxel can only be wrong
    if a voxel of the other class lies within h + d of it; farther voxels must match exactly. Near
    the boundary the blend legitimately moves the surface by up to a voxel, so we also require
    Dice >= 0.9 against the truth (measured 0.93-0.95 for this 9-11 mm blob) and no bias of the
    volume by more than 10%.
    """
    spacing, target = (0.8, 1.1, 2.5), (1.5, 1.5, 1.5)
    image, affine = blob_volume((34, 28, 14), spacing, FRAMES[frame])
    path = save(tmp_path / "scan.nii.gz", image, affine)
    pred = threshold_predictor(f"preprocess.spacing=[{target[0]},{target[1]},{target[2]}]").predict(path)
    assert tuple(pred.label.shape) == (1, *image.shape)
    np.testing.assert_allclose(pred.affine, affine, atol=1e-6)
    truth = image > THRESHOLD_HU
    got = pred.label[0].numpy().astype(bool)
    wrong = got != truth
    bound = 0.5 * np.linalg.norm(target) + np.linalg.norm(spacing)
    dist = boundary_distance_mm(truth, spacing)
    # not vacuous: resampling moves some boundary voxels, and some voxels lie farther than the bound from it
    assert wrong.any() and bool((dist > bound).any())
    assert float(dist[wrong].max(initial=0.0)) <= bound, "a voxel far from the boundary changed class"
    assert dice(got, truth) >= 0.9
    assert abs(int(got.sum()) - int(truth.sum())) <= 0.1 * truth.sum()


@pytest.mark.parametrize("resample", [False, True])
def test_dicom_series_written_with_pydicom_round_trips(tmp_path: Path, resample: bool):
    """An oblique, anisotropic DICOM series (shuffled files): the label lies on the series' own grid."""
    spacing, direction, origin = (0.9, 0.7, 2.0), rotation(15.0, 5.0, -30.0), (-20.0, 35.0, 12.0)
    ras = ras_affine(spacing, direction, origin)
    image, _ = blob_volume((28, 32, 12), spacing, ras[:3, :3] / np.asarray(spacing), origin=ras[:3, 3])
    folder = tmp_path / "series"
    write_dicom_series(folder, image.astype(np.int16), spacing, direction, origin, shuffle=True, modality="CT")
    extra = ["preprocess.spacing=[1.2,1.2,1.2]"] if resample else []
    pred = threshold_predictor(*extra).predict(folder)
    header = read_header(folder)
    assert tuple(pred.label.shape[1:]) == tuple(header.shape) == image.shape
    np.testing.assert_allclose(pred.affine, header.affine, atol=1e-3)
    np.testing.assert_allclose(pred.affine, ras, atol=1e-3)
    truth = image > THRESHOLD_HU
    got = pred.label[0].numpy().astype(bool)
    if not resample:
        np.testing.assert_array_equal(got, truth)
    else:
        dist = boundary_distance_mm(truth, spacing)
        bound = 0.5 * np.linalg.norm([1.2] * 3) + np.linalg.norm(spacing)
        assert float(dist[got != truth].max(initial=0.0)) <= bound
        assert dice(got, truth) >= 0.9


def test_real_mr_dicom_series_matches_its_reference_nifti(shared_data: Path):
    """The real 4-slice MR series: the label overlays the dcm2niix-style reference NIfTI voxel for voxel."""
    series = shared_data / "mr_dicom_series" / "series"
    reference = nib.load(str(shared_data / "mr_dicom_series" / "reference.nii.gz"))
    values = np.asarray(reference.dataobj, dtype=np.float64)
    t = float(np.percentile(values[values > 0], 60)) + 0.5  # integer voxels: no ties at the threshold
    predictor = threshold_predictor(f"preprocess.window=[{2 * t},{t}]", "patch.roi_size=[64,64,16]")
    pred = predictor.predict(series)
    seg = nib.Nifti1Image(pred.label[0].numpy(), pred.affine)
    seg_c, ref_c = nib.as_closest_canonical(seg), nib.as_closest_canonical(reference)
    np.testing.assert_allclose(seg_c.affine, ref_c.affine, atol=1e-3)
    expected = np.asarray(ref_c.dataobj) > t
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(np.asarray(seg_c.dataobj).astype(bool), expected)


# ------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("shape, spacing, extra", [
    ((5, 7, 3), (1.0, 1.0, 1.0), []),                                # smaller than the ROI on every axis
    ((17, 19, 23), (1.0, 1.0, 1.0), ["patch.roi_size=[8,8,8]"]),     # odd sizes, windows do not tile evenly
    ((12, 2, 9), (1.0, 1.0, 1.0), []),                               # two voxels thick
    ((12, 2, 9), (1.0, 1.0, 1.0), ["preprocess.spacing=[1.0,3.0,1.0]"]),  # one voxel thick on the model grid
])
def test_awkward_sizes_are_padded_and_cropped_back(tmp_path: Path, shape, spacing, extra):
    rng = np.random.default_rng(sum(shape))
    columns = rng.random((shape[0], 1, shape[2])) > 0.5  # constant along y, so thinning y keeps the answer
    image = np.broadcast_to(np.where(columns, 1000.0, 0.0), shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    pred = threshold_predictor(*extra).predict(save(tmp_path / "small.nii.gz", image, affine))
    assert tuple(pred.label.shape) == (1, *shape)
    np.testing.assert_array_equal(pred.label[0].numpy(), image > THRESHOLD_HU)


# ------------------------------------------------------------------------------------- options


def test_fitted_window_slides_where_the_scan_is_longer_and_is_the_scan_raised_to_the_patch_elsewhere():
    patch = (64, 64, 64)
    assert fitted_window((128, 128, 64), (87, 88, 65), 16, floor=patch) == (96, 96, 64)  # z slides, x y: the scan
    assert fitted_window((128, 128, 64), (300, 250, 200), 16, floor=patch) == (128, 128, 64)
    assert fitted_window((128, 128, 64), (20, 88, 30), 16, floor=patch) == (64, 96, 64)  # thin: up to the patch
    assert fitted_window(patch, (5, 7, 3), 16, floor=patch) == patch
    assert fitted_window((32, 32, 32), (5, 7, 3), 4, floor=patch) == patch  # whatever window reaches past the scan
    assert fitted_window((64, 64, 64), (5, 7, 3), 16) == (16, 16, 16)  # without a floor: one multiple


def test_fitted_window_of_a_network_that_pads_to_its_multiple_itself_is_not_rounded():
    assert fitted_window((128, 128, 64), (87, 88, 65), 16, masked=True, floor=(64, 64, 64)) == (87, 88, 64)
    assert fitted_window((64, 64, 64), (20, 300, 3), 16, masked=True, floor=(64, 64, 64)) == (64, 64, 64)
    assert fitted_window((64, 64, 64), (20, 300, 3), 16, masked=True) == (20, 64, 3)
    assert fitted_window((128, 128, 64), (87, 88, 65), None) == (128, 128, 64)  # UNETR: one input size


class ShapeRecorder(ThresholdNet):
    """ThresholdNet that keeps the spatial shape of every window it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[2:]))
        return super().forward(x)


def test_inference_window_larger_than_the_scan_is_fitted_to_it(tmp_path: Path):
    image, affine = blob_volume((20, 14, 30), (1.0, 1.0, 1.0))
    net = ShapeRecorder()
    # x: the scan (20); y: the 14-voxel scan raised to the 16^3 patch; z slides its 8-voxel window along the 30
    pred = threshold_predictor("infer.roi_size=[64,64,8]", net=net).predict(save(tmp_path / "s.nii.gz", image, affine))
    assert set(net.shapes) == {(20, 16, 8)}
    np.testing.assert_array_equal(pred.label[0].numpy(), image > THRESHOLD_HU)


def test_flip_tta_unflips_every_pass(tmp_path: Path):
    """A voxel-wise net is flip-equivariant, so TTA must give the plain answer for an off-centre blob
    (a pass left flipped would move it); and it must really run the 8 flipped passes."""
    image, affine = blob_volume((24, 20, 16), (1.0, 1.2, 1.5), "LPS", centre_shift=(5.0, 4.0, -3.0))
    path = save(tmp_path / "scan.nii.gz", image, affine)
    plain_net, tta_net = ThresholdNet(), ThresholdNet()
    plain = threshold_predictor(net=plain_net).predict(path)
    tta = threshold_predictor("infer.tta_flips=true", net=tta_net).predict(path)
    np.testing.assert_array_equal(tta.label.numpy(), plain.label.numpy())
    np.testing.assert_array_equal(tta.label[0].numpy(), image > THRESHOLD_HU)
    assert tta_net.calls == len(flip_tta_axes()) * plain_net.calls


def test_largest_component_keeps_only_the_biggest_blob(tmp_path: Path):
    image = np.zeros((24, 24, 12), dtype=np.float32)
    image[2:12, 2:12, 2:10] = 1000.0   # 800 voxels
    image[16:20, 16:20, 4:7] = 1000.0  # 48 voxels, separate
    path = save(tmp_path / "two.nii.gz", image, np.eye(4))
    both = threshold_predictor().predict(path).label[0].numpy()
    largest = threshold_predictor("infer.largest_component=true").predict(path).label[0].numpy()
    assert both.sum() == 848
    assert largest.sum() == 800 and largest[2:12, 2:12, 2:10].all()


def test_probabilities_are_softmax_once_and_sum_to_one(tmp_path: Path):
    image, affine = blob_volume((20, 18, 10), (1.0, 1.0, 2.0), "RAS")
    path = save(tmp_path / "scan.nii.gz", image, affine)
    pred = threshold_predictor().predict(path, probabilities=True)
    prob = pred.probabilities.numpy()
    assert prob.shape == (2, 20, 18, 10)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    # logits differ by 20 on both sides of the threshold: p ~ 1 - 2e-9. A second softmax would cap it at 0.73.
    inside = image > THRESHOLD_HU
    assert prob[1][inside].min() > 0.999 and prob[0][~inside].min() > 0.999
    np.testing.assert_array_equal(prob.argmax(axis=0), pred.label[0].numpy())


# ------------------------------------------------------------------------------------- bad scans


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_voxels_reject_the_scan(tmp_path: Path, bad: float):
    image, affine = blob_volume((12, 12, 8), (1.0, 1.0, 1.0))
    image[3, 4, 5] = bad
    path = save(tmp_path / "bad.nii.gz", image, affine)
    with pytest.raises(ValueError, match="NaN") as err:
        threshold_predictor().predict(path)
    assert str(path) in str(err.value)
    kind = "1 NaN and 0 Inf" if np.isnan(bad) else "0 NaN and 1 Inf"
    assert kind in str(err.value)


def test_check_finite_passes_clean_volumes():
    check_finite(torch.zeros(1, 3, 3, 3), "x")
    with pytest.raises(ValueError, match="2 NaN and 1 Inf"):
        check_finite(torch.tensor([np.nan, np.nan, np.inf, 0.0]), "x")


def test_model_input_channels_must_fit_the_scan(tmp_path: Path):
    image, affine = blob_volume((12, 12, 8), (1.0, 1.0, 1.0))
    path = save(tmp_path / "one_channel.nii.gz", image, affine)
    with pytest.raises(ValueError, match=r"1 channel\(s\) but the model expects 2"):
        threshold_predictor("data.in_channels=2").predict(path)


def test_override_config_validates_and_leaves_the_original():
    cfg = threshold_config()
    changed = override_config(cfg, {"infer.overlap": 0.5, "patch.roi_size": (8, 8, 4), "infer.mode": None})
    assert changed.infer.overlap == 0.5 and changed.patch.roi_size == (8, 8, 4)
    assert changed.infer.mode == cfg.infer.mode and cfg.infer.overlap != 0.5
    with pytest.raises(ConfigError, match="infer.overlap"):
        override_config(cfg, {"infer.overlap": 1.5})


def test_loaded_volume_and_prediction_share_the_grid_for_nrrd(tmp_path: Path):
    """NRRD (LPS on disk) comes back with the RAS affine that load_volume reports."""
    import SimpleITK as sitk

    image, _ = blob_volume((20, 16, 10), (0.9, 1.1, 2.0), "RAS")
    itk = sitk.GetImageFromArray(np.transpose(image, (2, 1, 0)))
    itk.SetSpacing((0.9, 1.1, 2.0))
    itk.SetOrigin((3.0, -4.0, 5.0))
    itk.SetDirection(tuple(rotation(0.0, 0.0, 30.0).ravel()))
    path = tmp_path / "scan.nrrd"
    sitk.WriteImage(itk, str(path))
    pred = threshold_predictor().predict(path)
    loaded = load_volume(path)
    np.testing.assert_allclose(pred.affine, np.asarray(loaded.affine), atol=1e-6)
    np.testing.assert_array_equal(pred.label[0].numpy(), loaded[0].numpy() > THRESHOLD_HU)


def test_resampling_the_probabilities_gives_smoother_labels_on_a_finer_scan(tmp_path: Path):
    image, affine = blob_volume((40, 36, 30), (0.6, 0.6, 0.8), frame="LPS")  # finer than the model's 2 mm
    scan = save(tmp_path / "fine.nii.gz", image, affine)
    truth = image > THRESHOLD_HU
    labels = threshold_predictor("preprocess.spacing=[2.0, 2.0, 2.0]").predict(scan).label[0].numpy()
    probs = threshold_predictor("preprocess.spacing=[2.0, 2.0, 2.0]", "infer.resample=probabilities").predict(scan)
    smooth = probs.label[0].numpy()
    assert probs.label.dtype == torch.uint8 and smooth.shape == truth.shape
    np.testing.assert_allclose(probs.affine, affine, atol=1e-5)
    assert dice(smooth, truth) > dice(labels, truth) > 0.8  # linear probabilities follow the blob closer
    # on the model's own grid both ways are the same
    same_grid = [threshold_predictor("preprocess.spacing=null", f"infer.resample={mode}").predict(scan).label
                 for mode in ("labels", "probabilities")]
    np.testing.assert_array_equal(same_grid[0].numpy(), same_grid[1].numpy())


def test_argmax_channels_equals_torch_argmax_ties_included():
    from medt3d.data.regrid import argmax_channels

    prob = torch.rand(4, 9, 8, 7)
    prob[2, :3] = prob[1, :3] = prob[:, :3].max(0).values + 1  # ties between channels 1 and 2: the first wins
    np.testing.assert_array_equal(argmax_channels(prob).numpy()[0], torch.argmax(prob, 0).numpy())


def _on_the_model_grid(tmp_path, frame, spacing, crop, shape=(40, 23, 13)):
    """A blob scan preprocessed to 1.5 x 1.5 x 2 mm: the predictor, its preprocessed dict, the scan's shape and affine."""
    from medt3d.inference.predictor import Predictor

    image, affine = blob_volume(shape, spacing, frame)
    scan = save(tmp_path / "scan.nii.gz", image, affine)
    predictor = Predictor(ThresholdNet(), threshold_config("preprocess.spacing=[1.5, 1.5, 2.0]",
                                                           f"preprocess.crop_foreground={str(crop).lower()}"), "cpu")
    data = predictor.load(scan)
    scan_shape, scan_affine = tuple(data["image"].shape[1:]), data["image"].affine.clone()
    return predictor, predictor.pre(data, start=predictor._after_load), scan_shape, scan_affine


@pytest.mark.parametrize(("frame", "spacing", "crop"), [("RAS", (0.9, 1.1, 2.3), True), ("LPS", (0.75, 1.0, 5.0), True),
                                                       ("PIL", (0.75, 3.0, 1.0), False), ("LPS", (0.75, 0.75, 5.0), False)])
def test_label_back_to_the_scan_by_index_lists_equals_monai_inversion(tmp_path, frame, spacing, crop):
    """The index lists give MONAI's Invertd labels voxel for voxel, ties included.

    At 0.75 mm or 5 mm against the model's 1.5 x 1.5 x 2 mm, every other scan voxel lies exactly
    halfway between two model voxels; ``Invertd`` picks one by its float32 grid arithmetic, and so
    must the lists.
    """
    from monai.transforms import AsDiscreted, Compose, Invertd

    from medt3d.data.regrid import label_on_scan_grid

    predictor, pre, shape, scan_affine = _on_the_model_grid(tmp_path, frame, spacing, crop)
    model_image = pre["image"]
    # a voxel of the scan exactly halfway between two model voxels along some axis
    position = np.linalg.solve(np.asarray(model_image.affine), np.asarray(scan_affine)) @ np.stack(
        [*np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), np.ones(shape)]).reshape(4, -1)
    halfway = np.isclose(np.abs(position[:3] - np.floor(position[:3])), 0.5, atol=1e-6).any(axis=0)
    assert halfway.sum() > (0.3 * halfway.size if spacing[0] == 0.75 else -1)
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.integers(0, 3, size=model_image.shape[1:]).astype(np.uint8))[None]
    onehot = torch.nn.functional.one_hot(label[0].long(), 3).permute(3, 0, 1, 2).float()
    fast = label_on_scan_grid(predictor._like(model_image, onehot), scan_affine, shape)
    monai_way = Compose([AsDiscreted("pred", argmax=True),
                         Invertd("pred", transform=predictor.pre, orig_keys="image", nearest_interp=True)])
    slow = monai_way({**pre, "pred": predictor._like(model_image, onehot)})["pred"]
    # and what medt3d infer runs (the postprocessing pipeline) is the fast way
    np.testing.assert_array_equal(predictor.post_label({**pre, "pred": predictor._like(model_image, onehot)})["pred"]
                                  .numpy(), fast.numpy())
    assert fast is not None and tuple(fast.shape) == (1, *shape)
    np.testing.assert_array_equal(fast.numpy(), slow.numpy())
    np.testing.assert_allclose(np.asarray(fast.affine), np.asarray(scan_affine), atol=1e-6)


@pytest.mark.parametrize(("frame", "spacing", "crop"), [("LPS", (0.75, 1.0, 5.0), True), ("PIL", (0.75, 3.0, 1.0), False)])
def test_probabilities_back_to_the_scan_by_one_axis_blends_equal_monai_inversion(tmp_path, frame, spacing, crop):
    """Three one-axis linear blends give Invertd's bilinear probabilities (0 outside the crop)."""
    from monai.transforms import Invertd

    from medt3d.data.regrid import probabilities_on_scan_grid

    predictor, pre, shape, scan_affine = _on_the_model_grid(tmp_path, frame, spacing, crop)
    model_image = pre["image"]
    prob = torch.softmax(torch.randn(3, *model_image.shape[1:], generator=torch.Generator().manual_seed(0)), 0)
    fast = probabilities_on_scan_grid(predictor._like(model_image, prob), scan_affine, shape)
    slow = Invertd("pred", transform=predictor.pre, orig_keys="image", nearest_interp=False)(
        {**pre, "pred": predictor._like(model_image, prob)})["pred"]
    assert fast is not None and tuple(fast.shape) == (3, *shape)
    np.testing.assert_allclose(fast.numpy(), np.asarray(slow), atol=2e-6)
    assert float(np.asarray(slow).std()) > 0.05  # not a constant that any method would match
    np.testing.assert_allclose(predictor.post_prob({**pre, "pred": predictor._like(model_image, prob)})["pred"].numpy(),
                               fast.numpy())


def test_label_back_to_a_rotated_grid_or_an_unknown_transform_is_left_to_monai():
    from monai.data import MetaTensor

    from medt3d.data.regrid import label_on_scan_grid, resample_index_lists

    angle = np.radians(20.0)
    rotated = np.eye(4)
    rotated[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert resample_index_lists(np.eye(4), (4, 4, 4), rotated, (4, 4, 4)) is None
    assert resample_index_lists(np.eye(4), (4, 4, 4), np.diag([2.0, 2.0, 2.0, 1.0]), (2, 2, 2)) is not None
    zoomed = MetaTensor(torch.zeros(2, 4, 4, 4), applied_operations=[{"class": "Zoom", "orig_size": (8, 8, 8)}])
    assert label_on_scan_grid(zoomed, np.eye(4), (8, 8, 8)) is None


def test_index_lists_read_the_voxels_monai_spatial_resample_reads():
    """``resample_index_lists`` against MONAI's own nearest-neighbour resampling of an index volume."""
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    from medt3d.data.regrid import resample_index_lists

    src_shape, dst_shape = (9, 12, 7), (22, 9, 18)
    src = np.diag([1.5, 1.5, 2.0, 1.0])
    src[:3, 3] = [3.0, -7.5, 11.0]
    dst = np.diag([0.75, 2.0, 0.8, 1.0])
    dst[:3, 3] = [2.625, -8.0, 10.2]
    values = np.arange(1, np.prod(src_shape) + 1, dtype=np.float32).reshape(src_shape)
    moved = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float32)(
        MetaTensor(torch.from_numpy(values)[None], affine=torch.from_numpy(src)), dst_affine=torch.from_numpy(dst),
        spatial_size=dst_shape)
    lists = resample_index_lists(src, src_shape, dst, dst_shape)
    assert [axis for axis, _ in lists] == [0, 1, 2]
    index = [i for _, i in lists]
    expected = np.zeros(dst_shape, dtype=np.float32)
    inside = (index[0][:, None, None] >= 0) & (index[1][None, :, None] >= 0) & (index[2][None, None, :] >= 0)
    gathered = values[np.ix_(*[np.clip(i, 0, None) for i in index])]
    expected[inside] = gathered[inside]
    np.testing.assert_array_equal(np.asarray(moved[0]), expected)
    assert (~inside).any() and inside.any()


@pytest.mark.parametrize(("frame", "spacing", "crop"), [("LPS", (0.75, 1.0, 5.0), True), ("RAS", (0.6, 0.6, 0.7), False)])
def test_argmax_of_the_probabilities_on_the_scan_grid_equals_the_argmax_of_monai_inversion(tmp_path, frame, spacing,
                                                                                            crop):
    """``infer.resample: probabilities``: the boxed one-axis blends give the argmax of Invertd's probabilities."""
    from monai.transforms import Invertd

    from medt3d.data.regrid import argmax_on_scan_grid

    predictor, pre, shape, scan_affine = _on_the_model_grid(tmp_path, frame, spacing, crop,
                                                            (40, 23, 13) if spacing[0] > 0.7 else (48, 40, 36))
    model_image = pre["image"]
    logits = torch.randn(3, *model_image.shape[1:], generator=torch.Generator().manual_seed(1))
    logits[0] += 1.5  # background wins most voxels
    logits[:, :3] = logits[:, -3:] = torch.tensor([5.0, 0.0, 0.0])[:, None, None, None]
    prob = torch.softmax(logits, 0)
    fast = argmax_on_scan_grid(predictor._like(model_image, prob), scan_affine, shape)
    slow = Invertd("pred", transform=predictor.pre, orig_keys="image", nearest_interp=False)(
        {**pre, "pred": predictor._like(model_image, prob)})["pred"]
    expected = np.asarray(slow).argmax(0)
    assert fast is not None and tuple(fast.shape) == (1, *shape)
    assert 0.002 < (expected > 0).mean() < 0.9 and (expected == 2).any()
    np.testing.assert_array_equal(fast.numpy()[0], expected)


def test_fitted_window_keeps_two_voxels_at_the_bottleneck_when_cut_below_the_patch():
    # a thin slab cut to one multiple on every axis would leave UNet one voxel at 1/16: one edge grows instead
    assert fitted_window((64, 64, 64), (10, 12, 9), 16, min_cells=2) == (16, 32, 16)  # y: the longest scan edge
    assert fitted_window((64, 64, 64), (100, 12, 9), 16, min_cells=2) == (64, 16, 16)  # already enough
