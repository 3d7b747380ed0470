"""Borders: MedT3D's labels must not depend on padding or on the window, so thin scans segment like thick ones.

The property: a scan predicted with a window that fits it and with windows that overhang it by up to 64
voxels along each axis gets the same labels, from a MedT3D with trained weights in eval mode. It holds
in two places: the inferer never pads a scan for MedT3D (every window edge ends at the scan), and the
network masks whatever padding it is given (its own, up to its size multiple, and a caller's) out of
its attention, its norms and its upsampling.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import blob_volume, save, tiny_cfg

from medt3d.data.transforms import VALID, build_train_transforms
from medt3d.inference.inferer import build_sliding_window_inferer
from medt3d.inference.predictor import Predictor
from medt3d.networks.medt import MedT3D
from medt3d.training.engine import patch_batch
from medt3d.training.losses import PADDING_LABEL, IgnorePadding, build_loss

SCAN = (21, 26, 11)  # thinner than the training patch along z, not a multiple of the network's 4 anywhere


@pytest.fixture(scope="module")
def trained() -> MedT3D:
    """A tiny MedT3D trained for a few dozen steps to find bright blobs (trained norms, gates and attention)."""
    torch.manual_seed(0)
    net = MedT3D.from_preset("tiny", in_channels=1, out_channels=2, channels=[16], heads=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss = build_loss(tiny_cfg("train.loss=dice_ce", "data.labels=[background,blob]"))
    generator = torch.Generator().manual_seed(1)
    for _ in range(40):
        x = torch.rand(2, 1, 24, 24, 16, generator=generator) * 0.3
        centre = torch.randint(4, 12, (3,), generator=generator)
        x[:, :, centre[0]:centre[0] + 8, centre[1]:centre[1] + 8, centre[2]:centre[2] + 5] += 0.6
        label = (x > 0.5).float()
        optimizer.zero_grad()
        loss(net(x), label).backward()
        optimizer.step()
    return net.eval()


def _scan() -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, *SCAN, generator=generator) * 0.3
    x[:, :, 5:14, 8:20, 2:9] += 0.6
    return x


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overhang=st.tuples(*[st.integers(0, 64)] * 3), fill=st.sampled_from([0.0, 1.0, -3.0]))
def test_padded_and_masked_input_gives_the_logits_of_the_scan_alone(trained: MedT3D, overhang, fill) -> None:
    x = _scan()
    pad = [0, overhang[2], 0, overhang[1], 0, overhang[0]]
    padded = F.pad(x, pad, value=fill)
    valid = F.pad(torch.ones_like(x), pad)
    with torch.no_grad():
        alone = trained(x)
        masked = trained(padded, valid)[:, :, :SCAN[0], :SCAN[1], :SCAN[2]]
    torch.testing.assert_close(masked, alone, atol=1e-4, rtol=1e-4)
    assert torch.equal(masked.argmax(1), alone.argmax(1))


def test_without_the_mask_the_same_padding_changes_the_labels(trained: MedT3D) -> None:
    """The check above is sensitive: switch the mask off and the overhang changes what the scan gets."""
    x = _scan()
    pad = [0, 40, 0, 40, 0, 40]
    with torch.no_grad():
        alone = trained(x)
        unmasked = trained(F.pad(x, pad))[:, :, :SCAN[0], :SCAN[1], :SCAN[2]]
    assert (unmasked - alone).abs().max() > 1e-2
    assert not torch.equal(unmasked.argmax(1), alone.argmax(1))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overhang=st.tuples(*[st.integers(0, 64)] * 3))
def test_windows_that_overhang_the_scan_give_the_labels_of_a_window_that_fits(trained: MedT3D, overhang) -> None:
    """Through the inferer every route uses: whatever the window, MedT3D's labels of a thin scan are the same."""
    x = _scan()
    cfg = tiny_cfg("patch.roi_size=[32,32,32]", "infer.overlap=0.25")

    def labels(window) -> torch.Tensor:
        cfg.infer.roi_size = tuple(window)
        with torch.no_grad():
            return build_sliding_window_inferer(cfg)(x, trained).argmax(1)

    fits = labels(SCAN)
    assert torch.equal(labels([s + o for s, o in zip(SCAN, overhang)]), fits)
    assert fits.any() and not fits.all()


