"""MedT3D, its blocks and layers, and the network factory (CPU, tiny sizes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medt3d.config import load_config
from medt3d.networks import (
    BASELINES,
    MEDT3D_PRESETS,
    GatedAxialAttention,
    GatedAxialBlock,
    LocalBranch,
    MedT3D,
    build_network,
    gate_parameters,
)
from medt3d.networks.factory import window_multiple
from medt3d.networks.layers import ConvNormAct, FastConv3d, PointwiseConv, VoxelShuffleUp


def _tiny(**overrides) -> MedT3D:
    return MedT3D.from_preset("tiny", in_channels=1, out_channels=3, **overrides)


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spatial mask of voxels whose output differs (any batch item, any channel)."""
    return (a - b).abs().amax(dim=(0, 1)) > 1e-9


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("size", [(37, 41, 29), (32, 32, 32), (48, 40, 56), (5, 7, 3)])
def test_tiny_output_shape_equals_input_shape(size: tuple[int, int, int]) -> None:
    net = _tiny().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("preset", sorted(MEDT3D_PRESETS))
def test_every_preset_keeps_odd_sizes(preset: str) -> None:
    net = MedT3D.from_preset(preset, in_channels=2, out_channels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 37, 41, 29))
    assert out.shape == (1, 4, 37, 41, 29)


def test_sizes_larger_than_the_training_patch_and_varying_sizes() -> None:
    torch.manual_seed(0)
    net = _tiny().eval()
    with torch.no_grad():
        small = net(torch.randn(1, 1, 32, 32, 32))
        big = net(torch.randn(1, 1, 72, 40, 88))
    assert small.shape[2:] == (32, 32, 32)
    assert big.shape[2:] == (72, 40, 88)


@pytest.mark.parametrize(
    "overrides",
    [
        {"stem_stride": 1, "logo": False},
        {"stem_stride": 2},
        {"stem_stride": 8, "local_patch": 2},
        {"channels": (8, 16), "blocks": (0, 1)},
        {"logo": False},
        {"span": 1},
        {"full_res_channels": 4},
        {"stem_stride": 2, "full_res_channels": 8},
    ],
)
def test_size_overrides_build_and_keep_shape(overrides: dict) -> None:
    net = _tiny(**overrides).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 19, 13, 22))
    assert out.shape == (1, 3, 19, 13, 22)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_internal_padding_equals_padding_by_hand_with_a_mask_and_cropping(norm: str) -> None:
    net = _tiny(norm=norm).eval()
    m = net.size_multiple
    x = torch.randn(1, 1, 30, 28, 26)
    pads = [(m - s % m) % m for s in x.shape[2:]]
    assert any(pads), "the test needs a size that is not a multiple"
    padded = F.pad(x, [0, pads[2], 0, pads[1], 0, pads[0]])
    valid = F.pad(torch.ones_like(x), [0, pads[2], 0, pads[1], 0, pads[0]])
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded, valid)[:, :, :30, :28, :26])
        # unmasked, the same zeros are taken for scan: the network's own padding is masked, so they differ
        assert not torch.allclose(net(x), net(padded)[:, :, :30, :28, :26], atol=1e-3)


@pytest.mark.parametrize("norm, far_changes", [("instance", True), ("batch", False)])
def test_a_batch_norm_convolution_sees_only_its_receptive_field(norm: str, far_changes: bool) -> None:
    # instance statistics pool the whole window, so a change far away moves every voxel; a batch norm at
    # inference (training's running statistics) does not
    torch.manual_seed(3)
    layer = ConvNormAct(4, 8, norm=norm)
    layer(torch.randn(2, 4, 12, 12, 12))  # one training step's statistics into the running ones
    layer.eval()
    x = torch.randn(1, 4, 20, 20, 20)
    y = x.clone()
    y[:, :, 15:, 15:, 15:] += 5.0
    with torch.no_grad():
        near_origin = (layer(x) - layer(y))[:, :, :10, :10, :10].abs().max()
    assert (near_origin > 1e-3) == far_changes, float(near_origin)


def test_a_batch_norm_medt3d_trains_scripts_and_exports(tmp_path) -> None:
    import onnxruntime as ort

    from medt3d.bundle.export import export_onnx

    torch.manual_seed(4)
    net = _tiny(norm="batch")
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in net.modules())
    x = torch.randn(2, 1, 16, 16, 16)
    F.cross_entropy(net(x), (x[:, 0] > 0).long()).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"no gradient for {missing}"
    net.eval()
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(torch.jit.script(net)(x), expected)
    session = ort.InferenceSession(str(export_onnx(net, tmp_path / "net.onnx", x, any_size=True)),
                                   providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, atol=1e-4, rtol=1e-4)


