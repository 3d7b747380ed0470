"""A label map back onto the scan's grid: the argmax of class scores, and nearest-neighbour index lists.

The preprocessing (reorientation, spacing, crop) only permutes, flips, scales and shifts a scan's
voxel axes, so a label on the model's grid goes back to the scan's by reading, along each scan axis,
one model axis: three index lists and one gather. MONAI's ``Invertd`` builds a float sampling grid
of the whole scan instead (seconds and gigabytes on a 512x512x300 CT); it stays the fallback for
grids that are not axis-parallel and for transforms this module does not know.

The lists are made by MONAI's and torch's own arithmetic (``to_norm_affine``, ``affine_grid``,
``grid_sample``) on one line of voxels per axis, so a scan voxel exactly halfway between two model
voxels (a 5 mm slice between two 2 mm ones) reads the one ``Invertd`` reads: the labels are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.utils import to_norm_affine
from monai.transforms.utils import create_translate
from monai.utils import TraceKeys

from medt3d.data.geometry import bounding_box

__all__ = ["argmax_channels", "argmax_on_scan_grid", "label_dtype", "label_on_scan_grid", "probabilities_on_scan_grid", "resample_index_lists",
           "resample_linear_lists"]

#: one axis of a grid read from another grid: (the other grid's axis, one index per voxel, -1 outside)
AxisIndex = tuple[int, np.ndarray]
#: the same for linear interpolation: (axis, lower index, upper index, weight of the upper one)
AxisLinear = tuple[int, np.ndarray, np.ndarray, np.ndarray]


def label_dtype(num_classes: int) -> torch.dtype:
    """The dtype of a label map of ``num_classes`` classes: uint8 up to 256, else int32."""
    return torch.uint8 if num_classes <= 256 else torch.int32


def argmax_channels(prob: torch.Tensor, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """The index of the largest channel of a (C, X, Y, Z) tensor, as a (1, X, Y, Z) ``dtype`` tensor.

    A running maximum over the channels (the first wins a tie, as ``torch.argmax``): torch's
    argmax over the first dimension of a large CPU tensor took 2.4 s where this takes 0.3 s.
    """
    values = prob.as_tensor() if isinstance(prob, MetaTensor) else prob
    best = values[0].clone()
    label = torch.zeros(values.shape[1:], dtype=dtype)
    for c in range(1, values.shape[0]):
        higher = values[c] > best
        best = torch.where(higher, values[c], best)
        label[higher] = c
    return label[None]


def _grid_lines(src_affine: Any, src_shape: Sequence[int], dst_affine: Any, dst_shape: Sequence[int],
                dtype: torch.dtype, align_corners: bool) -> list[tuple[int, int, torch.Tensor]] | None:
    """Per destination axis: the source axis, the grid component and ``affine_grid``'s line of it."""
    src = np.asarray(src_affine, dtype=np.float64)
    dst = np.asarray(dst_affine, dtype=np.float64)
    xform = torch.as_tensor(np.linalg.solve(src, dst), dtype=torch.float64).to(dtype)
    theta = to_norm_affine(xform[None], list(src_shape), list(dst_shape), align_corners)
    reverse = [2, 1, 0]  # SpatialResample's reverse_indexing: grid component r reads source axis 2 - r
    theta[:, :3] = theta[:, reverse]
    theta[:, :, :3] = theta[:, :, reverse]
    linear = theta[0, :3, :3]
    if not bool(((linear != 0).sum(dim=0) == 1).all()) or len({int(r) for r in linear.abs().argmax(dim=0)}) != 3:
        return None
    lines = []
    for t in range(3):
        component = int(linear[:, 2 - t].abs().argmax())
        size = [1, 1, 1, 1, 1]
        size[2 + t] = int(dst_shape[t])
        line = F.affine_grid(theta[:, :3], size, align_corners=align_corners)[..., component].reshape(-1)
        lines.append((2 - component, component, line))
    return lines


def resample_linear_lists(src_affine: Any, src_shape: Sequence[int], dst_affine: Any, dst_shape: Sequence[int],
                          dtype: torch.dtype = torch.float32, align_corners: bool = False,
                          padding_mode: str = "zeros") -> list[AxisLinear] | None:
    """The two source voxels and weights MONAI's linear ``SpatialResample`` blends for each destination voxel.

    The coordinates are ``grid_sample``'s (the same grid line as :func:`resample_index_lists`,
    unnormalised as torch does; "border" clamps them, "zeros" drops neighbours outside). Trilinear
    interpolation is the product of three such one-axis blends.

    Returns:
        Per destination axis (source axis, lower index, upper index, upper weight), indices -1
        outside; None when the transform mixes axes or the padding mode is "reflection".
    """
    if padding_mode not in ("zeros", "border"):
        return None
    lines = _grid_lines(src_affine, src_shape, dst_affine, dst_shape, dtype, align_corners)
    if lines is None:
        return None
    lists: list[AxisLinear] = []
    for s, _, line in lines:
        n = int(src_shape[s])
        coord = (line + 1) / 2 * (n - 1) if align_corners else ((line + 1) * n - 1) / 2
        if padding_mode == "border":
            coord = coord.clamp(0, n - 1)
        coord = coord.double().numpy()
        low = np.floor(coord).astype(np.int64)
        weight = (coord - low).astype(np.float32)
        high = low + 1
        lists.append((s, np.where((low >= 0) & (low < n), low, -1), np.where((high >= 0) & (high < n), high, -1),
                      weight))
    return lists


