"""The settings of a ``medt3d infer`` batch (:class:`InferOptions`), applied over the model's config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medt3d.config import Config, override_config
from medt3d.errors import InputError
from medt3d.inference.outputs import LABEL_NAMES, selectable_formats

__all__ = ["InferOptions"]


@dataclass
class InferOptions:
    """Settings of a batch; ``None`` keeps the model config's value.

    Attributes:
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
        roi_size: sliding-window size in voxels (``infer.roi_size``).
        overlap: window overlap (``infer.overlap``).
        mode: blending, ``gaussian`` or ``constant`` (``infer.mode``).
        padding_mode: how a scan thinner than the training patch is filled up to it (``infer.padding_mode``;
            a checkpoint from before the ``replicate`` default keeps ``constant`` unless this overrides it).
        sw_batch_size: windows per forward pass (``infer.sw_batch_size``).
        tta_flips: test-time augmentation by flips (``infer.tta_flips``).
        largest_component: keep the largest component per class (``infer.largest_component``).
        save_probabilities: also write per-class probabilities (``infer.save_probabilities``).
        precision: ``fp32``, ``bf16`` or ``fp16`` (``infer.precision``); ``fp32``, ``fp16`` or ``int8`` with
            ``engine="onnxruntime"``.
        engine: ``torch`` or ``onnxruntime`` (``infer.engine``; :mod:`medt3d.inference.engines`).
        resample: ``labels`` or ``probabilities`` back to the scan's grid (``infer.resample``).
        output_formats: label formats to write, from :data:`medt3d.config.OUTPUT_FORMATS`: ``nifti`` (always
            written), ``seg-nrrd`` (3D Slicer segmentation), ``dicom-seg`` (DICOM SEG, for DICOM inputs).
        statistics: per-structure intensity statistics of the scan (HU for CT) in each sidecar, and
            their means in the batch's ``volumes.csv``.
        skip_existing: leave cases that already have their sidecar and label in the output folder, made
            by the same model (the sidecar's weights hash and labels); others are segmented again.
        progress: progress bars over cases and windows.
        series_uid: the series to read in DICOM folders that hold several (``--series-uid``).
        shard: ``(I, N)``: only the cases of shard I of N (``--shard I/N``; see :mod:`medt3d.inference.shards`).
        output_naming: ``medt3d`` (``CASE_seg.nii.gz``) or ``nnunet`` (``CASE.nii.gz``, as nnU-Net's tools
            pair predictions with references); see :data:`~medt3d.inference.outputs.LABEL_NAMES`.
    """

    device: str | None = None
    roi_size: Sequence[int] | str | None = None
    overlap: float | None = None
    mode: str | None = None
    padding_mode: str | None = None
    sw_batch_size: int | None = None
    tta_flips: bool | None = None
    largest_component: bool | None = None
    save_probabilities: bool | None = None
    precision: str | None = None
    engine: str | None = None
    resample: str | None = None
    output_formats: Sequence[str] = ("nifti",)
    statistics: bool = False
    skip_existing: bool = False
    progress: bool = True
    series_uid: str | None = None
    shard: tuple[int, int] | None = None
    output_naming: str = "medt3d"

    def __post_init__(self) -> None:
        if self.output_naming not in LABEL_NAMES:
            raise InputError(f"unknown output naming {self.output_naming!r}; choose one of {list(LABEL_NAMES)}")
        unknown = [f for f in self.output_formats if f not in selectable_formats()]
        if unknown:
            raise InputError(f"unknown output format(s) {unknown}; choose from {list(selectable_formats())}")
        self.output_formats = ("nifti", *dict.fromkeys(f for f in self.output_formats if f != "nifti"))

    def apply(self, cfg: Config) -> Config:
        """The model's config with these overrides (validated)."""
        return override_config(cfg, {
            "infer.roi_size": self.roi_size if self.roi_size is None or isinstance(self.roi_size, str)
            else list(self.roi_size),
            "infer.overlap": self.overlap,
            "infer.mode": self.mode,
            "infer.padding_mode": self.padding_mode,
            "infer.sw_batch_size": self.sw_batch_size,
            "infer.tta_flips": self.tta_flips,
            "infer.largest_component": self.largest_component,
            "infer.save_probabilities": self.save_probabilities,
            "infer.precision": self.precision,
            "infer.engine": self.engine,
            "infer.resample": self.resample,
            "infer.device": self.device,
        })
