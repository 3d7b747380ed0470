"""GatedAxialAttention against slow, loop-per-line references written from the MedT formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medt3d.networks import GatedAxialAttention, gate_parameters
from medt3d.networks.attention import relative_index


def _set_gates(mod: GatedAxialAttention, qr: float, kr: float, sv: float, sve: float) -> None:
    with torch.no_grad():
        mod.gate_qr.fill_(qr)
        mod.gate_kr.fill_(kr)
        mod.gate_sv.fill_(sv)
        mod.gate_sve.fill_(sve)


def _lines(x: torch.Tensor, axis: int):
    """Yield (index, line) for every line along ``axis``; line is (C, L)."""
    moved = x.movedim(axis, -1)  # (B, C, o1, o2, L)
    for b in range(moved.shape[0]):
        for o1 in range(moved.shape[2]):
            for o2 in range(moved.shape[3]):
                yield (b, o1, o2), moved[b, :, o1, o2, :]


def _put(out_moved: torch.Tensor, index, line: torch.Tensor) -> None:
    b, o1, o2 = index
    out_moved[b, :, o1, o2, :] = line


def plain_axial_reference(mod: GatedAxialAttention, x: torch.Tensor) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(d)) v along one axis, one line and one head at a time."""
    c, h, d = mod.channels, mod.heads, mod.head_dim
    w = mod.qkv.weight.detach().to(x.dtype)
    out = torch.zeros_like(x).movedim(mod.axis, -1)
    for index, line in _lines(x, mod.axis):
        qkv = w @ line
        q, k, v = qkv[:c], qkv[c : 2 * c], qkv[2 * c :]
        res = torch.zeros_like(line)
        for head in range(h):
            sl = slice(head * d, (head + 1) * d)
            att = torch.softmax(q[sl].T @ k[sl] / math.sqrt(d), dim=-1)  # (L, L)
            res[sl] = (att @ v[sl].T).T
        _put(out, index, res)
    return out.movedim(-1, mod.axis)


def gated_reference(mod: GatedAxialAttention, x: torch.Tensor) -> torch.Tensor:
    """The full gated formula, scalar by scalar, with distances clipped to the span."""
    c, h, d, s = mod.channels, mod.heads, mod.head_dim, mod.span
    p = {name: t.detach().to(x.dtype) for name, t in mod.named_parameters()}
    g_qr, g_kr, g_sv, g_sve = (float(p[n]) for n in ("gate_qr", "gate_kr", "gate_sv", "gate_sve"))
    out = torch.zeros_like(x).movedim(mod.axis, -1)
    for index, line in _lines(x, mod.axis):
        length = line.shape[1]
        qkv = p["qkv.weight"] @ line
        q, k, v = qkv[:c], qkv[c : 2 * c], qkv[2 * c :]
        res = torch.zeros_like(line)
        for head in range(h):
            sl = slice(head * d, (head + 1) * d)
            for i in range(length):
                logits = torch.zeros(length, dtype=x.dtype)
                for j in range(length):
                    r = min(max(i - j, -s), s) + s
                    logits[j] = (
                        q[sl, i] @ k[sl, j]
                        + g_qr * (q[sl, i] @ p["rel_q"][r])
                        + g_kr * (k[sl, j] @ p["rel_k"][r])
                    ) / math.sqrt(d)
                a = torch.softmax(logits, dim=0)
                for j in range(length):
                    r = min(max(i - j, -s), s) + s
                    res[sl, i] += a[j] * (g_sv * v[sl, j] + g_sve * p["rel_v"][r])
        _put(out, index, res)
    return out.movedim(-1, mod.axis)