def resample_index_lists(src_affine: Any, src_shape: Sequence[int], dst_affine: Any, dst_shape: Sequence[int],
                         dtype: torch.dtype = torch.float32, align_corners: bool = False,
                         padding_mode: str = "zeros") -> list[AxisIndex] | None:
    """The source voxel MONAI's nearest-neighbour ``SpatialResample`` reads for each destination voxel.

    ``SpatialResample`` (what ``Spacingd`` and its inverse run) normalises the voxel transform with
    ``to_norm_affine``, builds the sampling grid with ``affine_grid`` and rounds it in ``grid_sample``,
    all in ``dtype``. For an axis-parallel transform each destination axis reads one source axis, so
    the same calls on one line of voxels per axis give, bit for bit, the indices of the whole grid.

    Returns:
        For each destination axis, the source axis and the source index of each voxel (-1 where
        ``padding_mode`` "zeros" leaves it outside); None when the transform mixes axes.
    """
    lines = _grid_lines(src_affine, src_shape, dst_affine, dst_shape, dtype, align_corners)
    if lines is None:
        return None
    lists: list[AxisIndex] = []
    for s, component, line in lines:
        grid = torch.zeros(1, line.numel(), 1, 1, 3, dtype=dtype)
        grid[..., component] = line.reshape(1, -1, 1, 1)
        probe_shape = [1, 1, 1, 1, 1]
        probe_shape[2 + s] = int(src_shape[s])
        probe = torch.arange(1, int(src_shape[s]) + 1, dtype=dtype).reshape(probe_shape)
        read = F.grid_sample(probe, grid, mode="nearest", padding_mode=padding_mode, align_corners=align_corners)
        lists.append((s, read.reshape(-1).round().to(torch.int64).numpy() - 1))
    return lists


def _exact_index_lists(src_affine: Any, src_shape: Sequence[int], dst_affine: Any, dst_shape: Sequence[int],
                       atol: float = 1e-4) -> list[AxisIndex] | None:
    """Index lists between two grids that differ by a permutation, flips and whole-voxel shifts."""
    to_source = np.linalg.solve(np.asarray(src_affine, dtype=np.float64), np.asarray(dst_affine, dtype=np.float64))
    linear = to_source[:3, :3]
    axes = np.argmax(np.abs(linear), axis=0)
    if sorted(axes.tolist()) != [0, 1, 2] or not np.allclose(np.abs(linear), np.abs(linear).round(), atol=atol) \
            or not np.allclose(to_source[:3, 3], to_source[:3, 3].round(), atol=atol):
        return None
    lists: list[AxisIndex] = []
    for t in range(3):
        s = int(axes[t])
        index = np.rint(linear[s, t] * np.arange(dst_shape[t]) + to_source[s, 3]).astype(np.int64)
        lists.append((s, np.where((index >= 0) & (index < src_shape[s]), index, -1)))
    return lists


def _crop_index_lists(start: Sequence[int], inner_shape: Sequence[int], outer_shape: Sequence[int]) -> list[AxisIndex]:
    lists: list[AxisIndex] = []
    for a in range(3):
        index = np.arange(outer_shape[a]) - int(start[a])
        lists.append((a, np.where((index >= 0) & (index < inner_shape[a]), index, -1)))
    return lists


def _exact(lists: list[AxisIndex]) -> list[AxisLinear]:
    return [(axis, index, index, np.zeros(len(index), dtype=np.float32)) for axis, index in lists]


