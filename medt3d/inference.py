"""Whole-scan prediction: preprocessing, sliding window, postprocessing, back to the scan's own grid.

:class:`Predictor` is the one inference route: ``medt3d evaluate``, ``medt3d infer``, the demo and
the bundle all use the same transforms and inferer settings from the config. Windows run on the
compute device while the full-resolution output accumulates on the CPU (bounded device memory).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import KeepLargestConnectedComponent

from medt3d.config import Config
from medt3d.data.transforms import build_infer_transforms, build_postprocessing
from medt3d.devices import autocast_dtype
from medt3d.training import build_sliding_window_inferer

__all__ = ["Prediction", "Predictor", "voxel_spacing", "flip_tta_axes"]


def voxel_spacing(affine: Any) -> list[float]:
    """Voxel spacing (mm) along each array axis, from a 4x4 affine."""
    a = np.asarray(affine, dtype=np.float64)
    return [float(v) for v in np.linalg.norm(a[:3, :3], axis=0)]


def flip_tta_axes() -> list[tuple[int, ...]]:
    """Spatial flip combinations used for test-time augmentation (dims of a (B, C, X, Y, Z) tensor)."""
    return [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


@dataclass
class Prediction:
    """One case's result on the scan's own grid.

    Attributes:
        label: integer label volume (1, X, Y, Z) as a MetaTensor with the input's affine.
        probabilities: per-class probabilities (C, X, Y, Z) when requested, else None.
    """

    label: MetaTensor
    probabilities: MetaTensor | None = None


class Predictor:
    """Predict whole scans with a trained network and the config it was trained with.

    Args:
        model: the network (in eval mode on ``device``).
        cfg: its config (preprocessing, ROI, inferer and postprocessing settings).
        device: where the windows run; the stitched output stays on the CPU.
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: torch.device) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.device = device
        self.pre = build_infer_transforms(cfg)
        self.post_label = build_postprocessing(cfg, self.pre, argmax=True)
        self.post_prob = build_postprocessing(cfg, self.pre, argmax=False)
        self.inferer = build_sliding_window_inferer(cfg, sw_device=device, device=torch.device("cpu"))
        self.autocast = autocast_dtype(cfg.infer.precision, device)
        labels = list(range(1, cfg.data.num_classes))
        self.keep_largest = KeepLargestConnectedComponent(applied_labels=labels, independent=True)

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        ctx = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with ctx:
            return self.model(x).float()

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (1, C, X, Y, Z) on the CPU for a preprocessed image (C, X, Y, Z)."""
        x = image.unsqueeze(0).as_tensor() if isinstance(image, MetaTensor) else image.unsqueeze(0)
        flips = flip_tta_axes() if self.cfg.infer.tta_flips else [()]
        total = None
        with torch.no_grad():
            for dims in flips:
                xi = torch.flip(x, dims) if dims else x
                prob = torch.softmax(self.inferer(xi, self._network), dim=1)
                prob = torch.flip(prob, dims) if dims else prob
                total = prob if total is None else total + prob
        return total / len(flips)

    def preprocess(self, image_path: str | Path) -> dict[str, Any]:
        """Load and preprocess one scan, checking channels and finite values."""
        data = self.pre({"image": str(image_path)})
        image = data["image"]
        if image.shape[0] != self.cfg.data.in_channels:
            raise ValueError(f"{image_path}: image has {image.shape[0]} channel(s) but the model expects "
                             f"{self.cfg.data.in_channels} (data.in_channels)")
        bad = int((~torch.isfinite(image)).sum())
        if bad:
            raise ValueError(f"{image_path}: {bad} NaN/Inf voxel(s) after preprocessing; fix or mask the scan "
                             "(medt3d does not guess values for them)")
        return data

    def predict(self, image_path: str | Path, probabilities: bool | None = None) -> Prediction:
        """Predict one scan (NIfTI, NRRD or DICOM folder); the result lies on the scan's own grid."""
        want_prob = self.cfg.infer.save_probabilities if probabilities is None else probabilities
        data = self.preprocess(image_path)
        prob = self.logits(data["image"])[0]
        pred_meta = MetaTensor(prob, meta=dict(data["image"].meta),
                               applied_operations=list(data["image"].applied_operations))
        label = self.post_label({**data, "pred": pred_meta})["pred"]
        if self.cfg.infer.largest_component:
            label = self.keep_largest(label)
        prob_out = None
        if want_prob:
            prob_meta = MetaTensor(prob.clone(), meta=dict(data["image"].meta),
                                   applied_operations=list(data["image"].applied_operations))
            prob_out = self.post_prob({**data, "pred": prob_meta})["pred"]
        return Prediction(label=label, probabilities=prob_out)


def write_nifti(volume: MetaTensor | np.ndarray, affine: Any, path: str | Path, dtype: Any = np.uint8) -> Path:
    """Write a (1, X, Y, Z) or (C, X, Y, Z) volume as NIfTI with ``affine`` (RAS), atomically.

    Channel-first multi-channel volumes are stored with channels last (X, Y, Z, C), as NIfTI expects.
    """
    import nibabel as nib

    from medt3d.io_utils import atomic_path

    array = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume)
    array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    image = nib.Nifti1Image(array.astype(dtype), np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return Path(path)
