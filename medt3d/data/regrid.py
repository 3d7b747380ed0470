"""A label map onto another grid: the argmax of class scores, and nearest-neighbour index lists.

The preprocessing (reorientation, spacing, crop) only permutes, flips, scales and shifts a scan's
voxel axes, so a label on the model's grid goes back to the scan's by reading, along each scan axis,
one model axis: three index lists and one gather. MONAI's ``Invertd`` builds a float sampling grid
of the whole scan instead (seconds and gigabytes on a 512x512x300 CT); it stays the fallback for
grids that are not axis-parallel.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = ["argmax_channels", "nearest_on_grid"]


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


def nearest_on_grid(label: torch.Tensor, source_affine: torch.Tensor | np.ndarray, target_affine: torch.Tensor | np.ndarray,
                    target_shape: tuple[int, ...], atol: float = 1e-4) -> MetaTensor | None:
    """Nearest-neighbour resampling of a (1, X, Y, Z) label onto another grid whose axes are parallel to its own.

    The preprocessing (reorientation, spacing, crop) only permutes, flips, scales and shifts the
    scan's voxel axes, so each target axis reads one source axis: three index lists and one gather
    replace MONAI's ``Invertd`` (which builds a float sampling grid of the whole scan: seconds and
    gigabytes on a 512x512x300 CT). Target voxels outside the source grid get 0 (background).

    Returns:
        The label on the target grid (with ``target_affine``), or None when the grids are not
        axis-parallel (then use the general inversion).
    """
    source = np.asarray(source_affine, dtype=np.float64)
    target = np.asarray(target_affine, dtype=np.float64)
    to_source = np.linalg.solve(source, target)  # target voxel -> source voxel
    linear = to_source[:3, :3]
    axes = np.argmax(np.abs(linear), axis=0)  # the source axis each target axis reads
    if sorted(axes.tolist()) != [0, 1, 2] or not np.allclose(np.abs(linear).sum(axis=0),
                                                              np.abs(linear[axes, [0, 1, 2]]), atol=atol):
        return None
    src_shape = label.shape[1:]
    index, valid = [], []
    for t in range(3):
        s = axes[t]
        position = linear[s, t] * np.arange(target_shape[t]) + to_source[s, 3]
        nearest = np.rint(position).astype(np.int64)  # halves to even, as grid_sample's nearest (Invertd)
        inside = (nearest >= 0) & (nearest < src_shape[s])
        index.append(np.clip(nearest, 0, src_shape[s] - 1))
        valid.append(inside)
    gathered = label[0].permute(*[int(a) for a in axes])  # source axes in target order
    permuted_index = [torch.from_numpy(index[t]) for t in range(3)]
    out = gathered[permuted_index[0][:, None, None], permuted_index[1][None, :, None], permuted_index[2][None, None, :]]
    if not all(v.all() for v in valid):
        mask = torch.from_numpy(valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :])
        out = out * mask.to(out.dtype)
    return MetaTensor(out[None].contiguous(), affine=torch.as_tensor(target, dtype=torch.float64))
