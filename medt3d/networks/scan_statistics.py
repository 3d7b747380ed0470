"""Instance-norm statistics of a whole scan, gathered over its sliding windows (issue 29).

MedT3D's convolutions normalise with the mean and variance of what they see. A window that covers the scan
sees the scan's statistics; a window smaller than the scan (a tile) sees its own, and that is what made the
labels depend on the window: a probe with a whole-scan pass's statistics brought 64^3 tiles within 0.011
of the whole pass, though their attention still saw 64^3 only (docs/benchmarks.md, "Borders").

:class:`ScanNormStatistics` gives every tile the scan's statistics without a whole-scan pass (which may not
fit in memory): the windows run ``passes`` times without output; each pass sums every instance norm's
input over the scan's voxels of all windows, and the next pass (and the real one) normalises with those
sums. The first pass gathers the first layer's statistics exactly; deeper layers converge with the passes.

No library does this (MONAI's inferers and norms have no scan-wide statistics), hence our own.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ScanNormStatistics", "active_statistics", "instance_norm_layers"]

#: The gathering in force for each instance-norm layer (eager mode only; never part of an exported graph).
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, ScanNormStatistics] = weakref.WeakKeyDictionary()


def active_statistics(layer: nn.Module) -> ScanNormStatistics | None:
    """The :class:`ScanNormStatistics` that ``layer`` normalises under, or None (its own window's)."""
    return _ACTIVE.get(layer)


def instance_norm_layers(model: Any) -> list[nn.Module]:
    """MedT3D's instance-norm convolutions in ``model``; empty for anything else (TorchScript, ONNX, UNet)."""
    from medt3d.networks.layers import ConvNormAct  # layers imports this module

    if not isinstance(model, nn.Module):
        return []
    return [m for m in model.modules() if isinstance(m, ConvNormAct) and m.instance]


class ScanNormStatistics:
    """Scan-wide statistics for the instance norms of one model, on one scan.

    ``with ScanNormStatistics(model) as stats: stats.gather(run, passes)`` then ``run()`` again: the last run
    normalises every window with the statistics the passes gathered over the whole scan.

    Args:
        model: the network (its :func:`instance_norm_layers` take part; with none, nothing changes).
    """

    def __init__(self, model: Any) -> None:
        self.layers = instance_norm_layers(model)
        self.fixed: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._sums: dict[nn.Module, list[torch.Tensor]] = {}
        self._collecting = False
        #: (B, 1, X, Y, Z) weight of each input voxel of the windows being run (a window's share of the
        #: scan: 1 where it is the window whose centre is nearest); None: every voxel counts once.
        self.window_weight: torch.Tensor | None = None

    @property
    def applies(self) -> bool:
        """Whether the model has layers whose statistics this replaces."""
        return bool(self.layers)

    @property
    def ready(self) -> bool:
        """Whether statistics have been gathered."""
        return bool(self.fixed)

    def __enter__(self) -> ScanNormStatistics:
        for layer in self.layers:
            _ACTIVE[layer] = self
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self.layers:
            if _ACTIVE.get(layer) is self:
                del _ACTIVE[layer]

    def gather(self, run: Callable[[], Any], passes: int) -> None:
        """Run ``run`` (every window of the scan, output discarded) ``passes`` times, gathering the statistics."""
        for _ in range(passes):
            self._sums, self._collecting = {}, True
            try:
                run()
            finally:
                self._collecting = False
            self.fixed = {layer: self._moments(sums) for layer, sums in self._sums.items()}

    def _weight_at(self, y: torch.Tensor) -> torch.Tensor | None:
        """:attr:`window_weight` on ``y``'s grid (the share of each voxel's input voxels that count), or None.

        The network pads its input at the end up to its size multiple and halves the grid at each level, so
        the weight is padded with zeros at the end to ``stride`` times ``y``'s size and averaged over
        ``stride``-cubes, where ``stride`` is the smallest power of two that reaches the input's size.
        """
        weight = self.window_weight
        if weight is None:
            return None
        stride = 1
        while any(stride * int(n) < int(w) for n, w in zip(y.shape[2:], weight.shape[2:])):
            stride *= 2
        pads = [stride * int(n) - int(w) for n, w in zip(y.shape[2:], weight.shape[2:])]
        weight = F.pad(weight, [0, pads[2], 0, pads[1], 0, pads[0]])
        if stride > 1:
            weight = F.avg_pool3d(weight, kernel_size=stride, stride=stride)
        return weight.to(device=y.device, dtype=torch.float64)

    @staticmethod
    def _moments(sums: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        count, total, squares = sums
        n = count.clamp_min(1.0)
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0.0)
        return mean.float().view(1, -1, 1, 1, 1), var.float().view(1, -1, 1, 1, 1)

    def moments(self, layer: nn.Module, y: torch.Tensor,
                valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The mean and variance ``layer`` normalises ``y`` with, or None for its own; gathers ``y`` while passing.

        Args:
            layer: the calling layer.
            y: its convolution's output (B, C, D, H, W).
            valid: (B, 1, D, H, W) mask of the scan's voxels, or None (all of them).
        """
        if self._collecting:
            y64 = y.detach().double()
            v = self._weight_at(y)
            if valid is not None:
                v = valid.detach().double() if v is None else v * valid.detach().double()
            if v is None:
                count = torch.tensor(float(y[0, 0].numel() * y.shape[0]), dtype=torch.float64, device=y.device)
                total, squares = y64.sum(dim=(0, 2, 3, 4)), (y64 * y64).sum(dim=(0, 2, 3, 4))
            else:
                count = v.sum()
                total, squares = (y64 * v).sum(dim=(0, 2, 3, 4)), (y64 * y64 * v).sum(dim=(0, 2, 3, 4))
            sums = self._sums.get(layer)
            if sums is None:
                self._sums[layer] = [count, total, squares]
            else:
                sums[0] = sums[0] + count
                sums[1] = sums[1] + total
                sums[2] = sums[2] + squares
        fixed = self.fixed.get(layer)
        if fixed is None:
            return None
        return fixed[0].to(y.dtype), fixed[1].to(y.dtype)