def test_batch_norm_learns_its_statistics_from_the_scan_voxels_of_padded_patches() -> None:
    """A training patch's padding (its ``valid`` mask) stays out of batch norm's batch and running statistics:
    they are those of a plain batch norm over the scan voxels alone."""
    from medt3d.networks.layers import ConvNormAct

    torch.manual_seed(0)
    layer = ConvNormAct(1, 4, norm="batch").train()
    x = torch.randn(2, 1, 12, 12, 12) * 2 + 3
    valid = torch.ones(2, 1, 12, 12, 12)
    valid[:, :, 8:] = 0  # the last four slices are a training pad
    x = x * valid  # zeroed outside the mask, as MedT3D feeds its convolutions
    out = layer(x, valid)
    with torch.no_grad():
        conv = layer[0](x)
    reference = nn.BatchNorm3d(4).train()
    expected = F.leaky_relu(reference(conv[:, :, :8]), 0.01)  # the scan voxels only
    torch.testing.assert_close(out[:, :, :8], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer[1].running_mean, reference.running_mean)
    torch.testing.assert_close(layer[1].running_var, reference.running_var)
    unmasked = nn.BatchNorm3d(4).train()
    unmasked(conv)  # the pad's voxels in the statistics: another running mean
    assert not torch.allclose(unmasked.running_mean, reference.running_mean, atol=1e-3)


def test_an_unknown_norm_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="network.norm"):
        load_config("demo", ["network.norm=layer"])


# --------------------------------------------------------------------------- gradients, determinism


def test_gradients_reach_every_trainable_parameter() -> None:
    torch.manual_seed(1)
    net = MedT3D.from_preset("tiny", in_channels=1, out_channels=2, channels=[8, 16], blocks=[1, 1], heads=2)
    x = torch.randn(2, 1, 32, 32, 32)
    loss = F.cross_entropy(net(x), (x[:, 0] > 0).long())
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"no gradient for {missing}"


def test_full_res_path_trains_and_scripts() -> None:
    torch.manual_seed(2)
    net = _tiny(full_res_channels=4)
    x = torch.randn(2, 1, 16, 16, 16)
    F.cross_entropy(net(x), (x[:, 0] > 0).long()).backward()
    assert net.full_stem[0].weight.grad.abs().sum() > 0 and net.full_head.weight.grad.abs().sum() > 0
    assert net.final.weight.shape[0] == 4  # the decoder's last layer now feeds the path, not the logits
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_same_seed_same_network_and_output() -> None:
    x = torch.randn(1, 1, 24, 20, 16)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = _tiny().eval()
        with torch.no_grad():
            outs.append(net(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(net(x), outs[1], rtol=0, atol=0)
    torch.manual_seed(124)
    with torch.no_grad():
        assert not torch.allclose(_tiny().eval()(x), outs[0])


def test_dropout_only_in_training_mode() -> None:
    torch.manual_seed(2)
    net = _tiny(dropout=0.5)
    x = torch.randn(1, 1, 16, 16, 16)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))


def test_gate_parameters_of_the_whole_network() -> None:
    net = _tiny()
    attentions = [m for m in net.modules() if isinstance(m, GatedAxialAttention)]
    # tiny: one global block and one local block, three axes each
    assert len(attentions) == 6
    gates = gate_parameters(net)
    assert len(gates) == 24
    assert {id(g) for g in gates} == {id(p) for n, p in net.named_parameters() if n.rsplit(".", 1)[-1].startswith("gate_")}
    assert len(gate_parameters(_tiny(logo=False))) == 12


# --------------------------------------------------------------------------- locality


def test_block_attention_spreads_line_then_plane_then_volume() -> None:
    torch.manual_seed(3)
    block = GatedAxialBlock(channels=4, heads=2, span=2).double()
    x = torch.randn(1, 4, 5, 6, 7, dtype=torch.float64)
    v = (2, 3, 4)
    x2 = x.clone()
    # a perturbation with nonzero spread over channels (a constant one is invisible to LayerNorm)
    x2[0, :, v[0], v[1], v[2]] += torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)

    def after(n_axes: int, t: torch.Tensor) -> torch.Tensor:
        y = block.norm1(t)
        for attn in (block.attn_d, block.attn_h, block.attn_w)[:n_axes]:
            y = attn(y)
        return y

    with torch.no_grad():
        d_line = _changed(after(1, x2), after(1, x))
        dh_plane = _changed(after(2, x2), after(2, x))
        whole = _changed(block(x2), block(x))
    expected_line = torch.zeros_like(d_line)
    expected_line[:, v[1], v[2]] = True
    expected_plane = torch.zeros_like(d_line)
    expected_plane[:, :, v[2]] = True
    assert torch.equal(d_line, expected_line)
    assert torch.equal(dh_plane, expected_plane)
    # D, then H, then W: one block reaches every voxel (a global receptive field)
    assert whole.all()


