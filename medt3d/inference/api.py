"""The notebook API: ``medt3d.load_model`` once, then ``medt3d.predict`` on images in memory or on disk.

Example:
    >>> import medt3d, nibabel as nib
    >>> model = medt3d.load_model("runs/spleen")                  # checkpoint, run folder or bundle
    >>> result = medt3d.predict(nib.load("scan.nii.gz"), model)  # a nibabel image back
    >>> result.volumes_ml                                        # {"spleen": 231.4}

``predict`` takes a path, a nibabel image, a SimpleITK image, a MONAI ``MetaTensor`` or a NumPy
array with its affine, and returns the label volume as the same kind of object on the input's own
grid: the same pipeline as ``medt3d infer`` (orientation, spacing, intensity, sliding window,
inversion), so the labels equal the command's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medt3d.data.geometry import flip_lps_ras
from medt3d.data.readers import as_loaded
from medt3d.devices import resolve_device
from medt3d.errors import InputError
from medt3d.inference.batch import class_volumes_ml
from medt3d.inference.engines import engine_networks
from medt3d.inference.predictor import Predictor
from medt3d.label_table import label_table

__all__ = ["SegmentationResult", "load_model", "predict"]

@dataclass
class SegmentationResult:
    """What :func:`predict` returns.

    Attributes:
        label: the label volume, of the input's kind and on its grid (a nibabel image for a path).
        labels: the label table (:func:`medt3d.label_table.label_table`): value, name, RGB colour and
            SNOMED codes of each class, background first.
        volumes_ml: volume of each structure (not background) in millilitres.
        probabilities: per-class probabilities (C, X, Y, Z) of the same kind, when asked for.
    """

    label: Any
    labels: list[dict[str, Any]]
    volumes_ml: dict[str, float]
    probabilities: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def load_model(path: str | Path, device: str | torch.device | None = None, progress: bool = False,
               engine: str | None = None, precision: str | None = None) -> Predictor:
    """Load a trained model once, for any number of :func:`predict` calls.

    Args:
        path: a checkpoint, a training run folder, an exported bundle folder or a bundle zip.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``None`` follows the model's ``infer.device``.
        progress: show a progress bar over the sliding windows.
        engine: ``torch`` or ``onnxruntime`` (a bundle's ONNX file; :mod:`medt3d.inference.engines`);
            ``None`` follows ``infer.engine``.
        precision: ``fp32``, ``bf16`` or ``fp16`` on torch; ``fp32``, ``fp16`` or ``int8`` on onnxruntime;
            ``None`` follows ``infer.precision``.

    Raises:
        FileNotFoundError: no model at ``path``.
        ValueError: an unreadable or unsafe model (see :func:`medt3d.models.loading.load_model`), or an
            engine and precision the model has no file for.
    """
    from medt3d.config import override_config
    from medt3d.models.loading import load_model as load_network

    network, cfg = load_network(path)
    cfg = override_config(cfg, {"infer.engine": engine, "infer.precision": precision})
    dev = resolve_device(str(device) if device is not None else cfg.infer.device)
    net = engine_networks([path], [network], cfg, dev)[0]
    return Predictor(net.to(dev), cfg, dev, progress=progress)


def predict(image: Any, model: Predictor | str | Path, affine: np.ndarray | None = None,
            probabilities: bool = False, engine: str | None = None, precision: str | None = None
            ) -> SegmentationResult:
    """Segment one scan with a model from :func:`load_model`.

    Args:
        image: a path (NIfTI, NRRD or DICOM series folder), a nibabel image, a SimpleITK image, a
            MONAI ``MetaTensor`` (X, Y, Z) or (1, X, Y, Z) with a voxel-to-RAS affine, or a NumPy array
            (X, Y, Z) with ``affine``.
        model: the model from :func:`load_model`, or a path to load it from (once per call: use
            :func:`load_model` for several scans).
        affine: the 4x4 voxel-to-RAS affine of a NumPy ``image`` (NIfTI's convention); ignored otherwise.
        probabilities: also return the per-class probabilities.
        engine: ``torch`` or ``onnxruntime`` for a ``model`` path (see :func:`load_model`); for a loaded model,
            the engine it was loaded with (anything else is refused).
        precision: as ``engine``: the precision to load a ``model`` path with.

    Returns:
        The label volume as the same kind of object as ``image`` (a nibabel image for a path),
        the label table and the volume of each structure in mL.

    Raises:
        ValueError: an unsupported kind, a NumPy array without affine, not 3-D, NaN/Inf voxels, a boolean
            or complex array, an affine that is not finite or has a zero voxel size, a SimpleITK direction
            that is not a rotation.
        FileNotFoundError: a path that does not exist.
    """
    model = _loaded(model, engine, precision)
    kind, volume, source = _as_volume(image, affine)
    if volume is None:
        prediction = model.predict(source, probabilities=probabilities)
    else:
        prediction = model.predict_loaded(volume, source=source, probabilities=probabilities)
    label = prediction.label
    table = label_table(model.cfg)
    _, per_class = class_volumes_ml(label, label.affine, len(table))
    volumes = {row["name"]: round(per_class[row["value"]], 4) for row in table[1:]}
    probs = prediction.probabilities
    return SegmentationResult(
        label=_like_input(kind, label[0].as_tensor().to(torch.uint8).numpy(), image, label.affine),
        labels=table, volumes_ml=volumes,
        probabilities=None if probs is None else _like_input(kind, probs.as_tensor().numpy(), image, probs.affine),
        timings=prediction.timings)


def _loaded(model: Predictor | str | Path, engine: str | None, precision: str | None) -> Predictor:
    """``model`` itself, or loaded from a path with ``engine`` and ``precision``; refuses a loaded model's other engine."""
    if isinstance(model, (str, Path)):
        return load_model(model, engine=engine, precision=precision)
    for key, wanted in (("engine", engine), ("precision", precision)):
        have = getattr(model.cfg.infer, key)
        if wanted is not None and wanted != have:
            raise InputError(f"predict: the model was loaded with {key} {have}, not {wanted}; load it with "
                             f"medt3d.load_model(path, {key}={wanted!r})")
    return model


def _as_volume(image: Any, affine: np.ndarray | None) -> tuple[str, MetaTensor | None, str]:
    """(kind, channel-first RAS MetaTensor or None for a path, a name for messages)."""
    if isinstance(image, (str, Path)):
        return "path", None, str(image)
    if isinstance(image, MetaTensor):
        _check_dtype(image.dtype, "MetaTensor")
        data = image if image.dim() == 4 else image.unsqueeze(0)
        return "metatensor", _volume(data.as_tensor(), np.asarray(image.affine), "MetaTensor"), "<MetaTensor>"
    if isinstance(image, np.ndarray):
        if affine is None:
            raise InputError("predict: a NumPy array needs its affine (4x4 voxel-to-RAS, as NIfTI), e.g. "
                             "medt3d.predict(array, model, affine=img.affine); pass affine=")
        _check_dtype(image.dtype, "NumPy array")
        return "numpy", _volume(torch.as_tensor(image)[None], np.asarray(affine), "NumPy array"), "<NumPy array>"
    if _is_nibabel(image):
        name = str(image.get_filename() or "<nibabel image>")
        _check_dtype(image.get_data_dtype(), f"nibabel image {name}")
        array = np.asarray(image.dataobj, dtype=np.float32)
        return "nibabel", _volume(torch.from_numpy(array)[None], np.asarray(image.affine), name), name
    if _is_sitk(image):
        import SimpleITK as sitk

        _check_sitk_direction(image)
        raw = sitk.GetArrayFromImage(image)
        _check_dtype(raw.dtype, "SimpleITK image")
        array = raw.astype(np.float32).transpose()  # (z, y, x) -> (x, y, z)
        return "sitk", _volume(torch.from_numpy(np.ascontiguousarray(array))[None], _sitk_ras_affine(image),
                               "SimpleITK image"), "<SimpleITK image>"
    raise InputError(f"predict: cannot segment a {type(image).__name__}; give a path, a nibabel or SimpleITK image, "
                     "a MONAI MetaTensor or a NumPy array with affine=")


def _check_dtype(dtype: Any, what: str) -> None:
    """Refuse voxels that a cast to float would silently change: a mask (bool) or complex values."""
    if isinstance(dtype, torch.dtype):
        kind = "b" if dtype == torch.bool else "c" if dtype.is_complex else "f"
    else:
        kind = np.dtype(dtype).kind
    if kind == "b":
        raise InputError(f"predict: the {what} is boolean (a mask?); give the scan's intensities (e.g. HU for CT)")
    if kind == "c":
        raise InputError(f"predict: the {what} holds complex values; give real intensities, e.g. the magnitude "
                         "(numpy.abs) of an MR reconstruction")


def _check_sitk_direction(image: Any) -> None:
    """Refuse a direction that is not a rotation: SimpleITK would scale the voxel size by it."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        lengths = ", ".join(f"{v:.4g}" for v in np.linalg.norm(direction, axis=0))
        raise InputError(f"predict: the SimpleITK image's direction {direction.round(4).tolist()} is not a rotation "
                         f"(its columns have lengths {lengths}, not 1, or are not orthogonal); the direction holds "
                         "unit axis vectors and the voxel size goes in SetSpacing: fix them with SetDirection and "
                         "SetSpacing")


def _volume(data: torch.Tensor, affine: np.ndarray, what: str) -> MetaTensor:
    if data.dim() != 4 or affine.shape != (4, 4):
        raise InputError(f"predict: the {what} must be a 3-D volume (X, Y, Z) with a 4x4 affine, got shape "
                         f"{list(data.shape[1:])} and affine shape {list(affine.shape)}; pass a single 3-D scan")
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or min(np.linalg.norm(affine[:3, :3], axis=0)) <= 0:
        raise InputError(f"predict: the affine of the {what} is not finite or has a zero voxel size "
                         f"({affine[:3].round(4).tolist()}); give the 4x4 voxel-to-RAS matrix of the scan")
    return as_loaded(data.float(), affine, what)


def _like_input(kind: str, array: np.ndarray, image: Any, affine: Any) -> Any:
    """``array`` (C, X, Y, Z) or (X, Y, Z) as the input's kind, on its grid."""
    ras = np.asarray(affine, dtype=np.float64)
    if kind in ("path", "nibabel"):
        import nibabel as nib

        volume = np.moveaxis(array, 0, -1) if array.ndim == 4 else array  # probabilities: classes last
        return nib.Nifti1Image(volume, ras)
    if kind == "metatensor":
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=torch.as_tensor(ras))
    if kind == "sitk":
        import SimpleITK as sitk

        if array.ndim == 4:  # one vector image, a component per class
            out = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, 0, -1).transpose(2, 1, 0, 3)),
                                         isVector=True)
        else:
            out = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose()))
        out.CopyInformation(image)
        return out
    return array


def _sitk_ras_affine(image: Any) -> np.ndarray:
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return flip_lps_ras(lps)


def _is_nibabel(image: Any) -> bool:
    return hasattr(image, "dataobj") and hasattr(image, "affine") and hasattr(image, "get_filename")


def _is_sitk(image: Any) -> bool:
    return type(image).__module__.startswith("SimpleITK") and hasattr(image, "GetDirection")
