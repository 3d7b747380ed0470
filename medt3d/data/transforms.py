"""MONAI transform pipelines built from the config: training, validation, inference, postprocessing.

Order of the deterministic part (shared by all pipelines, so that caching and inversion line up):
load -> label check -> orientation -> spacing -> foreground crop -> intensity (CT window / MR z-score).
Training then pads to the patch size, samples patches and augments them. The inference pipeline holds
only invertible spatial transforms, so ``Invertd`` in :func:`build_postprocessing` maps a prediction
back onto the scan's own grid.

Every setting is read from the :class:`~medt3d.config.Config` object; no defaults are repeated here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureTyped,
    Invertd,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from medt3d.config import CT_WINDOWS, Config
from medt3d.data.field_of_view import RandFieldOfViewd
from medt3d.data.readers import LoadVolumed
from medt3d.data.readers.rtstruct import RoiMap
from medt3d.errors import USER_ERRORS, InputError
from medt3d.networks.factory import masks_padding

__all__ = [
    "CT_BODY_HU",
    "LABELLED",
    "VALID",
    "AddValidMaskd",
    "ChannelIntensityd",
    "CheckLabelValuesd",
    "MarkLabelledd",
    "OnScanGridd",
    "Pipeline",
    "build_infer_transforms",
    "build_postprocessing",
    "build_train_transforms",
    "build_val_transforms",
    "intensity_transform",
    "unwrap_transform_error",
    "window_bounds",
]

#: CT voxels above this (HU) count as body for the foreground crop (air is about -1000 HU).
CT_BODY_HU = -500.0
#: Errors that name a user's bad input; they are passed through the pipelines unwrapped.
_MAX_LISTED_VALUES = 10
IMAGE, LABEL = "image", "label"
#: Key of a training patch's validity mask: 1 where a voxel is scan, 0 where a pad or an augmentation made it.
VALID = "valid"
#: Key of a training case's flag: 1 where the case has a label, 0 where it has none (distillation only).
LABELLED = "labelled"


class MarkLabelledd(MapTransform):
    """Set ``labelled`` (1 or 0), and give a case without a label an all-background stand-in on its image's grid.

    Only distillation trains on cases without labels (its teacher's term needs none). The stand-in lets the
    patch sampler and the augmentations run as for any case; the flag keeps it out of the supervised loss
    (:class:`medt3d.training.distill.DistillationLoss`).
    """

    def __init__(self, image_key: Hashable = IMAGE, label_key: Hashable = LABEL, flag_key: Hashable = LABELLED) -> None:
        super().__init__([image_key])
        self.image_key, self.label_key, self.flag_key = image_key, label_key, flag_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.flag_key] = int(self.label_key in d)
        if self.label_key not in d:
            label = d[self.image_key][:1].clone()
            label.zero_()
            d[self.label_key] = label
        return d


class AddValidMaskd(MapTransform):
    """Add ``valid``: a one-channel copy of the image (same grid and metadata) filled with ones.

    Placed before the training pad, crop and augmentations and sent through the same spatial transforms
    (nearest neighbour, zero padding), it ends up 0 wherever a voxel of the patch is not scan, so the
    network can mask that padding instead of learning it as anatomy.
    """

    def __init__(self, image_key: Hashable = IMAGE, valid_key: Hashable = VALID) -> None:
        super().__init__([image_key])
        self.image_key = image_key
        self.valid_key = valid_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        valid = d[self.image_key][:1].clone()
        valid.fill_(1.0)
        d[self.valid_key] = valid
        return d
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def unwrap_transform_error(err: BaseException) -> BaseException | None:
    """The user error (ValueError, FileNotFoundError, ...) that MONAI wrapped in ``RuntimeError``, if any.

    MONAI's ``apply_transform`` re-raises every exception as ``RuntimeError("applying transform ...")``;
    this walks the ``__cause__`` chain back to the first error that names a user's input.
    """
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, USER_ERRORS):
            return current
        current = current.__cause__
    return None


class Pipeline(Compose):
    """A MONAI ``Compose`` that re-raises a user's input error (bad file, bad label) as itself.

    Inside a MONAI ``Dataset`` the error is wrapped once more in ``RuntimeError``; use
    :func:`unwrap_transform_error` there.
    """

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False,
                 lazy: bool | None = None) -> Any:
        try:
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        except RuntimeError as err:
            user = unwrap_transform_error(err)
            if user is None:
                raise
            raise user from None


class CheckLabelValuesd(MapTransform):
    """Reject label volumes whose values are not integers in ``0..num_classes-1``.

    Args:
        keys: label keys to check.
        num_classes: number of classes, background included (``cfg.data.num_classes``).
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: naming the label file, the bad values (up to 10, with how many voxels hold
            them) and the allowed range.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], num_classes: int,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if num_classes < 2:
            raise InputError(f"num_classes must be >= 2, got {num_classes}; list background and at least one class in data.labels")
        self.num_classes = num_classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            values, counts = np.unique(array, return_counts=True)
            ok = np.isfinite(values) & (values == np.round(values)) & (values >= 0) & (values < self.num_classes)
            if ok.all():
                continue
            source = getattr(label, "meta", {}).get("filename_or_obj", f"<{key}>")
            bad = [(v, c) for v, c, good in zip(values, counts, ok) if not good]
            listed = ", ".join(f"{float(v):g} ({int(c)} voxels)" for v, c in bad[:_MAX_LISTED_VALUES])
            more = f" and {len(bad) - _MAX_LISTED_VALUES} more" if len(bad) > _MAX_LISTED_VALUES else ""
            raise InputError(
                f"label file {source}: values {listed}{more} are outside 0..{self.num_classes - 1}; "
                f"the config has {self.num_classes} classes (data.labels). Fix the mask or the labels list."
            )
        return d