def test_whole_scan_pass_is_one_forward_over_the_scan_and_falls_back_past_its_budget(trained: MedT3D, caplog) -> None:
    x = torch.rand(1, 1, 40, 36, 30)
    shapes: list[tuple[int, ...]] = []

    def recording(window: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(window.shape[2:]))
        return trained(window)

    cfg = tiny_cfg("patch.roi_size=[16,16,16]", "infer.roi_size=whole")
    with torch.no_grad():
        whole = build_sliding_window_inferer(cfg)(x, recording)
        assert shapes == [(40, 36, 30)]
        torch.testing.assert_close(whole, trained(x))
        shapes.clear()
        cfg.infer.whole_max_gb = 1e-6
        with caplog.at_level(logging.INFO, logger="medt3d.inference.inferer"):
            build_sliding_window_inferer(cfg)(x, recording)
    assert set(shapes) == {(16, 16, 16)} and len(shapes) > 1
    assert "infer.whole_max_gb" in caplog.text


def test_a_thin_series_gets_the_labels_of_the_same_slices_in_any_window(trained: MedT3D, tmp_path: Path) -> None:
    """A 3-slice scan through the whole Predictor (load, resample, windows, back to the scan's grid)."""
    image, affine = blob_volume((30, 28, 3), (1.0, 1.0, 2.0))
    path = save(tmp_path / "thin.nii.gz", image, affine)
    results = []
    for window in ("[16,16,16]", "[64,64,64]", "whole"):
        cfg = tiny_cfg("preprocess.spacing=null", "data.labels=[background,blob]", "preprocess.window=[1000,500]",
                       f"infer.roi_size={window}")
        results.append(Predictor(trained, cfg, torch.device("cpu")).predict(path))
    # the 3 slices are padded up to the 16^3 patch (edge slices repeated) whatever the window that reaches past them
    assert results[1].window == [30, 28, 16] and results[2].window == [30, 28, 16]
    np.testing.assert_array_equal(results[1].label.numpy(), results[2].label.numpy())


# ------------------------------------------------------------------------------------- training


def test_a_scan_smaller_than_the_patch_gives_patches_whose_padding_is_marked(tmp_path: Path) -> None:
    image, affine = blob_volume((20, 18, 6), (1.0, 1.0, 1.0))
    label = (image > 500).astype(np.uint8)
    case = {"image": str(save(tmp_path / "s.nii.gz", image, affine)),
            "label": str(save(tmp_path / "s_label.nii.gz", label, affine))}
    cfg = tiny_cfg("patch.roi_size=[16,16,16]", "preprocess.spacing=null", "augment.affine=false",
                   "augment.flip=false", "augment.rotate90=false", "data.labels=[background,blob]")
    patches = build_train_transforms(cfg)(case)
    for patch in patches:
        valid = patch[VALID]
        assert valid.shape == (1, 16, 16, 16)
        assert set(torch.unique(valid).tolist()) == {0.0, 1.0}
        assert int(valid.sum()) == 16 * 16 * 6  # x and y are cropped from the scan; z is 6 slices padded to 16
        batch = {"image": patch["image"][None], "label": patch["label"][None], VALID: valid[None]}
        image_t, label_t, args, kwargs = patch_batch(batch, masked=True)
        assert args == () and torch.equal(kwargs["valid"], valid[None])
        assert torch.all(label_t[valid[None] == 0] == PADDING_LABEL)
        assert len(patch_batch(batch, masked=False)) == 2  # a network without a mask gets none


def _box_extents(valid: torch.Tensor) -> list[int]:
    """The side of ``valid``'s (1, X, Y, Z) nonzero region along each axis, checked to be one solid box."""
    sides = []
    for axis in (1, 2, 3):
        present = valid.sum(dim=[a for a in (1, 2, 3) if a != axis]).flatten() > 0
        index = torch.nonzero(present).flatten()
        assert int(index[-1] - index[0] + 1) == len(index)  # contiguous
        sides.append(len(index))
    assert int(valid.sum()) == sides[0] * sides[1] * sides[2]  # the product of its sides: a box, not a blob
    return sides


