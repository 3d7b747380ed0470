"""The inferer that every route uses: validation, evaluation, inference, the bundle and the benchmarks.

The window rule (:func:`fitted_window`): along an axis where the scan is longer than the window, the window
slides within the scan; elsewhere the window is the scan itself, raised to the training patch when the scan
is thinner, and the rest is padded with ``infer.padding_mode`` (``replicate`` by default: the edge slices
repeated). So every window that reaches past a scan gives the network the same input, and the labels do not
depend on the window (docs/benchmarks.md, "Borders"). Measured on slabs cut from a CT, repeating the edge up
to the training patch beat both constant padding and no padding at all (a window cut to the slab, with
MedT3D's mask) for MedT3D and UNet alike.

- MedT3D pads its input up to its size multiple itself and masks that padding (its attention and norms
  ignore it), so its windows are not rounded.
- The convolutional baselines need edges that are multiples of their downsampling: windows are rounded up
  to the multiple (and keep two voxels at UNet's 1/16 bottleneck).
- UNETR takes one input size, ``patch.roi_size``, padded as MONAI does.

``infer.roi_size: whole`` runs the whole scan in one forward pass when its estimated memory fits
``infer.whole_max_gb``, and otherwise falls back to windows of ``patch.roi_size`` with a log line.
A single window that covers the scan is run as one plain forward pass, without MONAI's blending.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.utils import convert_data_type, convert_to_dst_type

from medt3d.config import WHOLE_SCAN, Config
from medt3d.networks.factory import bottleneck_cells, masks_padding, window_multiple

__all__ = [
    "ScanFittedWindowInferer", "build_sliding_window_inferer", "estimate_forward_gb", "fitted_window",
    "inference_window",
]

logger = logging.getLogger(__name__)

#: Peak bytes per input voxel of one eval forward pass (float32, batch 1, two classes), measured with
#: ``python scripts/forward_memory.py`` (docs/benchmarks.md, "Borders"); :func:`estimate_forward_gb` adds the classes.
FORWARD_BYTES_PER_VOXEL: dict[str, float] = {"medt3d": 100.0, "unet": 160.0, "swinunetr": 400.0, "unetr": 400.0}


def inference_window(cfg: Config) -> tuple[int, int, int] | str:
    """The configured window: ``infer.roi_size`` (three sizes or ``"whole"``), or ``patch.roi_size`` when null."""
    if cfg.infer.roi_size == WHOLE_SCAN:
        return WHOLE_SCAN
    return tuple(int(r) for r in (cfg.infer.roi_size or cfg.patch.roi_size))  # type: ignore[return-value]


def fitted_window(window: Sequence[int], scan: Sequence[int], multiple: int | None, masked: bool = False,
                  floor: Sequence[int] | None = None, min_cells: int = 1) -> tuple[int, ...]:
    """The window that runs on a scan: ``window`` where the scan is longer, else the scan raised to ``floor``.

    Along an axis where the scan is longer than ``window``, the window slides. Elsewhere it is the scan itself,
    raised to ``floor`` (the training patch) when the scan is thinner; the rest is padded by the inferer
    (``infer.padding_mode``). So every window that reaches past a scan gives the same input, and the labels
    do not depend on the window.

    Args:
        window: the configured window.
        scan: the scan's spatial size.
        multiple: the network's size multiple; None for a network of one input size (``window`` is kept).
        masked: the network pads (and masks) its own input up to ``multiple`` (MedT3D), so edges are not rounded.
        floor: smallest edge where the window reaches past the scan (the training patch); None: the scan's.
        min_cells: fewest voxels an unmasked network's window must keep at its 1/``multiple`` bottleneck (UNet's
            instance norm needs 2); edges are grown by one multiple, up to ``window``, until it does.
    """
    if multiple is None:
        return tuple(int(w) for w in window)
    lows = floor if floor is not None else [1] * len(window)
    edges = [int(w) if int(s) > int(w) else max(int(s), int(lo)) for w, s, lo in zip(window, scan, lows)]
    if masked:
        return tuple(edges)
    edges = [multiple * math.ceil(e / multiple) for e in edges]
    while math.prod(e // multiple for e in edges) < min_cells:
        grow = max(range(len(edges)), key=lambda i: int(scan[i]) - edges[i])  # where the scan goes on furthest
        edges[grow] += multiple
    return tuple(edges)


def estimate_forward_gb(network_name: str, shape: Sequence[int], channels: int, classes: int) -> float:
    """Estimated peak memory (GB) of one eval forward pass over a (channels, *shape) input."""
    per_voxel = FORWARD_BYTES_PER_VOXEL.get(network_name, max(FORWARD_BYTES_PER_VOXEL.values()))
    return math.prod(int(s) for s in shape) * (per_voxel + 4 * (channels + 3 * classes)) / 1e9


class ScanFittedWindowInferer(SlidingWindowInferer):
    """MONAI's sliding-window inferer under the window rule of this module.

    Args:
        roi_size: the window, or ``"whole"``.
        multiple: the network's size multiple (None: one input size).
        masked: the network pads (and masks) its input up to ``multiple`` itself, so edges are not rounded.
        patch: the training patch: the smallest edge of a window that reaches past the scan (the
            :func:`fitted_window` floor), and the fallback window of ``"whole"``.
        min_cells: fewest voxels an unmasked network's window keeps at its bottleneck.
        whole_max_gb: memory budget of one whole-scan pass.
        network_name: ``network.name``, for the memory estimate.
        classes: output classes, for the memory estimate.
        kwargs: :class:`monai.inferers.SlidingWindowInferer` arguments (``padding_mode`` among them).

    Attributes:
        last_window: the window that ran on the last scan (after the rule), or None before any scan.
    """

    def __init__(self, roi_size: Sequence[int] | str, multiple: int | None, patch: Sequence[int],
                 masked: bool = False, whole_max_gb: float = 8.0, network_name: str = "medt3d", classes: int = 2,
                 min_cells: int = 1, **kwargs: Any) -> None:
        self.whole = roi_size == WHOLE_SCAN
        self.patch = tuple(int(r) for r in patch)
        self.window = self.patch if self.whole else tuple(int(r) for r in roi_size)
        super().__init__(roi_size=self.window, **kwargs)
        self.multiple = multiple
        self.masked = masked
        self.whole_max_gb = whole_max_gb
        self.network_name = network_name
        self.classes = classes
        self.min_cells = min_cells
        self.last_window: tuple[int, ...] | None = None

    def window_for(self, scan: Sequence[int], channels: int) -> tuple[int, ...]:
        """The window that a scan of spatial size ``scan`` runs with."""
        window = self.window
        if self.whole and self.multiple is not None:
            need = estimate_forward_gb(self.network_name, scan, channels, self.classes)
            if need <= self.whole_max_gb:  # fitted_window raises it to the patch and rounds it to the multiple
                window = tuple(int(s) for s in scan)
            else:
                logger.info("whole-scan pass of a %s scan needs about %.1f GB, more than infer.whole_max_gb=%g: "
                            "sliding windows of %s instead", "x".join(str(int(s)) for s in scan), need,
                            self.whole_max_gb, list(self.patch))
        return fitted_window(window, scan, self.multiple, self.masked, floor=self.patch, min_cells=self.min_cells)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        scan = tuple(int(s) for s in inputs.shape[2:])
        self.roi_size = self.window_for(scan, int(inputs.shape[1]))
        self.last_window = self.roi_size
        if all(w >= s for w, s in zip(self.roi_size, scan)):
            return self._one_pass(inputs, network, *args, **kwargs)
        return super().__call__(inputs, network, *args, **kwargs)

    def _one_pass(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """One window covers the scan: run it as one forward pass (MONAI's blending of one window is the identity)."""
        scan = inputs.shape[2:]
        pads = [int(w) - int(s) for w, s in zip(self.roi_size, scan)]
        meta = MetaTensor([]).copy_meta_from(inputs, copy_attr=False) if isinstance(inputs, MetaTensor) else None
        x = convert_data_type(inputs, torch.Tensor)[0]  # the network sees a plain tensor, as under MONAI's inferer
        x = x if self.sw_device is None else x.to(self.sw_device)
        if any(pads):
            mode = str(getattr(self.padding_mode, "value", self.padding_mode))
            pad = [p for d in reversed(pads) for p in (d // 2, d - d // 2)]  # MONAI's symmetric padding
            x = F.pad(x, pad, mode=mode, value=float(self.cval)) if mode == "constant" else F.pad(x, pad, mode=mode)
        out = network(x, *args, **kwargs)
        if any(pads):
            starts = [d // 2 for d in pads]
            out = out[:, :, starts[0]:starts[0] + scan[0], starts[1]:starts[1] + scan[1], starts[2]:starts[2] + scan[2]]
        device = self.device or inputs.device
        return convert_to_dst_type(out, meta if meta is not None else inputs, device=device)[0]


def build_sliding_window_inferer(cfg: Config, sw_device: torch.device | None = None,
                                 device: torch.device | None = None) -> ScanFittedWindowInferer:
    """The inferer every route uses (validation, evaluation, inference, bundle, benchmarks)."""
    return ScanFittedWindowInferer(
        roi_size=inference_window(cfg),
        multiple=window_multiple(cfg),
        masked=masks_padding(cfg),
        patch=cfg.patch.roi_size,
        min_cells=bottleneck_cells(cfg),
        whole_max_gb=cfg.infer.whole_max_gb,
        network_name=cfg.network.name,
        classes=cfg.data.num_classes,
        sw_batch_size=cfg.infer.sw_batch_size,
        overlap=cfg.infer.overlap,
        mode=cfg.infer.mode,
        padding_mode=cfg.infer.padding_mode,
        sw_device=sw_device,
        device=device,
    )