# ------------------------------------------------------------------------------------ building blocks


def window_bounds(cfg: Config) -> tuple[float, float]:
    """CT window as (lowest, highest) HU: ``preprocess.window`` if set, else the ``ct_window`` preset."""
    width, level = cfg.preprocess.window if cfg.preprocess.window is not None else CT_WINDOWS[cfg.preprocess.ct_window]
    return level - width / 2.0, level + width / 2.0


class ChannelIntensityd(MapTransform):
    """Normalise each channel by its own kind: the CT window or the PET SUV range (to 0..1), else a z-score.

    For cases whose channels differ (CT + PET, CT + MR). MONAI's intensity transforms apply one
    rule to every channel, so this applies MONAI's array transforms channel by channel.

    Args:
        keys: image keys.
        kinds: each channel's kind (``CT``, ``PET`` or ``MR``: :attr:`DataConfig.channel_kinds`);
            ``True``/``False`` are read as CT/MR.
        window: the CT window (lowest, highest) HU.
        suv_max: the SUV mapped to 1 (PET channels: 0..suv_max, clipped).
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], kinds: Sequence[str | bool],
                 window: tuple[float, float], suv_max: float = 10.0) -> None:
        from monai.transforms import NormalizeIntensity, ScaleIntensityRange

        super().__init__(keys)
        self.kinds = [("CT" if k else "MR") if isinstance(k, bool) else str(k) for k in kinds]
        self.rules = {"CT": ScaleIntensityRange(a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True),
                      "PET": ScaleIntensityRange(a_min=0.0, a_max=suv_max, b_min=0.0, b_max=1.0, clip=True),
                      "MR": NormalizeIntensity(nonzero=True)}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.shape[0] != len(self.kinds):
                raise InputError(f"{getattr(image, 'meta', {}).get('filename_or_obj', key)}: {image.shape[0]} "
                                 f"channel(s), but data.channels names {len(self.kinds)}; give one file per "
                                 "name in data.channels")
            out = image.clone()  # keeps the MetaTensor's metadata and transform history
            for c, kind in enumerate(self.kinds):
                out[c:c + 1] = torch.as_tensor(self.rules[kind](image[c:c + 1]))
            d[key] = out
        return d


def intensity_transform(cfg: Config, keys: Hashable | Sequence[Hashable] = IMAGE) -> MapTransform:
    """CT: clip to the window and map it to 0..1; PET: SUV 0..``suv_max`` to 0..1; MR: z-score over nonzero voxels.

    With ``data.channels`` naming channels of different kinds, each channel follows its own name.
    """
    kinds = cfg.data.channel_kinds
    if len(set(kinds)) > 1 or kinds[0] == "PET":
        return ChannelIntensityd(keys, kinds, window_bounds(cfg), cfg.preprocess.suv_max)
    if kinds[0] == "CT":
        a_min, a_max = window_bounds(cfg)
        return ScaleIntensityRanged(keys, a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True)
    return NormalizeIntensityd(keys, nonzero=True, channel_wise=True)


def _is_body_ct(x: torch.Tensor) -> torch.Tensor:
    """Body mask of a CT volume in HU (module-level so that pipelines can be pickled)."""
    return x > CT_BODY_HU


def _is_nonzero_mr(x: torch.Tensor) -> torch.Tensor:
    """Nonzero voxels of an MR volume (its background is 0)."""
    return x != 0


def _geometry(cfg: Config, keys: Sequence[str]) -> list[MapTransform]:
    """Orientation, spacing and optional foreground crop, for image (+ label) keys."""
    modes = ["bilinear" if k == IMAGE else "nearest" for k in keys]
    # explicit RAS world labels (the loader's affines are RAS); also silences MONAI's default-change warning
    out: list[MapTransform] = [Orientationd(keys, axcodes=cfg.preprocess.orientation.upper(), labels=_RAS_LABELS)]
    if cfg.preprocess.spacing is not None:
        # float32 resampling (MONAI's default is float64): halves the sampling grid, which dominates peak
        # memory when a prediction is inverted onto a 512x512x300 scan
        out.append(Spacingd(keys, pixdim=cfg.preprocess.spacing, mode=modes, dtype=np.float32))
    if cfg.preprocess.crop_foreground:
        select = _is_body_ct if cfg.data.modality == "CT" else _is_nonzero_mr
        out.append(CropForegroundd(keys, source_key=IMAGE, select_fn=select, allow_smaller=True))
    return out


def _load(cfg: Config, keys: Sequence[str], optional_label: bool = False) -> list[MapTransform]:
    out: list[MapTransform] = [LoadVolumed(keys, channels=cfg.data.in_channels, max_voxels=cfg.infer.max_voxels,
                                           reference_channel=cfg.data.reference_channel,
                                           rois=RoiMap.from_config(cfg.data), allow_missing_keys=optional_label)]
    if LABEL in keys:
        out.append(CheckLabelValuesd(LABEL, num_classes=cfg.data.num_classes, allow_missing_keys=optional_label))
    return out


def _patch_sampler(cfg: Config, keys: Sequence[str]) -> list[MapTransform]:
    p = cfg.patch
    pad = SpatialPadd(keys, spatial_size=p.roi_size)  # so volumes smaller than the ROI still give patches
    if p.mode == "class_ratio":
        sampler = RandCropByLabelClassesd(
            keys, label_key=LABEL, spatial_size=p.roi_size, ratios=p.class_ratios,
            num_classes=cfg.data.num_classes, num_samples=p.num_samples, warn=False,
        )
    else:
        sampler = RandCropByPosNegLabeld(
            keys, label_key=LABEL, spatial_size=p.roi_size, pos=p.pos, neg=p.neg, num_samples=p.num_samples,
        )
    return [pad, sampler]


def _augmentations(cfg: Config, keys: Sequence[str]) -> list[MapTransform]:
    a = cfg.augment
    out: list[MapTransform] = []
    if a.flip:
        out += [RandFlipd(keys, prob=a.flip_prob, spatial_axis=axis) for axis in range(3)]
    if a.rotate90:
        roi = cfg.patch.roi_size
        if roi[0] != roi[1]:
            raise InputError(
                f"augment.rotate90 turns patches in the axial plane, so patch.roi_size needs equal x and y; "
                f"got {list(roi)}: set augment.rotate90=false or make them equal"
            )
        out.append(RandRotate90d(keys, prob=a.rotate90_prob, max_k=3, spatial_axes=(0, 1)))
    if a.affine:
        modes = ["bilinear" if k == IMAGE else "nearest" for k in keys]
        out.append(RandAffined(
            keys, prob=a.affine_prob, rotate_range=[math.radians(a.rotate_deg)] * 3,
            scale_range=[a.scale] * 3, mode=modes, padding_mode="zeros", spatial_size=cfg.patch.roi_size,
            cache_grid=True,
        ))
    if a.intensity_shift:
        out.append(RandShiftIntensityd(IMAGE, offsets=a.shift, prob=a.intensity_prob))
    if a.intensity_scale:
        out.append(RandScaleIntensityd(IMAGE, factors=a.scale_intensity, prob=a.intensity_prob))
    if a.noise:
        out.append(RandGaussianNoised(IMAGE, prob=a.noise_prob, std=a.noise_std))
    if a.gamma:
        out.append(RandAdjustContrastd(IMAGE, prob=a.gamma_prob, gamma=tuple(a.gamma_range),
                                       retain_stats=True))
    if a.low_res:
        out.append(RandSimulateLowResolutiond(IMAGE, prob=a.low_res_prob, zoom_range=tuple(a.low_res_zoom)))
    if a.field_of_view and masks_padding(cfg):  # only a network that masks sees the box alone
        out.append(RandFieldOfViewd(VALID, prob=a.field_of_view_prob, min_fraction=a.field_of_view_min))
    return out


# ------------------------------------------------------------------------------------ pipelines


def build_train_transforms(cfg: Config, unlabelled: bool = False) -> Pipeline:
    """Training: load, check labels, reorient, resample, crop, normalise, pad, sample patches, augment.

    The output of one case is a list of ``patch.num_samples`` dicts with ``image`` (float32, 0..1
    for CT), ``label`` and ``valid`` (1 where the patch is scan, 0 where padding or an augmentation's
    zero fill) patches of ``patch.roi_size``, and the case's ``labelled`` flag. With ``unlabelled``, a case
    may come without a label (:class:`MarkLabelledd`).

    Raises:
        ValueError: ``augment.rotate90`` with a patch whose x and y sizes differ.
    """
    keys = [IMAGE, LABEL]
    patch_keys = [IMAGE, LABEL, VALID]
    return Pipeline([
        *_load(cfg, keys, optional_label=unlabelled),
        MarkLabelledd(),
        *_geometry(cfg, keys),
        intensity_transform(cfg, IMAGE),
        AddValidMaskd(),
        *_patch_sampler(cfg, patch_keys),
        *_augmentations(cfg, patch_keys),
        EnsureTyped(patch_keys, dtype=torch.float32),
    ])


def build_val_transforms(cfg: Config) -> Pipeline:
    """Validation: the deterministic part of training on whole volumes (no padding, no random ops)."""
    keys = [IMAGE, LABEL]
    return Pipeline([
        *_load(cfg, keys),
        *_geometry(cfg, keys),
        intensity_transform(cfg, IMAGE),
        EnsureTyped(keys, dtype=torch.float32),
    ])


def build_infer_transforms(cfg: Config) -> Pipeline:
    """Inference on the ``image`` key: invertible with :func:`build_postprocessing`."""
    keys = [IMAGE]
    return Pipeline([
        *_load(cfg, keys),
        *_geometry(cfg, keys),
        intensity_transform(cfg, IMAGE),
        EnsureTyped(keys, dtype=torch.float32),
    ])


class OnScanGridd(MapTransform):
    """A result on the model's grid -> on the scan's own grid, by ``move``, else by ``fallback``.

    ``move`` is one of :mod:`medt3d.data.regrid`'s ways back (index lists or one-axis blends that read
    the voxels ``Invertd`` would read, for the axis-parallel grids medt3d's preprocessing makes); it
    returns None for anything else, which then goes through ``fallback`` (MONAI's ``Invertd``). The
    scan's grid is read from the values' metadata (``original_affine`` and ``spatial_shape``, set when
    the scan was loaded), the way back from their transform history.

    Args:
        keys: the values' key.
        move: ``move(values, scan_affine, scan_shape)``, the result with the scan's affine, or None.
        fallback: the general pipeline.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable],
                 move: Callable[[MetaTensor, np.ndarray, tuple[int, ...]], MetaTensor | None],
                 fallback: Compose) -> None:
        super().__init__(keys)
        self.move = move
        self.fallback = fallback

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = d[key]
            meta = dict(getattr(values, "meta", {}))
            moved = None
            if "original_affine" in meta and "spatial_shape" in meta:
                shape = tuple(int(n) for n in np.asarray(meta["spatial_shape"])[:3])
                moved = self.move(values, np.asarray(meta["original_affine"], dtype=np.float64), shape)
            if moved is None:
                d = dict(self.fallback(d))
                continue
            meta.pop("affine", None)
            d[key] = MetaTensor(moved.as_tensor(), affine=moved.affine, meta=meta)
        return d


