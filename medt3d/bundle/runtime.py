"""What an exported bundle's configs call at run time, besides medt3d's own builders.

The bundle's ``configs/*.json`` build their transforms, network, loss, optimiser and sliding-window
inferer with the same medt3d functions that ``medt3d train`` and ``medt3d infer`` use (so the two
cannot drift). This module holds the few pieces that glue those builders into MONAI's bundle
workflow: an ``Inferer`` that runs medt3d's :class:`~medt3d.inference.predictor.Predictor` (sliding window,
precision, test-time flips), an atomic NIfTI writer for ``SaveImaged``, the input checks of
``medt3d infer`` and the case lists. Training needs no glue: ``train.json`` runs medt3d's engine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import NibabelWriter
from monai.data.utils import to_affine_nd
from monai.inferers import Inferer
from monai.transforms import MapTransform
from monai.utils import convert_data_type, convert_to_dst_type

from medt3d.config import Config
from medt3d.errors import InputError

#: Image metadata key holding the case name that output files are named after.
CASE_META_KEY = "medt3d_case"

__all__ = [
    "AtomicNibabelWriter",
    "CASE_META_KEY",
    "CaseNamed",
    "CheckImaged",
    "PredictorInferer",
    "case_name_formatter",
    "image_cases",
    "infer_transforms",
    "labelled_cases",
    "with_precision",
]


def with_precision(cfg: Config, precision: str | None) -> Config:
    """A copy of ``cfg`` whose ``infer.precision`` is ``precision`` (``None`` keeps the config's)."""
    if precision is None or precision == cfg.infer.precision:
        return cfg
    from medt3d.config import PRECISIONS

    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {list(PRECISIONS)}; pass one of them")
    return dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, precision=precision))


class CheckImaged(MapTransform):
    """Refuse a scan that ``medt3d infer`` refuses: a channel count the model does not take, NaN/Inf voxels.

    Args:
        cfg: the model's config (``data.in_channels``).
        keys: the image key.

    Raises:
        ValueError: naming the scan and the problem.
    """

    def __init__(self, cfg: Config, keys: str = "image") -> None:
        super().__init__(keys)
        self.in_channels = cfg.data.in_channels

    def __call__(self, data: Any) -> dict:
        from medt3d.inference.predictor import check_finite

        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            source = getattr(image, "meta", {}).get("filename_or_obj", key)
            if image.shape[0] != self.in_channels:
                raise InputError(f"{source}: image has {image.shape[0]} channel(s) but the model expects "
                                 f"{self.in_channels} (data.in_channels in its config); give one file per channel")
            check_finite(image, source)
        return d


def infer_transforms(cfg: Config) -> Any:
    """``medt3d.data.transforms.build_infer_transforms(cfg)`` with the checks of ``medt3d infer`` after loading.

    Also records the case name in the image's metadata, so that the label files get ``medt3d infer``'s names.
    """
    from medt3d.data.readers import LoadVolumed
    from medt3d.data.transforms import Pipeline, build_infer_transforms

    steps = list(build_infer_transforms(cfg).transforms)
    after_load = max(i for i, t in enumerate(steps) if isinstance(t, LoadVolumed)) + 1
    return Pipeline([*steps[:after_load], CheckImaged(cfg), CaseNamed(), *steps[after_load:]])


