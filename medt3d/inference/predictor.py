"""Whole-scan prediction: preprocessing, sliding window, postprocessing, back to the scan's own grid.

:class:`Predictor` is the one inference route: ``medt3d evaluate``, ``medt3d infer``, the demo and
the bundle all use the same transforms and inferer settings from the config. Windows run on the
compute device while the full-resolution output accumulates on the CPU (bounded device memory).

Memory on the CPU is bounded too: the stitched output lives at the model's (preprocessed) spacing,
only one (C, ...) probability volume exists at a time (flip TTA sums into it in place), and the
label is mapped back to the scan's grid as one channel (nearest neighbour); per-class probabilities
on the scan's grid are only built when asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import KeepLargestConnectedComponent

from medt3d.config import Config
from medt3d.data.preflight import non_finite_problem
from medt3d.data.readers import GEOMETRY_ATOL_MM, LoadVolumed
from medt3d.data.regrid import argmax_on_scan_grid, label_dtype
from medt3d.data.transforms import build_infer_transforms, build_postprocessing
from medt3d.devices import autocast_dtype
from medt3d.errors import InputError
from medt3d.inference.engines import runs_own_precision
from medt3d.inference.inferer import build_sliding_window_inferer
from medt3d.inference.postprocess import PostprocessingPlan

__all__ = [
    "Prediction",
    "Predictor",
    "check_finite",
    "flip_tta_axes",
    "peak_rss_mb",
    "sha256_file",
]

def flip_tta_axes() -> list[tuple[int, ...]]:
    """Spatial flip combinations used for test-time augmentation (dims of a (B, C, X, Y, Z) tensor)."""
    return [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- prediction


def check_finite(image: torch.Tensor, source: str | Path) -> None:
    """Reject a volume holding NaN or Inf voxels, saying how many of each (the input gate's check).

    Raises:
        ValueError: naming ``source`` and the counts.
    """
    if bool(torch.isfinite(image).all()):
        return
    raise InputError(non_finite_problem(image.detach().cpu(), source))


@dataclass
class Prediction:
    """One case's result on the scan's own grid.

    Attributes:
        label: integer label volume (1, X, Y, Z) as a MetaTensor with the input's affine.
        probabilities: per-class probabilities (C, X, Y, Z) when requested, else None.
        timings: seconds spent loading, preprocessing, in the sliding windows and postprocessing.
        peak_rss_mb: peak resident memory of each of those phases (MiB; empty where unmeasurable).
        image: the scan as loaded (C, X, Y, Z), before any preprocessing, when requested (statistics).
        window: the sliding window that ran on the resampled scan (after the window rule), in voxels.
    """

    label: MetaTensor
    probabilities: MetaTensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    image: MetaTensor | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    window: list[int] | None = None

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS matrix of the scan as loaded."""
        return np.asarray(self.label.affine, dtype=np.float64)


_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_rss_mb(reset: bool = False) -> float | None:
    """This process's peak resident memory in MiB since the last reset (Linux ``VmHWM``), or None elsewhere.

    Args:
        reset: afterwards, restart the peak from the current resident memory (``clear_refs``), so
            that the next call gives the peak of what ran in between.
    """
    try:
        peak = next(int(line.split()[1]) for line in _STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        if reset:
            _CLEAR_REFS.write_text("5")
    except (OSError, StopIteration, ValueError):
        return None
    return round(peak / 1024, 1)


class _Laps:
    """Seconds and peak resident memory (MiB, Linux) of each phase of a prediction, in the order they ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        peak_rss_mb(reset=True)
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._clock, 3)
        peak = peak_rss_mb(reset=True)
        if peak is not None:
            self.peaks[name.removesuffix("_s")] = peak
        self._clock = time.perf_counter()


class Predictor:
    """Predict whole scans with a trained network and the config it was trained with.

    Args:
        model: the network (in eval mode on ``device``), or the members of an ensemble, whose softmax
            probabilities are averaged; with several, each member moves to ``device`` for its turn only
            (one member's weights and activations on the device at a time).
        cfg: its config (preprocessing, ROI, inferer and postprocessing settings).
        device: where the windows run; the stitched output stays on the CPU.
        progress: show a progress bar over the sliding windows.
        postprocessing: a per-class plan chosen by a cross-validation, applied to the label on the
            scan's grid (after ``infer.largest_component``).
    """

    def __init__(self, model: torch.nn.Module | Sequence[torch.nn.Module], cfg: Config, device: torch.device | str,
                 progress: bool = False, postprocessing: PostprocessingPlan | None = None) -> None:
        self.models = [m.eval() for m in ([model] if isinstance(model, torch.nn.Module) else model)]
        self.model = self.models[0]
        self.postprocessing = postprocessing
        self.cfg = cfg
        self.device = torch.device(device)
        self.pre = build_infer_transforms(cfg)
        # the Predictor averages softmax probabilities itself (flip TTA), so no second softmax here
        self.post_label = build_postprocessing(cfg, self.pre, argmax=True, softmax=False)
        self.post_prob = build_postprocessing(cfg, self.pre, argmax=False, softmax=False)
        self.inferer = build_sliding_window_inferer(cfg, sw_device=self.device, device=torch.device("cpu"))
        self.inferer.progress = progress
        # an ONNX Runtime network runs its own file's precision (medt3d.inference.engines)
        self.autocast = None if runs_own_precision(self.model) else autocast_dtype(cfg.infer.precision, self.device)
        labels = list(range(1, cfg.data.num_classes))
        self.keep_largest = KeepLargestConnectedComponent(applied_labels=labels, independent=True)
        transforms = list(self.pre.transforms)
        loaders = [i for i, t in enumerate(transforms) if isinstance(t, LoadVolumed)]
        if not loaders:
            raise RuntimeError("build_infer_transforms(cfg) has no LoadVolumed step")
        self._after_load = loaders[-1] + 1

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        ctx = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with ctx:
            return self.model(x).float()

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (1, C, X, Y, Z) on the CPU for a preprocessed image (C, X, Y, Z).

        With ``infer.tta_flips`` the probabilities of the 8 flipped inputs are averaged; with several
        members (an ensemble) those of every member, which run one after another.
        """
        if len(self.models) == 1:
            return self._member_probabilities(image)
        total: torch.Tensor | None = None
        moves = self.device.type != "cpu"
        try:
            for member in self.models:
                self.model = member.to(self.device) if moves else member
                prob = self._member_probabilities(image)
                if moves:
                    member.to("cpu")
                total = prob if total is None else total.add_(prob)
                del prob
        finally:
            self.model = self.models[0]
        assert total is not None
        return total.div_(len(self.models))

    def _member_probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """:meth:`probabilities` of the member in ``self.model``."""
        x = image.unsqueeze(0).as_tensor() if isinstance(image, MetaTensor) else image.unsqueeze(0)
        flips = flip_tta_axes() if self.cfg.infer.tta_flips else [()]
        total: torch.Tensor | None = None
        with torch.no_grad():
            for dims in flips:
                xi = torch.flip(x, dims) if dims else x
                out = self.inferer(xi, self._network)
                prob = torch.softmax(out, dim=1)
                del out
                if dims:
                    prob = torch.flip(prob, dims)
                if total is None:
                    total = prob
                else:
                    total += prob
                del prob
        assert total is not None
        if len(flips) > 1:
            total /= len(flips)
        return total

    def load(self, image_path: str | Path | Sequence[str | Path], series_uid: str | None = None) -> dict[str, Any]:
        """Load one scan (NIfTI, NRRD or DICOM folder; a list of one per channel) and check it before any preprocessing.

        ``series_uid`` picks the series of a DICOM folder that holds several.

        Raises:
            FileNotFoundError: no such file or folder.
            ValueError: unreadable, not 3-D, NaN/Inf voxels, or a channel count the model does not take.
        """
        image = str(image_path) if isinstance(image_path, (str, Path)) else [str(p) for p in image_path]
        data = {"image": image, **({"series_uid": series_uid} if series_uid else {})}
        return self.check({"image": self.pre(data, end=self._after_load)["image"]}, image_path)

    def check(self, data: dict[str, Any], source: str | Path) -> dict[str, Any]:
        """Check a loaded (channel-first, RAS-affine) image before any preprocessing; return ``data``.

        Raises:
            ValueError: NaN/Inf voxels, or a channel count the model does not take.
        """
        image = data["image"]
        if image.shape[0] != self.cfg.data.in_channels:
            raise InputError(f"{source}: image has {image.shape[0]} channel(s) but the model expects "
                             f"{self.cfg.data.in_channels} (data.in_channels in its config); give one file per "
                             "channel")
        check_finite(image, source)
        return data

    def preprocess(self, image_path: str | Path) -> dict[str, Any]:
        """Load, check and preprocess one scan (the model's orientation, spacing and intensity)."""
        return self.pre(self.load(image_path), start=self._after_load)

    def predict(self, image_path: str | Path | Sequence[str | Path], probabilities: bool | None = None,
                keep_image: bool = False, loaded: Future | None = None, series_uid: str | None = None) -> Prediction:
        """Predict one scan (NIfTI, NRRD or DICOM folder); the result lies on the scan's own grid.

        Args:
            image_path: the scan, or a list of one file per channel (multi-channel models).
            probabilities: also return per-class probabilities; ``None`` follows ``infer.save_probabilities``.
            keep_image: also return the scan as loaded (for per-structure intensity statistics).
            loaded: ``self.load(image_path)`` already running in another thread (a batch reads the
                next scan while this one is predicted); ``load_s`` is then the time spent waiting for it.
            series_uid: the series to read when a DICOM folder holds several.

        Raises:
            FileNotFoundError, ValueError: the scan is missing or unusable (the message names it).
        """
        laps = _Laps()
        data = self.load(image_path, series_uid) if loaded is None else loaded.result()
        laps("load_s")
        return self._predict_loaded(data, image_path, self._want_probabilities(probabilities), laps, keep_image)

    def predict_loaded(self, image: MetaTensor, source: str = "<image>",
                       probabilities: bool | None = None) -> Prediction:
        """Predict an image already in memory: a channel-first MetaTensor whose affine is voxel-to-RAS.

        The result lies on the image's own grid, as for :meth:`predict`.

        Raises:
            ValueError: NaN/Inf voxels or the wrong number of channels (naming ``source``).
        """
        laps = _Laps()
        data = self.check({"image": image}, source)
        laps("load_s")
        return self._predict_loaded(data, source, self._want_probabilities(probabilities), laps)

    def _want_probabilities(self, probabilities: bool | None) -> bool:
        return self.cfg.infer.save_probabilities if probabilities is None else probabilities

    def _predict_loaded(self, data: dict[str, Any], image_path: str | Path, want_prob: bool,
                        lap: _Laps, keep_image: bool = False) -> Prediction:
        loaded = data["image"] if keep_image else None
        shape = tuple(data["image"].shape[1:])
        affine = data["image"].affine.clone()
        data = self.pre(data, start=self._after_load)
        image = data["image"]
        lap("preprocess_s")
        prob = self.probabilities(image)[0]
        lap("windows_s")
        if self.cfg.infer.resample == "probabilities":
            label = self._argmax_on_scan_grid(data, image, prob, shape, affine, image_path)
        else:
            label = self.post_label({**data, "pred": self._like(image, prob)})["pred"]  # a new tensor
        prob_out = None
        if want_prob:
            prob_out = self.post_prob({**data, "pred": self._like(image, prob)})["pred"]
            prob_out = self._on_scan_grid(prob_out, shape, affine, image_path)
        del prob, data, image
        label = self._on_scan_grid(label, shape, affine, image_path)
        if self.cfg.infer.largest_component:
            label = self.keep_largest(label)
        if self.postprocessing is not None:
            label = self.postprocessing.apply(label)
        lap("postprocess_s")
        window = self.inferer.last_window
        return Prediction(label=label, probabilities=prob_out, timings=lap.timings, image=loaded,
                          peak_rss_mb=lap.peaks, window=list(window) if window is not None else None)

    def _argmax_on_scan_grid(self, data: dict[str, Any], image: MetaTensor, prob: torch.Tensor,
                             shape: tuple[int, ...], affine: torch.Tensor, source: str | Path) -> MetaTensor:
        """Resample each class's probability to the scan's grid (linearly) and take the argmax there.

        Axis-parallel grids: three one-axis blends inside the box where a class beats background
        (:func:`medt3d.data.regrid.argmax_on_scan_grid`). Otherwise ``Invertd`` one class at a time,
        keeping the running maximum: memory holds about three scan-sized volumes whatever the number
        of classes, not all the classes' maps at once.
        """
        dtype = label_dtype(self.cfg.data.num_classes)
        fast = argmax_on_scan_grid(self._like(image, prob), affine, shape, dtype)
        if fast is not None:
            return fast
        best: torch.Tensor | None = None
        label: torch.Tensor | None = None
        for c in range(prob.shape[0]):
            moved = self.post_prob({**data, "pred": self._like(image, prob[c:c + 1])})["pred"]
            moved = self._on_scan_grid(moved, shape, affine, source).as_tensor()
            if best is None:
                best, label = moved, torch.zeros(moved.shape, dtype=dtype)
            else:
                higher = moved > best
                best = torch.where(higher, moved, best)
                label[higher] = c
            del moved
        assert label is not None
        return MetaTensor(label, affine=affine.clone())

    @staticmethod
    def _like(image: MetaTensor, values: torch.Tensor) -> MetaTensor:
        """``values`` with the preprocessed image's metadata and transform history (for Invertd)."""
        return MetaTensor(values, meta=dict(image.meta), applied_operations=list(image.applied_operations))

    @staticmethod
    def _on_scan_grid(volume: MetaTensor, shape: tuple[int, ...], affine: torch.Tensor,
                      source: str | Path) -> MetaTensor:
        """Check that an inverted volume lies on the loaded scan's grid; give it exactly that affine."""
        if tuple(volume.shape[1:]) != shape:
            raise RuntimeError(f"{source}: the prediction came back with shape {tuple(volume.shape[1:])}, "
                               f"not the scan's {shape}")
        drift = float((volume.affine.to(torch.float64) - affine.to(torch.float64)).abs().max())
        if drift > GEOMETRY_ATOL_MM:
            raise RuntimeError(f"{source}: the prediction's affine differs from the scan's by {drift:.3g} mm")
        volume.affine = affine.clone()  # remove float round-off of the inversion
        return volume


# --------------------------------------------------------------------------- writing