def test_local_branch_keeps_changes_inside_the_voxels_sub_volume() -> None:
    torch.manual_seed(4)
    branch = LocalBranch(channels=4, heads=2, span=3, patch=4).double()
    x = torch.randn(2, 4, 8, 12, 10, dtype=torch.float64)  # W=10 is padded to 12 internally
    x2 = x.clone()
    x2[1, :, 5, 2, 9] += torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    with torch.no_grad():
        y, y2 = branch(x), branch(x2)
    assert y.shape == x.shape
    assert torch.equal(y[0], y2[0]), "other batch items must not change"
    changed = _changed(y2, y)
    expected = torch.zeros_like(changed)
    expected[4:8, 0:4, 8:10] = True
    assert torch.equal(changed, expected)


def test_local_branch_equals_blocks_run_on_each_sub_volume() -> None:
    torch.manual_seed(5)
    branch = LocalBranch(channels=4, heads=2, span=3, patch=4).double()
    x = torch.randn(1, 4, 8, 4, 8, dtype=torch.float64)
    with torch.no_grad():
        folded = branch(x)
        for i in range(0, 8, 4):
            for k in range(0, 8, 4):
                one = branch.blocks(x[:, :, i : i + 4, :, k : k + 4])
                torch.testing.assert_close(folded[:, :, i : i + 4, :, k : k + 4], one)


# --------------------------------------------------------------------------- layers


def period_two_share(logits: torch.Tensor) -> list[float]:
    """Share of the non-constant energy of (C, X, Y, Z) logits at the period-2 frequency, per axis."""
    shares = []
    for axis in (1, 2, 3):
        power = torch.fft.rfft(logits - logits.mean(dim=axis, keepdim=True), dim=axis).abs() ** 2
        shares.append(float(power.select(axis, power.shape[axis] - 1).sum() / power.sum()))
    return shares


def test_period_two_share_sees_a_checkerboard() -> None:
    g = torch.linspace(0, 1, 32)
    smooth = (g[:, None, None] + g[None, :, None] + g[None, None, :]).expand(2, 32, 32, 32)
    parity = torch.arange(32) % 2
    grid = smooth + 0.2 * (parity[:, None, None] + parity[None, :, None] + parity[None, None, :])
    assert max(period_two_share(smooth)) < 0.01
    assert min(period_two_share(grid)) > 0.2  # a grid of 7% of the range


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
@pytest.mark.parametrize("full_res_channels", [0, 8])
def test_logits_of_a_smooth_input_have_no_period_two_grid(preset: str, full_res_channels: int) -> None:
    # A learned x2 upsampling into the logits (each coarse voxel predicting its 2x2x2 children) put a
    # dotted grid into predicted masks: over half of the logits' variation sat at period 2. The logits
    # of a smooth ramp must be smooth, whatever the (random) weights.
    torch.manual_seed(0)
    net = MedT3D.from_preset(preset, 1, 2, full_res_channels=full_res_channels).eval()
    g = torch.linspace(0, 1, 64)
    ramp = (g[:, None, None] + 0.5 * g[None, :, None] + 0.25 * g[None, None, :])[None, None]
    with torch.no_grad():
        logits = net(ramp)[0][:, 16:-16, 16:-16, 16:-16]  # inside: away from the zero padding
    assert max(period_two_share(logits)) < 0.05


def test_voxel_shuffle_up_equals_transposed_convolution() -> None:
    torch.manual_seed(6)
    up = VoxelShuffleUp(3, 5).double()
    ref = nn.ConvTranspose3d(3, 5, kernel_size=2, stride=2).double()
    with torch.no_grad():
        # linear weight (5*8, 3) ordered (cout, a, b, c) <-> transposed-conv weight (3, 5, 2, 2, 2)
        ref.weight.copy_(up.linear.weight.view(5, 2, 2, 2, 3).permute(4, 0, 1, 2, 3))
        ref.bias.copy_(up.linear.bias.view(5, 8)[:, 0])
        up.linear.bias.copy_(up.linear.bias.view(5, 8)[:, :1].expand(5, 8).reshape(-1))
    x = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(up(x), ref(x))