class PredictorInferer(Inferer):
    """MONAI ``Inferer`` that runs medt3d's Predictor: the very code path of ``medt3d infer``.

    Sliding window with the config's ROI, overlap and blending, autocast at ``precision``, and
    test-time flips when ``infer.tta_flips`` is set. Returns per-class probabilities (softmax)
    on the CPU, as a MetaTensor carrying the input's metadata so that ``Invertd`` can map it back.

    Args:
        cfg: the model's medt3d config.
        device: where the windows run.
        precision: ``fp32``, ``bf16`` or ``fp16``; ``None`` keeps ``cfg.infer.precision``.

    Raises:
        ValueError: the precision is not supported on ``device`` (fp16 needs a GPU).
    """

    def __init__(self, cfg: Config, device: torch.device | str, precision: str | None = None) -> None:
        super().__init__()
        from medt3d.devices import autocast_dtype

        self.cfg = with_precision(cfg, precision)
        self.device = torch.device(device)
        autocast_dtype(self.cfg.infer.precision, self.device)  # fail now, not at the first case
        self._predictor: Any = None
        self._network: torch.nn.Module | None = None

    def _predictor_for(self, network: torch.nn.Module) -> Any:
        from medt3d.inference.predictor import Predictor

        if self._predictor is None or self._network is not network:
            self._predictor = Predictor(network, self.cfg, self.device)
            self._network = network
        return self._predictor

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Probabilities (B, C, X, Y, Z) for a batch of preprocessed images (B, C_in, X, Y, Z)."""
        predictor = self._predictor_for(network)
        out = torch.cat([predictor.probabilities(image) for image in inputs], dim=0)
        return convert_to_dst_type(out, inputs, device=out.device)[0] if hasattr(inputs, "meta") else out


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's NIfTI writer for ``SaveImaged``, writing through medt3d's one NIfTI writer.

    MONAI prepares the array and affine (channel last, no resampling in the bundle's configs); the file is
    written by :func:`medt3d.data.nifti.write_nifti`, as ``medt3d infer`` writes its labels: atomically,
    the affine as both qform and sform. (The name is kept: exported bundles name it in their configs.)
    """

    def write(self, filename: Any, verbose: bool = False, **obj_kwargs: Any) -> None:
        """Write the NIfTI file atomically (see :func:`medt3d.io_utils.atomic_path`); ``obj_kwargs`` are not used."""
        from medt3d.data.nifti import write_nifti

        data = np.asarray(convert_data_type(self.data_obj, np.ndarray)[0])
        if data.ndim == 4:  # channel last (X, Y, Z, C): write_nifti takes channels first
            data = np.moveaxis(data, -1, 0)
        affine = to_affine_nd(3, convert_data_type(self.affine if self.affine is not None else np.eye(4),
                                                   np.ndarray)[0])
        write_nifti(data, affine, filename, dtype=self.output_dtype)


def image_cases(dataset_dir: str | Path, output_dir: str | Path | None = None) -> list[dict[str, str]]:
    """``[{"image": path, "name": case}]`` for every scan under ``dataset_dir``, named as ``medt3d infer`` names them.

    The same search and the same unique case names as ``medt3d infer`` (:func:`medt3d.inference.cases.discover_cases`:
    NIfTI, NRRD and DICOM series folders; files already inside ``output_dir`` are left out).

    Raises:
        ValueError: listing every input that cannot be read, or when there is none.
    """
    from medt3d.inference.cases import discover_cases

    cases = discover_cases([dataset_dir], output_dir if output_dir is not None else Path(dataset_dir) / ".none")
    problems = [f"{c.input}: {c.error}" for c in cases if c.path is None]
    if problems:
        raise InputError(f"{len(problems)} input(s) cannot be read; fix or remove them:\n" + "\n".join(problems))
    return [{"image": str(c.path), "name": c.name} for c in cases]


class CaseNamed(MapTransform):
    """Record the case name (``data["name"]``) in the image's metadata, for :func:`case_name_formatter`."""

    def __init__(self, keys: str = "image", name_key: str = "name") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.name_key = name_key

    def __call__(self, data: Any) -> dict:
        d = dict(data)
        if self.name_key in d:
            for key in self.key_iterator(d):
                d[key].meta[CASE_META_KEY] = str(d[self.name_key])
        return d


def case_name_formatter(metadict: dict, saver: Any) -> dict[str, Any]:
    """``SaveImaged`` naming: ``<case>_seg.nii.gz`` with the case name ``medt3d infer`` gives the scan."""
    from monai.data.folder_layout import default_name_formatter

    if not metadict or CASE_META_KEY not in metadict:
        return default_name_formatter(metadict, saver)
    # FolderLayout strips one extension (two for .gz) from the subject: give it one so dotted names survive
    return {"subject": f"{metadict[CASE_META_KEY]}.nii.gz", "idx": metadict.get("patch_index")}


def labelled_cases(dataset_dir: str | Path) -> list[dict[str, Any]]:
    """Every image/label pair of a data folder in any layout ``medt3d`` reads (train and val splits together)."""
    from medt3d.data.datalist import build_datalist

    datalist = build_datalist(dataset_dir)
    cases = list(datalist.train) + list(datalist.val)
    if not cases:
        raise InputError(f"{dataset_dir}: no image/label pairs found; pass a dataset with labels "
                         "(docs/data.md lists the layouts)")
    return cases