def build_postprocessing(cfg: Config, infer_transforms: Compose, argmax: bool = True,
                         softmax: bool = True) -> Pipeline:
    """Turn the network output in ``pred`` into a result on the scan's own grid.

    Args:
        cfg: the config (``data.num_classes``).
        infer_transforms: the pipeline that made ``image`` (from :func:`build_infer_transforms`).
        argmax: ``True``: a one-channel label map, inverted with nearest interpolation;
            ``False``: per-class probabilities, inverted with bilinear interpolation (outside a
            foreground crop they are 0 for every class).
        softmax: apply softmax first; ``False`` when ``pred`` already holds probabilities.

    The input dict must hold ``image`` (as ``infer_transforms`` produced it) and ``pred``
    (C, X, Y, Z) on the image's grid.
    """
    from medt3d.data.regrid import label_dtype, label_on_scan_grid, probabilities_on_scan_grid

    dtype = label_dtype(cfg.data.num_classes)
    if argmax:  # softmax does not change the argmax: not applied
        general = Compose([AsDiscreted("pred", argmax=True),
                           Invertd("pred", transform=infer_transforms, orig_keys=IMAGE, nearest_interp=True,
                                   to_tensor=True)])
        return Pipeline([OnScanGridd("pred", partial(label_on_scan_grid, dtype=dtype), general),
                         EnsureTyped("pred", dtype=dtype)])
    steps: list[Any] = []
    if softmax:
        steps.append(Activationsd("pred", softmax=True))
    general = Compose([Invertd("pred", transform=infer_transforms, orig_keys=IMAGE, nearest_interp=False,
                               to_tensor=True)])
    steps.append(OnScanGridd("pred", probabilities_on_scan_grid, general))
    return Pipeline(steps)