@pytest.mark.parametrize("axis", [2, 3, 4])
def test_zero_positional_gates_equal_plain_axial_attention(axis: int) -> None:
    torch.manual_seed(axis)
    mod = GatedAxialAttention(channels=6, axis=axis, heads=2, span=2).double()
    _set_gates(mod, 0.0, 0.0, 1.0, 0.0)
    x = torch.randn(2, 6, 5, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(mod(x), plain_axial_reference(mod, x))


@pytest.mark.parametrize("axis", ["D", "H", "W"])
def test_gated_formula_matches_slow_reference(axis: str) -> None:
    torch.manual_seed(1)
    # span 2 < axis lengths (up to 6), so clipping of distances is exercised
    mod = GatedAxialAttention(channels=4, axis=axis, heads=2, span=2).double()
    _set_gates(mod, 0.7, -0.4, 1.3, 0.9)
    x = torch.randn(1, 4, 6, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(mod(x), gated_reference(mod, x))


def test_default_gates_are_medt_initial_values_and_change_the_output() -> None:
    torch.manual_seed(2)
    mod = GatedAxialAttention(channels=4, axis="D", heads=1, span=3).double()
    assert [float(g.detach()) for g in mod.gates()] == pytest.approx([0.1, 0.1, 1.0, 0.1])
    x = torch.randn(1, 4, 7, 2, 2, dtype=torch.float64)
    gated = mod(x)
    torch.testing.assert_close(gated, gated_reference(mod, x))
    _set_gates(mod, 0.0, 0.0, 1.0, 0.0)
    assert not torch.allclose(gated, mod(x)), "positional terms must contribute with default gates"


def test_relative_index_clips_distances() -> None:
    idx = relative_index(5, 2)
    assert idx.shape == (5, 5)
    assert idx[0, 0] == 2 and idx[4, 0] == 4 and idx[0, 4] == 0 and idx[3, 2] == 3
    assert int(idx.min()) == 0 and int(idx.max()) == 4


@pytest.mark.parametrize("length", [1, 2, 9, 40])
def test_any_axis_length_is_accepted(length: int) -> None:
    mod = GatedAxialAttention(channels=4, axis=3, heads=2, span=3)
    x = torch.randn(1, 4, 2, length, 3)
    assert mod(x).shape == x.shape


def test_chunked_lines_give_the_same_result() -> None:
    torch.manual_seed(3)
    mod = GatedAxialAttention(channels=4, axis="W", heads=2, span=2).double()
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64)
    whole = mod(x)
    # 2*3*5 = 30 lines of 2*6*6 logits: a budget of 100 values forces chunks of one line
    mod.chunk_elements = 100
    torch.testing.assert_close(mod(x), whole)


@pytest.mark.parametrize("axis", [2, 3, 4])
def test_change_stays_on_the_voxels_line(axis: int) -> None:
    torch.manual_seed(4)
    mod = GatedAxialAttention(channels=4, axis=axis, heads=2, span=2).double()
    x = torch.randn(1, 4, 5, 6, 7, dtype=torch.float64)
    voxel = (2, 3, 4)
    x2 = x.clone()
    x2[0, :, voxel[0], voxel[1], voxel[2]] += 1.0
    changed = (mod(x2) - mod(x)).abs().amax(dim=(0, 1)) > 1e-12
    expected = torch.zeros_like(changed)
    line = [slice(v, v + 1) for v in voxel]
    line[axis - 2] = slice(None)
    expected[tuple(line)] = True
    assert torch.equal(changed, expected)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(5)
    mod = GatedAxialAttention(channels=4, axis="H", heads=2, span=2)
    x = torch.randn(1, 4, 3, 6, 3, requires_grad=True)
    mod(x).square().sum().backward()
    for name, param in mod.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gate_parameters_plain_wrapped_and_frozen() -> None:
    model = nn.Sequential(GatedAxialAttention(4, "D", heads=2, span=2), GatedAxialAttention(4, "W", heads=2, span=2))
    gates = gate_parameters(model)
    assert len(gates) == 8
    assert {id(g) for g in gates} == {id(p) for n, p in model.named_parameters() if ".gate_" in n}
    wrapped = nn.DataParallel(model)  # on CPU this only wraps, like DDP it exposes .module
    assert [id(g) for g in gate_parameters(wrapped)] == [id(g) for g in gates]
    for g in gates:
        g.requires_grad_(False)
    model(torch.randn(1, 4, 3, 3, 3)).sum().backward()
    assert all(g.grad is None for g in gates)
    assert all(p.grad is not None for n, p in model.named_parameters() if ".gate_" not in n)


def test_gate_parameters_under_ddp(tmp_path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = nn.Sequential(GatedAxialAttention(4, "D", heads=2, span=2))
        ddp = nn.parallel.DistributedDataParallel(model)
        assert [id(g) for g in gate_parameters(ddp)] == [id(g) for g in model[0].gates()]
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 6, "axis": 2, "heads": 4}, "multiple of heads"),
        ({"channels": 4, "axis": 1}, "axis"),
        ({"channels": 4, "axis": "X"}, "axis"),
        ({"channels": 4, "axis": 2, "span": 0}, "span"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GatedAxialAttention(**kwargs)


def test_wrong_input_shape_raises() -> None:
    mod = GatedAxialAttention(4, "D", heads=2)
    with pytest.raises(ValueError, match=r"\(B, 4, D, H, W\)"):
        mod(torch.randn(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="expects"):
        mod(torch.randn(1, 4, 4, 4))