def test_pointwise_conv_equals_conv3d() -> None:
    torch.manual_seed(7)
    pw = PointwiseConv(3, 2).double()
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    expected = F.conv3d(x, pw.weight[:, :, None, None, None], pw.bias)
    torch.testing.assert_close(pw(x), expected)


def test_fast_conv3d_matches_conv3d_values_and_gradients() -> None:
    torch.manual_seed(8)
    fast = FastConv3d(4, 6, kernel_size=3, stride=2, padding=1)
    x = torch.randn(1, 4, 9, 8, 7, requires_grad=True)
    y = fast(x)
    ref = F.conv3d(x, fast.weight, fast.bias, stride=2, padding=1)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g_fast = torch.autograd.grad(y.square().sum(), (x, fast.weight, fast.bias))
    g_ref = torch.autograd.grad(ref.square().sum(), (x, fast.weight, fast.bias))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": (16, 32), "blocks": (1,)}, "one entry per stage"),
        ({"channels": (10,), "blocks": (1,), "heads": 4}, "multiple of heads"),
        ({"stem_stride": 3}, "power of two"),
        ({"span": 0}, "span"),
        ({"local_patch": 1}, "local_patch"),
        ({"blocks": (-1,), "channels": (16,)}, "blocks"),
        ({"full_res_channels": 4, "stem_stride": 1}, "full_res_channels"),
        ({"full_res_channels": -1}, "full_res_channels"),
        ({"stem_stride": 8, "stem_channels": (12,)}, "stem_channels"),
        ({"stem_stride": 2, "stem_channels": (12,)}, "stem_channels"),
    ],
)
def test_bad_sizes_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MedT3D(1, 2, **{"channels": (16,), "blocks": (1,), "heads": 2, **kwargs})


def test_wrong_input_channels_raise() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\)"):
        _tiny()(torch.randn(1, 2, 16, 16, 16))


# --------------------------------------------------------------------------- factory


def test_build_network_uses_preset_and_overrides() -> None:
    cfg = load_config(None, ["network.preset=tiny", "data.labels=[bg,a,b,c]", "data.in_channels=2"])
    net = build_network(cfg)
    assert isinstance(net, MedT3D)
    assert net.in_channels == 2 and net.out_channels == 4
    tiny = MEDT3D_PRESETS["tiny"]
    assert net.size_multiple == tiny.stem_stride * 2 ** (len(tiny.channels) - 1)
    assert net.stages[0].local is not None

    cfg = load_config(None, [
        "network.preset=tiny", "network.channels=[8,16]", "network.blocks=[1,2]", "network.heads=4",
        "network.span=2", "network.stem_stride=2", "network.logo=false",
    ])
    net = build_network(cfg)
    assert net.size_multiple == 4
    assert net.stages[0].local is None
    assert len(net.stages) == 2 and len(net.stages[1].blocks) == 2
    attn = net.stages[1].blocks[0].attn_d
    assert (attn.channels, attn.heads, attn.span) == (16, 4, 2)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 10, 9, 11)).shape == (1, 2, 10, 9, 11)


def test_build_network_passes_full_res_channels_and_config_checks_it() -> None:
    net = build_network(load_config(None, ["network.preset=tiny", "network.full_res_channels=6"]))
    assert net.full_res_channels == 6 and net.full_head.weight.shape[1] == 6
    assert build_network(load_config(None, ["network.preset=tiny"])).full_res_channels == 0
    with pytest.raises(ValueError, match="network.full_res_channels"):
        load_config(None, ["network.full_res_channels=-2"])


def test_build_network_passes_stem_channels_and_config_checks_them() -> None:
    net = build_network(load_config(None, ["network.stem_channels=[20,40]"]))  # small: stem stride 8
    assert [conv[0].out_channels for conv in net.stem] == [20, 40, MEDT3D_PRESETS["small"].channels[0]]
    assert net.final.weight.shape[1] == 20  # the logits come from stem level 1
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)
    derived = build_network(load_config(None, []))
    assert [conv[0].out_channels for conv in derived.stem] == [12, 24, 48]
    with pytest.raises(ValueError, match="network.stem_channels"):
        load_config(None, ["network.stem_channels=[0,8]"])


def test_build_network_rejects_mismatched_stage_lists() -> None:
    cfg = load_config(None, ["network.preset=tiny", "network.channels=[8,16,32]"])
    with pytest.raises(ValueError, match="network.blocks"):
        build_network(cfg)


def test_build_network_rejects_unknown_preset_via_config() -> None:
    with pytest.raises(ValueError, match="preset"):
        load_config(None, ["network.preset=huge"])