def _read(inner: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.where(index >= 0, inner[np.clip(index, 0, None)], -1)


def _compose(inner: list[AxisLinear], outer: list[AxisLinear]) -> list[AxisLinear] | None:
    """``outer`` reads the grid ``inner`` maps; the result reads ``inner``'s source directly.

    One of the two must be exact per axis (a blend of blends is not one blend): None otherwise.
    """
    composed: list[AxisLinear] = []
    for s, low, high, weight in outer:
        axis, inner_low, inner_high, inner_weight = inner[s]
        if not inner_weight.any():
            composed.append((axis, _read(inner_low, low), _read(inner_low, high), weight))
        elif not weight.any():
            composed.append((axis, _read(inner_low, low), _read(inner_high, low),
                             np.where(low >= 0, inner_weight[np.clip(low, 0, None)], 0).astype(np.float32)))
        else:
            return None
    return composed


def _inverse_lists(volume: MetaTensor, scan_affine: Any, scan_shape: Sequence[int],
                   linear: bool) -> list[AxisLinear] | None:
    """Undo ``volume``'s recorded orientation, resampling and crop as ``Invertd`` would, axis by axis.

    ``linear``: blend two voxels per axis as ``Invertd`` with the recorded (bilinear) mode does;
    otherwise read the nearest voxel as ``Invertd(nearest_interp=True)`` does.
    """
    shape = [int(n) for n in volume.shape[1:]]
    lists: list[AxisLinear] | None = _exact([(a, np.arange(n)) for a, n in enumerate(shape)])
    affine = torch.as_tensor(volume.affine, dtype=torch.float64)
    operations: Sequence[Mapping[str, Any]] = volume.applied_operations
    for op in reversed(operations):
        name, info = op.get(TraceKeys.CLASS_NAME), op.get(TraceKeys.EXTRA_INFO, {})
        outer_shape = [int(n) for n in op.get(TraceKeys.ORIG_SIZE, ())][:3]
        if len(outer_shape) != 3 or lists is None:
            return None
        step: list[AxisLinear] | None = None
        if name == "CropForeground":
            padded = (info.get("pad_info") or {}).get(TraceKeys.EXTRA_INFO, {}).get("padded", ())
            if np.asarray(padded).any():
                return None
            start = [int(s) for s in info["cropped"][0::2]]
            step = _exact(_crop_index_lists(start, shape, outer_shape))
            affine = affine @ torch.as_tensor(create_translate(3, [-s for s in start]), dtype=torch.float64)
        elif name == "SpatialResample":
            align = info.get("align_corners")
            outer_affine = torch.as_tensor(info["src_affine"], dtype=torch.float64)
            args = (affine, shape, outer_affine, outer_shape, getattr(torch, str(info.get("dtype", "float32"))),
                    False if align in (None, TraceKeys.NONE) else bool(align), str(info.get("padding_mode", "zeros")))
            if linear:
                step = resample_linear_lists(*args)
            else:
                nearest = resample_index_lists(*args)
                step = None if nearest is None else _exact(nearest)
            affine = outer_affine
        elif name == "Orientation":
            outer_affine = torch.as_tensor(np.asarray(info["original_affine"], dtype=np.float64))
            exact = _exact_index_lists(affine, shape, outer_affine, outer_shape)
            step = None if exact is None else _exact(exact)
            affine = outer_affine
        if step is None:
            return None
        lists = _compose(lists, step)
        shape = outer_shape
    scan = np.asarray(scan_affine, dtype=np.float64)
    if lists is None or shape != [int(n) for n in scan_shape] or not np.allclose(affine.numpy(), scan, atol=1e-4):
        return None
    return lists


def label_on_scan_grid(scores: MetaTensor, scan_affine: Any, scan_shape: Sequence[int],
                       dtype: torch.dtype = torch.uint8) -> MetaTensor | None:
    """The label of class scores (C, X, Y, Z) on the model's grid, moved back to the scan's grid.

    ``scores`` carries the preprocessed image's affine and transform history. Each scan voxel takes
    the class of the model voxel ``Invertd`` (nearest neighbour) would read, found by
    :func:`resample_index_lists`; voxels outside the model's grid get 0 (background).

    Returns:
        The (1, X, Y, Z) label with ``scan_affine``, or None when the history holds a transform this
        function does not undo or grids that are not axis-parallel (then use ``Invertd``).
    """
    values = scores.as_tensor()
    lists = _inverse_lists(scores, scan_affine, scan_shape, linear=False)
    if lists is None:
        return None
    axes = [axis for axis, *_ in lists]
    label = argmax_channels(values, dtype)[0].permute(*axes)  # model axes in scan order
    index = [torch.from_numpy(np.clip(i, 0, None)) for _, i, _, _ in lists]
    out = label[index[0][:, None, None], index[1][None, :, None], index[2][None, None, :]]
    valid = [i >= 0 for _, i, _, _ in lists]
    if not all(v.all() for v in valid):
        out = out * torch.from_numpy(valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :])
    return MetaTensor(out[None].contiguous(), affine=torch.as_tensor(scan_affine, dtype=torch.float64))