def test_a_random_field_of_view_leaves_a_box_of_the_patch_as_scan(tmp_path: Path) -> None:
    image, affine = blob_volume((30, 28, 24), (1.0, 1.0, 1.0))
    case = {"image": str(save(tmp_path / "s.nii.gz", image, affine)),
            "label": str(save(tmp_path / "s_label.nii.gz", (image > 500).astype(np.uint8), affine))}
    settings = ["patch.roi_size=[16,16,16]", "patch.num_samples=4", "preprocess.spacing=null", "augment.affine=false",
                "augment.flip=false", "augment.rotate90=false", "data.labels=[background,blob]",
                "augment.field_of_view=true", "augment.field_of_view_prob=1.0", "augment.field_of_view_min=0.5"]
    pipeline = build_train_transforms(tiny_cfg(*settings))
    pipeline.set_random_state(seed=3)
    sides = [_box_extents(patch[VALID]) for _ in range(4) for patch in pipeline(case)]
    assert all(8 <= s <= 16 for box in sides for s in box)  # at least half of the patch's side
    assert any(s < 16 for box in sides for s in box)  # and the box is drawn, not the whole patch
    assert len({tuple(box) for box in sides}) > 1
    # a network that takes no mask would see the whole patch anyway: it gets no box
    baseline = build_train_transforms(tiny_cfg(*settings, "network.name=unet"))
    assert all(bool(torch.all(patch[VALID] == 1)) for patch in baseline(case))


def test_padding_gives_no_gradient_to_the_loss() -> None:
    loss = IgnorePadding(build_loss(tiny_cfg("train.loss=dice_ce", "data.labels=[background,blob]")))
    logits = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    label = (torch.rand(1, 1, 8, 8, 8) > 0.5).float()
    label[..., 5:] = PADDING_LABEL
    loss(logits, label).backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[..., 5:] == 0) and logits.grad[..., :5].abs().sum() > 0


def test_masked_instance_norm_equals_instance_norm_of_the_valid_box_alone() -> None:
    from medt3d.networks.layers import masked_instance_norm

    x = torch.randn(2, 8, 10, 12, 9) * 3 + 5
    weight, bias = torch.randn(8), torch.randn(8)
    valid = torch.zeros(2, 1, 10, 12, 9)
    valid[..., :6, :7, :5] = 1
    box = F.instance_norm(x[..., :6, :7, :5], weight=weight, bias=bias, eps=1e-5)
    torch.testing.assert_close(masked_instance_norm(x, valid, weight, bias, 1e-5)[..., :6, :7, :5], box,
                               atol=1e-5, rtol=1e-5)
    everything = F.instance_norm(x, weight=weight, bias=bias, eps=1e-5)
    torch.testing.assert_close(masked_instance_norm(x, torch.ones_like(valid), weight, bias, 1e-5), everything,
                               atol=1e-5, rtol=1e-5)


def test_infer_cli_runs_the_whole_scan_in_one_pass_and_records_the_window(trained: MedT3D, tmp_path: Path) -> None:
    import json

    from medt3d.cli import main
    from medt3d.models.checkpoint import save_checkpoint

    cfg = tiny_cfg("preprocess.spacing=null", "data.labels=[background,blob]", "preprocess.window=[1000,500]",
                   "network.channels=[16]", "network.heads=2")
    model = save_checkpoint(tmp_path / "m.pt", network=trained, cfg=cfg, epoch=1, iteration=1)
    image, affine = blob_volume((40, 34, 9), (1.0, 1.0, 2.0))
    scan = save(tmp_path / "slab.nii.gz", image, affine)
    sidecars = {}
    for window in (["whole"], ["16", "16", "16"]):
        out = tmp_path / f"out_{window[0]}"
        assert main(["infer", str(scan), "--model", str(model), "--output", str(out), "--no-progress",
                     "--roi-size", *window]) == 0
        sidecars[window[0]] = json.loads((out / "slab_seg.json").read_text())["inference"]
    assert sidecars["whole"]["roi_size"] == "whole" and sidecars["whole"]["window_run"] == [40, 34, 16]
    assert sidecars["16"]["window_run"] == [16, 16, 16]  # the 9 slices padded up to the 16^3 patch
    assert main(["infer", str(scan), "--model", str(model), "--output", str(tmp_path / "bad"), "--roi-size",
                 "64", "whole"]) == 2


def test_whole_scan_pass_of_a_baseline_pads_the_scan_to_its_multiple_only() -> None:
    shapes: list[tuple[int, ...]] = []

    def recording(window: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(window.shape[2:]))
        return torch.zeros(window.shape[0], 2, *window.shape[2:])

    cfg = tiny_cfg("network.name=unet", "patch.roi_size=[32,32,32]", "infer.roi_size=whole")
    out = build_sliding_window_inferer(cfg)(torch.rand(1, 1, 70, 45, 20), recording)
    assert shapes == [(80, 48, 32)] and out.shape == (1, 2, 70, 45, 20)  # z: the 32 patch is UNet's floor