def test_build_unet_baseline_forward() -> None:
    cfg = load_config(None, ["network.name=unet", "patch.roi_size=[32,32,32]", "data.labels=[bg,fg,x]"])
    net = build_network(cfg).eval()
    assert type(net).__name__ == "UNet"
    assert list(net.channels) == list(BASELINES["unet"]["kwargs"]["channels"])
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_build_unetr_baseline_forward() -> None:
    cfg = load_config(None, ["network.name=unetr", "patch.roi_size=[32,32,32]"])
    net = build_network(cfg).eval()
    assert type(net).__name__ == "UNETR"
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


@pytest.mark.parametrize("overrides, message", [
    (["network.name=unet", "patch.roi_size=[32,32,32]", "infer.roi_size=[40,32,32]"], "infer.roi_size edges"),
    (["network.name=unetr", "patch.roi_size=[32,32,32]", "infer.roi_size=[64,64,32]"], "UNETR is built for one"),
])
def test_baseline_rejects_an_inference_window_it_cannot_take(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_network(load_config(None, overrides))


@pytest.mark.parametrize("overrides, multiple", [
    (["network.preset=small"], 16), (["network.preset=tiny"], 4), (["network.preset=base"], 16),
    (["network.preset=small", "network.stem_stride=4"], 8), (["network.name=unet"], 16),
    (["network.name=swinunetr", "patch.roi_size=[64,64,64]"], 32), (["network.name=unetr"], None),
])
def test_window_multiple_is_what_each_network_pads_to(overrides, multiple) -> None:
    cfg = load_config(None, overrides)
    assert window_multiple(cfg) == multiple
    if cfg.network.name == "medt3d":  # the network's own padding rule
        assert build_network(cfg).size_multiple == multiple


def test_build_swinunetr_baseline() -> None:
    cfg = load_config(None, ["network.name=swinunetr", "patch.roi_size=[64,64,64]", "data.in_channels=2"])
    net = build_network(cfg)
    assert type(net).__name__ == "SwinUNETR"
    assert net.swinViT.patch_embed.proj.in_channels == 2


@pytest.mark.slow
def test_swinunetr_baseline_forward() -> None:
    cfg = load_config(None, ["network.name=swinunetr", "patch.roi_size=[64,64,64]"])
    net = build_network(cfg).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64, 64)).shape == (1, 2, 64, 64, 64)


@pytest.mark.parametrize(("name", "roi"), [("unet", "[40,32,32]"), ("unet", "[16,16,16]"), ("unetr", "[24,32,32]"), ("swinunetr", "[48,48,48]"), ("swinunetr", "[32,64,64]")])
def test_baselines_reject_roi_they_cannot_take(name: str, roi: str) -> None:
    cfg = load_config(None, [f"network.name={name}", f"patch.roi_size={roi}"])
    with pytest.raises(ValueError, match="patch.roi_size"):
        build_network(cfg)


def test_deep_supervision_heads_train_and_leave_inference_alone() -> None:
    from medt3d.training.losses import DeepSupervised, build_loss

    torch.manual_seed(3)
    net = _tiny(stem_stride=8, deep_supervision=1)
    x = torch.randn(2, 1, 16, 16, 16)
    label = (x[:, :1] > 0).long()
    out = net(x)
    assert out.shape == (2, 6, 16, 16, 16)  # main logits, then the auxiliary head's, 3 classes each
    from monai.losses import DiceCELoss

    base = DiceCELoss(to_onehot_y=True, softmax=True)
    value = DeepSupervised(base, num_classes=3, heads=2)(out, label)
    expected = (2 / 3) * base(out[:, :3], label) + (1 / 3) * base(out[:, 3:], label)  # weights 1 and 1/2, normalised
    torch.testing.assert_close(value, expected)
    value.backward()
    assert net.aux_heads[0].weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        plain = net(x)
        assert plain.shape == (2, 3, 16, 16, 16)
        torch.testing.assert_close(plain, out[:, :3].detach(), rtol=1e-4, atol=1e-5)  # eval: main head only
        torch.testing.assert_close(torch.jit.script(net)(x), plain)
    cfg = load_config("demo", ["network.preset=tiny", "network.stem_stride=8", "network.deep_supervision=1"])
    assert isinstance(build_loss(cfg), DeepSupervised) and build_network(cfg).deep_supervision == 1
    with pytest.raises(ValueError, match="deep_supervision must be 0..1"):
        _tiny(stem_stride=8, deep_supervision=2)


def test_without_input_head_the_logits_come_from_the_decoder_alone() -> None:
    net = _tiny(input_head=False)
    assert net.input_head is None
    x = torch.randn(1, 1, 16, 16, 16)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))