def probabilities_on_scan_grid(prob: MetaTensor, scan_affine: Any, scan_shape: Sequence[int]) -> MetaTensor | None:
    """Class probabilities (C, X, Y, Z) on the model's grid, moved back to the scan's grid linearly.

    What ``Invertd`` with the recorded bilinear mode gives (trilinear interpolation at the same
    coordinates, 0 outside the crop), done as three one-axis blends (:func:`resample_linear_lists`)
    instead of a sampling grid of the whole scan. Values agree with ``Invertd``'s to float32
    round-off.

    Returns:
        The (C, X, Y, Z) float32 probabilities with ``scan_affine``, or None as for
        :func:`label_on_scan_grid` (then use ``Invertd``).
    """
    values = prob.as_tensor().float()
    lists = _inverse_lists(prob, scan_affine, scan_shape, linear=True)
    if lists is None:
        return None
    order = [axis for axis, *_ in lists]  # model axes in scan order
    out = torch.stack([_blend(channel.permute(*order), lists) for channel in values])
    return MetaTensor(out, affine=torch.as_tensor(scan_affine, dtype=torch.float64))


def argmax_on_scan_grid(prob: MetaTensor, scan_affine: Any, scan_shape: Sequence[int],
                        dtype: torch.dtype = torch.uint8) -> MetaTensor | None:
    """The argmax of class probabilities moved back to the scan's grid linearly (``infer.resample: probabilities``).

    The label :func:`probabilities_on_scan_grid` followed by an argmax would give, at a fraction of the
    cost: a class other than background can only win a blend of model voxels if it beats
    background in at least one of them, so only the scan voxels that read the bounding box of such
    model voxels are blended, one class at a time with a running maximum; the rest is background.

    Returns:
        The (1, X, Y, Z) label with ``scan_affine``, or None as for :func:`label_on_scan_grid`.
    """
    values = prob.as_tensor().float()
    lists = _inverse_lists(prob, scan_affine, scan_shape, linear=True)
    if lists is None:
        return None
    label = torch.zeros(tuple(int(n) for n in scan_shape), dtype=dtype)
    affine = torch.as_tensor(scan_affine, dtype=torch.float64)
    if values.shape[0] < 2:
        return MetaTensor(label[None], affine=affine)
    beats_background = (values[1:] >= values[:1]).any(dim=0)
    box = bounding_box(beats_background.numpy())
    if box is None:
        return MetaTensor(label[None], affine=affine)
    block, ranges = [], []
    for axis, low, high, weight in lists:  # scan voxels reading the box along this scan axis
        start, end = box[axis]
        reads = np.flatnonzero(((low >= start) & (low <= end)) | ((high >= start) & (high <= end)))
        if not len(reads):
            return MetaTensor(label[None], affine=affine)
        first, last = int(reads[0]), int(reads[-1]) + 1
        ranges.append(slice(first, last))
        block.append((axis, low[first:last], high[first:last], weight[first:last]))
    best: torch.Tensor | None = None
    part = label[ranges[0], ranges[1], ranges[2]]
    order = [axis for axis, *_ in block]
    for c in range(values.shape[0]):
        moved = _blend(values[c].permute(*order), block)
        if best is None:
            best = moved
            continue
        higher = moved > best
        torch.maximum(best, moved, out=best)  # in place: one scan-sized volume less at the peak
        part[higher] = c
        del moved, higher
    return MetaTensor(label[None], affine=affine)


def _blend_matrix(low: np.ndarray, high: np.ndarray, weight: np.ndarray, n_in: int) -> torch.Tensor:
    """The (n_out, n_in) matrix of one axis's linear blend; an index of -1 reads 0."""
    rows = torch.arange(len(low))
    matrix = torch.zeros(len(low), n_in)
    for index, w in ((low, 1 - weight), (high, weight)):
        inside = torch.from_numpy(index >= 0)
        matrix.index_put_((rows[inside], torch.from_numpy(index)[inside]), torch.from_numpy(w.astype(np.float32))[inside],
                          accumulate=True)
    return matrix


def _blend(volume: torch.Tensor, lists: Sequence[AxisLinear]) -> torch.Tensor:
    """A (X, Y, Z) volume (axes already in the target's order) blended along each axis by ``lists``.

    Each axis is one matrix product with its (mostly zero) blend matrix: BLAS reads the volume in
    order, where gathering two slices per voxel along the inner axes took several times as long.
    """
    x = volume.float()
    x = x @ _blend_matrix(*lists[2][1:], x.shape[2]).T  # Z
    x = torch.matmul(_blend_matrix(*lists[1][1:], x.shape[1]), x)  # Y: one product per X slice
    matrix = _blend_matrix(*lists[0][1:], x.shape[0])
    return (matrix @ x.reshape(x.shape[0], -1)).reshape(matrix.shape[0], x.shape[1], x.shape[2])  # X
